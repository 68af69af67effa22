//! Request/reply figures: a Ping round trip and an uncontended Acquire +
//! Release cycle against the broker, each next to a bare tokio echo server
//! that sends back the very frames the client wrote (same sizes, same
//! framing and decoding on the client); and, for information, a Ping
//! through the client library.
//!
//! The client is this process, one blocking socket, one request in flight.
//! Each repetition starts a fresh echo process and alternates which side
//! goes first, so that neither always gets the warmer caches.

use anyhow::{Result, bail};
use turnstile_client::{Client, ConnectOptions};
use turnstile_proto::v1::{client_frame::Body, reply};

use crate::peers::Dbus;
use crate::support::clock::now_ns;
use crate::support::frames::{self, Conn, client_frame};
use crate::support::procs::{Broker, Peer};
use crate::support::report::{Kind, Rep, Row, Series, Target};
use crate::support::stats::Latencies;
use crate::support::{PAYLOAD, Plan};

const WARMUP: usize = 200;

/// Runs the ping, cycle and client-library ping figures.
pub fn run(plan: &Plan, broker: &Broker) -> Result<Vec<Row>> {
    let iters = plan.pick(20_000, 2_000);
    let cycles = plan.pick(10_000, 1_000);
    let client_iters = plan.pick(10_000, 1_000);
    let mut ping_b = Series::new("turnstiled");
    let mut ping_e = Series::new("bare tokio echo, same frames");
    let mut cycle_b = Series::new("turnstiled");
    let mut cycle_e = Series::new("2 bare echo round trips, same frames");
    let mut client_b = Series::new("turnstiled via turnstile-client");
    let mut client_e = Series::new("bare tokio echo, same frames");
    let mut dbus = Series::new("D-Bus GetId through a private dbus-daemon (zbus)");
    let dbus_skip = Dbus::unavailable();
    if let Some(why) = &dbus_skip {
        eprintln!("  {why}");
    }
    let mut id = 1u64;
    for rep in 0..plan.reps() {
        let echo_path = plan.path("echo.sock");
        let mut echo = Peer::spawn("echo", &[echo_path.display().to_string()])?;
        echo.expect("READY")?;
        let mut b = Conn::broker(&broker.socket, "bench-ping")?;
        let mut e = Conn::connect(&echo_path)?;
        ping_broker(&mut b, WARMUP, &mut id)?;
        ping_echo(&mut e, WARMUP, &mut id)?;
        cycle_broker(&mut b, WARMUP / 2, &mut id)?;
        cycle_echo(&mut e, WARMUP / 2, &mut id)?;

        let (pb, pe) = if rep % 2 == 0 {
            let pb = ping_broker(&mut b, iters, &mut id)?;
            (pb, ping_echo(&mut e, iters, &mut id)?)
        } else {
            let pe = ping_echo(&mut e, iters, &mut id)?;
            (ping_broker(&mut b, iters, &mut id)?, pe)
        };
        push(&mut ping_b, &pb);
        push(&mut ping_e, &pe);

        let (cb, ce) = if rep % 2 == 0 {
            let cb = cycle_broker(&mut b, cycles, &mut id)?;
            (cb, cycle_echo(&mut e, cycles, &mut id)?)
        } else {
            let ce = cycle_echo(&mut e, cycles, &mut id)?;
            (cycle_broker(&mut b, cycles, &mut id)?, ce)
        };
        push(&mut cycle_b, &cb);
        push(&mut cycle_e, &ce);

        let cl = client_ping(&broker.socket, client_iters)?;
        let ee = ping_echo(&mut e, client_iters, &mut id)?;
        push(&mut client_b, &cl);
        push(&mut client_e, &ee);
        if dbus_skip.is_none() {
            let bus = Dbus::start(plan)?;
            push(&mut dbus, &bus.get_id(client_iters)?);
        }
    }
    let vs_dbus = match dbus_skip {
        Some(why) => Row::missing(
            "client_ping_vs_dbus",
            "Ping through turnstile-client vs a D-Bus call through dbus-daemon",
            Kind::Latency,
            &why,
        ),
        None => Row::new(
            "client_ping_vs_dbus",
            "Ping through turnstile-client vs a D-Bus call through dbus-daemon",
            Kind::Latency,
            client_b.clone(),
        )
        .against(dbus),
    }
    .target(Target::RatioAtMost(0.4));
    Ok(vec![
        Row::new(
            "ping",
            "Ping round trip, 64 B payload",
            Kind::Latency,
            ping_b,
        )
        .against(ping_e)
        .target(Target::RatioAtMost(1.15))
        .target(Target::P99RatioAtMost(1.4)),
        Row::new(
            "acquire_release",
            "uncontended Acquire + Release cycle",
            Kind::Latency,
            cycle_b,
        )
        .against(cycle_e)
        .target(Target::RatioAtMost(1.2)),
        Row::new(
            "client_ping",
            "Ping through turnstile-client (tokio)",
            Kind::Latency,
            client_b,
        )
        .against(client_e)
        .target(Target::RatioAtMost(1.25)),
        vs_dbus,
    ])
}

