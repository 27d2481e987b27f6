//! The binary's configuration handling: bad configuration exits 64 and never echoes keys.

use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade-backend"));
    for var in [
        "PALISADE_BACKEND_LISTEN",
        "PALISADE_GATEWAY_TOKEN_KEY",
        "PALISADE_GATEWAY_TOKEN_KEY_FILE",
        "PALISADE_TOKEN_MAX_SKEW_SECS",
        "PALISADE_REPLAY_CAPACITY",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn missing_key_exits_64_naming_flag_and_env() {
    let out = run(&[], &[]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--token-key-hex") && err.contains("PALISADE_GATEWAY_TOKEN_KEY"),
        "{err}"
    );
}

#[test]
fn bad_key_exits_64_without_echoing_it() {
    let short = "c0ffee".repeat(5);
    let out = run(&[], &[("PALISADE_GATEWAY_TOKEN_KEY", &short)]);
    assert_eq!(out.status.code(), Some(64));
    let err = stderr(&out);
    assert!(err.contains("PALISADE_GATEWAY_TOKEN_KEY"), "{err}");
    assert!(!err.contains("c0ffee"), "{err}");
}

#[test]
fn unparsable_flag_exits_64() {
    let key = "ab".repeat(32);
    let out = run(
        &["--max-skew-secs", "soon"],
        &[("PALISADE_GATEWAY_TOKEN_KEY", &key)],
    );
    assert_eq!(out.status.code(), Some(64));
    let err = stderr(&out);
    assert!(err.contains("--max-skew-secs"), "{err}");
    assert!(!err.contains(&key), "{err}");
}

#[test]
fn help_hides_the_key_value() {
    let key = "ab".repeat(32);
    let out = run(&["--help"], &[("PALISADE_GATEWAY_TOKEN_KEY", &key)]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--token-key-file"));
    assert!(!help.contains(&key));
}
