//! `turnstile run` holds its lease exactly as long as its command lives
//! (DESIGN "Command line, wave 2"), against the real broker with real
//! signals: a SIGKILLed CLI takes its command with it and the next holder
//! never overlaps it; a SIGTERM is passed on and the lease outlives the
//! command; a lost lease stops the command (exit 76) unless
//! `--on-lost ignore`.
//!
//! Each command writes lines to a log file in the test's directory; the
//! test waits for those lines (never for a fixed time) and checks their
//! order afterwards.
#![cfg(unix)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// `turnstile run ARGS` against `broker`, its stderr in `dir/NAME.err`.
fn run(broker: &Broker, name: &str, args: &[&str]) -> Child {
    let err = std::fs::File::create(broker.dir.join(format!("{name}.err"))).unwrap();
    Command::new(turnstile_cli())
        .arg("--socket")
        .arg(&broker.socket)
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn turnstile run")
}

fn stderr_of(broker: &Broker, name: &str) -> String {
    std::fs::read_to_string(broker.dir.join(format!("{name}.err"))).unwrap_or_default()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `what` holds, within [`PATIENCE`].
#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid a command wrote on its line `WORD PID` in `log`.
fn pid_in(log: &Path, word: &str) -> Option<i32> {
    read(log)
        .lines()
        .find_map(|l| l.strip_prefix(word)?.trim().parse().ok())
}

/// Whether `pid` still runs: not gone, not a zombie.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| !matches!(state, "Z" | "X")),
        Err(_) => false,
    }
}

/// A shell command that does `setup` (traps), logs `start PID` to `log`
/// (so a test that saw the line knows the traps are set), then does `body`;
/// its own pid is `$$`, the log `$log`.
fn logging(log: &Path, setup: &str, body: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "log={}; {setup} echo \"start $$\" >> \"$log\"; {body}",
            log.display()
        ),
    ]
}

fn args<'a>(flags: &[&'a str], command: &'a [String]) -> Vec<&'a str> {
    let mut a = flags.to_vec();
    a.push("--");
    a.extend(command.iter().map(String::as_str));
    a
}

/// SIGKILL of `turnstile run` kills its command (PR_SET_PDEATHSIG), and a
/// second `run` waiting for the same resource starts its command only once
/// the first command no longer runs: each command, once started, appends
/// `tick PID` lines to one file as fast as it can until it dies, after a
/// `begin PID` line; a tick of an earlier command after a later `begin` is
/// an overlap. Ten rounds: each holder is killed while the next waits.
#[test]
fn a_sigkilled_run_takes_its_command_along_and_the_next_never_overlaps() {
    let broker = spawn_broker();
    let dir: PathBuf = broker.dir.clone();
    let ticks = dir.join("ticks");
    let mut previous: Option<(Child, i32)> = None;
    for round in 0..10 {
        let log = dir.join(format!("round{round}"));
        let command: Vec<String> = vec![
            "sh".into(),
            "-c".into(),
            format!(
                "echo \"begin $$\" >> {ticks}; echo \"start $$\" >> {log}; \
                 while :; do echo \"tick $$\" >> {ticks}; done",
                ticks = ticks.display(),
                log = log.display(),
            ),
        ];
        let mut next = run(&broker, &format!("run{round}"), &args(&["pcm"], &command));
        if let Some((mut holder, pid)) = previous.take() {
            // The next one is queued behind the holder before the kill.
            wait_until("the next run queued", || {
                let (_, out, _) = broker.cli(&["why", "pcm"]);
                out.contains("Waiting, in the order")
            });
            assert!(running(pid), "the holder's command runs before the kill");
            signal(holder.id() as i32, libc::SIGKILL);
            let _ = holder.wait();
            wait_until("the killed run's command is gone", || !running(pid));
        }
        wait_until("the command started", || pid_in(&log, "start ").is_some());
        let pid = pid_in(&log, "start ").unwrap();
        if next.try_wait().unwrap().is_some() {
            panic!(
                "run{round} exited: {}",
                stderr_of(&broker, &format!("run{round}"))
            );
        }
        previous = Some((next, pid));
    }
    let (mut last, pid) = previous.unwrap();
    signal(last.id() as i32, libc::SIGKILL);
    let _ = last.wait();
    wait_until("the last command is gone", || !running(pid));
    // Every pid that began before the current one must be silent.
    let (mut ended, mut current, mut begun) = (Vec::new(), None, 0);
    for line in read(&ticks).lines() {
        match line.split_once(' ') {
            Some(("begin", p)) => {
                ended.extend(current.replace(p.to_string()));
                begun += 1;
            }
            Some(("tick", p)) => {
                assert!(
                    !ended.iter().any(|e| e == p),
                    "{p} ticked after its successor began"
                );
            }
            _ => panic!("a torn line {line:?}"),
        }
    }
    assert_eq!(begun, 10);
}

