//! Floods by an unprivileged local user: the test binary re-executes itself
//! as `nobody` (uid 65534, as `tests/security.rs` does) and floods a broker
//! run by the test's user (root in CI), which must go on serving root.
//!
//! Short by default (CI); `TURNSTILE_FLOODS=long` runs the sizes of issue
//! #12 with the default limits, and every test prints its figure on a
//! `FIGURE:` line (run with `--nocapture`). Figures are printed, never
//! asserted: speed is measured, not tested. Unix only; skipped with a note
//! when the tests do not run as root.
#![cfg(unix)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::*;
use tokio::io::AsyncWriteExt;
use turnstile_client::proto::{self as v1, client_frame::Body, reply, server_frame};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn long() -> bool {
    std::env::var("TURNSTILE_FLOODS").as_deref() == Ok("long")
}

/// A broker whose socket `nobody` can reach (a 0755 directory).
fn broker_for_two_users(args: &[&str]) -> Broker {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut broker = start_in(tmp.path(), args);
    broker._tmp = Some(tmp);
    broker
}

/// This test binary run as nobody with `script`; its stdin tells it when
/// to stop, its stdout carries `ROLE:` lines.
struct Flood {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Flood {
    fn start(broker: &Broker, script: &str) -> Flood {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["nobody_role", "--exact", "--nocapture", "--test-threads=1"])
            .env("TURNSTILE_TEST_ROLE", "nobody")
            .env("TURNSTILE_SOCKET", &broker.socket)
            .env("TURNSTILE_TEST_SCRIPT", script)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Flood { child, out }
    }

    #[track_caller]
    fn said(&mut self) -> String {
        read_role_line(&mut self.out)
    }

