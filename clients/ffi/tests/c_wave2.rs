//! The wave-2 API called from C: `tests/c/wave2.c`, compiled with the
//! system's `cc` against `include/turnstile.h` and libturnstile, runs every
//! wave-2 check (versioned options, permits, detach and re-attach, yield,
//! decline, revoke, stalled, history, the new functions' invalid handles)
//! against
//! the real broker; and again under valgrind, with no memory error and no
//! leak.

#![cfg(unix)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

fn wave2_exe(dir: &Path) -> PathBuf {
    let exe = dir.join("wave2");
    cc(&crate_dir().join("tests/c/wave2.c"), &exe, LINK_SHARED);
    exe
}

/// Runs the program against a fresh broker; its lines, once it passed.
#[track_caller]
fn run(cmd: Command, patience: Duration) -> Vec<String> {
    let b = spawn_broker();
    let mut prog = Agent::spawn(&b, cmd, patience);
    prog.expect("wave2: all passed");
    let code = prog.wait();
    assert_eq!(code, 0, "{}", prog.seen.join("\n"));
    prog.seen.clone()
}

#[test]
fn the_wave2_api_works_from_c() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = run(Command::new(wave2_exe(tmp.path())), PATIENCE);
    for check in [
        "ok: ts_acquire_options",
        "ok: permits and capacity",
        "ok: detach_grace",
        "ok: yield",
        "ok: stall_after",
        "ok: history",
        "ok: the wave-2 functions",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(check)),
            "{check}: {lines:#?}"
        );
    }
}

#[test]
fn the_wave2_api_is_clean_under_valgrind() {
    if !have("valgrind") {
        println!("SKIP valgrind: not installed (apt-get install -y valgrind; .ci/run does)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = wave2_exe(tmp.path());
    let log = tmp.path().join("valgrind.log");
    let mut cmd = Command::new("valgrind");
    cmd.args(valgrind_args(&log)).arg(&exe);
    // Valgrind runs the program some 20-50 times slower.
    let st = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(cmd, Duration::from_secs(300))
    }));
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        st.is_ok(),
        "the program failed under valgrind; its report:\n{report}"
    );
    assert!(report.contains("ERROR SUMMARY: 0 errors"), "{report}");
}