/// SIGTERM to `turnstile run` reaches its command; the lease is released
/// only after the command has exited (it takes its time to clean up), so
/// the waiting `run` starts after the first command's last line; `run`
/// exits with the command's status.
#[test]
fn sigterm_is_passed_on_and_the_lease_outlives_the_command() {
    let broker = spawn_broker();
    let log = broker.dir.join("log");
    let first = logging(
        &log,
        "trap 'echo \"term $$\" >> \"$log\"; sleep 0.3; echo \"end $$\" >> \"$log\"; exit 0' TERM;",
        "while :; do sleep 0.05; done",
    );
    let second = logging(&log, "", "echo \"end $$\" >> \"$log\"");
    let mut holder = run(&broker, "first", &args(&["pcm"], &first));
    wait_until("the first command started", || read(&log).contains("start"));
    let mut waiter = run(&broker, "second", &args(&["pcm"], &second));
    wait_until("the second run queued", || {
        let (_, out, _) = broker.cli(&["why", "pcm"]);
        out.contains("Waiting, in the order")
    });
    signal(holder.id() as i32, libc::SIGTERM);
    let status = wait_child(&mut holder);
    assert_eq!(status.code(), Some(0), "{}", stderr_of(&broker, "first"));
    assert!(
        stderr_of(&broker, "first").contains("SIGTERM passed on"),
        "{}",
        stderr_of(&broker, "first")
    );
    let status = wait_child(&mut waiter);
    assert_eq!(status.code(), Some(0), "{}", stderr_of(&broker, "second"));
    let words: Vec<String> = read(&log)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        words,
        ["start", "term", "end", "start", "end"],
        "{}",
        read(&log)
    );
}

/// A holder whose lease expires (the CLI stopped longer than its TTL) has
/// its command stopped once it runs again, and exits 76; meanwhile the
/// waiter was granted.
#[tokio::test]
async fn an_expired_lease_stops_the_command_and_run_exits_76() {
    let broker = spawn_broker();
    let log = broker.dir.join("log");
    let command = logging(
        &log,
        "trap 'echo \"term $$\" >> \"$log\"; exit 0' TERM;",
        "while :; do sleep 0.05; done",
    );
    let mut holder = run(&broker, "run", &args(&["pcm", "--ttl", "500ms"], &command));
    wait_until("the command started", || read(&log).contains("start"));
    let client = broker.client("waiter").await;
    let pending = client.acquire("pcm").start().await.unwrap();
    signal(holder.id() as i32, libc::SIGSTOP);
    let lease = tokio::time::timeout(PATIENCE, pending.wait_with(|_| {}))
        .await
        .expect("granted once the stopped holder's lease expired")
        .unwrap();
    signal(holder.id() as i32, libc::SIGCONT);
    let status = wait_child(&mut holder);
    let err = stderr_of(&broker, "run");
    assert_eq!(status.code(), Some(76), "{err}");
    assert!(read(&log).contains("term"), "{}", read(&log));
    lease.release().await.unwrap();
}

/// `--on-lost ignore`: the command runs on after the lease is lost, and
/// `run` exits with its status.
#[test]
fn on_lost_ignore_lets_the_command_finish_and_exits_with_its_status() {
    let mut broker = spawn_broker();
    let log = broker.dir.join("log");
    let go = broker.dir.join("go");
    let command = logging(
        &log,
        "",
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done; exit 7",
            go.display()
        ),
    );
    let mut holder = run(
        &broker,
        "run",
        &args(&["pcm", "--on-lost", "ignore"], &command),
    );
    wait_until("the command started", || read(&log).contains("start"));
    broker.kill();
    wait_until("run reported the lost lease", || {
        stderr_of(&broker, "run").contains("runs on unprotected")
    });
    assert!(
        holder.try_wait().unwrap().is_none(),
        "run waits for its command"
    );
    std::fs::write(&go, "").unwrap();
    let status = wait_child(&mut holder);
    assert_eq!(status.code(), Some(7), "{}", stderr_of(&broker, "run"));
}

