//! The in-process server tier: `server::run` on a temporary socket in this
//! test's own runtime, with tokio's clock paused (`start_paused`), so every
//! rule that depends on time is tested without a real sleep: the clock
//! jumps to the broker's next deadline whenever everything waits.
//!
//! What it covers: a TTL running out, a waiter's `max_wait`, a watcher that
//! stops reading (its events coalesced, then caught up), and a client that
//! stops reading its replies (not read from either until it does), and a
//! burst of acks committed as one transaction. Clients
//! are raw frames (`tests/support`'s `Raw`), so what is asserted is what
//! goes on the wire.

#![cfg(unix)]

// The raw-frame connection of the root package's integration tests.
#[path = "../../tests/support/raw.rs"]
mod raw;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use turnstile_broker::platform::listener::{self, BoundListener, EndpointGuard};
use turnstile_broker::server::{self, ServerConfig};
use turnstile_proto::v1::{self, client_frame::Body, reply, server_frame};

use raw::{PATIENCE, Raw, encode};

/// A server running in this runtime on a temporary socket.
struct Server {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _guard: EndpointGuard,
    _dir: tempfile::TempDir,
}

/// Binds a temporary socket and serves it with `config`.
fn start(config: ServerConfig) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("turnstile.sock");
    let BoundListener { listener, guard } = listener::bind(&socket).expect("bind");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::run(listener, config, async {
        let _ = stopped.await;
    }));
    Server {
        socket,
        stop: Some(stop),
        task: Some(task),
        _guard: guard,
        _dir: dir,
    }
}

impl Server {
    /// A raw client that has said Hello.
    async fn raw(&self) -> Raw {
        Raw::connect(&self.socket).await
    }

    /// Stops the server and waits for `run` to return.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server::run");
        }
    }
}

fn acquire(resource: &str, ttl_ms: u32, max_wait_ms: u32) -> Body {
    Body::Acquire(v1::Acquire {
        resource: resource.into(),
        mode: v1::Mode::Exclusive as i32,
        ttl_ms,
        wait: v1::WaitPolicy::Queue as i32,
        max_wait_ms,
        purpose: String::new(),
        ..v1::Acquire::default()
    })
}

/// The next `LeaseUpdate` pushed to `raw`.
async fn lease_update(raw: &mut Raw) -> v1::LeaseUpdate {
    raw.expect_push(|b| match b {
        server_frame::Body::LeaseUpdate(u) => Some(u.clone()),
        _ => None,
    })
    .await
}

fn lost_reason(u: &v1::LeaseUpdate) -> Option<v1::LostReason> {
    match &u.change {
        Some(v1::lease_update::Change::Lost(l)) => v1::LostReason::try_from(l.reason).ok(),
        _ => None,
    }
}

/// Bytes waiting in `raw`'s socket now (peeked, left in place), read
/// without letting the runtime (and so the server) run.
fn bytes_waiting(raw: &Raw) -> usize {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 4096];
    // SAFETY: a valid socket and buffer; MSG_PEEK leaves the bytes where
    // they are, MSG_DONTWAIT keeps the call from blocking.
    let n = unsafe {
        libc::recv(
            raw.framed.get_ref().as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).unwrap_or(0)
}

/// Releases `lease_id`, which must be answered Done.
async fn release(c: &mut Raw, lease_id: u64) {
    let r = c.request(Body::Release(v1::Release { lease_id })).await;
    assert!(matches!(r, reply::Result::Done(_)), "{r:?}");
}

/// The status of `resource`.
async fn status(c: &mut Raw, resource: &str) -> v1::Status {
    let r = c
        .request(Body::GetStatus(v1::GetStatus {
            resources: vec![resource.into()],
        }))
        .await;
    let reply::Result::Status(status) = r else {
        panic!("{r:?}")
    };
    status
}

