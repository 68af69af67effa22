//! Publish floods for the crash tests: pipelined publishes on raw
//! connections, recording which the broker confirmed, and the check after
//! a restart that every confirmed message is stored exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;
use turnstile_proto::v1::{self, client_frame::Body, reply, server_frame};
use turnstile_proto::{ClientCodec, PROTOCOL_VERSION};

use super::{Broker, PATIENCE};

/// Publishes `{tag}-{i}` (padded to `size` bytes) to `queue`, `window` in
/// flight, until the connection ends; bumps `confirmed` per `Publish`
/// answer and returns the names confirmed.
pub async fn publish_until_closed(
    socket: std::path::PathBuf,
    queue: String,
    tag: String,
    size: usize,
    window: usize,
    confirmed: Arc<AtomicU64>,
    notify: Arc<tokio::sync::Notify>,
) -> Vec<String> {
    let stream = UnixStream::connect(&socket).await.expect("connect");
    let mut framed = Framed::new(stream, ClientCodec::new(64 << 20));
    let hello = v1::ClientFrame {
        id: 0,
        body: Some(Body::Hello(v1::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: tag.clone(),
        })),
    };
    framed.send(hello).await.expect("hello");
    match framed.next().await {
        Some(Ok(v1::ServerFrame {
            body: Some(server_frame::Body::Reply(_)),
        })) => {}
        other => panic!("no answer to Hello: {other:?}"),
    }
    let mut names: HashMap<u64, String> = HashMap::new();
    let mut done = Vec::new();
    let mut next = 1u64;
    loop {
        while names.len() < window {
            let name = format!("{tag}-{next}");
            let padding = size.saturating_sub(name.len());
            let payload = format!("{name}:{}", "p".repeat(padding));
            let frame = v1::ClientFrame {
                id: next,
                body: Some(Body::Publish(v1::Publish {
                    queue: queue.clone(),
                    payload: payload.into_bytes().into(),
                    headers: Default::default(),
                })),
            };
            // A broker killed meanwhile: the flood is over.
            if framed.feed(frame).await.is_err() {
                return done;
            }
            names.insert(next, name);
            next += 1;
        }
        if framed.flush().await.is_err() {
            return done;
        }
        let frame = match tokio::time::timeout(PATIENCE, framed.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(_) => return done,
            Err(_) => panic!("no answer within {PATIENCE:?}"),
        };
        if let Some(server_frame::Body::Reply(v1::Reply {
            id,
            result: Some(result),
        })) = frame.body
        {
            let name = names.remove(&id).expect("an answer to a publish in flight");
            match result {
                reply::Result::Publish(_) => {
                    done.push(name);
                    confirmed.fetch_add(1, Ordering::SeqCst);
                    notify.notify_waiters();
                }
                other => panic!("publish {name} answered {other:?}"),
            }
        }
    }
}

/// Floods `queue` from `connections` pipelining connections and calls
/// `kill` once `at_least` publishes are confirmed (and again at every
/// answer, or every 10 ms, until it returns true: it kills the broker);
/// returns every confirmed name.
pub async fn flood_and_kill(
    broker: &Broker,
    queue: &str,
    connections: usize,
    size: usize,
    window: usize,
    at_least: u64,
    mut kill: impl FnMut(u64) -> bool,
) -> Vec<String> {
    let confirmed = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            tokio::spawn(publish_until_closed(
                broker.socket.clone(),
                queue.to_string(),
                format!("c{c}"),
                size,
                window,
                confirmed.clone(),
                notify.clone(),
            ))
        })
        .collect();
    let start = std::time::Instant::now();
    loop {
        let waiting = notify.notified();
        let n = confirmed.load(Ordering::SeqCst);
        if n >= at_least && kill(n) {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the kill's moment did not come within {PATIENCE:?} ({n} confirmed)"
        );
        // A new answer, or a look again at what `kill` watches.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(10), waiting).await;
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("publisher"));
    }
    all
}

/// Takes every message of `queue` (acknowledging each) and checks that
/// each of `confirmed` is among them exactly once, and nothing twice;
/// returns how many were stored.
pub async fn check_stored_once(broker: &Broker, queue: &str, confirmed: &[String]) -> usize {
    let client = broker.client("checker").await;
    let status = client.status(&[]).await.expect("status");
    let depth = status
        .queues
        .iter()
        .find(|q| q.queue == queue)
        .map_or(0, |q| q.ready + q.unacked);
    let mut consumer = client.consume(queue, 256).await.expect("consume");
    let mut seen: HashSet<String> = HashSet::new();
    for _ in 0..depth {
        let d = tokio::time::timeout(PATIENCE, consumer.next())
            .await
            .expect("a delivery in time")
            .expect("a delivery");
        let payload = String::from_utf8_lossy(d.payload()).into_owned();
        let name = payload.split(':').next().unwrap_or_default().to_string();
        assert!(seen.insert(name.clone()), "{name} is stored twice");
        d.ack().await.expect("ack");
    }
    let missing: Vec<&String> = confirmed.iter().filter(|n| !seen.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "{} confirmed publishes lost after the kill (of {}), e.g. {:?}",
        missing.len(),
        confirmed.len(),
        &missing[..missing.len().min(5)]
    );
    seen.len()
}
