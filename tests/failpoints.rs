//! Faults injected into the real `turnstiled` (feature `failpoints`, set
//! with its `FAILPOINTS` environment variable; see `broker/src/store/mod.rs`):
//! the counter reservation's sync stalled while a block boundary is
//! crossed, its write failing, a publish's sync failing; and one fault
//! made from outside, with no failpoint: its log cut short while it is
//! down.
//!
//! Run with `cargo test --features failpoints --test failpoints` (CI does);
//! without the feature this file is not built (`required-features`).
//! Each test prints its figure on a `FIGURE:` line (`--nocapture`).
#![cfg(unix)]

mod support;

use std::time::{Duration, Instant};

use support::*;
use turnstile_client::proto::{self as v1, client_frame::Body, reply, server_frame};

/// A small counter block: the next reservation is written after 32
/// revisions or tokens, so a test crosses blocks in a few dozen grants.
const BLOCK: &str = "64";

fn broker_with_faults(failpoints: &str, args: &[&str]) -> Broker {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = start_in_env(tmp.path(), args, &[("FAILPOINTS", failpoints)]);
    b._tmp = Some(tmp);
    b
}

fn acquire_body(resource: &str, wait: v1::WaitPolicy) -> Body {
    Body::Acquire(v1::Acquire {
        resource: resource.into(),
        mode: v1::Mode::Exclusive as i32,
        ttl_ms: 60_000,
        wait: wait as i32,
        ..Default::default()
    })
}

fn publish_body(queue: &str, payload: &str) -> Body {
    Body::Publish(v1::Publish {
        queue: queue.into(),
        payload: payload.as_bytes().to_vec().into(),
        ..Default::default()
    })
}

/// Takes `resource` (waiting for the grant if it queues) and releases it;
/// returns the fencing token and whether the grant was held back (queued
/// although nobody held the resource).
async fn take_and_release(raw: &mut Raw, resource: &str) -> (u64, bool) {
    let r = raw
        .request(acquire_body(resource, v1::WaitPolicy::Queue))
        .await;
    let reply::Result::Acquire(v1::AcquireReply { outcome: Some(o) }) = r else {
        panic!("{r:?}")
    };
    let (lease, token, held_back) = match o {
        v1::acquire_reply::Outcome::Granted(g) => (g.lease_id, g.fencing_token, false),
        v1::acquire_reply::Outcome::Queued(q) => {
            let lease = q.lease_id;
            let token = raw
                .expect_push(|p| match p {
                    server_frame::Body::LeaseUpdate(v1::LeaseUpdate {
                        lease_id,
                        change: Some(v1::lease_update::Change::Granted(g)),
                    }) if *lease_id == lease => Some(g.fencing_token),
                    _ => None,
                })
                .await;
            (lease, token, true)
        }
    };
    let r = raw
        .request(Body::Release(v1::Release { lease_id: lease }))
        .await;
    assert!(matches!(r, reply::Result::Done(_)), "{r:?}");
    (token, held_back)
}

/// Pings from a connection of its own every 5 ms until told to stop;
/// answers every round trip.
fn pinger(
    broker: &Broker,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Vec<Duration>>,
) {
    let socket = broker.socket.clone();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut raw = Raw::connect(&socket).await;
        let mut rtt = Vec::new();
        loop {
            let t = Instant::now();
            let r = raw.request(Body::Ping(v1::Ping::default())).await;
            assert!(matches!(r, reply::Result::Pong(_)), "{r:?}");
            rtt.push(t.elapsed());
            tokio::select! {
                _ = &mut stopped => break rtt,
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    });
    (stop, task)
}

