//! Durable message queues: publish throughput with 1 and 8 concurrent
//! publishers (each waiting for its `Published` before the next: every
//! message is on disk when counted) next to a bare `write + fdatasync`
//! loop on the same filesystem (the loop on the broker's CPU, and taking
//! turns with the publishers in short slices), and consume throughput (deliveries acked as
//! they arrive, prefetch 256, from a queue filled beforehand) next to the
//! same deliveries without acks: what acks cost (durable acks are the
//! reliability issue's; whether they are is the broker's business, the
//! figure is the same).
//!
//! The figures are taken only once the broker accepts a `Publish`: until
//! the queue issue lands, the probe's refusal is reported as the reason,
//! and the rows say "not yet measured" instead of numbers.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Result, bail};
use bytes::BytesMut;
use turnstile_proto::v1::{self, client_frame::Body, reply, server_frame};

use crate::support::clock::now_ns;
use crate::support::frames::{self, AsyncConn, Conn, client_frame, push_client_frame};
use crate::support::procs::Broker;
use crate::support::report::{Kind, Rep, Row, Series, Target};
use crate::support::stats::median;
use crate::support::{PAYLOAD, Plan};

fn publish(queue: &str) -> Body {
    Body::Publish(v1::Publish {
        queue: queue.to_string(),
        payload: PAYLOAD.to_vec().into(),
        headers: BTreeMap::new(),
    })
}

const PUBLISH_1: &str = "durable publish, 1 publisher, 1 in flight";
const PUBLISH_8: &str = "durable publish, 8 publishers, 1 in flight each";
const PUBLISH_8X32: &str = "durable publish, 8 publishers × 32 in flight, for information";
const CONSUME: &str = "consume, acking each delivery, prefetch 256";
const NO_ACKS: &str = "deliveries without acks (windows of 1024, the largest prefetch)";
const FSYNC: &str = "64 B write + fdatasync per message, same filesystem";

