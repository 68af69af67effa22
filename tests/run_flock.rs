//! `turnstile run` side by side with flock(1): the short flags (`-n`, `-w`
//! with fractions, `-s`, `-x`, `-c`, `-E`, `-q`), the command without `--`,
//! and progress written by the command to `TURNSTILE_PROGRESS_FD` reaching
//! the broker. Against the real broker; every wait is for something
//! observed (a line in a file, the broker's status), never a fixed time.
#![cfg(unix)]

mod support;

use std::process::{Child, Stdio};
use std::time::Instant;

use support::*;

/// Waits until `done` holds, within [`PATIENCE`].
#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A holder of `resource` started with `flags`, whose shell command does
/// `body`, says `held` in `dir/held` and runs until `dir/stop` exists.
fn holder(broker: &Broker, flags: &[&str], resource: &str, body: &str) -> Child {
    let dir = broker.dir.display();
    let script =
        format!("{body}; echo held > {dir}/held; while [ ! -e {dir}/stop ]; do sleep 0.02; done");
    let mut args = vec!["run"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[resource, "-c", &script]);
    let mut child = broker.cli_spawn(&args);
    // Its stdout/stderr are pipes nobody reads; the script writes nothing.
    drop(child.stdout.take());
    wait_until("the holder holds", || broker.dir.join("held").exists());
    child
}

fn stop(broker: &Broker, mut child: Child) {
    std::fs::write(broker.dir.join("stop"), "").unwrap();
    let status = wait_child(&mut child);
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_file(broker.dir.join("held"));
    let _ = std::fs::remove_file(broker.dir.join("stop"));
}

#[test]
fn flock_style_flags_and_a_command_without_double_dash() {
    let broker = spawn_broker();
    let held = holder(&broker, &[], "pcm", "true");

    // -n: busy at once, exit 75; -E picks the code; -q says nothing.
    let (code, _, err) = broker.cli(&["run", "-n", "pcm", "true"]);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("pcm"), "{err}");
    let (code, _, _) = broker.cli(&["run", "-n", "-E", "3", "pcm", "true"]);
    assert_eq!(code, 3);
    let (code, _, err) = broker.cli(&["run", "-q", "-n", "pcm", "true"]);
    assert_eq!((code, err.as_str()), (75, ""));
    // -s: a shared lease is still refused by an exclusive holder.
    let (code, _, _) = broker.cli(&["run", "-s", "-n", "pcm", "true"]);
    assert_eq!(code, 75);
    // -w with a fraction: gives up after the wait, with -E's code, and
    // says after how long and who held it then.
    let (code, _, err) = broker.cli(&["run", "-w", "0.2", "-E", "9", "pcm", "true"]);
    assert_eq!(code, 9, "{err}");
    let gave_up = err
        .lines()
        .find(|l| l.contains("gave up waiting for pcm after "))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        gave_up.contains("(--max-wait): position 1, held by turnstile-cli ("),
        "{err}"
    );
    stop(&broker, held);

    // The command without `--`, its own flags left alone; -c for a shell
    // line; -x as flock's (the default).
    let (code, out, err) = broker.cli(&["run", "-x", "pcm", "echo", "-n", "hi"]);
    assert_eq!((code, out.as_str()), (0, "hi"), "{err}");
    let (code, _, _) = broker.cli(&["run", "pcm", "sh", "-c", "exit 7"]);
    assert_eq!(code, 7);
    let (code, _, _) = broker.cli(&["run", "-c", "exit 5", "pcm"]);
    assert_eq!(code, 5);
    let (code, _, err) = broker.cli(&["run", "pcm"]);
    assert_eq!(code, 64, "{err}");
}

#[test]
fn progress_written_to_turnstile_progress_fd_reaches_the_waiters() {
    let broker = spawn_broker();
    let held = holder(
        &broker,
        &[],
        "pcm",
        "echo '2/5 copying files' >&$TURNSTILE_PROGRESS_FD",
    );
    let progress = || {
        let (code, out, err) = broker.cli(&["--json", "status", "pcm"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["resources"][0]["holders"][0]["progress"].clone()
    };
    wait_until("the progress reaches the broker", || !progress().is_null());
    let p = progress();
    assert_eq!(p["done"], 2, "{p}");
    assert_eq!(p["total"], 5, "{p}");
    assert_eq!(p["message"], "copying files", "{p}");
    stop(&broker, held);
}

#[test]
fn the_waiting_line_is_plain_when_stderr_is_not_a_terminal() {
    let broker = spawn_broker();
    let held = holder(&broker, &[], "pcm", "true");
    let mut waiter = std::process::Command::new(turnstile_cli())
        .arg("--socket")
        .arg(&broker.socket)
        .args(["run", "pcm", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(waiter.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).unwrap();
    assert!(
        first.starts_with("turnstile: waiting for pcm: position 1, held by turnstile-cli ("),
        "{first:?}"
    );
    assert!(
        !first.contains('\r') && !first.contains('\x1b'),
        "{first:?}"
    );
    stop(&broker, held);
    assert_eq!(wait_child(&mut waiter).code(), Some(0));
    let rest = read_all(Some(err));
    assert!(rest.contains("pcm granted after"), "{rest}");
}

#[test]
fn a_yield_request_reaches_run_and_on_yield_term_makes_way() {
    let broker = spawn_broker();
    let stderr_of = |child: &mut Child| {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        err
    };
    // By default the request is shown, and the command runs on.
    let mut held = holder(&broker, &[], "pcm", "true");
    let (code, out, err) =
        broker.cli(&["yield", "pcm", "--within", "30s", "--reason", "Install now"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "asked the holder of pcm to make way within 30 s\n"),
        "{err}"
    );
    std::fs::write(broker.dir.join("stop"), "").unwrap();
    assert_eq!(wait_child(&mut held).code(), Some(0));
    let err = stderr_of(&mut held);
    assert!(
        err.contains("asks the holders of pcm to make way within 30 s: \"Install now\"; ")
            && err.contains("runs on (--on-yield term would stop it)"),
        "{err}"
    );
    let _ = std::fs::remove_file(broker.dir.join("held"));
    let _ = std::fs::remove_file(broker.dir.join("stop"));

    // With --on-yield term the command gets SIGTERM, the lease goes once
    // it has exited, and run exits with its status.
    let mut held = holder(&broker, &["--on-yield", "term"], "pcm", "true");
    let (code, _, err) = broker.cli(&["yield", "pcm", "--reason", "Install now"]);
    assert_eq!(code, 0, "{err}");
    let status = wait_child(&mut held);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    let err = stderr_of(&mut held);
    assert!(
        err.contains("to make way at once: \"Install now\": stopping ")
            && err.contains("with SIGTERM (--on-yield term)"),
        "{err}"
    );
    let (code, out, _) = broker.cli(&["why", "pcm"]);
    assert_eq!(code, 0);
    assert_eq!(out, "pcm is free: nobody holds it and nobody waits.\n");
}
