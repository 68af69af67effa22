//! `turnstile top` under a real pseudo-terminal (`script(1)` makes one):
//! it draws the resource a holder holds, with its progress, and quits on
//! `q` with exit 0, leaving the terminal as it found it. (The screen's
//! layout is snapshot-tested in `clients/cli/src/top.rs` with ratatui's
//! test backend.)
#![cfg(target_os = "linux")]

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use support::*;

#[test]
fn top_draws_under_a_pty_and_quits_on_q() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no script(1) on this machine");
        return;
    }
    let broker = spawn_broker();
    let dir = broker.dir.display().to_string();
    let mut holder = broker.cli_spawn(&[
        "run",
        "pcm",
        "--purpose",
        "Install Office 97",
        "-c",
        &format!(
            "echo '2/5 copying' >&$TURNSTILE_PROGRESS_FD; touch {dir}/held; \
             while [ ! -e {dir}/stop ]; do sleep 0.02; done"
        ),
    ]);
    let start = Instant::now();
    while !broker.dir.join("held").exists() {
        assert!(start.elapsed() < PATIENCE, "the holder never held");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let inner = format!(
        "stty cols 100 rows 30; exec {} --socket {} top",
        turnstile_cli(),
        broker.socket.display()
    );
    let mut top = Command::new("script")
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .env("TERM", "xterm-256color")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = top.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Vec::new();
    let seen = |s: &[u8], what: &str| String::from_utf8_lossy(s).contains(what);
    // Words, not lines: the terminal is written cell runs at a time.
    while !(seen(&screen, "Office") && seen(&screen, "copying") && seen(&screen, "████████░░"))
    {
        let left = PATIENCE.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(bytes) => screen.extend(bytes),
            Err(_) => panic!(
                "top never drew the holder; it drew:\n{}",
                String::from_utf8_lossy(&screen)
            ),
        }
    }
    assert!(seen(&screen, "turnstile top"));
    top.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let status = wait_child(&mut top);
    assert_eq!(status.code(), Some(0));
    // The alternate screen was left.
    while let Ok(bytes) = rx.try_recv() {
        screen.extend(bytes);
    }
    assert!(
        seen(&screen, "\x1b[?1049l"),
        "the alternate screen was not left"
    );

    std::fs::write(broker.dir.join("stop"), "").unwrap();
    assert_eq!(wait_child(&mut holder).code(), Some(0));
}

#[test]
fn top_without_a_terminal_says_so() {
    // No terminal (standard output a pipe), or --json: a usage error that
    // names the alternatives, not a panic or a stray escape sequence.
    let broker = spawn_broker();
    wait_ready(&broker);
    for args in [&["top"][..], &["--json", "top"]] {
        let (code, out, err) = broker.cli(args);
        assert_eq!(code, 64, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}: nothing on stdout");
        assert!(err.contains(" watch`"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