/// Runs the queue figures, or reports why they cannot run yet.
pub fn run(plan: &Plan, broker: &Broker) -> Result<Vec<Row>> {
    let mut probe = Conn::broker(&broker.socket, "bench-probe")?;
    if let Err(e) = probe.call(2, publish("bench/probe")) {
        let why = format!("not yet measured: queues have not landed (probe Publish: {e})");
        return Ok(vec![
            Row::missing("publish_1", PUBLISH_1, Kind::Rate("msg"), &why)
                .target(Target::RatioAtLeast(0.8)),
            Row::missing("publish_8", PUBLISH_8, Kind::Rate("msg"), &why)
                .target(Target::RatioAtLeast(4.0)),
            Row::missing("consume", CONSUME, Kind::Rate("msg"), &why)
                .target(Target::RatioAtLeast(0.8)),
        ]);
    }
    let window = plan.pick(Duration::from_secs(2), Duration::from_millis(300));
    let backlog = plan.pick(20_000, 2_000);
    let mut one = Series::new("turnstiled");
    let mut eight = Series::new("turnstiled");
    let mut pipelined = Series::new("turnstiled");
    let mut consume = Series::new("turnstiled");
    let mut no_acks = Series::new(NO_ACKS);
    let mut fsync = Series::new(FSYNC);
    // The disk's speed drifts by the second on a shared machine (other
    // builds flush too): the bare loop and the publishers take turns in
    // short slices, so that each figure and its baseline see the same disk.
    let slices = plan.pick(8u32, 4);
    let slice = window / slices;
    for rep in 0..plan.pick(3, 1) {
        let (mut floor, mut rate1, mut rate8) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..slices {
            floor.push(fsync_rate(plan, slice)?);
            rate1.push(publishers(broker, 1, 1, rep, slice)?);
            rate8.push(publishers(broker, 8, 1, rep, slice)?);
        }
        // Medians: a slice that met a stall of the disk does not count.
        fsync.reps.push(Rep::value(median(&floor)));
        one.reps.push(Rep::value(median(&rate1)));
        eight.reps.push(Rep::value(median(&rate8)));
        let rate = publishers(broker, 8, 32, rep, window)?;
        pipelined.reps.push(Rep::value(rate));
        let (with, without) = if rep % 2 == 0 {
            let with = consumer(broker, rep, backlog, true)?;
            (with, consumer(broker, rep, backlog, false)?)
        } else {
            let without = consumer(broker, rep, backlog, false)?;
            (consumer(broker, rep, backlog, true)?, without)
        };
        consume.reps.push(Rep::value(with));
        no_acks.reps.push(Rep::value(without));
    }
    Ok(vec![
        Row::new("publish_1", PUBLISH_1, Kind::Rate("msg"), one)
            .against(fsync.clone())
            .target(Target::RatioAtLeast(0.8)),
        Row::new("publish_8", PUBLISH_8, Kind::Rate("msg"), eight)
            .against(fsync.clone())
            .target(Target::RatioAtLeast(4.0)),
        Row::new("publish_8x32", PUBLISH_8X32, Kind::Rate("msg"), pipelined).against(fsync),
        Row::new("consume", CONSUME, Kind::Rate("msg"), consume)
            .against(no_acks)
            .target(Target::RatioAtLeast(0.8)),
    ])
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Writes of 64 bytes into a preallocated file, each made durable with
/// `fdatasync` before the next, per second: what one durable message costs
/// this disk at the least (no file growth, so no metadata to flush).
///
/// The loop runs on the servers' CPU, where the broker's store thread
/// runs in both placements: on this VM the disk's interrupts land on one
/// CPU, and a loop on that CPU saw its syncs complete ~30 % sooner than
/// one on the other (issue 14, fourth session), so a loop on the clients'
/// CPU would not be the same disk path as the broker's.
fn fsync_rate(plan: &Plan, window: Duration) -> Result<f64> {
    let path = plan.path("fsync.dat");
    std::thread::spawn(move || {
        if let Some(set) = crate::support::placement::server_set() {
            // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is
            // this thread.
            let pinned =
                unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
            if pinned != 0 {
                bail!(
                    "pinning the fdatasync loop to the servers' CPU: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        fsync_loop(&path, window)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the fdatasync loop panicked"))?
}

fn fsync_loop(path: &std::path::Path, window: Duration) -> Result<f64> {
    use std::os::unix::fs::FileExt;
    const SPAN: u64 = 1 << 20;
    let file = std::fs::File::create(path)?;
    file.write_all_at(&vec![0u8; SPAN as usize], 0)?;
    file.sync_all()?;
    let start = std::time::Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        file.write_all_at(&PAYLOAD, (n * PAYLOAD.len() as u64) % SPAN)?;
        file.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(path);
    Ok(rate)
}

/// Messages per second that `n` publishers get confirmed, each on its own
/// queue with `in_flight` publishes outstanding.
fn publishers(
    broker: &Broker,
    n: usize,
    in_flight: usize,
    rep: usize,
    window: Duration,
) -> Result<f64> {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    runtime()?.block_on(tokio::task::LocalSet::new().run_until(async move {
        let count = Rc::new(Cell::new(0u64));
        let stop = Rc::new(Cell::new(false));
        let mut tasks = Vec::new();
        for p in 0..n {
            let mut conn = AsyncConn::broker(&broker.socket, "bench-publisher").await?;
            let (count, stop) = (count.clone(), stop.clone());
            // Fresh queues for every call: both placements share the
            // broker, and nothing consumes these, so that a fast broker
            // filled one queue to its limit (100 000) over the two
            // placements of the pipelined figure.
            let queue = format!("bench/pub/{rep}/{call}/{n}x{in_flight}/{p}");
            tasks.push(tokio::task::spawn_local(async move {
                let mut id = 1;
                let mut out = BytesMut::new();
                for _ in 0..in_flight {
                    id += 1;
                    push_client_frame(&mut out, id, publish(&queue));
                }
                conn.send(&out).await?;
                let mut outstanding = in_flight;
                while outstanding > 0 {
                    if !conn.fill().await? {
                        bail!("the broker closed a publisher");
                    }
                    out.clear();
                    while let Some(body) = conn.buffered()? {
                        match frames::reply_of(frames::server_frame(&body)?)? {
                            (_, reply::Result::Publish(_)) => count.set(count.get() + 1),
                            (_, other) => bail!("expected Published, got {other:?}"),
                        }
                        outstanding -= 1;
                        if !stop.get() {
                            id += 1;
                            push_client_frame(&mut out, id, publish(&queue));
                            outstanding += 1;
                        }
                    }
                    if !out.is_empty() {
                        conn.send(&out).await?;
                    }
                }
                Ok(())
            }));
        }
        tokio::time::sleep(window / 4).await;
        let (c0, t0) = (count.get(), now_ns());
        tokio::time::sleep(window).await;
        let (c1, t1) = (count.get(), now_ns());
        stop.set(true);
        for task in tasks {
            task.await??;
        }
        Ok((c1 - c0) as f64 / ((t1 - t0) as f64 / 1e9))
    }))
}

/// Largest prefetch the broker honours (`MAX_PREFETCH` in its core): how
/// many deliveries a consumer that never acks can take.
const NO_ACK_WINDOW: usize = 1024;

/// Fills `queue` with `n` messages, 256 publishes in flight.
async fn fill(broker: &Broker, queue: &str, n: usize) -> Result<()> {
    let mut producer = AsyncConn::broker(&broker.socket, "bench-producer").await?;
    let mut id = 1u64;
    let mut left = n;
    while left > 0 {
        let batch = left.min(256);
        let mut out = BytesMut::new();
        for _ in 0..batch {
            id += 1;
            push_client_frame(&mut out, id, publish(queue));
        }
        producer.send(&out).await?;
        for _ in 0..batch {
            frames::reply_of(frames::server_frame(&producer.frame().await?)?)?;
        }
        left -= batch;
    }
    Ok(())
}

/// Deliveries per second to one consumer from a queue filled beforehand.
///
/// With `ack`: one consumer, prefetch 256, acking each delivery as it
/// arrives, `backlog` messages. Without: the baseline of what acks cost,
/// deliveries alone: since a consumer that never acks gets at most
/// [`NO_ACK_WINDOW`] deliveries, `backlog` is taken as windows of that many
/// from queues of that many, each by a fresh consumer (prefetch =
/// window), timed from its `Consume` to its last delivery.
fn consumer(broker: &Broker, rep: usize, backlog: usize, ack: bool) -> Result<f64> {
    runtime()?.block_on(async {
        let (windows, per_window, prefetch) = if ack {
            (1, backlog, 256)
        } else {
            (
                backlog.div_ceil(NO_ACK_WINDOW),
                NO_ACK_WINDOW,
                NO_ACK_WINDOW as u32,
            )
        };
        let mut busy_ns = 0u64;
        for w in 0..windows {
            let queue = format!(
                "bench/consume/{rep}/{}/{w}",
                if ack { "ack" } else { "noack" }
            );
            fill(broker, &queue, per_window).await?;
            busy_ns += consume(broker, &queue, per_window, prefetch, ack).await?;
        }
        Ok((windows * per_window) as f64 / (busy_ns as f64 / 1e9))
    })
}

/// One consumer on `queue` until it has `n` deliveries; nanoseconds from
/// its `Consume` to the last.
async fn consume(broker: &Broker, queue: &str, n: usize, prefetch: u32, ack: bool) -> Result<u64> {
    let mut consumer = AsyncConn::broker(&broker.socket, "bench-consumer").await?;
    let t0 = now_ns();
    consumer
        .send(&client_frame(
            2,
            Body::Consume(v1::Consume {
                queue: queue.to_string(),
                prefetch,
            }),
        ))
        .await?;
    let mut delivered = 0usize;
    let mut next_id = 3u64;
    while delivered < n {
        if !consumer.fill().await? {
            bail!("the broker closed the consumer");
        }
        let mut acks = BytesMut::new();
        while let Some(body) = consumer.buffered()? {
            match frames::server_frame(&body)?.body {
                Some(server_frame::Body::Delivery(d)) => {
                    delivered += 1;
                    if ack {
                        next_id += 1;
                        push_client_frame(
                            &mut acks,
                            next_id,
                            Body::Ack(v1::Ack {
                                delivery_id: d.delivery_id,
                            }),
                        );
                    }
                }
                Some(server_frame::Body::Reply(r)) => {
                    if let Some(reply::Result::Error(e)) = r.result {
                        bail!("consume failed: {e:?}");
                    }
                }
                _ => {}
            }
        }
        if !acks.is_empty() {
            consumer.send(&acks).await?;
        }
    }
    Ok(now_ns() - t0)
}
