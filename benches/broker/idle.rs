//! Broker memory per idle connection: the growth of turnstiled's resident
//! set (`VmRSS` in `/proc/PID/status`) when a peer process (`idle-holder`)
//! opens N connections, says Hello on each and then does nothing, divided
//! by N. Each repetition uses a fresh broker, so that memory the allocator
//! kept from earlier figures cannot hide the growth.
//!
//! The baseline is a bare tokio server holding each connection with one
//! task parked in a 64-byte read (research/performance.md's floor, about
//! 0.9 KB per connection). Kernel memory for the sockets (about 5 KB a
//! pair) is in neither number.

use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::support::Plan;
use crate::support::frames::Conn;
use crate::support::procs::{Broker, Peer, raise_nofile, rss_bytes};
use crate::support::report::{Kind, Rep, Row, Series, Target};

/// Time for the servers to settle after the last connection.
const SETTLE: Duration = Duration::from_millis(500);

/// Runs the idle-connection memory figure.
pub fn run(plan: &Plan) -> Result<Vec<Row>> {
    let n: usize = plan.pick(10_000, 1_000);
    let mut b = Series::new("turnstiled");
    let mut e = Series::new("bare tokio server, 1 task + 64 B per connection");
    for rep in 0..plan.pick(3, 1) {
        let mut one = |through_broker: bool| -> Result<()> {
            let per_conn = if through_broker {
                broker_side(plan, n)?
            } else {
                bare_side(plan, n)?
            };
            let series = if through_broker { &mut b } else { &mut e };
            series.reps.push(Rep::value(per_conn));
            Ok(())
        };
        one(rep % 2 == 0)?;
        one(rep % 2 == 1)?;
    }
    let mut row = Row::new(
        "idle_rss",
        &format!("broker RSS per idle connection, {n} connections"),
        Kind::BytesPerConn,
        b,
    )
    .against(e)
    .target(Target::AtMost(2048.0));
    row.notes.push(
        "VmRSS growth ÷ connections; fresh broker per run; kernel socket memory not included"
            .into(),
    );
    Ok(vec![row])
}

fn per_conn(before: u64, after: u64, n: usize) -> f64 {
    (after as f64 - before as f64) / n as f64
}

fn broker_side(plan: &Plan, n: usize) -> Result<f64> {
    let broker = Broker::start(&plan.path("idle-broker"), &[])?;
    std::thread::sleep(SETTLE);
    let before = rss_bytes(broker.pid())?;
    let socket = broker.socket.display().to_string();
    let mut holder = Peer::spawn("idle-holder", &["broker".into(), socket, n.to_string()])?;
    holder.expect("READY")?;
    std::thread::sleep(SETTLE);
    let after = rss_bytes(broker.pid())?;
    drop(holder);
    Ok(per_conn(before, after, n))
}

fn bare_side(plan: &Plan, n: usize) -> Result<f64> {
    let path = plan.path("idle.sock").display().to_string();
    let mut server = Peer::spawn("idle-server", &[path.clone(), n.to_string()])?;
    server.expect("READY")?;
    std::thread::sleep(SETTLE);
    let before = rss_bytes(server.pid())?;
    let mut holder = Peer::spawn("idle-holder", &["bare".into(), path, n.to_string()])?;
    holder.expect("READY")?;
    server.expect("ALL")?;
    std::thread::sleep(SETTLE);
    let after = rss_bytes(server.pid())?;
    drop(holder);
    Ok(per_conn(before, after, n))
}

/// `idle-holder broker|bare PATH N`: opens N connections (saying Hello on
/// each when it is the broker), prints `READY`, and holds them until killed.
pub fn holder(args: &[String]) -> Result<()> {
    raise_nofile();
    let get = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("idle-holder: missing argument {i}"))
    };
    let through_broker = get(0)? == "broker";
    let path = std::path::PathBuf::from(get(1)?);
    let n: usize = get(2)?.parse()?;
    let mut conns = Vec::with_capacity(n);
    // One at a time, each Hello answered before the next connect: the
    // broker lets only so many connections be in their handshake at once.
    for _ in 0..n {
        conns.push(if through_broker {
            Conn::broker(&path, "bench-idle")?
        } else {
            Conn::connect(&path)?
        });
    }
    println!("READY");
    use std::io::Write;
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
