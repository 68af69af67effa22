//! The harness's machinery, shared by every figure: the clock all processes
//! agree on, the child processes (the broker and the bench binary itself
//! re-executed in a role), raw frames on a socket, percentiles, and the
//! report. It measures nothing itself.

pub mod clock;
pub mod frames;
pub mod placement;
pub mod procs;
pub mod report;
pub mod stats;

use std::path::PathBuf;
use std::time::Duration;

/// What a run is asked to do: how hard, and where to put its files.
pub struct Plan {
    /// `TURNSTILE_BENCH_QUICK=1` (or a `cargo test` run): small counts, so
    /// that the whole table is printed in well under a minute.
    pub quick: bool,
    /// Figures to run (`cargo bench --bench broker -- ping handoff`); empty
    /// means all of them.
    pub only: Vec<String>,
    /// A temporary directory for sockets and broker data, removed at the end.
    pub tmp: PathBuf,
}

impl Plan {
    /// Whether the figure `name` is selected.
    pub fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str()))
    }

    /// `full` in a full run, `quick` in a quick one.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }

    /// Repetitions of a latency figure (each in fresh peer processes).
    pub fn reps(&self) -> usize {
        self.pick(7, 3)
    }

    /// A fresh path in the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        self.tmp
            .join(format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed)))
    }
}

/// How long any single wait on a peer may take before the run is declared
/// hung. Generous: a loaded CI machine must never trip it.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The 64-byte payload of every Ping, as in research/performance.md.
pub const PAYLOAD: [u8; 64] = [0x5a; 64];
