//! The contended handoff: a holder in one process releases, and a waiter
//! queued in another process gets the resource. A sample is the time from
//! just before the holder's release leaves it to just after the waiter
//! learns it has the resource, both stamped with `CLOCK_MONOTONIC`.
//!
//! Three mechanisms run the same protocol, each in two fresh peer processes
//! (`handoff-peer`), which take turns being holder and waiter:
//!
//! - `broker`: the waiter's `Acquire` is queued by turnstiled; the holder
//!   sends `Release`; the sample ends when the waiter reads its
//!   `LeaseUpdate{Granted}`;
//! - `relay`: a zero-logic tokio relay sits where the broker was; the
//!   holder writes a frame of the `Release`'s size and the sample ends when
//!   the waiter has read it (the floor of any broker: two socket hops);
//! - `sem`: a POSIX named semaphore used as the mutex, as the PCM service
//!   and agent use theirs; the sample ends when `sem_wait` returns.
//!
//! A peer broker is measured in the same repetitions when installed: a NATS
//! request/reply through a private nats-server (see `peers`), one process
//! to another through the server and back.
//!
//! Before each release the holder waits until the waiter (and the broker
//! or relay in between) is asleep in the kernel, as `sem_handoff_oneway` of
//! research/performance.md does: the figure is the cost of waking a blocked
//! waiter, not of an uncontended re-acquire. That bookkeeping, and the
//! stamps sent over a side socket, are outside the timed window.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use anyhow::{Result, anyhow, bail};
use turnstile_proto::v1::{self, lease_update, reply, server_frame};

use crate::peers::Nats;
use crate::support::Plan;
use crate::support::clock::now_ns;
use crate::support::frames::{self, Conn, client_frame};
use crate::support::procs::{Broker, Peer, wait_asleep};
use crate::support::report::{Kind, Rep, Row, Series, Target};
use crate::support::stats::Latencies;

/// Samples each peer drops at its start.
const WARMUP: usize = 20;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Broker,
    Relay,
    Sem,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Broker => "broker",
            Mode::Relay => "relay",
            Mode::Sem => "sem",
        }
    }
}

/// Runs the handoff figure against the broker, the relay and the semaphore.
pub fn run(plan: &Plan, broker: &Broker) -> Result<Vec<Row>> {
    let iters = plan.pick(2_000, 300);
    let mut through_broker = Series::new("turnstiled");
    let mut relay = Series::new("zero-logic tokio relay");
    let mut sem = Series::new("POSIX named semaphore");
    let mut unverified = [0u64; 3];
    let modes = [Mode::Broker, Mode::Relay, Mode::Sem];
    let mut nats = Series::new("NATS request/reply through a private nats-server (async-nats)");
    let nats_skip = Nats::unavailable();
    if let Some(why) = &nats_skip {
        eprintln!("  {why}");
    }
    for rep in 0..plan.reps() {
        if nats_skip.is_none() {
            let server = Nats::start()?;
            let (p50, p99) = server.request_reply(iters)?.p50_p99();
            nats.reps.push(Rep::latency(p50, p99));
        }
        for k in 0..modes.len() {
            // Rotate the order, so no mechanism always runs first.
            let mode = modes[(k + rep) % modes.len()];
            let (lat, missed) = one(plan, broker, mode, iters)?;
            let (p50, p99) = lat.p50_p99();
            let series = match mode {
                Mode::Broker => &mut through_broker,
                Mode::Relay => &mut relay,
                Mode::Sem => &mut sem,
            };
            series.reps.push(Rep::latency(p50, p99));
            unverified[mode as usize] += missed;
        }
    }
    let figure = "contended handoff: release sent → queued waiter (other process) granted";
    let mut vs_relay = Row::new(
        "handoff_vs_relay",
        figure,
        Kind::Latency,
        through_broker.clone(),
    )
    .against(relay)
    .target(Target::RatioAtMost(1.2));
    let vs_nats = match nats_skip {
        Some(why) => Row::missing("handoff_vs_nats", figure, Kind::Latency, &why),
        None => Row::new(
            "handoff_vs_nats",
            figure,
            Kind::Latency,
            through_broker.clone(),
        )
        .against(nats),
    }
    .target(Target::RatioAtMost(0.3));
    let mut vs_sem = Row::new("handoff_vs_sem", figure, Kind::Latency, through_broker).against(sem);
    let total = (iters as u64) * plan.reps() as u64;
    let note = format!(
        "{iters} handoffs per run; waiter not seen asleep before the release (sample kept): \
         broker {}, relay {}, semaphore {} of {total} each",
        unverified[0], unverified[1], unverified[2]
    );
    vs_relay.notes.push(note.clone());
    vs_sem.notes.push(note);
    Ok(vec![vs_relay, vs_nats, vs_sem])
}