fn push(series: &mut Series, lat: &Latencies) {
    let (p50, p99) = lat.p50_p99();
    series.reps.push(Rep::latency(p50, p99));
}

fn next(id: &mut u64) -> u64 {
    *id += 1;
    *id
}

fn ping_broker(c: &mut Conn, iters: usize, id: &mut u64) -> Result<Latencies> {
    let mut lat = Latencies::new();
    for _ in 0..iters {
        let id = next(id);
        let frame = client_frame(id, frames::ping());
        let t0 = now_ns();
        c.send(&frame)?;
        let (got, result) = c.reply()?;
        let t1 = now_ns();
        if got != id || !matches!(result, reply::Result::Pong(_)) {
            bail!("expected Pong to {id}, got {result:?} to {got}");
        }
        lat.record(t1 - t0);
    }
    Ok(lat)
}

fn ping_echo(c: &mut Conn, iters: usize, id: &mut u64) -> Result<Latencies> {
    let mut lat = Latencies::new();
    for _ in 0..iters {
        let id = next(id);
        let frame = client_frame(id, frames::ping());
        let t0 = now_ns();
        c.send(&frame)?;
        let back = c.echoed()?;
        let t1 = now_ns();
        if back.id != id || !matches!(back.body, Some(Body::Ping(_))) {
            bail!("the echo sent back something else");
        }
        lat.record(t1 - t0);
    }
    Ok(lat)
}

const CYCLE_RESOURCE: &str = "bench/cycle";

fn cycle_broker(c: &mut Conn, iters: usize, id: &mut u64) -> Result<Latencies> {
    let mut lat = Latencies::new();
    for _ in 0..iters {
        let acquire_id = next(id);
        let release_id = next(id);
        let acquire = client_frame(acquire_id, frames::acquire(CYCLE_RESOURCE, false));
        let t0 = now_ns();
        c.send(&acquire)?;
        let (got, result) = c.reply()?;
        if got != acquire_id {
            bail!("reply to {got}, expected {acquire_id}");
        }
        let lease = frames::granted(&result)?;
        c.send(&client_frame(release_id, frames::release(lease)))?;
        let (got, result) = c.reply()?;
        let t1 = now_ns();
        if got != release_id || !matches!(result, reply::Result::Done(_)) {
            bail!("expected Done to {release_id}, got {result:?} to {got}");
        }
        lat.record(t1 - t0);
    }
    Ok(lat)
}

fn cycle_echo(c: &mut Conn, iters: usize, id: &mut u64) -> Result<Latencies> {
    let mut lat = Latencies::new();
    for _ in 0..iters {
        let acquire_id = next(id);
        let release_id = next(id);
        let acquire = client_frame(acquire_id, frames::acquire(CYCLE_RESOURCE, false));
        let t0 = now_ns();
        c.send(&acquire)?;
        let back = c.echoed()?;
        if back.id != acquire_id {
            bail!("the echo sent back something else");
        }
        // A lease id of the broker's magnitude, so the frame has its size.
        c.send(&client_frame(release_id, frames::release(acquire_id)))?;
        let back = c.echoed()?;
        let t1 = now_ns();
        if back.id != release_id {
            bail!("the echo sent back something else");
        }
        lat.record(t1 - t0);
    }
    Ok(lat)
}

fn client_ping(socket: &std::path::Path, iters: usize) -> Result<Latencies> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = Client::connect(ConnectOptions::new("bench-client").socket(socket)).await?;
        let mut lat = Latencies::new();
        for i in 0..WARMUP + iters {
            let t0 = now_ns();
            let pong = client.ping(PAYLOAD.to_vec()).await?;
            let t1 = now_ns();
            if pong.len() != PAYLOAD.len() {
                bail!("Pong of {} bytes", pong.len());
            }
            if i >= WARMUP {
                lat.record(t1 - t0);
            }
        }
        Ok(lat)
    })
}
