//! Queue administration against the real `turnstiled`: `queue peek` reads
//! without taking, `consume --count N` takes exactly N (no attempt used
//! on a message it does not print, and acknowledges every one it printed
//! even when a signal ends it), `CancelConsume` stops a consumer and
//! keeps the connection and is answered after every message the consumer
//! was sent, `consume --max-wait`, `queue purge` and `queue requeue-dead`.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_answered_after_every_message_the_consumer_was_sent() {
    // A delivery goes out once its attempt is stored; a CancelConsume
    // right behind the Consume used to be answered at once, so the Done
    // overtook the delivery and a client that stopped at its Done left a
    // message it was sent unseen (its attempt used for nothing).
    use futures::FutureExt;
    let broker = spawn_broker();
    wait_ready(&broker);
    let client = broker.client("consumer").await;
    for n in 0..10 {
        client
            .publish("jobs", format!("job {n}"), &[])
            .await
            .unwrap();
    }
    for n in 0..10 {
        let mut consumer = client.consume("jobs", 1).await.unwrap();
        consumer.cancel().await.unwrap();
        let sent = consumer.next().now_or_never().flatten();
        let delivery = sent.unwrap_or_else(|| panic!("job {n} came after the cancel's Done"));
        assert_eq!(delivery.payload().as_ref(), format!("job {n}").as_bytes());
        assert_eq!(delivery.attempt(), 1);
        delivery.ack().await.unwrap();
    }
}

#[test]
fn consume_max_wait_stops_when_no_message_comes() {
    let broker = spawn_broker();
    wait_ready(&broker);
    // Nothing there: 75 and a sentence, as `run -w` does.
    let (code, out, err) = broker.cli(&["queue", "consume", "jobs", "--count", "1", "-w", "0.3"]);
    assert_eq!((code, out.as_str()), (75, ""), "{err}");
    assert_eq!(
        err,
        "turnstile: 0 of 1 message(s) from jobs: none came for 300 ms (--max-wait)\n"
    );
    // Fewer than the count: those printed, all acknowledged, then 75.
    publish(&broker, "jobs", "a");
    publish(&broker, "jobs", "b");
    let (code, out, err) = broker.cli(&[
        "queue",
        "consume",
        "jobs",
        "--count",
        "3",
        "--max-wait",
        "300ms",
    ]);
    assert_eq!(code, 75, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(counts(&broker, "jobs"), (0, 0, 0));
    // Without a count it drains the queue: 0.
    publish(&broker, "jobs", "c");
    publish(&broker, "jobs", "d");
    let (code, out, err) = broker.cli(&["queue", "consume", "jobs", "--timeout", "0.3"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("] c\n") && out.contains("] d\n"), "{out}");
    assert_eq!(counts(&broker, "jobs"), (0, 0, 0));
    // Even -w 0, which gives up before the first delivery can arrive,
    // prints the one the broker sent before it took the cancel: no
    // message is taken and left unseen.
    for n in 0..5 {
        publish(&broker, "jobs", &format!("job {n}"));
        let (code, out, err) = broker.cli(&["queue", "consume", "jobs", "--count", "1", "-w", "0"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, format!("[seq {}, attempt 1] job {n}\n", 5 + n));
        assert_eq!(counts(&broker, "jobs"), (0, 0, 0));
    }
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