/// The reservation's sync stalls 3 s (every reservation after the one at
/// startup) while grants cross a block boundary: grants past the durable
/// mark wait for it, tokens stay strictly increasing, and the broker keeps
/// answering meanwhile, since the reservation is written off the core task
/// (before, the core task waited for it: pings froze for the whole stall).
#[tokio::test]
async fn ping_stays_fast_while_the_reservation_sync_stalls_at_a_block_boundary() {
    let broker = broker_with_faults(
        "store-reservation-fsync=1*off->sleep(3000)",
        &["--counter-block", BLOCK],
    );
    let (stop, pings) = pinger(&broker);
    let mut raw = broker.raw().await;
    let started = Instant::now();
    let mut tokens = Vec::new();
    let mut held_back = 0;
    // 70 grants: past the first block (64) while its successor's sync stalls.
    for _ in 0..70 {
        let (token, waited) = take_and_release(&mut raw, "job").await;
        tokens.push(token);
        held_back += usize::from(waited);
    }
    let took = started.elapsed();
    let _ = stop.send(());
    let rtt = pings.await.expect("the pinger");
    let max = rtt.iter().max().copied().unwrap_or_default();
    println!(
        "FIGURE: reservation sync stalled 3 s at a block boundary: {} pings, max {max:?}; 70 grants took {took:?}, {held_back} held back for the reservation",
        rtt.len()
    );
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert!(
        tokens.iter().any(|t| *t > 64),
        "the block boundary was crossed: {tokens:?}"
    );
    assert!(held_back > 0, "a grant waited for the stalled reservation");
    assert!(
        took >= Duration::from_secs(2),
        "the stall was in force: {took:?}"
    );
    // A ping waiting on the stalled sync would take ~3 s: the bound is the
    // outcome (the core task did not wait), not a speed.
    assert!(max < Duration::from_secs(2), "ping max {max:?}");
}