/// One repetition of one mechanism: two peers, `iters` handoffs.
fn one(plan: &Plan, broker: &Broker, mode: Mode, iters: usize) -> Result<(Latencies, u64)> {
    let mut relay_peer = None;
    let (target, middle) = match mode {
        Mode::Broker => (broker.socket.display().to_string(), broker.pid()),
        Mode::Relay => {
            let path = plan.path("relay.sock");
            let mut relay = Peer::spawn("relay", &[path.display().to_string()])?;
            relay.expect("READY")?;
            let pid = relay.pid();
            relay_peer = Some(relay);
            (path.display().to_string(), pid)
        }
        Mode::Sem => {
            let side = plan.path("sem");
            let name = side.file_name().and_then(|n| n.to_str()).unwrap_or("sem");
            (format!("/turnstile-bench-{}-{name}", std::process::id()), 0)
        }
    };
    let side = plan.path("side.sock").display().to_string();
    let args = |who: &str| {
        vec![
            mode.name().to_string(),
            who.to_string(),
            side.clone(),
            target.clone(),
            middle.to_string(),
            iters.to_string(),
        ]
    };
    let mut a = Peer::spawn("handoff-peer", &args("a"))?;
    a.expect("READY")?;
    let mut b = Peer::spawn("handoff-peer", &args("b"))?;
    let mut lat = Latencies::new();
    let mut missed = 0;
    for peer in [&mut a, &mut b] {
        let line = peer.expect("SAMPLES")?;
        let mut words = line.split_whitespace();
        missed += words.next().unwrap_or("0").parse::<u64>()?;
        for w in words {
            lat.record(w.parse()?);
        }
    }
    a.wait()?;
    b.wait()?;
    if mode == Mode::Sem
        && let Ok(name) = CString::new(target)
    {
        // SAFETY: a valid C string; the peers have already unlinked it, so
        // this normally fails with ENOENT, which is fine.
        unsafe { libc::sem_unlink(name.as_ptr()) };
    }
    drop(relay_peer);
    Ok((lat, missed))
}

/// The lock being handed over, as one peer sees it.
enum Lock {
    Broker {
        conn: Conn,
        resource: String,
        lease: u64,
        next_id: u64,
    },
    Relay {
        conn: Conn,
        frame: bytes::BytesMut,
    },
    Sem {
        sem: *mut libc::sem_t,
    },
}

impl Lock {
    fn open(mode: Mode, target: &str, resource: String, create: bool) -> Result<Lock> {
        Ok(match mode {
            Mode::Broker => Lock::Broker {
                conn: Conn::broker(target.as_ref(), "bench-handoff")?,
                resource,
                lease: 0,
                next_id: 1,
            },
            Mode::Relay => Lock::Relay {
                conn: Conn::connect(target.as_ref())?,
                // The size of the broker's Release frame.
                frame: client_frame(1 << 20, frames::release(1 << 20)),
            },
            Mode::Sem => {
                let name = CString::new(target)?;
                // SAFETY: a valid C string; mode and initial value are
                // passed as unsigned ints, as sem_open's variadic tail wants.
                let sem = unsafe {
                    if create {
                        libc::sem_open(
                            name.as_ptr(),
                            libc::O_CREAT | libc::O_EXCL,
                            0o600 as libc::c_uint,
                            1 as libc::c_uint,
                        )
                    } else {
                        libc::sem_open(name.as_ptr(), 0)
                    }
                };
                if sem == libc::SEM_FAILED {
                    bail!("sem_open {target}: {}", std::io::Error::last_os_error());
                }
                Lock::Sem { sem }
            }
        })
    }

    fn next_id(next_id: &mut u64) -> u64 {
        *next_id += 1;
        *next_id
    }

    /// Takes the lock while nobody else wants it (the first holder).
    fn take(&mut self) -> Result<()> {
        match self {
            Lock::Broker {
                conn,
                resource,
                lease,
                next_id,
            } => {
                let id = Self::next_id(next_id);
                *lease = frames::granted(&conn.call(id, frames::acquire(resource, false))?)?;
            }
            Lock::Relay { .. } => {}
            Lock::Sem { sem } => sem_wait(*sem)?,
        }
        Ok(())
    }

    /// Joins the queue (the broker answers `Queued`); returns before the
    /// wait itself.
    fn enqueue(&mut self) -> Result<()> {
        if let Lock::Broker {
            conn,
            resource,
            lease,
            next_id,
        } = self
        {
            let id = Self::next_id(next_id);
            match conn.call(id, frames::acquire(resource, false))? {
                reply::Result::Acquire(v1::AcquireReply {
                    outcome: Some(v1::acquire_reply::Outcome::Queued(q)),
                }) => *lease = q.lease_id,
                other => bail!("expected Queued, got {other:?}"),
            }
        }
        Ok(())
    }

    /// Waits until the lock is ours; returns the stamp taken when we knew.
    fn wait(&mut self) -> Result<u64> {
        match self {
            Lock::Broker { conn, lease, .. } => loop {
                let frame = conn.server()?;
                if let Some(server_frame::Body::LeaseUpdate(v1::LeaseUpdate {
                    lease_id,
                    change: Some(change),
                })) = frame.body
                {
                    let t1 = now_ns();
                    match change {
                        lease_update::Change::Granted(_) if lease_id == *lease => return Ok(t1),
                        lease_update::Change::Lost(lost) => bail!("lease lost: {lost:?}"),
                        _ => {}
                    }
                }
            },
            Lock::Relay { conn, .. } => {
                conn.frame()?;
                Ok(now_ns())
            }
            Lock::Sem { sem } => {
                sem_wait(*sem)?;
                Ok(now_ns())
            }
        }
    }