    /// Sends the role a line (a command).
    fn tell(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker's resident memory, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Point 4 of issue #12: nobody holds its whole handshake allowance in
/// silent connections (with an hour to say Hello) and one more that does
/// say Hello. Before the bound was per uid, root's connect + Hello waited
/// until one of nobody's silent connections timed out: here, an hour.
/// Now root is answered at once, and nobody's own extra connection waits
/// its turn (it is not refused) until one of its silent ones goes.
#[tokio::test]
async fn root_connects_while_nobody_holds_silent_connections() {
    if !is_root() {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    let silent = if long() { 200 } else { 64 };
    let broker = broker_for_two_users(&["--handshake-timeout", "1h"]);
    let mut flood = Flood::start(&broker, &format!("silent:{silent}"));
    assert_eq!(flood.said(), format!("silent {silent} open"));

    let rounds = if long() { 1000 } else { 50 };
    let mut took = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let raw = broker.raw().await;
        took.push(start.elapsed());
        drop(raw);
    }
    took.sort();
    println!(
        "FIGURE: root connect+Hello under {silent} silent connections of nobody: p50 {:?}, p99 {:?}, max {:?} ({rounds} rounds)",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took[took.len() - 1]
    );
    // Nobody's connection past its allowance waits rather than is refused:
    // it is served once its silent connections close.
    flood.tell("close");
    assert_eq!(flood.said(), "extra hello OK");
}

/// Point 5 of issue #12: connections of nobody pipeline empty Pings and
/// never read (3 in CI with a 1 MiB bound, 30 with the defaults in the
/// long mode). Before, the backlog was counted in wire bytes (~10 per
/// Pong, hundreds in memory): the broker grew by ~117 MiB per connection
/// until each was cut off (3.59 GB for 30). Now the broker stops reading a
/// connection whose backlog is over half its bound: the writers stall,
/// nobody is cut off, and memory stays bounded.
#[tokio::test]
async fn clients_that_pipeline_and_never_read_stall_themselves() {
    if !is_root() {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    // Short: a 1 MiB bound (before the fix: cut off at ~15 MiB each).
    let args: &[&str] = if long() {
        &[]
    } else {
        &["--max-outbound-bytes", "1048576"]
    };
    let broker = broker_for_two_users(args);
    let before = rss_kib(broker.pid());
    let n = if long() { 30 } else { 3 };
    let mut flood = Flood::start(&broker, &format!("pipeline:{n}"));
    let said = flood.said();
    let after = rss_kib(broker.pid());
    println!(
        "FIGURE: broker RSS {} MiB before, {} MiB with {n} non-reading pipeliners of nobody ({said})",
        before / 1024,
        after / 1024
    );
    assert!(
        said.starts_with(&format!("pipeline {n} stalled, 0 cut off")),
        "every pipeliner stalls and none is cut off: {said}"
    );
    let grown_mib = after.saturating_sub(before) / 1024;
    let bound_mib = if long() { 30 * 8 } else { 30 };
    assert!(
        grown_mib < bound_mib,
        "{n} stalled connections grew the broker by {grown_mib} MiB"
    );
    // Root is served meanwhile.
    let mut raw = broker.raw().await;
    let r = raw
        .request(Body::Ping(v1::Ping {
            payload: bytes::Bytes::from_static(b"root"),
        }))
        .await;
    assert!(matches!(r, reply::Result::Pong(_)), "{r:?}");
}

/// Point 9 of issue #12: 1 000 publishes pipelined on one connection
/// without waiting. Past `--max-in-flight` awaiting their answers, the
/// broker stops reading the connection instead of refusing (it answered
/// RESOURCE_EXHAUSTED past 128 before): every one is stored and answered.
#[tokio::test]
async fn pipelined_publishes_past_max_in_flight_are_all_stored() {
    let count: u64 = 1000;
    let in_flight = if long() { "128" } else { "4" };
    let broker = spawn_broker_with(&["--max-in-flight", in_flight]);
    let raw = broker.raw().await;
    let (mut rx, mut tx) = raw.framed.into_inner().into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let mut buf = bytes::BytesMut::new();
        for id in 1..=count {
            turnstile_proto::encode_frame(
                &v1::ClientFrame {
                    id,
                    body: Some(Body::Publish(v1::Publish {
                        queue: "jobs".into(),
                        payload: format!("job {id}").into(),
                        headers: Default::default(),
                    })),
                },
                &mut buf,
            );
            if buf.len() > 64 << 10 {
                tx.write_all(&buf).await.expect("write publishes");
                buf.clear();
            }
        }
        tx.write_all(&buf).await.expect("write publishes");
        tx
    });
    let mut frames =
        tokio_util::codec::FramedRead::new(&mut rx, turnstile_proto::ClientCodec::new(64 << 20));
    let mut stored = 0u64;
    let mut refused = Vec::new();
    while stored + (refused.len() as u64) < count {
        let frame = tokio::time::timeout(PATIENCE, frames.next())
            .await
            .expect("an answer in time")
            .expect("the connection stays open")
            .expect("a valid frame");
        match frame.body {
            Some(server_frame::Body::Reply(v1::Reply {
                result: Some(reply::Result::Publish(_)),
                ..
            })) => stored += 1,
            Some(server_frame::Body::Reply(v1::Reply {
                id,
                result: Some(reply::Result::Error(e)),
            })) => refused.push((id, e.message)),
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = start.elapsed();
    let _tx = writer.await.expect("the writer finished");
    println!(
        "FIGURE: {count} pipelined publishes, --max-in-flight {in_flight}: {stored} stored, {} refused, in {elapsed:?}",
        refused.len()
    );
    assert!(
        refused.is_empty(),
        "{} refused, the first: {:?}",
        refused.len(),
        refused.first()
    );
    assert_eq!(stored, count);
}

/// Not a test of its own: the client run as nobody by the tests above.
#[tokio::test]
async fn nobody_role() {
    if std::env::var("TURNSTILE_TEST_ROLE").as_deref() != Ok("nobody") {
        return;
    }
    let socket = std::env::var("TURNSTILE_SOCKET").unwrap();
    let script = std::env::var("TURNSTILE_TEST_SCRIPT").unwrap();
    let (verb, n) = script.split_once(':').unwrap();
    let n: usize = n.parse().unwrap();
    match verb {
        "silent" => silent(&socket, n).await,
        "pipeline" => pipeline(&socket, n).await,
        other => panic!("unknown step {other}"),
    }
}

/// Opens `n` connections that never say Hello, then one that does; on
/// `close` closes the silent ones and reports whether the extra one was
/// answered.
async fn silent(socket: &str, n: usize) {
    let mut open = Vec::new();
    for _ in 0..n {
        open.push(Raw::connect_no_hello(socket).await);
    }
    // The extra connection's Hello is written now; its answer awaited later.
    let mut extra = Raw::connect_no_hello(socket).await;
    extra
        .send(v1::ClientFrame {
            id: 1,
            body: Some(Body::Hello(v1::Hello {
                protocol_version: 1,
                client_name: "extra".into(),
            })),
        })
        .await;
    println!("ROLE: silent {n} open");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(open);
    let verdict = match extra.next_frame().await {
        Some(server_frame::Body::Reply(v1::Reply {
            result: Some(reply::Result::Hello(_)),
            ..
        })) => "OK".to_string(),
        other => format!("{other:?}"),
    };
    println!("ROLE: extra hello {verdict}");
    let _ = std::io::stdin().lock().read_line(&mut line);
}

/// `n` connections that write empty Pings as fast as they can and never
/// read; reports how many stalled (a write that makes no progress for 3 s)
/// and how many were cut off (a failed write).
async fn pipeline(socket: &str, n: usize) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let raw = Raw::connect(socket).await;
        let stream = raw.framed.into_inner();
        tasks.push(tokio::spawn(async move {
            let (rx, mut tx) = stream.into_split();
            let mut buf = bytes::BytesMut::new();
            for id in 2..1002u64 {
                turnstile_proto::encode_frame(
                    &v1::ClientFrame {
                        id,
                        body: Some(Body::Ping(v1::Ping::default())),
                    },
                    &mut buf,
                );
            }
            let mut sent = 0u64;
            // A broker slowed by 30 connections is not a stall: only a
            // write that makes no progress for this long is.
            let patience = Duration::from_secs(if long() { 20 } else { 3 });
            let outcome = loop {
                match tokio::time::timeout(patience, tx.write_all(&buf)).await {
                    Ok(Ok(())) => sent += 1000,
                    Ok(Err(_)) => break "cut off",
                    Err(_) => break "stalled",
                }
            };
            (outcome, sent, rx, tx)
        }));
    }
    let mut stalled = 0;
    let mut cut_off = 0;
    let mut pings = 0;
    let mut keep = Vec::new();
    for t in tasks {
        let (outcome, sent, rx, tx) = t.await.unwrap();
        pings += sent;
        if outcome == "stalled" {
            stalled += 1;
        } else {
            cut_off += 1;
        }
        keep.push((rx, tx));
    }
    println!("ROLE: pipeline {stalled} stalled, {cut_off} cut off, {pings} pings written");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(keep);
}