/// The reservation cannot be written (three failures, then it clears):
/// grants stop at the durable mark (a NO_WAIT request is told why, a
/// queueing one waits), the log says so loudly, and grants resume when the
/// write succeeds, with the next token.
#[tokio::test]
async fn grants_stop_while_the_reservation_cannot_be_written_and_resume() {
    let broker = broker_with_faults(
        "store-reservation-write=1*off->3*return->off",
        &["--counter-block", BLOCK],
    );
    let mut raw = broker.raw().await;
    let mut tokens = Vec::new();
    let mut no_wait_refused = None;
    for _ in 0..70 {
        // Once grants are held back, NO_WAIT gets a clear BUSY.
        if tokens.last() == Some(&64) && no_wait_refused.is_none() {
            let r = raw
                .request(acquire_body("other", v1::WaitPolicy::NoWait))
                .await;
            no_wait_refused = Some(r);
        }
        let (token, _) = take_and_release(&mut raw, "job").await;
        tokens.push(token);
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert_eq!(tokens[64], 65, "the next token after the mark: {tokens:?}");
    let log = broker.log_text();
    assert!(
        log.contains("could not be stored") && log.contains("grants resume"),
        "{log}"
    );
    match no_wait_refused {
        Some(reply::Result::Error(e)) => {
            assert_eq!(e.code, v1::ErrorCode::Busy as i32, "{e:?}");
            assert!(e.message.contains("held back"), "{e:?}");
        }
        // The write fails for ~0.7 s (retried after 0.1, 0.2, 0.4 s): the
        // 64 grants before the mark take milliseconds.
        other => panic!("NO_WAIT while grants are held back: {other:?}"),
    }
}

/// The reservation never gets written: no token above the durable mark is
/// ever handed out, so after a SIGKILL and a restart (without faults) the
/// next token is above every token handed out.
#[tokio::test]
async fn no_token_is_handed_out_uncovered_when_the_reservation_fails_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = start_in_env(
        tmp.path(),
        &["--counter-block", BLOCK],
        &[("FAILPOINTS", "store-reservation-write=1*off->return")],
    );
    let mut raw = broker.raw().await;
    let mut highest = 0;
    let mut stuck = None;
    for _ in 0..70 {
        let r = raw
            .request(acquire_body("job", v1::WaitPolicy::Queue))
            .await;
        match r {
            reply::Result::Acquire(v1::AcquireReply {
                outcome: Some(v1::acquire_reply::Outcome::Granted(g)),
            }) => {
                highest = highest.max(g.fencing_token);
                let r = raw
                    .request(Body::Release(v1::Release {
                        lease_id: g.lease_id,
                    }))
                    .await;
                assert!(matches!(r, reply::Result::Done(_)), "{r:?}");
            }
            reply::Result::Acquire(v1::AcquireReply {
                outcome: Some(v1::acquire_reply::Outcome::Queued(q)),
            }) => {
                stuck = Some(q.lease_id);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(stuck.is_some(), "grants stopped at the mark");
    assert_eq!(highest, 64, "tokens up to the durable mark only");
    // Still held back a while later (the write keeps failing): no grant.
    let late = tokio::time::timeout(Duration::from_millis(500), raw.next_frame()).await;
    assert!(late.is_err(), "nothing granted: {late:?}");
    broker.kill();
    let broker = start_in(tmp.path(), &["--counter-block", BLOCK]);
    let mut raw = broker.raw().await;
    let (token, _) = take_and_release(&mut raw, "job").await;
    println!(
        "FIGURE: reservation write failing for good: highest token handed out {highest}, first after restart {token}"
    );
    assert!(token > highest, "{token} after {highest}");
}

/// A publish's sync fails: the publisher is told the outcome is unknown,
/// the store takes no more writes (a later publish is refused, saying so),
/// leases and watches keep working; after a restart the message, which
/// was written, is there.
#[tokio::test]
async fn a_failed_publish_sync_is_outcome_unknown_and_leases_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = start_in_env(
        tmp.path(),
        &[],
        &[("FAILPOINTS", "store-publish-commit=return")],
    );
    let mut raw = broker.raw().await;
    let publish = |payload: &str| publish_body("notices", payload);
    let r = raw.request(publish("first")).await;
    let reply::Result::Error(e) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.code, v1::ErrorCode::Internal as i32, "{e:?}");
    assert!(e.message.contains("unknown"), "{e:?}");
    let r = raw.request(publish("second")).await;
    let reply::Result::Error(e) = r else {
        panic!("{r:?}")
    };
    assert!(e.message.contains("no more writes"), "{e:?}");

    // Leases and watches are not the store's: they go on.
    let mut watcher = broker.raw().await;
    let r = watcher
        .request(Body::Watch(v1::Watch {
            resources: vec!["job".into()],
            start_revision: 0,
        }))
        .await;
    assert!(matches!(r, reply::Result::Watch(_)), "{r:?}");
    let (token, _) = take_and_release(&mut raw, "job").await;
    assert!(token > 0);
    let kind = watcher
        .expect_push(|p| match p {
            server_frame::Body::WatchEvent(e) => Some(e.kind),
            _ => None,
        })
        .await;
    assert_eq!(kind, v1::EventKind::Granted as i32);
    assert!(
        broker
            .log_text()
            .contains("writes are refused until the broker restarts")
    );

    broker.kill();
    let broker = start_in(tmp.path(), &[]);
    let mut raw = broker.raw().await;
    let r = raw
        .request(Body::Consume(v1::Consume {
            queue: "notices".into(),
            prefetch: 1,
        }))
        .await;
    assert!(matches!(r, reply::Result::Consume(_)), "{r:?}");
    let payload = raw
        .expect_push(|p| match p {
            server_frame::Body::Delivery(d) => Some(d.payload.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        &payload[..],
        b"first",
        "the unknown outcome was a stored message"
    );
}

/// Waits until the broker's log contains `text` `times` times.
#[track_caller]
fn wait_for_log(broker: &Broker, text: &str, times: usize) {
    let start = Instant::now();
    while broker.log_text().matches(text).count() < times {
        assert!(
            start.elapsed() < PATIENCE,
            "{text:?} not logged {times} times; log:\n{}",
            broker.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The broker is SIGKILLed in the middle of a checkpoint of its log into
/// redb, while publishes flood in: before the redb transaction
/// (`store-checkpoint-apply`) and after it, before the log starts afresh
/// (`store-checkpoint-done`). After the restart every confirmed message is
/// stored, none twice (the records redb already holds are not replayed).
#[test]
fn a_kill_during_a_checkpoint_loses_nothing() {
    for (point, line) in [
        ("store-checkpoint-apply", "store checkpoint: applying"),
        ("store-checkpoint-done", "is in redb"),
    ] {
        // The first checkpoint is the one at startup: let it pass.
        let failpoints = format!("{point}=1*off->sleep(60000)");
        let mut broker = broker_with_faults(&failpoints, &["--max-queue-bytes", "1073741824"]);
        let dir = broker.dir.clone();
        let _dir = broker._tmp.take();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pid = broker.pid();
        let log = broker.log.clone();
        // 32 KiB messages pass the log's checkpoint size (4 MiB) after
        // about 130; the kill comes once the checkpoint is under way.
        let confirmed = rt.block_on(support::flood::flood_and_kill(
            &broker,
            "big",
            2,
            32 * 1024,
            8,
            1,
            |_| {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.matches(line).count() < 2 {
                    return false;
                }
                signal(pid, libc::SIGKILL);
                true
            },
        ));
        let _ = broker.child.wait();
        wait_for_log(&broker, line, 2);
        assert!(
            confirmed.len() >= 100,
            "{point}: {} confirmed",
            confirmed.len()
        );
        let broker = start_in(&dir, &["--max-queue-bytes", "1073741824"]);
        let stored = rt.block_on(support::flood::check_stored_once(
            &broker, "big", &confirmed,
        ));
        println!(
            "FIGURE: killed at {point}: {} publishes confirmed, {stored} stored after restart",
            confirmed.len()
        );
    }
}

/// Acks are answered only once their removal is durable: acks sent with a
/// publish whose sync fails (the store then takes no more writes) are all
/// answered with an error, never Done, whether they shared the failed
/// commit (their outcome is then unknown, like the publish's) or came
/// after it; an ack refused after it leaves its message to be delivered
/// again after a restart.
#[tokio::test]
async fn acks_whose_commit_fails_are_answered_with_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    // The first three commits with a publish pass; the fourth's sync fails.
    let mut broker = start_in_env(
        tmp.path(),
        &[],
        &[("FAILPOINTS", "store-publish-commit=3*off->return")],
    );
    let mut raw = broker.raw().await;
    let publish = |payload: &str| publish_body("acked", payload);
    for payload in ["a", "b", "c"] {
        let r = raw.request(publish(payload)).await;
        assert!(matches!(r, reply::Result::Publish(_)), "{r:?}");
    }
    let r = raw
        .request(Body::Consume(v1::Consume {
            queue: "acked".into(),
            prefetch: 8,
        }))
        .await;
    assert!(matches!(r, reply::Result::Consume(_)), "{r:?}");
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        deliveries.push(
            raw.expect_push(|p| match p {
                server_frame::Body::Delivery(d) => Some(d.delivery_id),
                _ => None,
            })
            .await,
        );
    }
    // One write: the publish whose sync fails, then two acks, which are
    // committed with it or after it.
    let ack = |id: u64, delivery_id: u64| v1::ClientFrame {
        id,
        body: Some(Body::Ack(v1::Ack { delivery_id })),
    };
    let mut bytes = encode(&v1::ClientFrame {
        id: 101,
        body: Some(publish("poison")),
    });
    bytes.extend_from_slice(&encode(&ack(100, deliveries[0])));
    bytes.extend_from_slice(&encode(&ack(102, deliveries[1])));
    raw.send_bytes(&bytes).await;
    let mut answered = std::collections::BTreeMap::new();
    while answered.len() < 3 {
        match raw.next_frame().await {
            Some(server_frame::Body::Reply(v1::Reply {
                id,
                result: Some(r),
            })) => {
                assert!(answered.insert(id, r).is_none(), "{id} answered twice");
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("the broker closed the connection"),
        }
    }
    // After the failure: refused, nothing written.
    let refused = raw
        .request(Body::Ack(v1::Ack {
            delivery_id: deliveries[2],
        }))
        .await;
    answered.insert(103, refused);
    for id in [100, 102, 103] {
        let r = &answered[&id];
        let reply::Result::Error(e) = r else {
            panic!("ack {id} answered {r:?} though its removal was not stored")
        };
        assert_eq!(e.code, v1::ErrorCode::Internal as i32, "{e:?}");
    }
    assert!(
        matches!(answered[&101], reply::Result::Error(_)),
        "{answered:?}"
    );

    broker.kill();
    let broker = start_in(tmp.path(), &[]);
    let mut raw = broker.raw().await;
    let r = raw
        .request(Body::Consume(v1::Consume {
            queue: "acked".into(),
            prefetch: 8,
        }))
        .await;
    assert!(matches!(r, reply::Result::Consume(_)), "{r:?}");
    // "a" and "b" may be gone (their acks shared the failed commit, whose
    // record may have reached the disk); "c", the last, is there.
    loop {
        let payload = raw
            .expect_push(|p| match p {
                server_frame::Body::Delivery(d) => Some(d.payload.clone()),
                _ => None,
            })
            .await;
        if &payload[..] == b"c" {
            break;
        }
    }
}

/// The log is cut short while the broker is down (an operator's
/// `truncate`, a bad copy or restore), after a SIGKILL left acknowledged
/// publishes and the counters' reservation in it alone (no checkpoint
/// yet): the restarted broker refuses to start, with exit code 73 and a
/// message naming `turnstile.wal` and saying it was truncated, and leaves
/// the file as it was. (It used to start without those publishes, and
/// handed out the same fencing tokens again.)
#[tokio::test]
async fn a_log_cut_short_after_a_kill_stops_the_broker_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = start_in(tmp.path(), &[]);
    let client = broker.client("publisher").await;
    for i in 0..5 {
        client
            .publish("kept", format!("m{i}").into_bytes(), &[])
            .await
            .expect("publish");
    }
    let mut raw = broker.raw().await;
    let (token, _) = take_and_release(&mut raw, "job").await;
    drop((client, raw));
    broker.kill();
    let wal = broker.data_dir.join("turnstile.wal");
    let made = std::fs::metadata(&wal).unwrap().len();
    let cut = made / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let mut restarted = start_in_no_wait(tmp.path(), &[], None);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = restarted.child.try_wait().unwrap() {
            break status;
        }
        // Not a connect: the socket listens before the store opens (a
        // second broker on a live socket is told so first), and a
        // connection made meanwhile is reset when the broker stops.
        if restarted.log_text().contains("turnstiled ready") {
            let client = restarted.client("observer").await;
            let status = client.status(&[]).await.expect("status");
            let mut raw = restarted.raw().await;
            let (again, _) = take_and_release(&mut raw, "job").await;
            panic!(
                "the broker started over a log cut from {made} to {cut} bytes: queues {:?} \
                 (5 acknowledged in \"kept\"), fencing token {again} after {token}",
                status.queues
            );
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the broker neither started nor stopped"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let log = restarted.log_text();
    assert_eq!(status.code(), Some(73), "log:\n{log}");
    assert!(log.contains(&wal.display().to_string()), "{log}");
    assert!(log.contains("truncated"), "{log}");
    assert!(log.contains(&format!("made at {made} bytes")), "{log}");
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), cut, "left as it is");
}

/// Found in review: a connection that goes while a request of its waits
/// for an answer in flight says goodbye only when the answer comes back
/// (`pending_goodbye`). What it held of its uid's
/// `--max-outbound-bytes-per-uid` was let go then, but the uid's other
/// connections that waited for that room were not resumed: their requests
/// waited for some other write of that uid, here for ever.
///
/// Nobody's connection A watches 256 names and publishes (each sync
/// stalls 3 s; `--max-in-flight 2`); C asks for statuses it never reads,
/// so the uid is over its 32 KiB and A's second publish waits; root takes
/// the 256 names, whose events A never reads either; C goes, but A holds
/// the uid over, so B's Ping waits. Then A goes: its second publish is
/// started and its goodbye waits for both. Once they are stored, B's Ping
/// is answered (before the fix: not within 15 s).
#[tokio::test]
async fn a_users_connection_that_goes_with_answers_in_flight_lets_its_other_connections_go_on() {
    if !can_run_as_nobody() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut broker = start_in_env(
        tmp.path(),
        &[
            "--max-outbound-bytes-per-uid",
            "32768",
            "--max-in-flight",
            "2",
        ],
        &[("FAILPOINTS", "store-publish-commit=sleep(3000)")],
    );
    broker._tmp = Some(tmp);
    // Root's leases, with long purposes: a status of them is ~330 KiB.
    let _held = hold_many(&broker.socket, 300, 1000).await;
    let mut role = RoleProcess::as_nobody(&broker, "uid_waiter_role", &[]);
    assert_eq!(role.said(), "A's second publish waits");
    let mut root = broker.raw().await;
    for i in 0..256 {
        let r = root
            .request(Body::Acquire(v1::Acquire {
                resource: format!("watched-{i}"),
                mode: v1::Mode::Shared as i32,
                wait: v1::WaitPolicy::NoWait as i32,
                purpose: "p".repeat(1000),
                ..Default::default()
            }))
            .await;
        assert!(matches!(r, reply::Result::Acquire(_)), "{r:?}");
    }
    role.tell("events sent");
    assert_eq!(role.said(), "B's ping waits");
    role.tell("close A");
    assert_eq!(role.said(), "pong");
}

/// Not a test of its own: nobody's connections in the test above.
#[tokio::test]
async fn uid_waiter_role() {
    use tokio::io::AsyncWriteExt;
    if std::env::var("TURNSTILE_TEST_ROLE").as_deref() != Ok("nobody") {
        return;
    }
    let publish = |id| v1::ClientFrame {
        id,
        body: Some(publish_body("jobs", "stalled")),
    };
    let socket = std::env::var("TURNSTILE_SOCKET").unwrap();
    let mut b = Raw::connect(&socket).await;
    let mut a = Raw::connect(&socket).await;
    let r = a
        .request(Body::Watch(v1::Watch {
            resources: (0..256).map(|i| format!("watched-{i}")).collect(),
            start_revision: 0,
        }))
        .await;
    assert!(matches!(r, reply::Result::Watch(_)), "{r:?}");
    a.send(publish(100)).await;
    let c = Raw::connect(&socket).await.framed.into_inner();
    let c = tokio::spawn(async move {
        let mut buf = bytes::BytesMut::new();
        for id in 2..6u64 {
            let body = Body::GetStatus(v1::GetStatus::default());
            turnstile_proto::encode_frame(
                &v1::ClientFrame {
                    id,
                    body: Some(body),
                },
                &mut buf,
            );
        }
        let mut stream = c;
        stream.write_all(&buf).await.expect("write the requests");
        // Held open, unread, until aborted.
        std::future::pending::<()>().await;
        drop(stream);
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.send(publish(101)).await;
    println!("ROLE: A's second publish waits");
    next_command().await;
    c.abort();
    let _ = c.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ping = v1::ClientFrame {
        id: 100,
        body: Some(Body::Ping(v1::Ping::default())),
    };
    b.send(ping).await;
    let early = tokio::time::timeout(Duration::from_millis(500), b.next_frame()).await;
    assert!(early.is_err(), "answered while the uid was over: {early:?}");
    println!("ROLE: B's ping waits");
    next_command().await;
    drop(a);
    let verdict = match tokio::time::timeout(Duration::from_secs(15), b.next_frame()).await {
        Ok(Some(server_frame::Body::Reply(v1::Reply {
            result: Some(reply::Result::Pong(_)),
            ..
        }))) => "pong".to_string(),
        other => format!("{other:?}"),
    };
    println!("ROLE: {verdict}");
}
