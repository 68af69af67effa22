//! Durable message queues: publish throughput with 1 and 8 concurrent
//! publishers (each waiting for its `Published` before the next: every
//! message is on disk when counted), and consume throughput (deliveries
//! acked as they arrive, prefetch 256, from a queue filled beforehand).
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
const CONSUME: &str = "consume with acks, prefetch 256";
const FSYNC: &str = "64 B write + fdatasync per message, same filesystem";

/// Runs the queue figures, or reports why they cannot run yet.
pub fn run(plan: &Plan, broker: &Broker) -> Result<Vec<Row>> {
    let mut probe = Conn::broker(&broker.socket, "bench-probe")?;
    if let Err(e) = probe.call(2, publish("bench/probe")) {
        let why = format!("not yet measured: queues have not landed (probe Publish: {e})");
        return Ok(vec![
            Row::missing("publish_1", PUBLISH_1, Kind::Rate("msg"), &why),
            Row::missing("publish_8", PUBLISH_8, Kind::Rate("msg"), &why)
                .target(Target::AtLeast(10_000.0)),
            Row::missing("consume", CONSUME, Kind::Rate("msg"), &why),
        ]);
    }
    let window = plan.pick(Duration::from_secs(2), Duration::from_millis(300));
    let backlog = plan.pick(20_000, 2_000);
    let mut one = Series::new("turnstiled");
    let mut eight = Series::new("turnstiled");
    let mut pipelined = Series::new("turnstiled");
    let mut consume = Series::new("turnstiled");
    let mut fsync = Series::new(FSYNC);
    for rep in 0..plan.pick(3, 1) {
        let floor = Rep::value(fsync_rate(plan, window)?);
        fsync.reps.push(floor);
        let rate = publishers(broker, 1, 1, rep, window)?;
        one.reps.push(Rep::value(rate));
        let rate = publishers(broker, 8, 1, rep, window)?;
        eight.reps.push(Rep::value(rate));
        let rate = publishers(broker, 8, 32, rep, window)?;
        pipelined.reps.push(Rep::value(rate));
        consume
            .reps
            .push(Rep::value(consumer(broker, rep, backlog)?));
    }
    Ok(vec![
        Row::new("publish_1", PUBLISH_1, Kind::Rate("msg"), one).against(fsync.clone()),
        Row::new("publish_8", PUBLISH_8, Kind::Rate("msg"), eight)
            .against(fsync.clone())
            .target(Target::AtLeast(10_000.0)),
        Row::new("publish_8x32", PUBLISH_8X32, Kind::Rate("msg"), pipelined).against(fsync),
        Row::new("consume", CONSUME, Kind::Rate("msg"), consume),
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
fn fsync_rate(plan: &Plan, window: Duration) -> Result<f64> {
    use std::os::unix::fs::FileExt;
    const SPAN: u64 = 1 << 20;
    let path = plan.path("fsync.dat");
    let file = std::fs::File::create(&path)?;
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
    let _ = std::fs::remove_file(&path);
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
    runtime()?.block_on(tokio::task::LocalSet::new().run_until(async move {
        let count = Rc::new(Cell::new(0u64));
        let stop = Rc::new(Cell::new(false));
        let mut tasks = Vec::new();
        for p in 0..n {
            let mut conn = AsyncConn::broker(&broker.socket, "bench-publisher").await?;
            let (count, stop) = (count.clone(), stop.clone());
            let queue = format!("bench/pub/{rep}/{n}x{in_flight}/{p}");
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

/// Deliveries per second to one consumer acking each, from a queue that
/// already holds `backlog` messages.
fn consumer(broker: &Broker, rep: usize, backlog: usize) -> Result<f64> {
    let queue = format!("bench/consume/{rep}");
    runtime()?.block_on(async {
        // Fill the queue, 256 publishes in flight.
        let mut producer = AsyncConn::broker(&broker.socket, "bench-producer").await?;
        let mut id = 1u64;
        let mut left = backlog;
        while left > 0 {
            let batch = left.min(256);
            let mut out = BytesMut::new();
            for _ in 0..batch {
                id += 1;
                push_client_frame(&mut out, id, publish(&queue));
            }
            producer.send(&out).await?;
            for _ in 0..batch {
                frames::reply_of(frames::server_frame(&producer.frame().await?)?)?;
            }
            left -= batch;
        }
        let mut consumer = AsyncConn::broker(&broker.socket, "bench-consumer").await?;
        let t0 = now_ns();
        consumer
            .send(&client_frame(
                2,
                Body::Consume(v1::Consume {
                    queue: queue.clone(),
                    prefetch: 256,
                }),
            ))
            .await?;
        let mut delivered = 0usize;
        let mut next_id = 3u64;
        while delivered < backlog {
            if !consumer.fill().await? {
                bail!("the broker closed the consumer");
            }
            let mut acks = BytesMut::new();
            while let Some(body) = consumer.buffered()? {
                match frames::server_frame(&body)?.body {
                    Some(server_frame::Body::Delivery(d)) => {
                        delivered += 1;
                        next_id += 1;
                        push_client_frame(
                            &mut acks,
                            next_id,
                            Body::Ack(v1::Ack {
                                delivery_id: d.delivery_id,
                            }),
                        );
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
        let t1 = now_ns();
        Ok(backlog as f64 / ((t1 - t0) as f64 / 1e9))
    })
}
