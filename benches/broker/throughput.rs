//! Aggregate throughput: 64 clients, each keeping W = 16 lease operations
//! in flight on resources of its own (acquire, then release, then acquire
//! again, per slot), counted over a fixed window after a warm-up. One
//! operation is one request answered (an `Acquire` or a `Release`).
//!
//! The clients are connections of this process on one current_thread
//! runtime, speaking raw frames: each answers every whole reply that
//! arrived with the next requests, all in one write (the client library
//! would be the bottleneck here, not the broker). The baseline is the
//! bare tokio echo server with the same clients sending the same frames;
//! each echoed `Acquire` is taken as granted.
//!
//! Loaded latency (request queued → reply read) is a footnote: with 1024
//! requests in flight it is mostly queueing (Little's law). So are the CPU
//! the server used per operation and the load generator's CPU share, which
//! tell whether the broker or the load generator was the bottleneck.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Result, bail};
use bytes::BytesMut;
use prost::Message;
use turnstile_proto::v1::{self, client_frame::Body, reply};

use crate::support::Plan;
use crate::support::clock::now_ns;
use crate::support::frames::{self, AsyncConn, push_client_frame};
use crate::support::procs::{Broker, Peer, cpu_seconds};
use crate::support::report::{Kind, Rep, Row, Series, Target, fmt_us};
use crate::support::stats::{Latencies, median};

const CLIENTS: usize = 64;
const WINDOW: usize = 16;
/// Low bits of a request id that name its slot.
const SLOT_BITS: u32 = 8;

struct Load {
    ops_per_s: f64,
    lat: Latencies,
    server_cpu_us_per_op: f64,
    client_cpu_share: f64,
}

/// Runs the throughput figure.
pub fn run(plan: &Plan, broker: &Broker) -> Result<Vec<Row>> {
    let warm = plan.pick(Duration::from_millis(500), Duration::from_millis(200));
    let window = plan.pick(Duration::from_secs(2), Duration::from_millis(500));
    let mut b = Series::new("turnstiled");
    let mut e = Series::new("bare tokio echo, same clients and frames");
    let (mut b_cpu, mut e_cpu, mut b_gen, mut e_gen) = (vec![], vec![], vec![], vec![]);
    let (mut b_lat, mut e_lat) = (vec![], vec![]);
    for rep in 0..plan.pick(5, 2) {
        let path = plan.path("echo.sock");
        let mut echo = Peer::spawn("echo", &[path.display().to_string()])?;
        echo.expect("READY")?;
        let mut one = |through_broker: bool| -> Result<()> {
            let tag = format!("{rep}{}", if through_broker { "b" } else { "e" });
            let load = if through_broker {
                load(&broker.socket, true, broker.pid(), &tag, warm, window)?
            } else {
                load(&path, false, echo.pid(), &tag, warm, window)?
            };
            let (p50, p99) = load.lat.p50_p99();
            let rep = Rep {
                value: load.ops_per_s,
                p50: Some(p50),
                p99: Some(p99),
            };
            let (series, cpu, generator, lat) = if through_broker {
                (&mut b, &mut b_cpu, &mut b_gen, &mut b_lat)
            } else {
                (&mut e, &mut e_cpu, &mut e_gen, &mut e_lat)
            };
            series.reps.push(rep);
            cpu.push(load.server_cpu_us_per_op);
            generator.push(load.client_cpu_share);
            lat.push((p50, p99));
            Ok(())
        };
        one(rep % 2 == 0)?;
        one(rep % 2 == 1)?;
    }
    let lat = |v: &[(f64, f64)]| {
        let p50: Vec<f64> = v.iter().map(|x| x.0).collect();
        let p99: Vec<f64> = v.iter().map(|x| x.1).collect();
        format!(
            "p50 {} / p99 {}",
            fmt_us(median(&p50)),
            fmt_us(median(&p99))
        )
    };
    let mut row = Row::new(
        "throughput",
        &format!("lease operations/s, {CLIENTS} clients × {WINDOW} in flight, distinct resources"),
        Kind::Rate("op"),
        b,
    )
    .against(e)
    .target(Target::RatioAtLeast(0.5));
    row.notes.push(format!(
        "loaded latency: broker {}, echo {}",
        lat(&b_lat),
        lat(&e_lat)
    ));
    row.notes.push(format!(
        "server CPU per operation: broker {:.2} µs, echo {:.2} µs; load generator CPU \
         (one thread): {:.0} % with the broker, {:.0} % with the echo",
        median(&b_cpu),
        median(&e_cpu),
        median(&b_gen) * 100.0,
        median(&e_gen) * 100.0
    ));
    Ok(vec![row])
}

