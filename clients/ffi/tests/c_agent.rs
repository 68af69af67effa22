//! The C agent (`examples/agent.c`), compiled with the system's `cc`
//! against `include/turnstile.h` and libturnstile, queues behind a running
//! job on the real broker and initialises when it ends; the same run under
//! valgrind shows no memory error and no leak; the static library links;
//! and the header serves C++ (`examples/raii.cpp`, built with `c++`).

#![cfg(unix)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

fn agent_exe(dir: &Path) -> PathBuf {
    let exe = dir.join("agent");
    cc(&crate_dir().join("examples/agent.c"), &exe, LINK_SHARED);
    exe
}

#[test]
fn the_c_agent_queues_behind_a_job_and_initialises_when_it_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = agent_exe(tmp.path());
    let b = spawn_broker();
    let mut cmd = Command::new(&exe);
    cmd.arg("alice");
    let lines = queue_behind_a_job(&b, cmd, PATIENCE);
    assert!(
        lines[0].contains("agent[alice]: waiting for pcm"),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ahead: holder \"job\" by holder")),
        "{lines:#?}"
    );
}

#[test]
fn the_c_agent_is_clean_under_valgrind() {
    if !have("valgrind") {
        println!("SKIP valgrind: not installed (apt-get install -y valgrind; .ci/run does)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = agent_exe(tmp.path());
    let b = spawn_broker();
    let log = tmp.path().join("valgrind.log");
    let mut cmd = Command::new("valgrind");
    cmd.args(valgrind_args(&log)).arg(&exe).arg("valgrind");
    // Valgrind runs the program some 20-50 times slower.
    let st = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        queue_behind_a_job(&b, cmd, Duration::from_secs(300))
    }));
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        st.is_ok(),
        "the agent failed under valgrind; its report:\n{report}"
    );
    assert!(report.contains("ERROR SUMMARY: 0 errors"), "{report}");
}

#[test]
fn the_static_library_links() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("agent-static");
    cc(
        &crate_dir().join("examples/agent.c"),
        &exe,
        &[
            "{lib}/libturnstile.a",
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ],
    );
    let out = Command::new(&exe).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("libturnstile {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_header_serves_cplusplus() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("raii");
    let lib = lib_dir();
    let st = Command::new("c++")
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pthread"])
        .arg(format!("-I{}", crate_dir().join("include").display()))
        .arg(crate_dir().join("examples/raii.cpp"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-lturnstile")
        .arg(format!("-Wl,--disable-new-dtags,-rpath,{}", lib.display()))
        .status()
        .expect("run c++");
    assert!(st.success(), "c++ failed on raii.cpp");
    let b = spawn_broker();
    let mut prog = Agent::spawn(&b, Command::new(&exe), PATIENCE);
    prog.expect("busy as expected: TS_ERR_BUSY");
    prog.expect("watched: granted 1, released 1");
    prog.expect("raii: ok");
    assert_eq!(prog.wait(), 0, "{}", prog.seen.join("\n"));
}
