//! Configuration: command-line flags (each with an environment variable), validated into a
//! [`BackendConfig`].
//!
//! Token keys are secrets: they are hidden from `--help`, never part of an error message, and
//! [`Args`] and [`BackendConfig`] print them redacted.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use clap::Parser;
use palisade_token::{DEFAULT_MAX_SKEW_SECS, KeyError, TokenKey, Verifier};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
/// Default replay-store capacity (request ids remembered at once).
pub const DEFAULT_REPLAY_CAPACITY: usize = 1_000_000;
/// Accepted `--max-skew-secs` values.
pub const MAX_SKEW_RANGE: RangeInclusive<u64> = 1..=86_400;

const KEY_HEX_FLAG: &str = "--token-key-hex (env PALISADE_GATEWAY_TOKEN_KEY)";
const KEY_FILE_FLAG: &str = "--token-key-file (env PALISADE_GATEWAY_TOKEN_KEY_FILE)";

/// Command-line flags of `palisade-backend`; every flag can also come from its env variable.
#[derive(Clone, Parser)]
#[command(
    name = "palisade-backend",
    version,
    about = "Demo API that only accepts requests signed by the Palisade gateway"
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "PALISADE_BACKEND_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Gateway token keys in hex (at least 32 bytes each), comma-separated, current key
    /// first, then previous keys still accepted during rotation.
    #[arg(
        long,
        env = "PALISADE_GATEWAY_TOKEN_KEY",
        hide_env_values = true,
        value_name = "HEX[,HEX...]"
    )]
    pub token_key_hex: Option<String>,

    /// File with the hex token keys, one per line, current key first (blank lines and lines
    /// starting with '#' are ignored). Alternative to --token-key-hex.
    #[arg(long, env = "PALISADE_GATEWAY_TOKEN_KEY_FILE", value_name = "PATH")]
    pub token_key_file: Option<PathBuf>,

    /// Largest accepted difference between a token's timestamp and this server's clock.
    #[arg(long, env = "PALISADE_TOKEN_MAX_SKEW_SECS", default_value_t = DEFAULT_MAX_SKEW_SECS)]
    pub max_skew_secs: u64,

    /// Most request ids remembered for replay detection; when full of live ids, requests get
    /// 503 (fail closed).
    #[arg(long, env = "PALISADE_REPLAY_CAPACITY", default_value_t = DEFAULT_REPLAY_CAPACITY)]
    pub replay_capacity: usize,
}

impl Args {
    /// Loads the token keys and validates everything, reporting every problem at once.
    pub fn to_config(&self) -> Result<BackendConfig, InvalidConfig> {
        let mut problems = Vec::new();
        let keys = match (&self.token_key_hex, &self.token_key_file) {
            (Some(_), Some(_)) => {
                problems.push(ConfigError::ConflictingTokenKeys);
                Vec::new()
            }
            (None, None) => {
                problems.push(ConfigError::NoTokenKey);
                Vec::new()
            }
            (Some(list), None) => {
                let entries = list.split(',').map(str::trim).enumerate();
                parse_keys(
                    entries.map(|(i, hex)| (format!("{KEY_HEX_FLAG}, entry {}", i + 1), hex)),
                )
                .unwrap_or_else(|mut errs| {
                    problems.append(&mut errs);
                    Vec::new()
                })
            }
            (None, Some(path)) => read_key_file(path).unwrap_or_else(|mut errs| {
                problems.append(&mut errs);
                Vec::new()
            }),
        };
        problems.extend(check_limits(self.max_skew_secs, self.replay_capacity));
        if !problems.is_empty() {
            return Err(InvalidConfig { problems });
        }
        BackendConfig::new(keys, self.max_skew_secs, self.replay_capacity)
    }
}

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Args")
            .field("listen", &self.listen)
            .field(
                "token_key_hex",
                &self.token_key_hex.as_ref().map(|_| "<redacted>"),
            )
            .field("token_key_file", &self.token_key_file)
            .field("max_skew_secs", &self.max_skew_secs)
            .field("replay_capacity", &self.replay_capacity)
            .finish()
    }
}

