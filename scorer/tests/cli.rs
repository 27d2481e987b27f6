//! The `palisade-scorer` binary: configuration errors, graceful shutdown, key hashing.

use std::{
    io::Write,
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_palisade-scorer");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_bad_config_names_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[limits]\ndefault_tier = \"gold\"\n[limits.tiers.free]\nwindows = [{ limit = 0, window = \"1s\" }]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("limits.default_tier"), "{stderr}");
    assert!(
        stderr.contains("limits.tiers.free.windows[0].limit"),
        "{stderr}"
    );

    let out = Command::new(BIN)
        .args(["serve"])
        .env("PALISADE_GRPC_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PALISADE_GRPC_LISTEN"));

    let out = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let (grpc, admin) = (free_port(), free_port());
    let spool = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("PALISADE_SPOOL_DIR", spool.path())
        .env("PALISADE_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("PALISADE_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) until the admin port answers /readyz.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let ok = std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok_and(|mut s| {
            s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").is_ok() && {
                let mut buf = String::new();
                std::io::Read::read_to_string(&mut s, &mut buf).is_ok()
                    && buf.starts_with("HTTP/1.0 200")
            }
        });
        if ok || Instant::now() > deadline {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(ready, "scorer never became ready");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Bounded wait for the exit; a hang past the grace period fails the test.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit after SIGTERM");
}

#[test]
fn hash_key_reads_the_key_from_stdin() {
    // The demo pepper and pk_demo_alice's digest as listed in envoy/envoy.yaml.
    let mut child = Command::new(BIN)
        .arg("hash-key")
        .env(
            "PALISADE_API_KEY_PEPPER",
            "70616c69736164652d64656d6f2d7065707065722d6e6f742d73656372657421",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pk_demo_alice\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "23fa3877378af5f3b06403e3b0f65a09b24621e723a9efa69f585b26f3750755"
    );
    let out = Command::new(BIN)
        .arg("hash-key")
        .env_remove("PALISADE_API_KEY_PEPPER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
