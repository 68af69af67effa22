//! Message queues end to end: durable publishes that survive a SIGKILL of
//! the broker, redelivery after a consumer process dies, dead-lettering,
//! limits, fencing tokens across a restart, the CLI, and a corrupt store.
//!
//! Throughput is measured by the ignored `throughput` test:
//! `cargo test --release --test queues -- --ignored --nocapture throughput`.
//!
//! Unix only: it uses signals, socket files and raw Unix sockets
//! (`tests/portable.rs` holds the tests every platform runs).
#![cfg(unix)]

mod support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prost::Message as _;
use support::*;
use turnstile_client::proto::{self as v1, ErrorCode, client_frame::Body, reply, server_frame};
use turnstile_client::{Client, Consumer, Delivery};

/// The next delivery of `consumer`, within [`PATIENCE`].
async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    match tokio::time::timeout(PATIENCE, consumer.next()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("the connection closed while waiting for a delivery"),
        Err(_) => panic!("no delivery within {PATIENCE:?}"),
    }
}

/// Publishes `prefix0`, `prefix1`, ... (`n` messages) to `queue`, 64 in
/// flight; their sequence numbers, in order.
async fn publish_many(publisher: &Client, queue: &str, prefix: &str, n: usize) -> Vec<u64> {
    futures::stream::iter(0..n)
        .map(|i| {
            let p = publisher.clone();
            let payload = format!("{prefix}{i}");
            async move { p.publish(queue, payload, &[]).await.unwrap() }
        })
        .buffered(64)
        .collect()
        .await
}

/// The counts of `queue`, if the broker lists it.
async fn queue_info(client: &Client, queue: &str) -> Option<v1::QueueInfo> {
    let status = client.status(&[]).await.expect("status");
    status.queues.into_iter().find(|q| q.queue == queue)
}

