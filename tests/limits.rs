//! The broker's limits as the operator meets them: it raises its soft
//! open-files limit (RLIMIT_NOFILE) to the hard limit at start, and warns
//! when even that is below what `--max-connections` needs (issue #12,
//! point 12; the broker is started with the limits set between fork and
//! exec, and what it got is read back from `/proc/PID/limits`); a limit of
//! 0 is taken only where its help gives 0 a meaning; a refused value read
//! from a config file names the file and the key; fleet settings need a
//! build with the fleet; a data directory it cannot use is said so, with
//! what to do.
#![cfg(target_os = "linux")]

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

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

#[test]
fn a_zero_is_taken_only_where_the_help_gives_it_a_meaning() {
    // Refused (78), with a sentence naming the file and the key, and what
    // 0 would have done: it used to start a broker that refused every
    // publish of every user but root.
    let (code, _, err, file) = check_config(
        "max-queue-bytes-per-uid = 0\n",
        &["--check-config", "{FILE}"],
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains(&format!(
            "config file {file}: max-queue-bytes-per-uid (0) must be at least 1: 0 would refuse \
             every publish"
        )),
        "{err}"
    );
    // Clamped to 1 before, silently: refused now.
    let (code, _, err, _) = check_config("max-in-flight = 0\n", &["--check-config", "{FILE}"]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("max-in-flight (0) must be at least 1"),
        "{err}"
    );
    // Where the help says what 0 means, it is taken.
    let (code, out, err, _) = check_config(
        "max-delivery-attempts = 0\nheartbeat-interval = \"0s\"\nwatch-history = 0\n\
         history-max-entries = 0\nstore-checkpoint-interval = \"0s\"\n",
        &["--check-config", "{FILE}"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("valid"), "{out}");
}

#[test]
fn a_refused_value_names_the_file_only_when_the_file_gave_it() {
    let (code, _, err, file) = check_config(
        "min-ttl = \"2h\"\n",
        &["--config", "{FILE}", "--check-config"],
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains(&format!("config file {file}: min-ttl (7200000 ms)")),
        "{err}"
    );
    // The same value as a flag: the file is not to blame.
    let (code, _, err, _) = check_config(
        "max-connections = 50\n",
        &["--config", "{FILE}", "--min-ttl", "2h", "--check-config"],
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("turnstiled: min-ttl (7200000 ms)"), "{err}");
    // Starting the broker (not only --check-config) says the same.
    let (code, _, err, file) = check_config(
        "max-frame-bytes = 10\n",
        &["--config", "{FILE}", "--socket", "/nonexistent/t.sock"],
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains(&format!("config file {file}: max-frame-bytes (10)")),
        "{err}"
    );
}

#[test]
fn fleet_settings_need_a_build_with_the_fleet() {
    // fleet-ttl below its minimum passed --check-config silently without
    // --fleet-etcd, in every build.
    let (code, _, err, _) = check_config("fleet-ttl = \"1s\"\n", &["--check-config", "{FILE}"]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("fleet-ttl"), "{err}");
    let (code, _, err, file) = check_config(
        "fleet-ttl = \"10s\"\nfleet-prefix = \"/t\"\n",
        &["--check-config", "{FILE}"],
    );
    if cfg!(feature = "fleet") {
        assert_eq!(code, Some(0), "{err}");
    } else {
        assert_eq!(code, Some(78), "{err}");
        assert!(
            err.contains(&format!(
                "config file {file}: fleet-prefix: this turnstiled was built without the `fleet` \
                 feature"
            )),
            "{err}"
        );
        assert!(err.contains("remove fleet-prefix, fleet-ttl"), "{err}");
    }
}

/// Runs `turnstiled` with `args` (as `uid` if given) until it exits:
/// its exit code and stderr. It must exit within [`PATIENCE`].
fn turnstiled_exit(args: &[&std::ffi::OsStr], uid: Option<u32>) -> (Option<i32>, String) {
    let mut command = Command::new(turnstiled());
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let mut child = command.spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("turnstiled {args:?} did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A broker on a socket in `sockets` with `data` as its data directory,
/// as `uid` if given: its exit code and stderr.
fn start_with_data_dir(sockets: &Path, data: &Path, uid: Option<u32>) -> (Option<i32>, String) {
    let socket = sockets.join("t.sock");
    turnstiled_exit(
        &[
            "--socket".as_ref(),
            socket.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ],
        uid,
    )
}

#[test]
fn a_data_dir_that_cannot_be_used_is_said_so_with_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sockets = dir.join("sockets");
    // A file: "cannot create the data directory ...: File exists" before.
    let file = dir.join("state");
    std::fs::write(&file, "").unwrap();
    let (code, err) = start_with_data_dir(&sockets, &file, None);
    assert_eq!(code, Some(73), "{err}");
    assert!(
        err.contains(&format!(
            "the data directory {} is a file, not a directory: move the file aside, or start \
             turnstiled with another --data-dir",
            file.display()
        )),
        "{err}"
    );
    let (code, err) = start_with_data_dir(&sockets, &file.join("sub"), None);
    assert_eq!(code, Some(73), "{err}");
    assert!(
        err.contains(&format!("{} is a file, not a directory", file.display())),
        "{err}"
    );
    // Writable by everyone: anyone could replace the store (accepted before).
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err) = start_with_data_dir(&sockets, &open, None);
    assert_eq!(code, Some(73), "{err}");
    assert!(
        err.contains("is writable by other users (mode 777)"),
        "{err}"
    );
    assert!(!open.join("turnstile.redb").exists());

    // Not writable by the broker's user: "cannot read .../turnstile.redb:
    // I/O error: Permission denied" before, of a file that did not exist.
    // SAFETY: geteuid touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped the rest: needs root to run the broker as another user");
        return;
    }
    const NOBODY: u32 = 65534;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sockets = dir.join("nobody's");
    std::fs::create_dir(&sockets).unwrap();
    std::os::unix::fs::chown(&sockets, Some(NOBODY), Some(NOBODY)).unwrap();
    let closed = dir.join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o555)).unwrap();
    let (code, err) = start_with_data_dir(&sockets, &closed, Some(NOBODY));
    assert_eq!(code, Some(73), "{err}");
    assert!(
        err.contains(&format!(
            "the data directory {} is not writable by the user turnstiled runs as",
            closed.display()
        )),
        "{err}"
    );
    let (code, err) = start_with_data_dir(&sockets, &closed.join("new"), Some(NOBODY));
    assert_eq!(code, Some(73), "{err}");
    assert!(
        err.contains(&format!(
            "cannot be created: the user turnstiled runs as may not write in {}",
            closed.display()
        )),
        "{err}"
    );
}
