//! Where the processes of a figure run: every figure is taken twice, once
//! **co-located** (the broker, its baseline server and the client all pinned
//! to one CPU) and once **cross-CPU** (servers on one CPU, clients on
//! another), because on a VM a cross-CPU wake-up (~20–40 µs) hides the
//! server's own work and a co-located one does not (STYLE.md item 19).
//!
//! Pinning is `sched_setaffinity`, as `taskset` does it: the harness pins
//! all of its own threads to the client CPU (the peers it spawns inherit
//! that), the broker's threads to the server CPU, and every server peer
//! (echo, relay, bare fan-out, dbus-daemon, nats-server) to the server CPU
//! before it execs.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};

/// One of the two placements a figure is taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Servers and clients on the same CPU.
    CoLocated,
    /// Servers on one CPU, clients on another.
    CrossCpu,
}

impl Placement {
    /// How the table names it.
    pub fn label(self) -> &'static str {
        match self {
            Placement::CoLocated => "co-located",
            Placement::CrossCpu => "cross-CPU",
        }
    }

    /// A short suffix for the JSON keys.
    pub fn key(self) -> &'static str {
        match self {
            Placement::CoLocated => "co",
            Placement::CrossCpu => "cross",
        }
    }
}

/// No CPU chosen yet.
const UNSET: usize = usize::MAX;
static SERVER_CPU: AtomicUsize = AtomicUsize::new(UNSET);

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // fills it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// The placements this machine can give: cross-CPU needs two CPUs.
pub fn available(cpus: &[usize]) -> Vec<Placement> {
    if cpus.len() >= 2 {
        vec![Placement::CoLocated, Placement::CrossCpu]
    } else {
        vec![Placement::CoLocated]
    }
}

fn set_of(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Pins one thread (a tid, or 0 for the calling thread) to `cpu`.
fn pin_tid(tid: libc::pid_t, cpu: usize) -> std::io::Result<()> {
    let set = set_of(cpu);
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pins every thread of process `pid` (what `taskset -a -p` does).
pub fn pin_process(pid: u32, cpu: usize) -> Result<()> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?;
    for task in tasks {
        let name = task?.file_name();
        let Some(tid) = name.to_str().and_then(|t| t.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        match pin_tid(tid, cpu) {
            Ok(()) => {}
            // A thread that ended since the directory was read.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => bail!("pinning thread {tid} of {pid} to CPU {cpu}: {e}"),
        }
    }
    Ok(())
}

/// Enters `placement`: this process (and so every client peer it spawns
/// from now on) on the client CPU, `servers` (the broker) on the server CPU.
pub fn enter(placement: Placement, cpus: &[usize], servers: &[u32]) -> Result<()> {
    let server = *cpus.first().context("no CPU to run on")?;
    let client = match placement {
        Placement::CoLocated => server,
        Placement::CrossCpu => *cpus.get(1).context("cross-CPU needs two CPUs")?,
    };
    SERVER_CPU.store(server, Ordering::SeqCst);
    pin_process(std::process::id(), client)?;
    for &pid in servers {
        pin_process(pid, server)?;
    }
    Ok(())
}

/// The CPU set a server process must run on in the current placement, to
/// be applied in the child before it execs; `None` before any placement.
pub fn server_set() -> Option<libc::cpu_set_t> {
    match SERVER_CPU.load(Ordering::SeqCst) {
        UNSET => None,
        cpu => Some(set_of(cpu)),
    }
}

/// Whether a peer role is a server (pinned with the broker) or a client
/// (which stays with the harness).
pub fn is_server_role(role: &str) -> bool {
    matches!(role, "echo" | "relay" | "fanout-server" | "idle-server")
}