/// Waits until `queue`'s counts satisfy `ok`.
async fn wait_for_queue(client: &Client, queue: &str, ok: impl Fn(Option<&v1::QueueInfo>) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info = queue_info(client, queue).await;
        if ok(info.as_ref()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue {queue} never reached the expected state; last: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The error code of a client error.
#[track_caller]
fn code_of<T: std::fmt::Debug>(r: Result<T, turnstile_client::ClientError>) -> ErrorCode {
    match r {
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("not a broker refusal: {e}")),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

/// The durability test: 1 000 messages published (each answered
/// only once durable), 300 of them consumed and acknowledged, the broker
/// SIGKILLed at once and restarted on the same data directory: every one
/// of the 1 000 is consumed in the end. Acknowledgements the kill beat to
/// the disk may come back as duplicates (at least once); none may be
/// missing.
#[tokio::test]
async fn a_thousand_messages_survive_a_sigkill_of_the_broker() {
    let mut broker = spawn_broker();
    let publisher = broker.client("publisher").await;
    let seqs = publish_many(&publisher, "jobs", "msg-", 1000).await;
    let distinct: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), 1000, "every publish has its own seq");

    let mut received: HashMap<String, u32> = HashMap::new();
    let consumer_client = broker.client("consumer").await;
    let mut consumer = consumer_client.consume("jobs", 32).await.unwrap();
    for _ in 0..300 {
        let d = next_delivery(&mut consumer).await;
        *received
            .entry(String::from_utf8(d.payload().to_vec()).unwrap())
            .or_default() += 1;
        d.ack().await.unwrap();
    }
    broker.kill();

    let broker = start_in(&broker.dir.clone(), &[]);
    let consumer_client = broker.client("consumer").await;
    let mut consumer = consumer_client.consume("jobs", 64).await.unwrap();
    while received.len() < 1000 {
        let d = next_delivery(&mut consumer).await;
        *received
            .entry(String::from_utf8(d.payload().to_vec()).unwrap())
            .or_default() += 1;
        d.ack().await.unwrap();
    }
    // Whatever else comes (duplicates) is counted too, until it is quiet.
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await
    {
        *received
            .entry(String::from_utf8(d.payload().to_vec()).unwrap())
            .or_default() += 1;
        d.ack().await.unwrap();
    }
    let missing: Vec<usize> = (0..1000)
        .filter(|i| !received.contains_key(&format!("msg-{i}")))
        .collect();
    assert!(missing.is_empty(), "missing after the restart: {missing:?}");
    assert_eq!(received.len(), 1000, "only the published messages");
    let duplicates: u32 = received.values().map(|n| n - 1).sum();
    println!("1000 messages, 300 acknowledged before the SIGKILL: {duplicates} duplicates");
    assert!(
        duplicates <= 300,
        "only acknowledged messages may come back"
    );
    wait_for_queue(&consumer_client, "jobs", |q| {
        q.is_some_and(|q| q.ready == 0 && q.unacked == 0)
    })
    .await;
}

/// A consumer process SIGKILLed with three unacknowledged deliveries: the
/// kernel closes its socket, and another consumer gets the three, in
/// order, each with a higher attempt.
#[tokio::test]
async fn a_killed_consumers_deliveries_go_to_another_consumer_with_a_higher_attempt() {
    let broker = spawn_broker();
    let client = broker.client("publisher").await;
    for i in 0..3 {
        client
            .publish("work", format!("job {i}"), &[])
            .await
            .unwrap();
    }
    let mut victim = broker.cli_spawn(&["queue", "consume", "work", "--no-ack"]);
    // Killed once it has printed the three (a delivery goes out once its
    // attempt is stored, so the broker counts it unacknowledged a moment
    // before the consumer has it).
    let out = victim.stdout.take().expect("the victim's stdout");
    let printed = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(out)
            .lines()
            .take(3)
            .map(|l| l.expect("a line"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(printed.len(), 3, "the victim saw them: {printed:?}");
    signal(victim.id() as i32, libc::SIGKILL);
    let _ = victim.wait();

    let mut heir = client.consume("work", 0).await.unwrap();
    for i in 0..3 {
        let d = next_delivery(&mut heir).await;
        assert_eq!(d.payload().as_ref(), format!("job {i}").as_bytes());
        assert_eq!(d.attempt(), 2, "delivered once to the victim");
        d.ack().await.unwrap();
    }
    wait_for_queue(&client, "work", |q| {
        q.is_some_and(|q| q.ready == 0 && q.unacked == 0)
    })
    .await;
}

/// Fencing tokens and revisions never go backwards: after a SIGKILL and a
/// restart on the same data, a new grant's token is above every token
/// handed out before, and the revision above every earlier one.
#[tokio::test]
async fn fencing_tokens_after_a_restart_are_above_every_earlier_one() {
    let mut broker = spawn_broker();
    let client = broker.client("service").await;
    let mut highest = 0;
    for resource in ["pcm", "pcm", "disk", "pcm"] {
        let lease = client.acquire(resource).wait().await.unwrap();
        assert!(lease.fencing_token() > highest);
        highest = lease.fencing_token();
        lease.release().await.unwrap();
    }
    let revision = client.status(&[]).await.unwrap().revision;
    broker.kill();

    let broker = start_in(&broker.dir.clone(), &[]);
    let client = broker.client("service").await;
    let before = client.status(&[]).await.unwrap().revision;
    assert!(before > revision, "revision {before} after {revision}");
    for resource in ["pcm", "disk"] {
        let lease = client.acquire(resource).wait().await.unwrap();
        assert!(
            lease.fencing_token() > highest,
            "token {} after the restart, {highest} before",
            lease.fencing_token()
        );
        lease.release().await.unwrap();
    }
}

/// A message whose delivery would not fit in a frame is refused with
/// FRAME_TOO_LARGE on its request, and the connection goes on; a frame over
/// the limit closes only its own connection. Nothing is stored either way.
#[tokio::test]
async fn an_oversized_payload_is_refused_and_the_broker_keeps_serving() {
    const LIMIT: usize = 64 * 1024;
    let broker = spawn_broker_with(&["--max-frame-bytes", "65536"]);
    let mut raw = broker.raw().await;

    // A Publish frame just under the limit: its Delivery would be over it.
    let mut payload_len = LIMIT;
    let frame = loop {
        let frame = v1::ClientFrame {
            id: 100,
            body: Some(Body::Publish(v1::Publish {
                queue: "big".into(),
                payload: vec![7u8; payload_len].into(),
                headers: Default::default(),
            })),
        };
        if frame.encoded_len() < LIMIT {
            break frame;
        }
        payload_len -= 1;
    };
    raw.send(frame).await;
    match raw.next_frame().await {
        Some(server_frame::Body::Reply(v1::Reply {
            id: 100,
            result: Some(reply::Result::Error(e)),
        })) => {
            assert_eq!(e.code, ErrorCode::FrameTooLarge as i32, "{e:?}");
            assert!(e.message.contains("frame limit"), "{}", e.message);
        }
        other => panic!("expected FRAME_TOO_LARGE on request 100, got {other:?}"),
    }
    let pong = raw
        .request(Body::Ping(v1::Ping {
            payload: "still here".into(),
        }))
        .await;
    assert!(matches!(pong, reply::Result::Pong(_)), "{pong:?}");
    let small = raw
        .request(Body::Publish(v1::Publish {
            queue: "big".into(),
            payload: vec![1u8; 1000].into(),
            headers: Default::default(),
        }))
        .await;
    assert!(matches!(small, reply::Result::Publish(_)), "{small:?}");

    // Over the frame limit: the codec refuses the frame and closes.
    raw.send_bytes(&encode(&v1::ClientFrame {
        id: 101,
        body: Some(Body::Publish(v1::Publish {
            queue: "big".into(),
            payload: vec![7u8; LIMIT + 1].into(),
            headers: Default::default(),
        })),
    }))
    .await;
    let fatal = raw.expect_fatal().await;
    assert_eq!(fatal.code, ErrorCode::FrameTooLarge as i32);

    let client = broker.client("after").await;
    client.ping("ok").await.unwrap();
    let info = queue_info(&client, "big").await.unwrap();
    assert_eq!(info.ready, 1, "only the small message was stored");
}

/// Through the client library, a request over the broker's frame limit is
/// refused before it is sent: the connection and its leases live on (the
/// broker would have closed the connection, ending the leases).
#[tokio::test]
async fn the_client_refuses_a_request_over_the_frame_limit_and_keeps_its_leases() {
    let broker = spawn_broker_with(&["--max-frame-bytes", "65536"]);
    let client = broker.client("agent").await;
    let lease = client.acquire("held").wait().await.unwrap();
    let e = client
        .publish("big", vec![7u8; 70_000], &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::FrameTooLarge), "{e}");
    assert!(e.to_string().contains("65536"), "{e}");
    let e = client.ping(vec![0u8; 70_000]).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::FrameTooLarge), "{e}");
    // The connection serves, the lease is held, nothing was stored.
    client.ping("still here").await.unwrap();
    let status = client.status(&["held".to_string()]).await.unwrap();
    assert_eq!(status.resources[0].holders[0].lease_id, lease.id());
    assert!(queue_info(&client, "big").await.is_none());
    // A Hello no broker takes (a client name of megabytes) is not sent.
    let name = "x".repeat(2 << 20);
    let e = turnstile_client::Client::connect(
        turnstile_client::ConnectOptions::new(&name).socket(&broker.socket),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e.code(), Some(ErrorCode::FrameTooLarge), "{e}");
    lease.release().await.unwrap();
}