fn parse_keys<'a>(
    entries: impl Iterator<Item = (String, &'a str)>,
) -> Result<Vec<TokenKey>, Vec<ConfigError>> {
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    for (location, hex) in entries {
        match TokenKey::from_hex(hex) {
            Ok(key) => keys.push(key),
            Err(source) => problems.push(ConfigError::BadTokenKey { location, source }),
        }
    }
    if problems.is_empty() {
        Ok(keys)
    } else {
        Err(problems)
    }
}

fn read_key_file(path: &Path) -> Result<Vec<TokenKey>, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        vec![ConfigError::KeyFile {
            path: path.to_owned(),
            source,
        }]
    })?;
    let entries = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(i, hex)| {
            let location = format!("{KEY_FILE_FLAG}, {} line {}", path.display(), i + 1);
            (location, hex)
        });
    let keys = parse_keys(entries)?;
    if keys.is_empty() {
        return Err(vec![ConfigError::EmptyKeyFile {
            path: path.to_owned(),
        }]);
    }
    Ok(keys)
}

fn check_limits(max_skew_secs: u64, replay_capacity: usize) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    if !MAX_SKEW_RANGE.contains(&max_skew_secs) {
        problems.push(ConfigError::MaxSkew {
            value: max_skew_secs,
        });
    }
    if replay_capacity == 0 {
        problems.push(ConfigError::ReplayCapacity);
    }
    problems
}

/// Validated backend settings: the token verifier and the replay-store limits.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    verifier: Verifier,
    replay_capacity: usize,
}

impl BackendConfig {
    /// `keys`: current key first, then previous ones still accepted. Replay entries live for
    /// `max_skew_secs`, the longest a token stays verifiable after its timestamp.
    pub fn new(
        keys: Vec<TokenKey>,
        max_skew_secs: u64,
        replay_capacity: usize,
    ) -> Result<Self, InvalidConfig> {
        let mut problems = check_limits(max_skew_secs, replay_capacity);
        let verifier = Verifier::new(keys, max_skew_secs);
        if verifier.is_err() {
            problems.insert(0, ConfigError::NoTokenKey);
        }
        match verifier {
            Ok(verifier) if problems.is_empty() => Ok(Self {
                verifier,
                replay_capacity,
            }),
            _ => Err(InvalidConfig { problems }),
        }
    }

    /// The token verifier (keys and skew).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Allowed clock skew, which is also how long a request id is remembered.
    pub fn max_skew_secs(&self) -> u64 {
        self.verifier.max_skew_secs()
    }

    /// Most request ids remembered at once.
    pub fn replay_capacity(&self) -> usize {
        self.replay_capacity
    }
}

/// One configuration problem, naming the flag and environment variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither key source was given.
    #[error("no gateway token key: set {KEY_HEX_FLAG} or {KEY_FILE_FLAG}")]
    NoTokenKey,
    /// Both key sources were given.
    #[error("{KEY_HEX_FLAG} and {KEY_FILE_FLAG} are mutually exclusive: set exactly one")]
    ConflictingTokenKeys,
    /// A key failed to parse; the message says where, never what.
    #[error("{location}: {source}")]
    BadTokenKey {
        /// Flag and entry or file line.
        location: String,
        /// Why (length or hex syntax).
        source: KeyError,
    },
    /// The key file could not be read.
    #[error("{KEY_FILE_FLAG}: cannot read {}: {source}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file holds no key lines.
    #[error("{KEY_FILE_FLAG}: {} holds no keys", path.display())]
    EmptyKeyFile {
        /// The file.
        path: PathBuf,
    },
    /// Skew out of range.
    #[error(
        "--max-skew-secs (env PALISADE_TOKEN_MAX_SKEW_SECS): must be between {} and {}, got {value}",
        MAX_SKEW_RANGE.start(),
        MAX_SKEW_RANGE.end()
    )]
    MaxSkew {
        /// The rejected value.
        value: u64,
    },
    /// Replay capacity zero.
    #[error("--replay-capacity (env PALISADE_REPLAY_CAPACITY): must be at least 1")]
    ReplayCapacity,
}

/// Every problem found in a configuration.
#[derive(Debug)]
pub struct InvalidConfig {
    problems: Vec<ConfigError>,
}