/// SIGINT, SIGHUP and SIGQUIT are passed on as SIGTERM is, one by one, and
/// the command that survives them keeps its lease.
#[test]
fn sigint_sighup_and_sigquit_are_passed_on_too() {
    let broker = spawn_broker();
    let log = broker.dir.join("log");
    let command = logging(
        &log,
        "for s in INT HUP QUIT; do trap \"echo got-$s >> \\\"\\$log\\\"\" $s; done; \
         trap 'echo got-TERM >> \"$log\"; exit 5' TERM;",
        "while :; do sleep 0.05; done",
    );
    let mut holder = run(&broker, "run", &args(&["pcm"], &command));
    wait_until("the command started", || read(&log).contains("start"));
    for (sig, name) in [
        (libc::SIGINT, "INT"),
        (libc::SIGHUP, "HUP"),
        (libc::SIGQUIT, "QUIT"),
    ] {
        signal(holder.id() as i32, sig);
        wait_until(&format!("the command got SIG{name}"), || {
            read(&log).contains(&format!("got-{name}"))
        });
        assert!(
            holder.try_wait().unwrap().is_none(),
            "run outlives SIG{name}"
        );
        let (_, out, _) = broker.cli(&["why", "pcm"]);
        assert!(out.contains("is held EXCLUSIVE"), "{out}");
    }
    signal(holder.id() as i32, libc::SIGTERM);
    let status = wait_child(&mut holder);
    assert_eq!(status.code(), Some(5), "{}", stderr_of(&broker, "run"));
    let (_, out, _) = broker.cli(&["why", "pcm"]);
    assert!(out.contains("is free"), "{out}");
}

/// What became of a `run` whose broker died under its command.
struct AfterTheBroker {
    /// `run`'s exit code.
    code: Option<i32>,
    /// `run`'s stderr.
    err: String,
    /// The command's log.
    log: String,
    /// The command's pid.
    pid: i32,
}

/// `run pcm FLAGS -- sh` with `setup` (its traps) and an endless loop; once
/// the command has started, the broker is SIGKILLed (the connection, hence
/// the lease, is lost) and `run` is waited for.
fn run_until_the_broker_dies(flags: &[&str], setup: &str) -> AfterTheBroker {
    let mut broker = spawn_broker();
    let log = broker.dir.join("log");
    let command = logging(&log, setup, "while :; do sleep 0.05; done");
    let mut flags = flags.to_vec();
    flags.insert(0, "pcm");
    let mut holder = run(&broker, "run", &args(&flags, &command));
    wait_until("the command started", || read(&log).contains("start"));
    let pid = pid_in(&log, "start ").unwrap();
    broker.kill();
    let status = wait_child(&mut holder);
    AfterTheBroker {
        code: status.code(),
        err: stderr_of(&broker, "run"),
        log: read(&log),
        pid,
    }
}

/// The broker dies under a running command: the command gets SIGTERM and
/// `run` exits 76.
#[test]
fn a_lost_broker_stops_the_command_with_sigterm_and_run_exits_76() {
    let after = run_until_the_broker_dies(&[], "trap 'echo \"term $$\" >> \"$log\"; exit 0' TERM;");
    assert_eq!(after.code, Some(76), "{}", after.err);
    assert!(after.log.contains("term"), "{}", after.log);
    assert!(after.err.contains("was lost"), "{}", after.err);
}

/// A command that ignores SIGTERM gets SIGKILL after `--kill-after`.
#[test]
fn a_command_deaf_to_sigterm_is_killed_after_kill_after() {
    let after = run_until_the_broker_dies(&["--kill-after", "200ms"], "trap '' TERM;");
    assert_eq!(after.code, Some(76), "{}", after.err);
    assert!(
        after.err.contains("after SIGTERM: SIGKILL"),
        "{}",
        after.err
    );
    assert!(!running(after.pid));
}

/// `--on-lost kill`: SIGKILL at once, without waiting for --kill-after.
#[test]
fn on_lost_kill_kills_at_once() {
    let after = run_until_the_broker_dies(
        &["--on-lost", "kill", "--kill-after", "1h"],
        "trap '' TERM;",
    );
    assert_eq!(after.code, Some(76), "{}", after.err);
    assert!(
        after.err.contains("stopping sh with SIGKILL"),
        "{}",
        after.err
    );
    assert!(!running(after.pid));
}