/// With `--max-delivery-attempts 2`, a message handed back twice moves to
/// `QUEUE.dead`, where `turnstile queue ls` shows it and a consumer finds
/// it with the headers saying where it failed.
#[tokio::test]
async fn a_message_out_of_attempts_moves_to_the_dead_letter_queue() {
    let broker = spawn_broker_with(&["--max-delivery-attempts", "2"]);
    let client = broker.client("agent").await;
    let seq = client
        .publish("notices", "poison", &[("job", "7")])
        .await
        .unwrap();
    let mut consumer = client.consume("notices", 1).await.unwrap();
    let first = next_delivery(&mut consumer).await;
    assert_eq!(first.attempt(), 1);
    first.nack(true).await.unwrap();
    let second = next_delivery(&mut consumer).await;
    assert_eq!((second.seq(), second.attempt()), (seq, 2));
    second.nack(true).await.unwrap();

    wait_for_queue(&client, "notices.dead", |q| q.is_some_and(|q| q.ready == 1)).await;
    let (code, out, err) = broker.cli(&["queue", "ls"]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("notices.dead "))
        .unwrap_or_else(|| panic!("no dead-letter queue in:\n{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, ["notices.dead", "1", "0", "0"], "{out}");
    let (code, out, _) = broker.cli(&["--json", "queue", "ls"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dead = list
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "notices.dead")
        .unwrap();
    assert_eq!(dead["ready"], 1);

    let mut morgue = client.consume("notices.dead", 0).await.unwrap();
    let dead = next_delivery(&mut morgue).await;
    assert_eq!(dead.payload().as_ref(), b"poison");
    assert_eq!(dead.headers()["job"], "7");
    assert_eq!(dead.headers()["turnstile-dead-letter-queue"], "notices");
    assert_eq!(dead.headers()["turnstile-dead-letter-seq"], seq.to_string());
    assert!(dead.seq() > seq);
    dead.ack().await.unwrap();
}

/// The CLI round trip: publish from an argument (with headers) and from
/// stdin (binary), then consume both as JSON, acknowledged.
#[tokio::test]
async fn the_cli_publishes_and_consumes() {
    let broker = spawn_broker();
    let (code, out, err) = broker.cli(&[
        "queue",
        "publish",
        "notices",
        "package 42 is pending",
        "-H",
        "job=42",
        "-H",
        "kind=install",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("published to notices: seq "), "{out}");

    let mut child = Command::new(turnstile_cli())
        .arg("--socket")
        .arg(&broker.socket)
        .args(["--json", "queue", "publish", "notices"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&[0xff, 0, 1])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let published: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(published["queue"], "notices");

    let (code, out, err) = broker.cli(&["--json", "queue", "consume", "notices", "--count", "2"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["payload"], "package 42 is pending");
    assert_eq!(lines[0]["payload_encoding"], "utf-8");
    assert_eq!(lines[0]["headers"]["job"], "42");
    assert_eq!(lines[0]["headers"]["kind"], "install");
    assert_eq!(lines[0]["attempt"], 1);
    assert_eq!(lines[1]["payload"], "/wAB");
    assert_eq!(lines[1]["payload_encoding"], "base64");
    assert_eq!(lines[1]["seq"], published["seq"]);

    // Acknowledged: nothing is left.
    let client = broker.client("observer").await;
    wait_for_queue(&client, "notices", |q| q.is_none()).await;
    let (code, out, _) = broker.cli(&["queue", "ls"]);
    assert_eq!(code, 0);
    assert!(!out.contains("notices"), "{out}");
}

/// A store file that is not a turnstile store stops `turnstiled` before it
/// binds its socket, with exit code 73 and a message naming the file; the
/// file is left as it was.
#[test]
fn a_corrupt_data_file_stops_the_broker_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join("turnstile.redb");
    let garbage = vec![0x5a; 64 * 1024];
    std::fs::write(&file, &garbage).unwrap();

    let mut broker = start_in_no_wait(tmp.path(), &[], None);
    let status = broker.wait_exit();
    assert_eq!(status.code(), Some(73), "log:\n{}", broker.log_text());
    let log = broker.log_text();
    assert!(log.contains(&file.display().to_string()), "{log}");
    assert!(log.contains("corrupt"), "{log}");
    assert!(!broker.socket.exists(), "the socket was never bound");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        garbage,
        "the file is untouched"
    );
}

/// Refusals answered on their request: a bad queue name, a full queue, an
/// unknown delivery, another connection's delivery; a consumer gets no more
/// than its prefetch until it acknowledges.
#[tokio::test]
async fn refusals_and_the_prefetch_window() {
    let broker = spawn_broker_with(&["--max-queue-depth", "3"]);
    let client = broker.client("svc").await;
    assert_eq!(
        code_of(client.publish("bad\nname", "x", &[]).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code_of(client.publish("", "x", &[]).await),
        ErrorCode::InvalidArgument
    );
    for i in 0..3 {
        client.publish("small", format!("{i}"), &[]).await.unwrap();
    }
    assert_eq!(
        code_of(client.publish("small", "one too many", &[]).await),
        ErrorCode::ResourceExhausted
    );

    let mut consumer = client.consume("small", 2).await.unwrap();
    let first = next_delivery(&mut consumer).await;
    let second = next_delivery(&mut consumer).await;
    assert_eq!((first.attempt(), second.attempt()), (1, 1));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), consumer.next())
            .await
            .is_err(),
        "a third delivery beyond the prefetch of 2"
    );
    let info = queue_info(&client, "small").await.unwrap();
    assert_eq!((info.ready, info.unacked, info.consumers), (1, 2, 1));

    let mut other = broker.raw().await;
    let stolen = other
        .request(Body::Ack(v1::Ack {
            delivery_id: first.delivery_id(),
        }))
        .await;
    assert_eq!(error_code(&stolen), Some(ErrorCode::PermissionDenied));
    let unknown = other
        .request(Body::Ack(v1::Ack {
            delivery_id: 999_999,
        }))
        .await;
    assert_eq!(error_code(&unknown), Some(ErrorCode::NotFound));
    let nack_unknown = other
        .request(Body::Nack(v1::Nack {
            delivery_id: 999_999,
            requeue: true,
        }))
        .await;
    assert_eq!(error_code(&nack_unknown), Some(ErrorCode::NotFound));

    first.ack().await.unwrap();
    let third = next_delivery(&mut consumer).await;
    assert_eq!(third.payload().as_ref(), b"2");
    // Nack without requeue drops the message.
    second.nack(false).await.unwrap();
    third.ack().await.unwrap();
    wait_for_queue(&client, "small", |q| {
        q.is_some_and(|q| q.ready == 0 && q.unacked == 0)
    })
    .await;
}

/// Two publishes in flight with one request id on one connection: the
/// second is refused (its answer could not be told apart), the first is
/// answered once stored. A publish whose connection closes before it is
/// stored is completed all the same.
#[tokio::test]
async fn duplicate_publish_ids_are_refused_and_orphaned_publishes_complete() {
    let broker = spawn_broker();
    let mut raw = broker.raw().await;
    let publish = |payload: &str| v1::ClientFrame {
        id: 77,
        body: Some(Body::Publish(v1::Publish {
            queue: "dup".into(),
            payload: payload.to_string().into(),
            headers: Default::default(),
        })),
    };
    // Both in one write. The first is in flight when the second is read,
    // unless the store answered it first (a busy host may take the core
    // task off its CPU between the two frames): then both are stored, as
    // they may be, and the pair is sent again.
    let mut refused = false;
    for _ in 0..20 {
        let mut both = encode(&publish("first"));
        both.extend_from_slice(&encode(&publish("second")));
        raw.send_bytes(&both).await;
        let mut answers = Vec::new();
        for _ in 0..2 {
            match raw.next_frame().await {
                Some(server_frame::Body::Reply(v1::Reply {
                    id: 77,
                    result: Some(r),
                })) => answers.push(r),
                other => panic!("expected a reply to 77, got {other:?}"),
            }
        }
        let errors: Vec<_> = answers.iter().filter_map(error_code).collect();
        let stored = answers
            .iter()
            .filter(|r| matches!(r, reply::Result::Publish(_)))
            .count();
        assert!(
            (errors == [ErrorCode::InvalidArgument] && stored == 1)
                || (errors.is_empty() && stored == 2),
            "{answers:?}"
        );
        if stored == 1 {
            // The refusal comes at once, the first's answer once stored.
            assert_eq!(error_code(&answers[0]), Some(ErrorCode::InvalidArgument));
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "the second publish was never read while the first was in flight"
    );

    // Sent, then the connection closed at once.
    let mut orphan = broker.raw().await;
    orphan
        .send(v1::ClientFrame {
            id: 1,
            body: Some(Body::Publish(v1::Publish {
                queue: "orphans".into(),
                payload: "left behind".into(),
                headers: Default::default(),
            })),
        })
        .await;
    drop(orphan);
    let client = broker.client("heir").await;
    let mut consumer = client.consume("orphans", 0).await.unwrap();
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.payload().as_ref(), b"left behind");
    d.ack().await.unwrap();
}

/// A request the client sends the moment its `Published` arrives finds
/// the publish complete: the same request id is free again, and the
/// message is in the queue. (The store's writer thread writes the answer
/// itself, before the core has taken the commit: issue 14.)
#[tokio::test]
async fn a_request_sent_on_published_finds_the_publish_complete() {
    let broker = spawn_broker();
    let mut raw = broker.raw().await;
    for i in 0..200usize {
        raw.send(v1::ClientFrame {
            id: 5,
            body: Some(Body::Publish(v1::Publish {
                queue: "at-once".into(),
                payload: format!("m{i}").into(),
                headers: Default::default(),
            })),
        })
        .await;
        match raw.next_frame().await {
            Some(server_frame::Body::Reply(v1::Reply {
                id: 5,
                result: Some(reply::Result::Publish(_)),
            })) => {}
            other => panic!("publish {i}: expected Published, got {other:?}"),
        }
        raw.send(v1::ClientFrame {
            id: 6,
            body: Some(Body::PeekQueue(v1::PeekQueue {
                queue: "at-once".into(),
                limit: 0,
            })),
        })
        .await;
        match raw.next_frame().await {
            Some(server_frame::Body::Reply(v1::Reply {
                id: 6,
                result: Some(reply::Result::QueuePeek(peek)),
            })) => assert_eq!(peek.messages.len(), i + 1, "after publish {i}"),
            other => panic!("peek {i}: expected QueuePeek, got {other:?}"),
        }
    }
}

/// Durable publish throughput with 1, 8 and 32 concurrent publishers (each
/// waiting for every answer), and consume throughput, acknowledging each
/// message (acks pipelined, then each awaited). Prints messages per
/// second; asserts nothing about speed.
///
/// `cargo test --release --test queues -- --ignored --nocapture throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: run it with --release --ignored --nocapture"]
async fn throughput() {
    const PAYLOAD: usize = 128;
    let broker = spawn_broker();
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);

    for publishers in [1usize, 8, 32] {
        let per_publisher = 4000 / publishers;
        let mut clients = Vec::new();
        for i in 0..publishers {
            clients.push(broker.client(&format!("publisher{i}")).await);
        }
        let queue = format!("bench{publishers}");
        let started = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|c| {
                let payload = payload.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    for _ in 0..per_publisher {
                        c.publish(&queue, payload.clone(), &[]).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = started.elapsed();
        let total = per_publisher * publishers;
        println!(
            "durable publish, {publishers} publisher(s): {total} messages of {PAYLOAD} bytes in {:.2?}: {:.0} msgs/s",
            elapsed,
            total as f64 / elapsed.as_secs_f64()
        );
    }

    // Consume what the 8 publishers stored, acknowledging each (the acks
    // pipelined: each is sent at once, its answer awaited in a task).
    // An ack is answered before its removal is durable (a lost one only
    // means a redelivery), so this is not bound by the disk.
    let client = broker.client("consumer").await;
    let total = queue_info(&client, "bench8").await.unwrap().ready;
    let mut consumer = client.consume("bench8", 256).await.unwrap();
    let started = Instant::now();
    let mut acks = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let d = next_delivery(&mut consumer).await;
        acks.push(tokio::spawn(d.ack()));
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "consume, acks pipelined: {total} messages in {:.2?}: {:.0} msgs/s",
        elapsed,
        total as f64 / elapsed.as_secs_f64()
    );

    // One message at a time: each ack awaited before the next message.
    let total = queue_info(&client, "bench32").await.unwrap().ready;
    let mut consumer = client.consume("bench32", 16).await.unwrap();
    let started = Instant::now();
    for _ in 0..total {
        next_delivery(&mut consumer).await.ack().await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "consume, each ack awaited: {total} messages in {:.2?}: {:.0} msgs/s",
        elapsed,
        total as f64 / elapsed.as_secs_f64()
    );
}

/// A broker run with a larger frame limit delivers larger messages: the
/// client reads up to the limit the broker announced in its HelloReply.
#[tokio::test]
async fn the_client_reads_frames_up_to_the_limit_the_broker_announced() {
    let broker = spawn_broker_with(&["--max-frame-bytes", "4194304"]);
    let client = broker.client("big").await;
    assert_eq!(client.hello().max_frame_bytes, 4 << 20);
    let payload = vec![7u8; 2 << 20];
    client.publish("big", payload.clone(), &[]).await.unwrap();
    let mut consumer = client.consume("big", 1).await.unwrap();
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.payload().len(), payload.len());
    d.ack().await.unwrap();
}

/// Many acks in flight at once from several consumers (each acks every
/// delivery as it arrives, without waiting for the answers): every ack is
/// answered Done exactly once, under its own request id, every message is
/// delivered once, and after a SIGKILL of the broker none comes back.
#[tokio::test]
async fn many_acks_in_flight_from_several_consumers_are_all_answered() {
    const MESSAGES: usize = 1200;
    const CONSUMERS: usize = 3;
    let mut broker = spawn_broker();
    let publisher = broker.client("publisher").await;
    publish_many(&publisher, "acks", "m", MESSAGES).await;

    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let mut raw = broker.raw().await;
        let r = raw
            .request(Body::Consume(v1::Consume {
                queue: "acks".into(),
                prefetch: 64,
            }))
            .await;
        assert!(matches!(r, reply::Result::Consume(_)), "{r:?}");
        consumers.push(raw);
    }
    // Each consumer acks what it gets until all messages are taken; the
    // others' share is unknown, so they stop on a shared count.
    let (taken, _) = tokio::sync::watch::channel(0usize);
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|mut raw| {
            let taken = taken.clone();
            tokio::spawn(async move {
                let mut all_taken = taken.subscribe();
                let mut payloads = Vec::new();
                let mut unanswered = HashSet::new();
                let mut next_id = 1000u64;
                let mut pending: Vec<server_frame::Body> = std::mem::take(&mut raw.pushed);
                loop {
                    if *all_taken.borrow() == MESSAGES && unanswered.is_empty() && pending.is_empty() {
                        return payloads;
                    }
                    let frame = match pending.pop() {
                        Some(f) => f,
                        None => tokio::select! {
                            f = raw.next_frame() => f.expect("the connection ended"),
                            _ = all_taken.wait_for(|n| *n == MESSAGES), if unanswered.is_empty() => continue,
                        },
                    };
                    match frame {
                        server_frame::Body::Delivery(d) => {
                            payloads.push(String::from_utf8(d.payload.to_vec()).unwrap());
                            taken.send_modify(|n| *n += 1);
                            next_id += 1;
                            unanswered.insert(next_id);
                            raw.send_bytes(&encode(&v1::ClientFrame {
                                id: next_id,
                                body: Some(Body::Ack(v1::Ack {
                                    delivery_id: d.delivery_id,
                                })),
                            }))
                            .await;
                        }
                        server_frame::Body::Reply(v1::Reply { id, result }) => {
                            assert!(unanswered.remove(&id), "answer to {id}, not an ack in flight");
                            assert!(
                                matches!(result, Some(reply::Result::Done(_))),
                                "ack {id}: {result:?}"
                            );
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            })
        })
        .collect();
    let mut received: HashMap<String, u32> = HashMap::new();
    for task in tasks {
        for p in task.await.unwrap() {
            *received.entry(p).or_default() += 1;
        }
    }
    assert_eq!(received.len(), MESSAGES, "every message delivered");
    assert!(
        received.values().all(|n| *n == 1),
        "a message was delivered twice without a crash"
    );

    broker.kill();
    let broker = start_in(&broker.dir.clone(), &[]);
    let client = broker.client("after").await;
    let info = queue_info(&client, "acks").await;
    assert!(
        info.as_ref().is_none_or(|q| q.ready == 0 && q.unacked == 0),
        "acknowledged messages came back: {info:?}"
    );
}

/// A burst of acks sent in one write (the broker reads it over several
/// reads, and commits the acks' removals with the attempts of the
/// deliveries they make room for): once every ack is answered and the
/// deliveries it made room for have arrived, a SIGKILL of the broker
/// loses none of the acks (no acknowledged message comes back) and none
/// of the deliveries (each comes back, its attempt counted: it was
/// durable before it was sent).
#[tokio::test]
async fn a_burst_of_acks_and_the_deliveries_it_makes_room_for_survive_a_sigkill() {
    const MESSAGES: usize = 400;
    const PREFETCH: usize = 100;
    let mut broker = spawn_broker();
    let publisher = broker.client("publisher").await;
    publish_many(&publisher, "burst", "m", MESSAGES).await;

    let mut raw = broker.raw().await;
    let r = raw
        .request(Body::Consume(v1::Consume {
            queue: "burst".into(),
            prefetch: PREFETCH as u32,
        }))
        .await;
    assert!(matches!(r, reply::Result::Consume(_)), "{r:?}");
    let mut first = Vec::new();
    let mut pushed = std::mem::take(&mut raw.pushed).into_iter();
    while first.len() < PREFETCH {
        let frame = match pushed.next() {
            Some(frame) => Some(frame),
            None => raw.next_frame().await,
        };
        match frame {
            Some(server_frame::Body::Delivery(d)) => first.push(d),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
    // Every ack in one write.
    let mut burst = Vec::new();
    let mut unanswered = HashSet::new();
    for (i, d) in first.iter().enumerate() {
        let id = 1000 + i as u64;
        unanswered.insert(id);
        burst.extend_from_slice(&encode(&v1::ClientFrame {
            id,
            body: Some(Body::Ack(v1::Ack {
                delivery_id: d.delivery_id,
            })),
        }));
    }
    raw.send_bytes(&burst).await;
    let mut second = Vec::new();
    while !unanswered.is_empty() || second.len() < PREFETCH {
        match raw.next_frame().await {
            Some(server_frame::Body::Reply(v1::Reply { id, result })) => {
                assert!(
                    unanswered.remove(&id),
                    "answer to {id}, not an ack in flight"
                );
                assert!(
                    matches!(result, Some(reply::Result::Done(_))),
                    "ack {id}: {result:?}"
                );
            }
            Some(server_frame::Body::Delivery(d)) => {
                assert_eq!(d.attempt, 1, "a first delivery");
                second.push(d);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    broker.kill();

    let broker = start_in(&broker.dir.clone(), &[]);
    let client = broker.client("after").await;
    let mut consumer = client.consume("burst", 64).await.unwrap();
    let acked: HashSet<Vec<u8>> = first.iter().map(|d| d.payload.to_vec()).collect();
    let delivered: HashSet<Vec<u8>> = second.iter().map(|d| d.payload.to_vec()).collect();
    let mut seen = HashSet::new();
    for _ in 0..MESSAGES - PREFETCH {
        let d = next_delivery(&mut consumer).await;
        let payload = d.payload().to_vec();
        assert!(
            !acked.contains(&payload),
            "an acknowledged message came back"
        );
        let expected = if delivered.contains(&payload) { 2 } else { 1 };
        assert_eq!(
            d.attempt(),
            expected,
            "{}: its delivery before the kill was {}counted",
            String::from_utf8_lossy(&payload),
            if expected == 2 { "not " } else { "" }
        );
        assert!(seen.insert(payload), "a message delivered twice");
        d.ack().await.unwrap();
    }
    assert!(delivered.is_subset(&seen), "a delivered message was lost");
    wait_for_queue(&client, "burst", |q| {
        q.is_some_and(|q| q.ready == 0 && q.unacked == 0)
    })
    .await;
}

/// An operator's review published 10 000 messages into each of 50 queues
/// as `nobody`, within every per-queue limit: a 1.1 GB store and a 36 s
/// restart. A user's messages are now bounded over all queues together,
/// and in how many queues it has some: the bound holds after a restart (the
/// stored messages count against their publisher again), consuming or
/// purging frees it, and root is not bound.
#[test]
fn one_user_is_bounded_over_all_queues_also_after_a_restart() {
    if !can_run_as_nobody() {
        return;
    }
    let args = [
        "--max-stored-messages-per-uid",
        "5",
        "--max-queues-per-uid",
        "3",
    ];
    let mut broker = broker_for_two_users(&args);
    #[track_caller]
    fn publishes(broker: &Broker, queue: &str) {
        let (code, _, err) = cli_as_nobody(broker, &["queue", "publish", queue, "x"]);
        assert_eq!(code, 0, "nobody's publish to {queue} was refused: {err}");
    }
    #[track_caller]
    fn refused(broker: &Broker, queue: &str, flag: &str) {
        let (code, _, err) = cli_as_nobody(broker, &["queue", "publish", queue, "x"]);
        assert_eq!(code, 1, "nobody's publish to {queue}: {err}");
        assert!(err.contains(flag), "{err}");
    }
    for queue in ["q1", "q1", "q2", "q2", "q3"] {
        publishes(&broker, queue);
    }
    refused(&broker, "q4", "--max-stored-messages-per-uid");
    refused(&broker, "q1", "--max-stored-messages-per-uid");
    // Root is not bound.
    let (code, _, err) = broker.cli(&["queue", "publish", "q4", "root's"]);
    assert_eq!(code, 0, "{err}");

    broker.kill();
    let broker = start_in(&broker.dir.clone(), &args);
    refused(&broker, "q1", "--max-stored-messages-per-uid");
    // Root consumes nobody's message in q3: nobody has 4 messages in 2
    // queues, so it may publish one more, in a third queue.
    let (code, out, err) = broker.cli(&["queue", "consume", "q3", "--count", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains('x'), "{out}");
    publishes(&broker, "q5");
    refused(&broker, "q6", "--max-stored-messages-per-uid");
    // A purge frees what it drops: 3 messages left, in q2 and q5.
    let (code, _, err) = broker.cli(&["queue", "purge", "q1"]);
    assert_eq!(code, 0, "{err}");
    publishes(&broker, "q6");
    refused(&broker, "q7", "--max-queues-per-uid");
    publishes(&broker, "q2");
}

/// A consumer that reads its deliveries late is not cut off: deliveries
/// are asked for (its prefetch window bounds them), like answers. With
/// 1 MiB messages the default prefetch (16) is twice `--max-outbound-bytes`
/// (8 MiB); since the connection's queue is bounded in bytes too, such a
/// consumer was cut off as a client that does not read.
#[tokio::test]
async fn a_consumer_that_reads_late_gets_its_whole_window() {
    let broker = spawn_broker();
    let mut publisher = broker.raw().await;
    let payload = bytes::Bytes::from(vec![b'x'; 1_000_000]);
    for _ in 0..16 {
        let r = publisher
            .request(Body::Publish(v1::Publish {
                queue: "big".into(),
                payload: payload.clone(),
                headers: Default::default(),
            }))
            .await;
        assert!(matches!(r, reply::Result::Publish(_)), "{r:?}");
    }
    let mut consumer = broker.raw().await;
    let r = consumer
        .request(Body::Consume(v1::Consume {
            queue: "big".into(),
            prefetch: 16,
        }))
        .await;
    assert!(matches!(r, reply::Result::Consume(_)), "{r:?}");
    // Not read for a while: the broker queues all 16 (16 MB).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got = consumer
        .pushed
        .iter()
        .filter(|f| matches!(f, server_frame::Body::Delivery(_)))
        .count();
    while got < 16 {
        match consumer.next_frame().await {
            Some(server_frame::Body::Delivery(d)) => {
                assert_eq!(d.payload.len(), 1_000_000);
                got += 1;
            }
            Some(other) => panic!("{other:?}"),
            None => panic!("cut off after {got} deliveries"),
        }
    }
}
