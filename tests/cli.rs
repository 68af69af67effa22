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
    snapshot("turnstile-status-help.txt", &help(cli, &["status"]));
    snapshot("turnstile-history-help.txt", &help(cli, &["history"]));
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
    // Free after use (the broker still remembers it): `null`, as
    // docs/json.md says, and the same words.
    let (code, _, err) = broker.cli(&["run", "pcm", "true"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = broker.cli(&["--json", "why", "pcm"]);
    assert_eq!((code, out.as_str()), (0, "null\n"));
    let (_, out, _) = broker.cli(&["why", "pcm"]);
    assert_eq!(out, "pcm is free: nobody holds it and nobody waits.\n");
    // A count or limit of 0 is a usage error, not "the default".
    for args in [
        &["history", "pcm", "--limit", "0"][..],
        &["queue", "peek", "q", "--limit", "0"],
        &["ping", "--count", "0"],
        &["run", "pcm", "--capacity", "0", "--", "true"],
    ] {
        let (code, _, err) = broker.cli(args);
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(err.contains("0 is not in 1.."), "{args:?}: {err}");
    }
    // Permits are for a shared lease (an exclusive one takes them all).
    let (code, _, err) = broker.cli(&["run", "pcm", "--capacity", "2", "--permits", "2", "true"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--shared"), "{err}");
    // --no-legend: rows only, and there are none.
    for args in [
        &["status", "--no-legend"][..],
        &["queue", "ls", "--no-legend"],
    ] {
        let (code, out, _) = broker.cli(args);
        assert_eq!((code, out.as_str()), (0, ""), "{args:?}");
    }
}

#[test]
fn check_config_refuses_a_broker_nobody_could_use() {
    let (code, _, err, _) = check_config("max-connections = 0\n", &["--check-config", "{FILE}"]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("max-connections (0) must be at least 1"),
        "{err}"
    );
}

#[test]
fn check_config_takes_the_form_its_help_describes() {
    // `--config FILE --check-config`, with no FILE after the flag.
    let (code, out, err, _) = check_config(
        "max-connections = 50\n",
        &["--config", "{FILE}", "--check-config"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("valid"), "{out}");
}

#[test]
fn an_invalid_log_level_is_an_error_in_a_flag_and_in_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(turnstiled())
        .args(["--log-level", "verbose", "--socket"])
        .arg(tmp.path().join("t.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'verbose' is not a level"), "{err}");
    let (code, _, err, _) = check_config("log-level = \"loud\"\n", &["--check-config", "{FILE}"]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("'loud' is not a level"), "{err}");
}

#[test]
fn durations_share_one_syntax_and_overflow_is_refused() {
    let broker = spawn_broker();
    let (code, _, err) =
        broker.cli(&["run", "pcm", "--ttl", "99999999999999999999h", "--", "true"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("too large"), "{err}");
    // Fractions, as flock's -w takes them.
    let (code, _, err) = broker.cli(&["run", "pcm", "--max-wait", "0.5", "--", "true"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = broker.cli(&["run", "pcm", "--ttl", "1.5s", "--", "true"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_refused_argument_is_a_usage_error_in_plain_words() {
    let broker = spawn_broker();
    let (code, _, err) = broker.cli(&["run", "pcm", "--ttl", "10ms", "--", "true"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("time to live of 10 ms"), "{err}");
    assert!(!err.contains("ERROR_CODE"), "{err}");
    assert!(!err.contains("ttl_ms"), "{err}");
}

#[test]
fn ping_names_the_frame_limit_and_prints_round_figures() {
    let broker = spawn_broker();
    let (code, _, err) = broker.cli(&["ping", "--size", "2000000"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("frame limit is 1048576 bytes"), "{err}");
    let (code, out, err) = broker.cli(&["--json", "ping", "--count", "20"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in ["min_us", "p50_us", "p99_us", "max_us"] {
        let text = v[key].to_string();
        let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "{key} = {text}");
    }
}

/// The CLI with no --socket and no TURNSTILE_SOCKET, its user's runtime
/// directory being `runtime`.
fn cli_finding(runtime: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(turnstile_cli())
        .args(args)
        .env_remove("TURNSTILE_SOCKET")
        .env("XDG_RUNTIME_DIR", runtime)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_finds_the_users_broker_and_says_where_it_looked() {
    let broker = spawn_broker();
    let runtime = broker.socket.parent().unwrap();
    let (code, out, err) = cli_finding(runtime, &["ping"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("pong"), "{out}");
    let (code, _, err) = cli_finding(runtime, &["--user", "ping"]);
    assert_eq!(code, 0, "{err}");

    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = cli_finding(empty.path(), &["--user", "ping"]);
    assert_eq!(code, 69, "{err}");
    let looked = empty.path().join("turnstile.sock");
    assert!(err.contains(&looked.display().to_string()), "{err}");
    assert!(err.contains("systemctl start turnstiled"), "{err}");
    // A socket named explicitly: the broker to start is one serving it.
    let named = empty.path().join("elsewhere.sock");
    let out = Command::new(turnstile_cli())
        .arg("--socket")
        .arg(&named)
        .arg("ping")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    let start = format!("`turnstiled --socket {}`", named.display());
    assert!(err.contains(&start), "{err}");
    // Only the system socket with --system, wherever the user's broker is.
    let (code, _, err) = cli_finding(runtime, &["--system", "ping"]);
    if code != 0 {
        assert_eq!(code, 69, "{err}");
        assert!(err.contains("/run/turnstile/turnstile.sock"), "{err}");
        assert!(!err.contains(&broker.socket.display().to_string()), "{err}");
    }
}

#[test]
fn packaging_installs_man_pages_and_completions() {
    let root = tempfile::tempdir().unwrap();
    let from = Path::new(turnstile_cli()).parent().unwrap();
    let out = Command::new("sh")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/install.sh"))
        .env("DESTDIR", root.path())
        .env("PREFIX", "/usr")
        .env("FROM", from)
        .env("SYSTEMD_DIR", "/lib/systemd/system")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
    assert!(read("usr/share/man/man1/turnstile.1").contains(".TH turnstile 1"));
    // Every page the top page's SUBCOMMANDS section names is there.
    let top = read("usr/share/man/man1/turnstile.1");
    for page in ["run", "queue", "history"] {
        assert!(top.contains(&format!("turnstile\\-{page}(1)")), "{page}");
        let file = format!("usr/share/man/man1/turnstile-{page}.1");
        assert!(root.path().join(file).exists(), "turnstile-{page}.1");
    }
    let run = read("usr/share/man/man1/turnstile-run.1");
    assert!(
        run.contains("no\\-wait") && run.contains("max\\-wait"),
        "{run}"
    );
    assert!(read("usr/share/man/man1/turnstile-queue-consume.1").contains("count"));
    assert!(read("usr/share/man/man1/turnstiled.1").contains("max\\-connections"));
    assert!(read("usr/share/bash-completion/completions/turnstile").contains("completions"));
    assert!(read("usr/share/zsh/site-functions/_turnstile").contains("#compdef turnstile"));
    assert!(read("usr/share/fish/vendor_completions.d/turnstile.fish").contains("max-wait"));
    assert!(
        read("lib/systemd/system/turnstiled.service").contains("ExecStart=/usr/bin/turnstiled")
    );
    assert!(root.path().join("usr/bin/turnstile").exists());
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = Command::new(turnstile_cli())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("no-wait"), "{shell}: {text}");
    }
}

#[test]
fn watch_names_the_holder_once_then_shows_its_progress() {
    use std::io::BufRead;
    let broker = spawn_broker();
    let mut watch = broker.cli_spawn(&["watch", "pcm"]);
    let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.contains("SNAPSHOT") && first.contains("free"),
        "{first}"
    );
    let (code, _, err) = broker.cli(&[
        "run",
        "pcm",
        "-c",
        "echo '1/2 halfway' >&$TURNSTILE_PROGRESS_FD; echo '2/2 done' >&$TURNSTILE_PROGRESS_FD; turnstile_wait=1",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let released = line.contains("RELEASED");
        seen.push(line);
        if released {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let all = seen.join("\n");
    let granted = seen.iter().find(|l| l.contains(" GRANTED ")).expect(&all);
    assert_eq!(granted.matches("turnstile-cli (").count(), 1, "{all}");
    let progress: Vec<_> = seen.iter().filter(|l| l.contains(" PROGRESS ")).collect();
    assert!(!progress.is_empty(), "{all}");
    for l in progress {
        assert!(
            l.contains("progress ") && !l.contains("turnstile-cli ("),
            "{all}"
        );
    }
    // The revision column is wide enough for a restarted broker's.
    assert!(
        granted.contains("rev ")
            && granted
                .split("rev ")
                .nth(1)
                .unwrap()
                .starts_with(|c: char| c.is_ascii_digit()),
        "{all}"
    );
}

#[test]
fn status_is_a_table_and_its_json_has_times_and_nulls() {
    let broker = spawn_broker();
    let dir = broker.dir.display().to_string();
    let mut holder = broker.cli_spawn(&[
        "run",
        "pcm",
        "--purpose",
        "Install Office 97 — ünïcødé",
        "-c",
        &format!("touch {dir}/held; while [ ! -e {dir}/stop ]; do sleep 0.02; done"),
    ]);
    let start = std::time::Instant::now();
    while !broker.dir.join("held").exists() {
        assert!(start.elapsed() < PATIENCE, "the holder never held");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut waiter = broker.cli_spawn(&["run", "-q", "pcm", "true"]);
    let waiting = || {
        let (_, out, _) = broker.cli(&["--json", "status", "pcm"]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    while waiting()["resources"][0]["waiters"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(start.elapsed() < PATIENCE, "the waiter never queued");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let (code, out, err) = broker.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("RESOURCE  STATE"), "{out}");
    assert!(
        lines[1].starts_with("pcm") && lines[1].contains("held"),
        "{out}"
    );
    assert!(lines[1].contains("Install Office 97 — ünïcødé"), "{out}");
    assert!(lines[2].contains("waiting 1"), "{out}");
    // Columns line up in characters, not bytes, past the non-ASCII purpose.
    let col = |l: &str, w: &str| l.find(w).map(|b| l[..b].chars().count());
    assert_eq!(
        col(lines[0], "FOR"),
        col(
            lines[1],
            lines[1]
                .split("  ")
                .filter(|s| !s.is_empty())
                .nth(7)
                .unwrap()
        ),
        "{out}"
    );
    let (_, out, _) = broker.cli(&["status", "--no-legend"]);
    assert!(out.starts_with("pcm"), "{out}");

    let v = waiting();
    let held = &v["resources"][0]["holders"][0];
    let waits = &v["resources"][0]["waiters"][0];
    assert!(held["holder"]["user"].is_string(), "{held}");
    let at = held["granted_at"].as_str().unwrap();
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{at}"
    );
    assert_eq!(waits["fencing_token"], serde_json::Value::Null);
    assert_eq!(waits["granted_at"], serde_json::Value::Null);
    assert!(waits["queued_at"].is_string());

    std::fs::write(broker.dir.join("stop"), "").unwrap();
    assert_eq!(wait_child(&mut holder).code(), Some(0));
    assert_eq!(wait_child(&mut waiter).code(), Some(0));
}

/// A stand-in broker on `socket` that answers Hello and every GetStatus
/// with `status`, for as many connections as come (one thread each).
fn fake_broker(socket: &Path, status: turnstile_proto::v1::Status) {
    use prost::Message;
    use std::io::{Read, Write};
    use turnstile_proto::v1::{self, client_frame::Body, reply};
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let status = status.clone();
            std::thread::spawn(move || {
                loop {
                    // A varint length, then the frame.
                    let (mut len, mut shift) = (0usize, 0);
                    loop {
                        let mut b = [0u8];
                        if stream.read_exact(&mut b).is_err() {
                            return;
                        }
                        len |= usize::from(b[0] & 0x7f) << shift;
                        shift += 7;
                        if b[0] & 0x80 == 0 {
                            break;
                        }
                    }
                    let mut frame = vec![0u8; len];
                    if stream.read_exact(&mut frame).is_err() {
                        return;
                    }
                    let frame = v1::ClientFrame::decode(frame.as_slice()).unwrap();
                    let result = match frame.body {
                        Some(Body::Hello(_)) => reply::Result::Hello(v1::HelloReply {
                            broker_version: "fake".into(),
                            protocol_version: 1,
                            max_frame_bytes: 1 << 20,
                            min_protocol_version: 1,
                            max_protocol_version: 1,
                            ..Default::default()
                        }),
                        Some(Body::GetStatus(_)) => reply::Result::Status(status.clone()),
                        other => panic!("the fake broker does not know {other:?}"),
                    };
                    let answer = v1::ServerFrame {
                        body: Some(v1::server_frame::Body::Reply(v1::Reply {
                            id: frame.id,
                            result: Some(result),
                        })),
                    };
                    if stream
                        .write_all(&answer.encode_length_delimited_to_vec())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
}

#[test]
fn why_status_and_top_show_the_estimate_the_broker_sent() {
    use turnstile_proto::v1;
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("fake.sock");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let lease = |id: u64, purpose: &str| v1::Lease {
        lease_id: id,
        resource: "pcm".into(),
        mode: v1::Mode::Exclusive as i32,
        purpose: purpose.into(),
        holder: Some(v1::Peer {
            client_name: format!("client{id}"),
            pid: 100 + id as u32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let holder = v1::Lease {
        fencing_token: 7,
        granted_at_ms: now - 10_000,
        expires_in_ms: 15_000,
        // A progress rate that would give another figure, were the CLI to
        // make its own: 10 s for 1 of 100 steps.
        progress: Some(v1::Progress {
            done: 1,
            total: 100,
            message: String::new(),
        }),
        ..lease(1, "job")
    };
    let waiter = v1::Lease {
        position: 1,
        queued_at_ms: now - 2_000,
        estimated_wait_ms: 83_000,
        ..lease(2, "init")
    };
    fake_broker(
        &socket,
        v1::Status {
            revision: 9,
            resources: vec![v1::ResourceState {
                resource: "pcm".into(),
                revision: 9,
                holders: vec![holder],
                waiters: vec![waiter],
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    let cli = |args: &[&str]| {
        let out = Command::new(turnstile_cli())
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let why = cli(&["why", "pcm"]);
    assert!(why.contains("about 1 min 23 s left"), "{why}");
    assert!(why.contains("waits about 1 min 23 s more"), "{why}");
    let status: serde_json::Value = serde_json::from_str(&cli(&["--json", "status"])).unwrap();
    assert_eq!(
        status["resources"][0]["waiters"][0]["estimated_wait_ms"],
        83_000
    );
    assert_eq!(
        status["resources"][0]["holders"][0]["estimated_wait_ms"],
        serde_json::Value::Null
    );
    let table = cli(&["status"]);
    assert!(table.contains("about 1 min 23 s"), "{table}");
}

#[test]
fn watch_after_a_restart_says_so_once_and_keeps_its_columns() {
    use std::io::BufRead;
    let mut broker = spawn_broker();
    wait_ready(&broker);
    let mut watch = broker.cli_spawn(&["watch", "pcm"]);
    let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("SNAPSHOT"), "{first}");
    // Something happens before the restart, so there is a revision to
    // resume from.
    let (code, _, err) = broker.cli(&["run", "pcm", "true"]);
    assert_eq!(code, 0, "{err}");
    for line in lines.by_ref() {
        if line.unwrap().contains(" RELEASED ") {
            break;
        }
    }
    broker.signal(libc::SIGTERM);
    assert!(broker.wait_exit().success());
    let tmp = broker._tmp.take();
    let mut again = start_in(&broker.dir, &[]);
    again._tmp = tmp;
    wait_ready(&again);
    // The watcher reconnects with a resync snapshot, then sees a grant on
    // the new broker, whose revisions start 2^20 higher.
    let mut seen = Vec::new();
    let mut ran = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("SNAPSHOT") && !ran {
            let (code, _, err) = again.cli(&["run", "pcm", "true"]);
            assert_eq!(code, 0, "{err}");
            ran = true;
        }
        let granted = line.contains(" GRANTED ");
        seen.push(line);
        if granted {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let err = read_all(watch.stderr.take());
    let granted = seen.last().unwrap();
    // Columns line up: the kind starts where it did before the restart.
    let col = |l: &str, w: &str| l.find(w).unwrap();
    let rev = |l: &str| -> u64 {
        l.split("rev ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(rev(granted) >= 1 << 20, "{granted}");
    assert_eq!(
        col(&first, "SNAPSHOT"),
        col(granted, "GRANTED"),
        "{first}\n{granted}"
    );
    // Said once, in plain words: no "resuming after revision ..." noise.
    assert_eq!(err.matches("its whole state follows").count(), 1, "{err}");
    assert!(!err.contains("resuming after"), "{err}");
    assert!(err.contains("reconnected"), "{err}");
    // The holder is named once on its GRANTED line.
    assert_eq!(granted.matches("turnstile-cli (").count(), 1, "{granted}");
}

#[test]
fn exit_codes_are_the_same_in_both_binaries_and_all_in_the_readme() {
    // One number per meaning in both binaries, and the README's list names
    // every code either binary uses.
    assert_eq!(
        turnstile_cli::EXIT_SOFTWARE,
        turnstile_broker::cli::EXIT_SOFTWARE
    );
    assert_eq!(turnstile_cli::EXIT_USAGE, turnstile_broker::cli::EXIT_USAGE);
    assert_eq!(
        turnstile_cli::EXIT_UNAVAILABLE,
        turnstile_broker::cli::EXIT_UNAVAILABLE
    );
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .unwrap()
        .replace('\n', " ");
    let section = readme
        .split("Exit codes follow sysexits")
        .nth(1)
        .expect("the README's exit codes")
        .split("`turnstile top`")
        .next()
        .unwrap();
    let (cli, daemon) = section.split_once("`turnstiled`").unwrap();
    for code in [
        turnstile_cli::EXIT_OK,
        turnstile_cli::EXIT_REFUSED,
        turnstile_cli::EXIT_USAGE,
        turnstile_cli::EXIT_UNAVAILABLE,
        turnstile_cli::EXIT_SOFTWARE,
        turnstile_cli::EXIT_BUSY,
        turnstile_cli::EXIT_LOST,
    ] {
        assert!(
            cli.contains(&format!(" {code} ")),
            "turnstile {code}: {cli}"
        );
    }
    for code in [
        turnstile_broker::cli::EXIT_USAGE,
        turnstile_broker::cli::EXIT_UNAVAILABLE,
        turnstile_broker::cli::EXIT_SOFTWARE,
        turnstile_broker::cli::EXIT_CANTCREAT,
        turnstile_broker::cli::EXIT_CONFIG,
    ] {
        assert!(
            daemon.contains(&format!(" {code} ")),
            "turnstiled {code}: {daemon}"
        );
    }
    assert!(!section.contains(" 71 "), "no binary uses 71: {section}");
}
