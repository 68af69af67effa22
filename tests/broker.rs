//! The broker as a process: it starts, answers, refuses bad input without
//! harm to others, and stops cleanly (real binary, real socket, real signals).
//!
//! Unix only: it uses signals, socket files and raw Unix sockets
//! (`tests/portable.rs` holds the tests every platform runs).
#![cfg(unix)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::*;
use turnstile_proto::v1::{self, ErrorCode, client_frame::Body, reply};

#[tokio::test]
async fn hello_ping_and_status() {
    let broker = spawn_broker();
    let client = broker.client("tester").await;
    // The broker reports the peer it saw from the kernel, not from the client.
    let hello = client.hello();
    assert_eq!(hello.protocol_version, 1);
    let peer = hello.peer.clone().expect("peer");
    assert_eq!(peer.client_name, "tester");
    assert_eq!(peer.pid, std::process::id());
    // SAFETY: geteuid touches no memory.
    assert_eq!(peer.uid, unsafe { libc::geteuid() });
    assert_eq!(client.ping(&b"abc"[..]).await.unwrap(), &b"abc"[..]);
    let status = client.status(&[]).await.unwrap();
    assert!(status.resources.is_empty());
    // A named resource nobody uses is shown, empty.
    let status = client.status(&["pcm".into()]).await.unwrap();
    assert_eq!(status.resources.len(), 1);
    assert!(status.resources[0].holders.is_empty());
}

#[tokio::test]
async fn a_first_frame_that_is_not_hello_is_a_protocol_violation() {
    let broker = spawn_broker();
    let mut raw = broker.raw_no_hello().await;
    raw.send(v1::ClientFrame {
        id: 1,
        body: Some(Body::Ping(v1::Ping::default())),
    })
    .await;
    let e = raw.expect_fatal().await;
    assert_eq!(e.code, ErrorCode::ProtocolViolation as i32, "{e:?}");
    // Others are still served.
    broker.client("other").await.ping(&b""[..]).await.unwrap();
}

#[tokio::test]
async fn a_wrong_protocol_version_is_refused_naming_the_supported_range() {
    let broker = spawn_broker();
    let mut raw = broker.raw_no_hello().await;
    raw.send(v1::ClientFrame {
        id: 7,
        body: Some(Body::Hello(v1::Hello {
            protocol_version: 2,
            client_name: "future".into(),
        })),
    })
    .await;
    match raw.next_frame().await {
        Some(v1::server_frame::Body::Reply(v1::Reply {
            id: 7,
            result: Some(reply::Result::Error(e)),
        })) => {
            assert_eq!(e.code, ErrorCode::UnsupportedVersion as i32);
            assert!(e.message.contains("1 to 1"), "{}", e.message);
        }
        other => panic!("expected UNSUPPORTED_VERSION, got {other:?}"),
    }
    assert!(raw.next_frame().await.is_none(), "closed after refusing");
}

#[tokio::test]
async fn garbage_bytes_get_an_error_and_the_broker_keeps_serving() {
    let broker = spawn_broker();
    let mut raw = broker.raw().await;
    // A valid length prefix followed by bytes that are no protobuf message.
    raw.send_bytes(&[0x05, 0xff, 0xff, 0xff, 0xff, 0xff]).await;
    let e = raw.expect_fatal().await;
    assert_eq!(e.code, ErrorCode::ProtocolViolation as i32, "{e:?}");
    broker.client("other").await.ping(&b""[..]).await.unwrap();
}

#[tokio::test]
async fn a_4_gib_length_prefix_is_refused_before_anything_is_allocated() {
    let broker = spawn_broker();
    let mut raw = broker.raw().await;
    // varint 0xFFFFFFFF
    raw.send_bytes(&[0xff, 0xff, 0xff, 0xff, 0x0f]).await;
    let e = raw.expect_fatal().await;
    assert_eq!(e.code, ErrorCode::FrameTooLarge as i32, "{e:?}");
    assert!(e.message.contains("4294967295"), "{}", e.message);
    broker.client("other").await.ping(&b""[..]).await.unwrap();
}

