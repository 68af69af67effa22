//! Queue administration against the real `turnstiled`: `queue peek` reads
//! without taking, `consume --count N` takes exactly N (no attempt used
//! on a message it does not print, and acknowledges every one it printed
//! even when a signal ends it), `CancelConsume` stops a consumer and
//! keeps the connection, `queue purge` and `queue requeue-dead`.
#![cfg(unix)]

mod support;

use support::*;
use turnstile_client::ErrorCode;

/// The queue's line of `queue ls --json`: (ready, unacked, consumers).
fn counts(broker: &Broker, queue: &str) -> (u64, u64, u64) {
    let (code, out, err) = broker.cli(&["--json", "queue", "ls"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == queue)
        .map_or((0, 0, 0), |q| {
            (
                q["ready"].as_u64().unwrap(),
                q["unacked"].as_u64().unwrap(),
                q["consumers"].as_u64().unwrap(),
            )
        })
}

/// The messages `queue peek --json` shows: (seq, attempt, payload).
fn peek(broker: &Broker, queue: &str) -> Vec<(u64, u64, String)> {
    let (code, out, err) = broker.cli(&["--json", "queue", "peek", queue, "--limit", "100"]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["seq"].as_u64().unwrap(),
                v["attempt"].as_u64().unwrap(),
                v["payload"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn publish(broker: &Broker, queue: &str, data: &str) {
    let (code, _, err) = broker.cli(&["queue", "publish", queue, data]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn peek_reads_without_taking_and_consume_count_takes_exactly_n() {
    let broker = spawn_broker();
    wait_ready(&broker);
    for n in 1..=5 {
        publish(&broker, "jobs", &format!("job {n}"));
    }
    let seen = peek(&broker, "jobs");
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen.iter().all(|(_, attempt, _)| *attempt == 0), "{seen:?}");
    assert_eq!(seen[0].2, "job 1");
    // Peeking again changes nothing.
    assert_eq!(peek(&broker, "jobs"), seen);
    let (code, out, _) = broker.cli(&["queue", "peek", "jobs", "--limit", "2"]);
    assert_eq!(code, 0);
    assert!(out.contains("job 2") && !out.contains("job 3"), "{out}");
    assert!(out.contains("more follow"), "{out}");

    // Two taken, even with a prefetch window larger than the count: the
    // other three were never delivered, so kept their attempts.
    let (code, out, err) = broker.cli(&[
        "queue",
        "consume",
        "jobs",
        "--count",
        "2",
        "--prefetch",
        "16",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("job 1") && out.contains("job 2"), "{out}");
    assert_eq!(counts(&broker, "jobs"), (3, 0, 0));
    let left = peek(&broker, "jobs");
    assert_eq!(
        left.iter()
            .map(|(_, a, p)| (*a, p.as_str()))
            .collect::<Vec<_>>(),
        [(0, "job 3"), (0, "job 4"), (0, "job 5")]
    );
    // Past the default window of 16 as well.
    for n in 6..=40 {
        publish(&broker, "jobs", &format!("job {n}"));
    }
    let (code, out, err) = broker.cli(&["queue", "consume", "jobs", "--count", "20"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 20, "{out}");
    assert_eq!(counts(&broker, "jobs"), (18, 0, 0));
    assert!(peek(&broker, "jobs").iter().all(|(_, a, _)| *a == 0));
    let (code, out, _) = broker.cli(&["queue", "peek", "nothing"]);
    assert_eq!(code, 0);
    assert_eq!(out, "nothing has no ready message\n");
}

#[test]
fn consume_count_interrupted_acknowledges_what_it_printed() {
    // `--count 2` keeps the first message unacknowledged (acking it could
    // let the broker send a third): SIGTERM before the second comes must
    // still acknowledge it, since it was printed.
    let broker = spawn_broker();
    wait_ready(&broker);
    publish(&broker, "jobs", "only one");
    let mut consume = broker.cli_spawn(&["queue", "consume", "jobs", "--count", "2"]);
    let mut out = std::io::BufReader::new(consume.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.contains("only one"), "{line}");
    assert_eq!(counts(&broker, "jobs"), (0, 1, 1), "printed, kept unacked");
    signal(consume.id() as i32, libc::SIGTERM);
    let status = consume.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    assert_eq!(counts(&broker, "jobs"), (0, 0, 0), "acknowledged, not back");
    assert!(peek(&broker, "jobs").is_empty());

    // A count of 0 is a usage error, and takes nothing.
    publish(&broker, "jobs", "untouched");
    let (code, _, err) = broker.cli(&["queue", "consume", "jobs", "--count", "0"]);
    assert_eq!(code, 64, "{err}");
    assert_eq!(peek(&broker, "jobs")[0].1, 0, "no attempt used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_consume_stops_a_consumer_and_keeps_the_connection() {
    let broker = spawn_broker();
    wait_ready(&broker);
    let client = broker.client("consumer").await;
    client.publish("notices", "one", &[]).await.unwrap();
    client.publish("notices", "two", &[]).await.unwrap();
    let mut consumer = client.consume("notices", 1).await.unwrap();
    let first = consumer.next().await.unwrap();
    assert_eq!(first.payload().as_ref(), b"one");
    consumer.cancel().await.unwrap();
    // Its delivery is still this connection's to acknowledge, and the
    // window it frees delivers nothing: the consumer is gone.
    first.ack().await.unwrap();
    let status = client.status(&[]).await.unwrap();
    let q = status.queues.iter().find(|q| q.queue == "notices").unwrap();
    assert_eq!((q.ready, q.unacked, q.consumers), (1, 0, 0), "{q:?}");
    // Not twice, and the connection still serves.
    let again = consumer.cancel().await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::NotFound), "{again}");
    client.ping("still here").await.unwrap();
    // A new consumer on the same connection gets the second message.
    let mut second = client.consume("notices", 1).await.unwrap();
    let two = second.next().await.unwrap();
    assert_eq!(two.payload().as_ref(), b"two");
    assert_eq!(two.attempt(), 1);
    two.ack().await.unwrap();
}

#[test]
fn purge_and_requeue_dead() {
    // One delivery attempt: a message not acknowledged moves to jobs.dead.
    let broker = spawn_broker_with(&["--max-delivery-attempts", "1"]);
    wait_ready(&broker);
    publish(&broker, "jobs", "flaky");
    let (code, out, err) = broker.cli(&["queue", "consume", "jobs", "--count", "1", "--no-ack"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("flaky"), "{out}");
    let start = std::time::Instant::now();
    while counts(&broker, "jobs.dead").0 == 0 {
        assert!(start.elapsed() < PATIENCE, "never dead-lettered");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(counts(&broker, "jobs").0, 0);

    let (code, out, err) = broker.cli(&["queue", "requeue-dead", "jobs"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "moved 1 dead letter(s) back to jobs\n");
    assert_eq!(counts(&broker, "jobs.dead"), (0, 0, 0));
    let (code, out, _) = broker.cli(&["--json", "queue", "peek", "jobs"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["payload"], "flaky");
    assert_eq!(v["attempt"], 0, "fresh attempts: {v}");
    assert!(
        v["headers"].as_object().unwrap().is_empty(),
        "no dead-letter headers: {v}"
    );
    // It is delivered again like any message.
    let (code, out, _) = broker.cli(&["queue", "consume", "jobs", "--count", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("[seq") && out.contains("attempt 1"), "{out}");

    for n in 1..=3 {
        publish(&broker, "jobs", &format!("job {n}"));
    }
    let (code, out, err) = broker.cli(&["--json", "queue", "purge", "jobs"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["purged"], 3);
    assert_eq!(counts(&broker, "jobs"), (0, 0, 0));
    // Gone for good: not back after a restart.
    let mut broker = broker;
    broker.signal(libc::SIGTERM);
    assert!(broker.wait_exit().success());
    let tmp = broker._tmp.take();
    let mut again = start_in(&broker.dir, &["--max-delivery-attempts", "1"]);
    again._tmp = tmp;
    wait_ready(&again);
    assert_eq!(counts(&again, "jobs"), (0, 0, 0));
    assert!(peek(&again, "jobs").is_empty());
}
