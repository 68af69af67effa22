//! Fan-out of one state change to N watchers: the time from the change
//! being sent to the moment the *last* of N watching connections has the
//! event (and, as a footnote, the first).
//!
//! The watchers are N connections held by one peer process (`watchers`),
//! one tokio task each on a current_thread runtime, as in
//! research/performance.md's fan-out anchors. This process triggers the
//! change: an `Acquire` (event GRANTED) or a `Release` (RELEASED) of the
//! watched resource, in turn. The baseline is a bare tokio server
//! (`fanout-server`) writing the very bytes of those two events, captured
//! from the broker beforehand, to N sockets, triggered by one control
//! write. The watchers decode the same frames either way; they report each
//! round's first and last arrival stamps (`CLOCK_MONOTONIC`) on stdout, and
//! the next round starts only once all N have it.

use std::io::Write;
use std::rc::Rc;

use anyhow::{Result, anyhow, bail};
use bytes::BytesMut;
use turnstile_proto::encode_frame;
use turnstile_proto::v1::{self, reply, server_frame};

use crate::support::clock::now_ns;
use crate::support::frames::{self, AsyncConn, Conn, client_frame};
use crate::support::procs::{Broker, Peer};
use crate::support::report::{Kind, Rep, Row, Series, Target, fmt_us};
use crate::support::stats::{Latencies, median};
use crate::support::{PATIENCE, Plan};

const RESOURCE: &str = "bench/fanout";

/// Runs the fan-out figures (N = 100 and 1000; 100 only in a quick run).
pub fn run(plan: &Plan, broker: &Broker) -> Result<Vec<Row>> {
    let sizes: Vec<usize> = plan.pick(vec![100, 1000], vec![100]);
    let warmup = plan.pick(10, 4);
    let events = capture(broker)?;
    let mut rows = Vec::new();
    for &n in &sizes {
        let rounds = plan.pick(if n >= 1000 { 100 } else { 300 }, 40);
        let mut b = Series::new("turnstiled");
        let mut e = Series::new("bare fan-out of the same bytes");
        let (mut b_first, mut e_first) = (Vec::new(), Vec::new());
        for rep in 0..plan.pick(5, 3) {
            let mut one = |broker_side: bool| -> Result<()> {
                let (last, first) = if broker_side {
                    through_broker(broker, n, warmup, rounds)?
                } else {
                    bare(plan, &events, n, warmup, rounds)?
                };
                let (p50, p99) = last.p50_p99();
                let rep = Rep::latency(p50, p99);
                if broker_side {
                    b.reps.push(rep);
                    b_first.push(first.us(0.5));
                } else {
                    e.reps.push(rep);
                    e_first.push(first.us(0.5));
                }
                Ok(())
            };
            one(rep % 2 == 0)?;
            one(rep % 2 == 1)?;
        }
        let mut row = Row::new(
            &format!("fanout_{n}"),
            &format!("fan-out of one state change to {n} watchers (last one has it)"),
            Kind::Latency,
            b,
        )
        .against(e);
        if n >= 1000 {
            row = row.target(Target::RatioAtMost(1.1));
        }
        row.notes.push(format!(
            "{rounds} rounds per run; first watcher has it after {} (bare {})",
            fmt_us(median(&b_first)),
            fmt_us(median(&e_first))
        ));
        rows.push(row);
    }
    Ok(rows)
}

/// The broker's GRANTED and RELEASED events of `RESOURCE`, as frames.
fn capture(broker: &Broker) -> Result<[BytesMut; 2]> {
    let mut watcher = Conn::broker(&broker.socket, "bench-capture")?;
    match watcher.call(2, frames::watch(&[RESOURCE]))? {
        reply::Result::Watch(_) => {}
        other => bail!("expected WatchStarted, got {other:?}"),
    }
    let mut trigger = Conn::broker(&broker.socket, "bench-fanout")?;
    let lease = frames::granted(&trigger.call(2, frames::acquire(RESOURCE, false))?)?;
    let granted = next_event(&mut watcher)?;
    trigger.call(3, frames::release(lease))?;
    let released = next_event(&mut watcher)?;
    Ok([granted, released])
}

fn next_event(conn: &mut Conn) -> Result<BytesMut> {
    loop {
        let frame = conn.server()?;
        if let Some(server_frame::Body::WatchEvent(_)) = &frame.body {
            let mut out = BytesMut::new();
            encode_frame(&frame, &mut out);
            return Ok(out);
        }
    }
}

/// Reads the watchers' report of round `k`: (first, last) stamps.
fn round(watchers: &mut Peer, k: usize) -> Result<(u64, u64)> {
    let line = watchers.expect("R")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    match v[..] {
        [got, first, last] if got == k as u64 => Ok((first, last)),
        _ => bail!("watchers reported {line:?} for round {k}"),
    }
}