    /// Releases; returns the stamp taken just before the release left.
    fn release(&mut self) -> Result<u64> {
        match self {
            Lock::Broker {
                conn,
                lease,
                next_id,
                ..
            } => {
                let id = Self::next_id(next_id);
                let frame = client_frame(id, frames::release(*lease));
                let t0 = now_ns();
                conn.send(&frame)?;
                Ok(t0)
            }
            Lock::Relay { conn, frame } => {
                let t0 = now_ns();
                conn.send(frame)?;
                Ok(t0)
            }
            Lock::Sem { sem } => {
                let t0 = now_ns();
                // SAFETY: `sem` came from a successful sem_open.
                if unsafe { libc::sem_post(*sem) } != 0 {
                    bail!("sem_post: {}", std::io::Error::last_os_error());
                }
                Ok(t0)
            }
        }
    }

    /// Reads what the release caused for us (the broker's `Done`).
    fn after_release(&mut self) -> Result<()> {
        if let Lock::Broker { conn, next_id, .. } = self {
            loop {
                let frame = conn.server()?;
                if let Some(server_frame::Body::Reply(_)) = frame.body {
                    let (id, result) = frames::reply_of(frame)?;
                    if id == *next_id && matches!(result, reply::Result::Done(_)) {
                        return Ok(());
                    }
                    bail!("expected Done to {next_id}, got {result:?} to {id}");
                }
            }
        }
        Ok(())
    }
}

fn sem_wait(sem: *mut libc::sem_t) -> Result<()> {
    loop {
        // SAFETY: `sem` came from a successful sem_open.
        if unsafe { libc::sem_wait(sem) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            bail!("sem_wait: {err}");
        }
    }
}

/// `handoff-peer MODE a|b SIDE TARGET MIDDLE_PID ITERS`: one of the two
/// peers. `a` holds first and listens on the SIDE socket; `b` connects to
/// it. Prints `SAMPLES <unverified> <ns>...` at the end: the handoffs it
/// received as the waiter.
pub fn peer(args: &[String]) -> Result<()> {
    let get = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("handoff-peer: missing argument {i}"))
    };
    let mode = match get(0)? {
        "broker" => Mode::Broker,
        "relay" => Mode::Relay,
        "sem" => Mode::Sem,
        other => bail!("unknown mode {other}"),
    };
    let is_a = get(1)? == "a";
    let side_path = get(2)?;
    let target = get(3)?;
    let middle: u32 = get(4)?.parse()?;
    let iters: usize = get(5)?.parse()?;
    let resource = format!(
        "bench/handoff/{}",
        std::path::Path::new(side_path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
    );

    let (mut lock, mut side) = if is_a {
        let mut lock = Lock::open(mode, target, resource, true)?;
        lock.take()?;
        let listener = UnixListener::bind(side_path)?;
        println!("READY");
        std::io::stdout().flush()?;
        let (side, _) = listener.accept()?;
        (lock, side)
    } else {
        let side = UnixStream::connect(side_path)?;
        (Lock::open(mode, target, resource, false)?, side)
    };
    // Each tells the other its pid, once set up: the start signal.
    side.write_all(&std::process::id().to_le_bytes())?;
    let mut pid = [0u8; 4];
    side.read_exact(&mut pid)?;
    let other = u32::from_le_bytes(pid);
    let mut asleep = vec![other];
    if middle != 0 {
        asleep.push(middle);
    }

    let mut samples = Vec::with_capacity(iters / 2 + 1);
    let mut unverified = 0u64;
    let mut byte = [0u8; 1];
    for i in 0..iters {
        let holder = (i % 2 == 0) == is_a;
        if holder {
            side.read_exact(&mut byte)?; // the other has queued
            if !wait_asleep(&asleep) {
                unverified += 1;
            }
            let t0 = lock.release()?;
            side.write_all(&t0.to_le_bytes())?;
            lock.after_release()?;
            side.read_exact(&mut byte)?; // the other holds it now
        } else {
            lock.enqueue()?;
            side.write_all(b"q")?;
            let t1 = lock.wait()?;
            let mut stamp = [0u8; 8];
            side.read_exact(&mut stamp)?;
            let t0 = u64::from_le_bytes(stamp);
            if i >= WARMUP {
                samples.push(t1.saturating_sub(t0));
            }
            side.write_all(b"a")?;
        }
    }
    if let Lock::Sem { sem } = lock {
        // SAFETY: `sem` came from a successful sem_open; the name is valid.
        unsafe {
            libc::sem_close(sem);
            if is_a && let Ok(name) = CString::new(target) {
                libc::sem_unlink(name.as_ptr());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    write!(out, "SAMPLES {unverified}")?;
    for s in samples {
        write!(out, " {s}")?;
    }
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
