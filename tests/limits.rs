//! The broker raises its soft open-files limit (RLIMIT_NOFILE) to the hard
//! limit at start, and warns when even that is below what
//! `--max-connections` needs (issue #12, point 12). The broker is started
//! with the limits set between fork and exec; what it got is read back from
//! `/proc/PID/limits`.
#![cfg(target_os = "linux")]

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use support::*;

/// Starts `turnstiled` in a fresh directory with the open-files limits
/// `soft` and `hard`, and waits until it accepts connections.
fn broker_with_nofile(soft: u64, hard: u64, args: &[&str]) -> Broker {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let socket = dir.join("turnstile.sock");
    let data_dir = dir.join("data");
    let log = dir.join("broker.log");
    let mut command = Command::new(turnstiled());
    command
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: setrlimit is async-signal-safe; it only lowers limits.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let broker = Broker {
        child: command.spawn().expect("spawn turnstiled"),
        dir,
        socket,
        data_dir,
        log,
        _tmp: Some(tmp),
    };
    wait_ready(&broker);
    broker
}

/// The broker's soft and hard open-files limits, from `/proc`.
fn nofile_of(pid: i32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

fn our_hard_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_max
}

#[test]
fn the_soft_limit_is_raised_to_the_hard_one_quietly_when_that_suffices() {
    let hard = our_hard_limit().min(4096);
    assert!(
        hard > 200,
        "this test needs a hard limit above 200 (ulimit -Hn)"
    );
    let broker = broker_with_nofile(64, hard, &["--max-connections", "100"]);
    assert_eq!(nofile_of(broker.pid()), (hard, hard));
    let log = broker.log_text();
    assert!(log.contains("raised the open-files limit"), "{log}");
    assert!(!log.contains("below the"), "{log}");
}

#[test]
fn a_hard_limit_below_max_connections_is_warned_about() {
    let broker = broker_with_nofile(64, 128, &["--max-connections", "1000"]);
    assert_eq!(nofile_of(broker.pid()), (128, 128));
    let log = broker.log_text();
    assert!(log.contains("WARN"), "{log}");
    assert!(
        log.contains("the open-files limit is 128 (hard limit 128), below the 1064 that --max-connections 1000 needs"),
        "{log}"
    );
    // The broker still serves.
    let (code, _, _) = broker.cli(&["ping"]);
    assert_eq!(code, 0);
}
