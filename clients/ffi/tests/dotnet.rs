//! The C# binding (`clients/dotnet/Turnstile.cs`), compiled with Mono's
//! `mcs` and run with `mono` on libturnstile.so against the real broker:
//! the C# agent queues behind a running job and initialises when it ends,
//! and `Check.cs` exercises exceptions, events, queues, handle lifetimes
//! and the wave-2 features (permits, re-attach, yield, stalled, history).
//!
//! Needs `mcs` and `mono` (Debian: mono-mcs, mono-runtime; `.ci/run`
//! installs them); without them it prints a SKIP line and passes.

#![cfg(unix)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn dotnet_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dotnet")
}

/// Compiles `Turnstile.cs` with `program`; `None` (after a SKIP line) when
/// Mono is not installed.
fn mcs(program: &str, out: &Path) -> Option<PathBuf> {
    if !have("mcs") || !have("mono") {
        println!(
            "SKIP dotnet: mcs/mono not installed (apt-get install -y mono-mcs mono-runtime; .ci/run does)"
        );
        return None;
    }
    let exe = out.join(program.replace(".cs", ".exe"));
    let st = Command::new("mcs")
        .args(["-warn:4", "-warnaserror"])
        .arg(format!("-out:{}", exe.display()))
        .arg(dotnet_dir().join("Turnstile.cs"))
        .arg(dotnet_dir().join(program))
        .status()
        .expect("run mcs");
    assert!(st.success(), "mcs failed on {program}");
    Some(exe)
}

fn mono(exe: &Path) -> Command {
    let mut cmd = Command::new("mono");
    cmd.arg(exe).env("LD_LIBRARY_PATH", lib_dir());
    cmd
}

#[test]
fn the_csharp_agent_queues_behind_a_job_and_initialises_when_it_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(exe) = mcs("Agent.cs", tmp.path()) else {
        return;
    };
    let b = spawn_broker();
    let mut cmd = mono(&exe);
    cmd.arg("carol");
    let lines = queue_behind_a_job(&b, cmd, PATIENCE);
    assert!(
        lines[0].contains("agent[carol]: waiting for pcm"),
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
fn the_csharp_binding_passes_its_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(exe) = mcs("Check.cs", tmp.path()) else {
        return;
    };
    let b = spawn_broker();
    let mut check = Agent::spawn(&b, mono(&exe), PATIENCE);
    check.expect(" passed, ");
    let code = check.wait();
    assert_eq!(code, 0, "{}", check.seen.join("\n"));
    assert!(
        check.seen.iter().any(|l| l == "17 passed, 0 failed"),
        "{}",
        check.seen.join("\n")
    );
}