fn through_broker(
    broker: &Broker,
    n: usize,
    warmup: usize,
    rounds: usize,
) -> Result<(Latencies, Latencies)> {
    let socket = broker.socket.display().to_string();
    let mut watchers = Peer::spawn("watchers", &["broker".into(), socket, n.to_string()])?;
    watchers.expect("READY")?;
    let mut trigger = Conn::broker(&broker.socket, "bench-fanout")?;
    let (mut last, mut first) = (Latencies::new(), Latencies::new());
    let mut lease = 0;
    for k in 0..warmup + rounds {
        let id = k as u64 + 2;
        let t0 = if k % 2 == 0 {
            let frame = client_frame(id, frames::acquire(RESOURCE, false));
            let t0 = now_ns();
            trigger.send(&frame)?;
            lease = frames::granted(&trigger.reply()?.1)?;
            t0
        } else {
            let frame = client_frame(id, frames::release(lease));
            let t0 = now_ns();
            trigger.send(&frame)?;
            trigger.reply()?;
            t0
        };
        let (f, l) = round(&mut watchers, k)?;
        if k >= warmup {
            first.record(f.saturating_sub(t0));
            last.record(l.saturating_sub(t0));
        }
    }
    Ok((last, first))
}

fn bare(
    plan: &Plan,
    events: &[BytesMut; 2],
    n: usize,
    warmup: usize,
    rounds: usize,
) -> Result<(Latencies, Latencies)> {
    let fan = plan.path("fan.sock").display().to_string();
    let control = plan.path("control.sock");
    let mut server = Peer::spawn(
        "fanout-server",
        &[fan.clone(), control.display().to_string(), n.to_string()],
    )?;
    server.expect("READY")?;
    let mut watchers = Peer::spawn("watchers", &["bare".into(), fan, n.to_string()])?;
    watchers.expect("READY")?;
    let mut trigger = Conn::connect(&control)?;
    let (mut last, mut first) = (Latencies::new(), Latencies::new());
    for k in 0..warmup + rounds {
        let t0 = now_ns();
        trigger.send(&events[k % 2])?;
        let (f, l) = round(&mut watchers, k)?;
        if k >= warmup {
            first.record(f.saturating_sub(t0));
            last.record(l.saturating_sub(t0));
        }
    }
    Ok((last, first))
}

#[derive(Clone, Copy)]
struct Round {
    count: usize,
    first: u64,
    last: u64,
}

/// `watchers broker|bare PATH N`: holds N watching connections and prints
/// `R <round> <first ns> <last ns>` once all N have a round's event.
pub fn watchers(args: &[String]) -> Result<()> {
    let get = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("watchers: missing argument {i}"))
    };
    let through_broker = get(0)? == "broker";
    let path = std::path::PathBuf::from(get(1)?);
    let n: usize = get(2)?.parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(tokio::task::LocalSet::new().run_until(async move {
        let rounds = Rc::new(std::cell::RefCell::new(Vec::<Round>::new()));
        let mut conns = Vec::with_capacity(n);
        // One at a time: the broker lets only so many connections be in
        // their handshake at once.
        for _ in 0..n {
            let mut conn = if through_broker {
                AsyncConn::broker(&path, "bench-watcher").await?
            } else {
                AsyncConn::connect(&path).await?
            };
            if through_broker {
                match conn.call(2, frames::watch(&[RESOURCE])).await? {
                    reply::Result::Watch(_) => {}
                    other => bail!("expected WatchStarted, got {other:?}"),
                }
            }
            conns.push(conn);
        }
        for mut conn in conns {
            let rounds = rounds.clone();
            tokio::task::spawn_local(async move {
                let mut mine = 0usize;
                loop {
                    match conn.fill().await {
                        Ok(true) => {}
                        _ => return,
                    }
                    while let Ok(Some(body)) = conn.buffered() {
                        let Ok(frame) = frames::server_frame(&body) else {
                            return;
                        };
                        let t = now_ns();
                        let Some(server_frame::Body::WatchEvent(event)) = frame.body else {
                            continue;
                        };
                        if event.kind == v1::EventKind::Heartbeat as i32 {
                            continue;
                        }
                        record(&rounds, n, mine, t);
                        mine += 1;
                    }
                }
            });
        }
        println!("READY");
        std::io::stdout().flush()?;
        tokio::time::sleep(PATIENCE * 100).await;
        Ok(())
    }))
}

fn record(rounds: &std::cell::RefCell<Vec<Round>>, n: usize, k: usize, t: u64) {
    let mut rounds = rounds.borrow_mut();
    if rounds.len() <= k {
        rounds.resize(
            k + 1,
            Round {
                count: 0,
                first: u64::MAX,
                last: 0,
            },
        );
    }
    let r = &mut rounds[k];
    r.count += 1;
    r.first = r.first.min(t);
    r.last = r.last.max(t);
    if r.count == n {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "R {k} {} {}", r.first, r.last);
        let _ = out.flush();
    }
}