#[tokio::test]
async fn a_request_without_an_id_is_refused_and_the_connection_stays_open() {
    let broker = spawn_broker();
    let mut raw = broker.raw().await;
    raw.send(v1::ClientFrame {
        id: 0,
        body: Some(Body::Ping(v1::Ping::default())),
    })
    .await;
    match raw.next_frame().await {
        Some(v1::server_frame::Body::Reply(v1::Reply {
            result: Some(reply::Result::Error(e)),
            ..
        })) => assert_eq!(e.code, ErrorCode::InvalidArgument as i32),
        other => panic!("{other:?}"),
    }
    let r = raw.request(Body::Ping(v1::Ping::default())).await;
    assert!(matches!(r, reply::Result::Pong(_)));
}

#[tokio::test]
async fn a_connection_that_never_says_hello_is_closed_at_the_handshake_deadline() {
    let broker = spawn_broker_with(&["--handshake-timeout", "300ms"]);
    let mut raw = broker.raw_no_hello().await;
    let e = raw.expect_fatal().await;
    assert_eq!(e.code, ErrorCode::TimedOut as i32, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_ping_at_once() {
    let broker = spawn_broker();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let opts = broker.options(&format!("c{i}"));
        tasks.push(tokio::spawn(async move {
            let c = turnstile_client::Client::connect(opts).await.unwrap();
            for _ in 0..20 {
                c.ping(vec![i as u8; 32]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn sigterm_stops_it_cleanly_and_removes_the_socket() {
    let mut broker = spawn_broker();
    assert!(broker.socket.exists());
    // SIGHUP changes nothing (it ended the broker silently, and systemd
    // does not restart a unit ended by it): said in the log, and it serves on.
    broker.signal(libc::SIGHUP);
    let start = std::time::Instant::now();
    while !broker.log_text().contains("SIGHUP ignored") {
        assert!(start.elapsed() < PATIENCE, "log:\n{}", broker.log_text());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, _, err) = broker.cli(&["ping"]);
    assert_eq!(code, 0, "{err}");
    broker.signal(libc::SIGTERM);
    let status = broker.wait_exit();
    assert_eq!(status.code(), Some(0), "log:\n{}", broker.log_text());
    assert!(!broker.socket.exists(), "socket file removed");
    assert!(broker.log_text().contains("SIGTERM received"));
}

#[test]
fn opening_the_store_is_logged_from_start_to_end() {
    // A large store takes seconds to open: without a line between the
    // start and "ready", a busy broker looked hung. Its start names the
    // file and its size, its end how long it took, phase by phase, and
    // what it found.
    let mut broker = spawn_broker();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = broker.client("publisher").await;
        for i in 0..3 {
            client
                .publish("kept", format!("m{i}").into_bytes(), &[])
                .await
                .expect("publish");
        }
    });
    broker.signal(libc::SIGTERM);
    assert_eq!(broker.wait_exit().code(), Some(0));
    let again = start_in(&broker.dir.clone(), &[]);
    let (code, out, err) = again.cli(&["ping"]);
    assert_eq!(code, 0, "{out}{err}");
    let log = again.log_text();
    let line = |what: &str| {
        log.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in the log:\n{log}"))
            .to_string()
    };
    let size = std::fs::metadata(broker.data_dir.join("turnstile.redb"))
        .unwrap()
        .len();
    let start = line("opening the store");
    assert!(start.contains("INFO"), "{start}");
    assert!(start.contains("turnstile.redb"), "{start}");
    assert!(start.contains(&format!("bytes={size}")), "{start}");
    let end = line("store opened in");
    assert!(end.contains("INFO"), "{end}");
    assert!(end.contains("checking and opening the database"), "{end}");
    assert!(end.contains("reading the messages"), "{end}");
    assert!(end.contains("messages=3"), "{end}");
    assert!(
        log.find("store opened in") < log.find("turnstiled ready"),
        "{log}"
    );
}

/// Wall-clock unix milliseconds, as a client reads them.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn times_from_before_a_sigstop_keep_their_wall_clock_time() {
    // The broker takes the time it was stopped out of its own clock, so
    // that leases kept alive on time do not expire; the wall-clock times
    // it showed for what began before the stop moved with it: a lease
    // granted before a 20 s stop showed a granted_at 20 s late ("held
    // for 6 s" after 26), its history hold 20 s short, a waiter's wait
    // too. Stopped for 3 s here: every time is what the clients saw.
    let broker = spawn_broker();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let holder = broker.client("holder").await;
        let waiter = broker.client("waiter").await;
        let asked = wall_ms();
        let lease = holder
            .acquire("held")
            .exclusive()
            .ttl(Duration::from_secs(30))
            .wait()
            .await
            .expect("granted");
        let granted = wall_ms();
        let queued = waiter
            .acquire("held")
            .exclusive()
            .ttl(Duration::from_secs(30))
            .start()
            .await
            .expect("queued");
        let queued_by = wall_ms();
        broker.signal(libc::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(3)).await;
        broker.signal(libc::SIGCONT);
        let status = holder.status(&["held".into()]).await.expect("status");
        let state = &status.resources[0];
        // A few milliseconds either way: the broker's wall-clock time of
        // a core time and the clients' reads are rounded apart.
        let shown = state.holders[0].granted_at_ms;
        assert!(
            (asked - 5..=granted + 5).contains(&shown),
            "granted between {asked} and {granted}, shown at {shown}"
        );
        let shown = state.waiters[0].queued_at_ms;
        assert!(
            (granted - 5..=queued_by + 5).contains(&shown),
            "queued between {granted} and {queued_by}, shown at {shown}"
        );
        let released = wall_ms();
        lease.release().await.expect("release");
        let second = queued.wait().await.expect("granted in turn");
        second.release().await.expect("release");
        let history = holder.history("held", 0, 10).await.expect("history");
        let first = &history.entries[0];
        let hold = first.ended_at_ms - first.granted_at_ms;
        assert!(
            hold + 5 >= released - granted,
            "held for {} ms at least, history says {hold} ms",
            released - granted
        );
        let next = &history.entries[1];
        let wait = next.granted_at_ms - next.queued_at_ms;
        assert!(
            wait + 5 >= released - queued_by,
            "waited {} ms at least, history says {wait} ms",
            released - queued_by
        );
    });
    assert!(
        broker.log_text().contains("the broker did not run for"),
        "the stop was noticed:\n{}",
        broker.log_text()
    );
}

#[test]
fn a_second_broker_on_a_live_path_refuses_and_the_first_still_serves() {
    let broker = spawn_broker();
    let out = std::process::Command::new(turnstiled())
        .arg("--socket")
        .arg(&broker.socket)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already serving"), "{stderr}");
    assert!(broker.socket.exists(), "the live socket was left alone");
    let (code, stdout, _) = broker.cli(&["ping"]);
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn after_sigkill_a_restart_on_the_same_path_replaces_the_stale_socket() {
    let mut broker = spawn_broker();
    let dir = broker.dir.clone();
    broker.kill();
    assert!(
        broker.socket.exists(),
        "SIGKILL leaves the socket file behind"
    );
    let again = start_in(&dir, &[]);
    let (code, out, err) = again.cli(&["ping"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(again.log_text().contains("stale socket"));
}

#[test]
fn a_broker_whose_stderr_is_closed_still_serves() {
    let tmp = tempfile::tempdir().unwrap();
    // A pipe whose reading end is closed at once: every log write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut broker = start_in_no_wait(tmp.path(), &[], Some(Stdio::from(writer)));
    wait_ready(&broker);
    for _ in 0..3 {
        let (code, out, err) = broker.cli(&["ping"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    broker.signal(libc::SIGTERM);
    assert_eq!(broker.wait_exit().code(), Some(0));
}

#[test]
fn the_socket_is_a_file_open_to_all_in_a_directory_only_the_broker_writes() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let broker = spawn_broker();
    let meta = std::fs::metadata(&broker.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);
    let dir_mode = std::fs::metadata(&broker.dir).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o022, 0, "directory not writable by others");
    // Never the abstract namespace.
    let unix = std::fs::read_to_string("/proc/net/unix").unwrap();
    let abstract_ours = unix
        .lines()
        .any(|l| l.contains('@') && l.contains("turnstile"));
    assert!(!abstract_ours, "an abstract socket of ours exists");
}

#[test]
fn a_socket_directory_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new(turnstiled())
        .arg("--socket")
        .arg(open.join("t.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains("writable by other users"));
}

#[test]
fn config_files_are_checked_and_unknown_keys_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.toml");
    std::fs::write(&good, "max-connections = 50\nhandshake-timeout = \"2s\"\n").unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "max-conections = 50\n").unwrap();
    let run = |f: &std::path::Path| {
        std::process::Command::new(turnstiled())
            .arg("--check-config")
            .arg(f)
            .output()
            .unwrap()
    };
    assert_eq!(run(&good).status.code(), Some(0));
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
}

#[test]
fn store_log_sizes_out_of_range_are_refused() {
    // The checkpoint size is bounded by the log's, the log's by 64 KiB..1 GiB.
    let tmp = tempfile::tempdir().unwrap();
    for (text, word) in [
        (
            "store-log-size = 1048576\nstore-checkpoint-size = 2097152\n",
            "store-checkpoint-size",
        ),
        ("store-log-size = 1024\n", "store-log-size"),
    ] {
        let file = tmp.path().join("store.toml");
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(turnstiled())
            .arg("--check-config")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(word), "{stderr}");
    }
    let file = tmp.path().join("fine.toml");
    std::fs::write(
        &file,
        "store-log-size = 1048576\nstore-checkpoint-interval = \"5s\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(turnstiled())
        .arg("--check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_cli_reports_an_absent_broker_with_exit_69() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(turnstile_cli())
        .arg("--socket")
        .arg(tmp.path().join("nobody.sock"))
        .arg("ping")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[tokio::test]
async fn a_client_that_starts_before_its_broker_connects_once_it_is_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let opts = turnstile_client::ConnectOptions::new("early")
        .socket(dir.join("turnstile.sock"))
        .retry_for(Duration::from_secs(15));
    let early = tokio::spawn(async move { turnstile_client::Client::connect(opts).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _broker = start_in(&dir, &[]);
    let client = early.await.unwrap().expect("connected after retrying");
    client.ping(&b""[..]).await.unwrap();
}

#[test]
fn systemd_is_told_when_the_broker_is_ready_and_when_it_stops() {
    // What systemd does for Type=notify: a datagram socket in NOTIFY_SOCKET.
    let tmp = tempfile::tempdir().unwrap();
    let notify = std::os::unix::net::UnixDatagram::bind(tmp.path().join("notify")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let socket = tmp.path().join("turnstile.sock");
    let mut child = std::process::Command::new(turnstiled())
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .env("NOTIFY_SOCKET", tmp.path().join("notify"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A signal to this test process (another test's child exiting) may
    // interrupt a wait: it is taken up again.
    let recv = |buf: &mut [u8]| loop {
        match notify.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    };
    let mut buf = [0u8; 512];
    let n = recv(&mut buf).expect("a readiness message");
    let ready = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(socket.exists(), "ready means the socket accepts");
    signal(child.id() as i32, libc::SIGTERM);
    let n = recv(&mut buf).expect("a stopping message");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert_eq!(wait_child(&mut child).code(), Some(0));
}