#[derive(Default)]
struct Shared {
    ops: Cell<u64>,
    measuring: Cell<bool>,
    stop: Cell<bool>,
    lat: RefCell<Option<Latencies>>,
}

fn load(
    path: &std::path::Path,
    through_broker: bool,
    server_pid: u32,
    tag: &str,
    warm: Duration,
    window: Duration,
) -> Result<Load> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(tokio::task::LocalSet::new().run_until(async move {
        let shared = Rc::new(Shared::default());
        *shared.lat.borrow_mut() = Some(Latencies::new());
        let mut conns = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            conns.push(if through_broker {
                AsyncConn::broker(path, "bench-load").await?
            } else {
                AsyncConn::connect(path).await?
            });
        }
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(c, conn)| {
                let resources = (0..WINDOW)
                    .map(|s| format!("bench/tp/{tag}/{c:02}/{s:02}"))
                    .collect();
                tokio::task::spawn_local(client(conn, resources, through_broker, shared.clone()))
            })
            .collect();
        tokio::time::sleep(warm).await;
        let me = std::process::id();
        let (ops0, t0) = (shared.ops.get(), now_ns());
        let (server0, client0) = (cpu_seconds(server_pid), cpu_seconds(me));
        shared.measuring.set(true);
        tokio::time::sleep(window).await;
        shared.measuring.set(false);
        let (ops1, t1) = (shared.ops.get(), now_ns());
        let (server1, client1) = (cpu_seconds(server_pid), cpu_seconds(me));
        shared.stop.set(true);
        // Let the clients read the replies in flight and stop; one that
        // failed earlier reports its error here.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for task in tasks {
            if task.is_finished() {
                task.await??;
            } else {
                task.abort();
            }
        }
        let secs = (t1 - t0) as f64 / 1e9;
        let ops = (ops1 - ops0) as f64;
        let cpu = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        let lat = shared
            .lat
            .borrow_mut()
            .take()
            .unwrap_or_else(Latencies::new);
        if lat.len() == 0 {
            bail!("no operation completed in the window");
        }
        Ok(Load {
            ops_per_s: ops / secs,
            lat,
            server_cpu_us_per_op: cpu(server0, server1) * 1e6 / ops,
            client_cpu_share: cpu(client0, client1) / secs,
        })
    }))
}

fn id_of(seq: &mut u64, slot: usize) -> u64 {
    *seq += 1;
    (*seq << SLOT_BITS) | slot as u64
}

async fn client(
    mut conn: AsyncConn,
    resources: Vec<String>,
    through_broker: bool,
    shared: Rc<Shared>,
) -> Result<()> {
    let mut seq = 0u64;
    let mut sent_at = vec![now_ns(); resources.len()];
    let mut out = BytesMut::with_capacity(resources.len() * 64);
    for (slot, resource) in resources.iter().enumerate() {
        push_client_frame(
            &mut out,
            id_of(&mut seq, slot),
            frames::acquire(resource, true),
        );
    }
    conn.send(&out).await?;
    out.clear();
    loop {
        if !conn.fill().await? {
            bail!("the server closed the connection");
        }
        let now = now_ns();
        let mut done = 0;
        while let Some(body) = conn.buffered()? {
            let (id, next) = if through_broker {
                let (id, result) = frames::reply_of(frames::server_frame(&body)?)?;
                let next = match result {
                    reply::Result::Acquire(_) => Some(frames::granted(&result)?),
                    reply::Result::Done(_) => None,
                    other => bail!("unexpected reply {other:?}"),
                };
                (id, next)
            } else {
                let frame = v1::ClientFrame::decode(body)?;
                let next = match frame.body {
                    // A lease id of the broker's magnitude.
                    Some(Body::Acquire(_)) => Some(frame.id >> SLOT_BITS),
                    Some(Body::Release(_)) => None,
                    other => bail!("the echo sent back {other:?}"),
                };
                (frame.id, next)
            };
            let slot = (id & ((1 << SLOT_BITS) - 1)) as usize;
            let Some(resource) = resources.get(slot) else {
                bail!("reply to unknown slot {slot}");
            };
            let body = match next {
                Some(lease) => frames::release(lease),
                None => frames::acquire(resource, true),
            };
            push_client_frame(&mut out, id_of(&mut seq, slot), body);
            if shared.measuring.get()
                && let Some(lat) = shared.lat.borrow_mut().as_mut()
            {
                lat.record(now.saturating_sub(sent_at[slot]));
            }
            sent_at[slot] = now;
            done += 1;
        }
        shared.ops.set(shared.ops.get() + done);
        if shared.stop.get() {
            return Ok(());
        }
        if !out.is_empty() {
            conn.send(&out).await?;
            out.clear();
        }
    }
}