impl InvalidConfig {
    /// The individual problems, in flag order.
    pub fn problems(&self) -> &[ConfigError] {
        &self.problems
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration:")?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000";

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec!["palisade-backend"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    #[test]
    fn defaults() {
        let a = args(&["--token-key-hex", KEY_A]).unwrap();
        assert_eq!(a.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(a.max_skew_secs, 300);
        let c = a.to_config().unwrap();
        assert_eq!(c.max_skew_secs(), 300);
        assert_eq!(c.replay_capacity(), 1_000_000);
    }

    #[test]
    fn comma_separated_keys_for_rotation() {
        let list = format!("{KEY_A}, {}", "11".repeat(32));
        let c = args(&["--token-key-hex", &list])
            .unwrap()
            .to_config()
            .unwrap();
        assert!(format!("{:?}", c.verifier()).contains("<2 redacted>"));
    }

    #[test]
    fn key_errors_name_the_flag_but_not_the_key() {
        let short = "ab".repeat(16);
        let list = format!("{KEY_A},{short},zz{short}");
        let err = args(&["--token-key-hex", &list])
            .unwrap()
            .to_config()
            .unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.problems().len(), 2, "{msg}");
        assert!(msg.contains("--token-key-hex (env PALISADE_GATEWAY_TOKEN_KEY), entry 2"));
        assert!(msg.contains("need at least 32 bytes, got 16"));
        assert!(msg.contains("entry 3: key is not valid hex"));
        assert!(!msg.contains(&short));
        assert!(!msg.contains("abab"));
    }

    #[test]
    fn exactly_one_key_source() {
        let none = args(&[]).unwrap().to_config().unwrap_err();
        assert!(matches!(none.problems(), [ConfigError::NoTokenKey]));
        let both = args(&["--token-key-hex", KEY_A, "--token-key-file", "/nonexistent"])
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(matches!(
            both.problems(),
            [ConfigError::ConflictingTokenKeys]
        ));
    }

    #[test]
    fn key_file() {
        let dir = std::env::temp_dir().join(format!("palisade-backend-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(
            &good,
            format!("# current\n{KEY_A}\n\n  {}  \n", "22".repeat(32)),
        )
        .unwrap();
        let c = args(&["--token-key-file", good.to_str().unwrap()])
            .unwrap()
            .to_config()
            .unwrap();
        assert!(format!("{c:?}").contains("<2 redacted>"));

        let bad = dir.join("bad");
        std::fs::write(&bad, format!("{KEY_A}\n\nnothex\n")).unwrap();
        let err = args(&["--token-key-file", bad.to_str().unwrap()])
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(
            err.to_string().contains("bad line 3: key is not valid hex"),
            "{err}"
        );
        assert!(!err.to_string().contains("nothex"));

        let empty = dir.join("empty");
        std::fs::write(&empty, "# nothing\n").unwrap();
        let err = args(&["--token-key-file", empty.to_str().unwrap()])
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(matches!(err.problems(), [ConfigError::EmptyKeyFile { .. }]));

        let missing = args(&["--token-key-file", dir.join("missing").to_str().unwrap()])
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(matches!(missing.problems(), [ConfigError::KeyFile { .. }]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn limits_are_checked_together() {
        let err = args(&[
            "--token-key-hex",
            KEY_A,
            "--max-skew-secs",
            "0",
            "--replay-capacity",
            "0",
        ])
        .unwrap()
        .to_config()
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--max-skew-secs (env PALISADE_TOKEN_MAX_SKEW_SECS)"),
            "{msg}"
        );
        assert!(
            msg.contains("--replay-capacity (env PALISADE_REPLAY_CAPACITY)"),
            "{msg}"
        );
    }

    #[test]
    fn backend_config_new_validates() {
        assert!(BackendConfig::new(Vec::new(), 300, 10).is_err());
        let key = TokenKey::from_hex(KEY_A).unwrap();
        assert!(BackendConfig::new(vec![key.clone()], 0, 10).is_err());
        assert!(BackendConfig::new(vec![key], 300, 10).is_ok());
    }

    #[test]
    fn debug_redacts_keys() {
        let a = args(&["--token-key-hex", KEY_A]).unwrap();
        let shown = format!("{a:?} {:?}", a.to_config().unwrap());
        assert!(!shown.contains(KEY_A));
        assert!(!shown.contains("0f0e"));
    }
}