#[tokio::test(start_paused = true)]
async fn a_waiters_grant_is_in_its_socket_before_the_releaser_has_its_done() {
    // The handoff is not delayed by the releaser's answer: by the time the
    // releaser reads its Done, the waiter's grant has been written (the
    // broker writes it first), and the waiter saw its Queued reply before
    // that LeaseUpdate.
    let server = start(ServerConfig::default());
    let mut holder = server.raw().await;
    let mut waiter = server.raw().await;
    let mut watcher = server.raw().await;
    let r = watcher
        .request(Body::Watch(v1::Watch {
            resources: vec!["pcm".into()],
            start_revision: 0,
        }))
        .await;
    assert!(matches!(r, reply::Result::Watch(_)), "{r:?}");
    for round in 0..20 {
        let r = holder.request(acquire("pcm", 0, 0)).await;
        let reply::Result::Acquire(v1::AcquireReply {
            outcome: Some(v1::acquire_reply::Outcome::Granted(g)),
        }) = r
        else {
            panic!("round {round}: the holder should be granted: {r:?}")
        };
        let r = waiter.request(acquire("pcm", 0, 0)).await;
        let reply::Result::Acquire(v1::AcquireReply {
            outcome: Some(v1::acquire_reply::Outcome::Queued(q)),
        }) = r
        else {
            panic!("round {round}: the waiter should queue: {r:?}")
        };
        assert!(waiter.pushed.is_empty(), "{:?}", waiter.pushed);
        assert_eq!(bytes_waiting(&waiter), 0, "round {round}");
        release(&mut holder, g.lease_id).await;
        assert!(
            bytes_waiting(&waiter) > 0,
            "round {round}: the releaser had its Done before the grant was written"
        );
        let granted = lease_update(&mut waiter).await;
        assert_eq!(granted.lease_id, q.lease_id);
        assert!(
            matches!(granted.change, Some(v1::lease_update::Change::Granted(_))),
            "{granted:?}"
        );
        release(&mut waiter, q.lease_id).await;
    }
    // The watcher, which read nothing meanwhile, gets every change in order.
    let status = status(&mut holder, "pcm").await;
    let newest = status.resources.first().map_or(0, |r| r.revision);
    assert!(newest > 0, "{status:?}");
    let mut last = 0;
    while last < newest {
        let e = watcher
            .expect_push(|b| match b {
                server_frame::Body::WatchEvent(e) if e.kind != v1::EventKind::Heartbeat as i32 => {
                    Some(e.clone())
                }
                _ => None,
            })
            .await;
        assert!(e.revision > last, "{e:?} after revision {last}");
        assert!(!e.coalesced, "{e:?}");
        last = e.revision;
    }
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_not_kept_alive_expires_at_its_ttl_and_the_waiter_is_granted() {
    // A 1 s lease that nobody keeps alive is lost (EXPIRED) 1 s after its
    // grant, not before, and the waiter behind it is granted then.
    let server = start(ServerConfig::default());
    let mut holder = server.raw().await;
    let mut waiter = server.raw().await;
    let granted_at = tokio::time::Instant::now();
    let r = holder.request(acquire("pcm", 1000, 0)).await;
    assert!(matches!(r, reply::Result::Acquire(_)), "{r:?}");
    let r = waiter.request(acquire("pcm", 1000, 0)).await;
    let reply::Result::Acquire(v1::AcquireReply {
        outcome: Some(v1::acquire_reply::Outcome::Queued(q)),
    }) = r
    else {
        panic!("the waiter should queue: {r:?}")
    };
    assert_eq!(q.position, 1);

    let lost = lease_update(&mut holder).await;
    assert_eq!(
        lost_reason(&lost),
        Some(v1::LostReason::Expired),
        "{lost:?}"
    );
    assert!(granted_at.elapsed() >= Duration::from_millis(1000));
    let granted = lease_update(&mut waiter).await;
    assert_eq!(granted.lease_id, q.lease_id);
    assert!(
        matches!(granted.change, Some(v1::lease_update::Change::Granted(_))),
        "{granted:?}"
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_keep_alive_moves_the_expiry_from_now() {
    // KeepAlive at 800 ms of a 1 s lease: still held at 1.5 s, lost at 1.8 s.
    let server = start(ServerConfig::default());
    let mut holder = server.raw().await;
    let start = tokio::time::Instant::now();
    let r = holder.request(acquire("pcm", 1000, 0)).await;
    let reply::Result::Acquire(v1::AcquireReply {
        outcome: Some(v1::acquire_reply::Outcome::Granted(g)),
    }) = r
    else {
        panic!("expected a grant: {r:?}")
    };
    tokio::time::advance(Duration::from_millis(800)).await;
    let r = holder
        .request(Body::KeepAlive(v1::KeepAlive {
            lease_id: g.lease_id,
        }))
        .await;
    assert!(matches!(r, reply::Result::KeepAlive(_)), "{r:?}");
    let lost = lease_update(&mut holder).await;
    assert_eq!(
        lost_reason(&lost),
        Some(v1::LostReason::Expired),
        "{lost:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(1800));
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gives_up_at_its_max_wait() {
    // A waiter with max_wait 500 ms behind a long holder is told TIMED_OUT
    // after 500 ms, and the holder keeps its lease.
    let server = start(ServerConfig::default());
    let mut holder = server.raw().await;
    let mut waiter = server.raw().await;
    let r = holder.request(acquire("pcm", 3_600_000, 0)).await;
    assert!(matches!(r, reply::Result::Acquire(_)), "{r:?}");
    let queued_at = tokio::time::Instant::now();
    let r = waiter.request(acquire("pcm", 0, 500)).await;
    assert!(matches!(r, reply::Result::Acquire(_)), "{r:?}");
    let lost = lease_update(&mut waiter).await;
    assert_eq!(
        lost_reason(&lost),
        Some(v1::LostReason::TimedOut),
        "{lost:?}"
    );
    assert!(queued_at.elapsed() >= Duration::from_millis(500));
    let s = status(&mut holder, "pcm").await;
    assert_eq!(s.resources[0].holders.len(), 1);
    assert!(s.resources[0].waiters.is_empty());
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_watcher_that_stops_reading_gets_coalesced_states_then_the_newest() {
    // A watcher that reads nothing while thousands of changes happen costs
    // bounded memory: once it reads again it gets events marked coalesced,
    // and the last one shows the final state.
    let server = start(ServerConfig::default());
    let mut watcher = server.raw().await;
    let r = watcher
        .request(Body::Watch(v1::Watch {
            resources: vec!["pcm".into()],
            start_revision: 0,
        }))
        .await;
    assert!(matches!(r, reply::Result::Watch(_)), "{r:?}");
    let mut worker = server.raw().await;
    let mut purpose = String::new();
    for i in 0..3000 {
        // Events grow past what the socket buffers hold: the broker's
        // queue for the watcher fills and the rest is coalesced.
        purpose.clear();
        purpose.push_str(&format!("job {i} {}", "x".repeat(200)));
        let mut req = acquire("pcm", 0, 0);
        if let Body::Acquire(a) = &mut req {
            a.purpose = purpose.clone();
        }
        let r = worker.request(req).await;
        let reply::Result::Acquire(v1::AcquireReply {
            outcome: Some(v1::acquire_reply::Outcome::Granted(g)),
        }) = r
        else {
            panic!("{r:?}")
        };
        release(&mut worker, g.lease_id).await;
    }
    let status = status(&mut worker, "pcm").await;
    let mut coalesced = 0;
    let mut events = 0;
    let final_state = loop {
        let event = watcher
            .expect_push(|b| match b {
                server_frame::Body::WatchEvent(e) => Some(e.clone()),
                _ => None,
            })
            .await;
        if event.kind == v1::EventKind::Heartbeat as i32 {
            continue;
        }
        events += 1;
        if event.coalesced {
            coalesced += 1;
        }
        if event.revision >= status.revision {
            assert_eq!(event.kind, v1::EventKind::Released as i32, "{event:?}");
            break event;
        }
    };
    assert!(coalesced > 0, "no event was coalesced in {events}");
    assert!(events < 6000, "every one of the 6000 events was queued");
    let state = final_state.state.expect("a state");
    assert!(state.holders.is_empty() && state.waiters.is_empty());
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_read_its_replies_stalls_itself_and_is_not_cut_off() {
    // Pings whose answers are never read pile up: past half of
    // max_outbound_bytes (counted at what they cost the broker) the broker
    // stops reading the connection, so the client's own writes block; once
    // it reads, every ping is answered and nothing was lost. Meanwhile
    // others are served as before.
    let server = start(ServerConfig {
        max_outbound_bytes: 64 << 10,
        ..ServerConfig::default()
    });
    let greedy = server.raw().await;
    let (mut rx, mut tx) = greedy.framed.into_inner().into_split();
    let payload = Bytes::from(vec![b'p'; 16 << 10]);
    let count = 1000u64;
    let mut writer = tokio::spawn(async move {
        for id in 100..100 + count {
            let frame = v1::ClientFrame {
                id,
                body: Some(Body::Ping(v1::Ping {
                    payload: payload.clone(),
                })),
            };
            tx.write_all(&encode(&frame)).await.expect("write a ping");
        }
        tx
    });
    // The writer stalls: with everything idle, the paused clock runs on and
    // the 16 MB of pings have not all been taken.
    assert!(
        tokio::time::timeout(Duration::from_secs(60), &mut writer)
            .await
            .is_err(),
        "the broker read 16 MB of pings that nobody reads the answers of"
    );
    let mut other = server.raw().await;
    let r = other
        .request(Body::Ping(v1::Ping {
            payload: Bytes::from_static(b"still here"),
        }))
        .await;
    assert!(matches!(r, reply::Result::Pong(_)), "{r:?}");
    // Reading again: every ping is answered, in order, and none is lost.
    let mut frames =
        tokio_util::codec::FramedRead::new(&mut rx, turnstile_proto::ClientCodec::new(64 << 20));
    for id in 100..100 + count {
        let frame = tokio::time::timeout(PATIENCE, futures::StreamExt::next(&mut frames))
            .await
            .expect("an answer in time")
            .expect("the connection stays open")
            .expect("a valid frame");
        match frame.body {
            Some(server_frame::Body::Reply(v1::Reply {
                id: got,
                result: Some(reply::Result::Pong(_)),
            })) => assert_eq!(got, id),
            other => panic!("expected the pong of {id}, got {other:?}"),
        }
    }
    let _tx = writer.await.expect("the writer finished");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_told_the_heads_progress_paced_and_the_newest_last() {
    // The holder reports progress 100 times in a burst: the waiter is not
    // sent 100 updates (each carries the whole head of the queue) but a
    // few, paced, and the last shows the newest progress.
    let server = start(ServerConfig::default());
    let mut holder = server.raw().await;
    let mut waiter = server.raw().await;
    let r = holder.request(acquire("pcm", 60_000, 0)).await;
    let reply::Result::Acquire(v1::AcquireReply {
        outcome: Some(v1::acquire_reply::Outcome::Granted(g)),
    }) = r
    else {
        panic!("{r:?}")
    };
    let r = waiter.request(acquire("pcm", 60_000, 0)).await;
    assert!(matches!(r, reply::Result::Acquire(_)), "{r:?}");
    for done in 1..=100 {
        let r = holder
            .request(Body::ReportProgress(v1::ReportProgress {
                lease_id: g.lease_id,
                done,
                total: 100,
                message: String::new(),
            }))
            .await;
        assert!(matches!(r, reply::Result::Done(_)), "{r:?}");
    }
    let mut updates = 0;
    loop {
        let u = lease_update(&mut waiter).await;
        let Some(v1::lease_update::Change::Queued(q)) = u.change else {
            panic!("expected a place in the queue: {u:?}")
        };
        updates += 1;
        let done = q
            .ahead
            .first()
            .and_then(|h| h.progress.as_ref())
            .map(|p| p.done);
        if done == Some(100) {
            break;
        }
    }
    assert!(
        updates <= 3,
        "{updates} updates for a burst of 100 progress reports"
    );
    server.stop().await;
}

/// A consumer's acks sent in one write reach the broker over several
/// reads (it reads a little at a time): their removals, and the attempts
/// of the deliveries they make room for, are still committed as one
/// transaction, one sync, not split at the first read.
#[tokio::test]
async fn a_burst_of_acks_is_one_commit() {
    const PREFETCH: usize = 64;
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = server::Storage::open(dir.path()).expect("open the store");
    let server = start(ServerConfig {
        storage: Some(storage.clone()),
        ..ServerConfig::default()
    });
    let mut publisher = server.raw().await;
    for i in 0..2 * PREFETCH {
        let r = publisher
            .request(Body::Publish(v1::Publish {
                queue: "burst".into(),
                payload: Bytes::from(format!("m{i}")),
                headers: Default::default(),
            }))
            .await;
        assert!(matches!(r, reply::Result::Publish(_)), "{r:?}");
    }
    let mut consumer = server.raw().await;
    let r = consumer
        .request(Body::Consume(v1::Consume {
            queue: "burst".into(),
            prefetch: PREFETCH as u32,
        }))
        .await;
    assert!(matches!(r, reply::Result::Consume(_)), "{r:?}");
    let mut ids = Vec::new();
    while ids.len() < PREFETCH {
        ids.push(
            consumer
                .expect_push(|b| match b {
                    server_frame::Body::Delivery(d) => Some(d.delivery_id),
                    _ => None,
                })
                .await,
        );
    }
    let before = storage.commits();
    let mut burst = Vec::new();
    for (i, delivery_id) in ids.into_iter().enumerate() {
        burst.extend_from_slice(&encode(&v1::ClientFrame {
            id: 1000 + i as u64,
            body: Some(Body::Ack(v1::Ack { delivery_id })),
        }));
    }
    assert!(burst.len() > 256, "more than a read or two of the broker's");
    consumer
        .framed
        .get_mut()
        .write_all(&burst)
        .await
        .expect("write the acks");
    let (mut answered, mut delivered) = (0, 0);
    while answered < PREFETCH || delivered < PREFETCH {
        match consumer.next_frame().await {
            Some(server_frame::Body::Reply(v1::Reply {
                result: Some(reply::Result::Done(_)),
                ..
            })) => answered += 1,
            Some(server_frame::Body::Delivery(_)) => delivered += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        storage.commits() - before,
        1,
        "the burst's removals and attempts in one commit"
    );
    server.stop().await;
}
