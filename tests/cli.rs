//! The command lines are a contract (scripts and service units depend on
//! them): their `--help` is snapshot-tested, and a few outputs are checked.
//! `TURNSTILE_UPDATE_SNAPSHOTS=1 cargo test --test cli` rewrites the
//! snapshots after an intended change.
#![cfg(unix)]

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

#[track_caller]
fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("TURNSTILE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set TURNSTILE_UPDATE_SNAPSHOTS=1)", path.display()));
    assert_eq!(
        actual, expected,
        "{name} changed; if intended, run with TURNSTILE_UPDATE_SNAPSHOTS=1"
    );
}

fn help(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .env_remove("TURNSTILE_SOCKET")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn turnstiled_help() {
    snapshot("turnstiled-help.txt", &help(turnstiled(), &[]));
}

#[test]
fn turnstile_help() {
    let cli = turnstile_cli();
    snapshot("turnstile-help.txt", &help(cli, &[]));
    snapshot("turnstile-run-help.txt", &help(cli, &["run"]));
    snapshot("turnstile-queue-help.txt", &help(cli, &["queue"]));
}

#[test]
fn status_and_why_outputs() {
    let broker = spawn_broker();
    let (code, out, _) = broker.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("no resource is held or waited for"),
        "{out}"
    );
    let (code, out, _) = broker.cli(&["why", "pcm"]);
    assert_eq!(code, 0);
    assert_eq!(out, "pcm is free: nobody holds it and nobody waits.\n");
    let (code, out, _) = broker.cli(&["--json", "status"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["resources"].as_array().unwrap().is_empty());
}
