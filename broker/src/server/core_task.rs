//! The core's owner: [`SharedCore`] holds the [`Dispatcher`] (and so the
//! core), and [`run`] is the task that applies its deadlines and takes
//! what arrives from outside a connection (the store's answers, writers
//! with room again, a new peer's Hello).
//!
//! A connection's task calls the core directly
//! ([`SharedCore::handle_now`]) rather than through the inbox: the runtime
//! has one thread, so the call is the hand-over, and a request costs no
//! wake-up of another task (issue 14: the reader → core → writer hops were
//! a fifth of a Ping's instructions). The lock is never held across an
//! await, so on the current_thread runtime it is never contended; on any
//! other it would be correct, only slower.
//!
//! Every entry into the core also checks whether the broker itself was not
//! running: the core task turns at least every [`TURN`], so a longer gap
//! between two entries means the process was stopped or the thread blocked.
//! That time is taken out of the core's clock
//! ([`Dispatcher::broker_stopped`]) before anything else is done, so that
//! the KeepAlives waiting in the sockets are read before a lease they keep
//! alive can expire.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::ToCore;
use super::dispatch::Dispatcher;
use crate::core::Millis;

/// The core task turns at least this often, even with nothing to do.
const TURN: Duration = Duration::from_millis(100);

/// A gap between two turns longer than this is the broker's own stall,
/// not scheduling noise: generous, so that a busy machine does not
/// stretch leases for nothing.
const STALL: Duration = Duration::from_millis(1000);

/// The dispatcher and the bookkeeping of its turns, behind one lock.
pub(super) struct SharedCore {
    state: Mutex<State>,
    /// Tells the core task that a call made a deadline earlier than the one
    /// it sleeps until.
    rearm: Notify,
}

struct State {
    d: Dispatcher,
    /// Real time (not tokio's, which tests pause and advance) of the last
    /// entry into the core: a stall is the process not running.
    last_turn: Instant,
    /// The latest core time anything was done at: a skip never goes below.
    seen: Millis,
    /// The deadline the core task sleeps until, if any.
    armed: Option<tokio::time::Instant>,
}

impl State {
    /// An entry into the core: takes a stall out of the clock first.
    fn turn(&mut self) {
        super::outbound::begin_entry();
        let turn = Instant::now();
        let gap = turn.duration_since(self.last_turn);
        self.last_turn = turn;
        if gap > STALL {
            self.d.broker_stopped(gap - TURN, self.seen);
        }
        // Before anything a client sent after reading its `Published`.
        self.d.take_commits();
    }
}

impl SharedCore {
    /// Shares `d` between the core task and the connections' tasks.
    pub(super) fn new(d: Dispatcher) -> Arc<SharedCore> {
        let seen = d.now();
        Arc::new(SharedCore {
            state: Mutex::new(State {
                d,
                last_turn: Instant::now(),
                seen,
                armed: None,
            }),
            rearm: Notify::new(),
        })
    }

    /// `None` once a call into the core has panicked: the state may be
    /// half-changed, so nothing more is served (connections close).
    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.lock().ok()
    }

    /// Handles what a connection's task has for the core, in order, now:
    /// deadlines already due are applied first (a KeepAlive that arrives
    /// after the TTL ran out must find the lease expired; see
    /// `Dispatcher::begin`). `false` when
    /// the core is gone.
    pub(super) fn handle_now(&self, msgs: impl IntoIterator<Item = ToCore>) -> bool {
        self.enter(|d| {
            for msg in msgs {
                d.handle(msg);
            }
        })
    }

    /// Enters the core as [`SharedCore::handle_now`] does, and lets `f`
    /// hand it what it has (requests read in place from a connection's
    /// buffer). `false` when the core is gone.
    pub(super) fn enter(&self, f: impl FnOnce(&mut Dispatcher)) -> bool {
        let Some(mut s) = self.lock() else {
            return false;
        };
        s.turn();
        // Deadlines already due are applied before the first request that
        // could observe them (`Dispatcher::begin`); an entry that only
        // answered Pings neither read the core's time nor changed a
        // deadline.
        f(&mut s.d);
        let Some(seen) = s.d.finish_entry() else {
            return true;
        };
        s.seen = seen;
        // A new deadline before the one the core task sleeps until (a
        // short TTL): wake it to sleep less. (The bound is the new
        // deadline then; it is earlier than the next one only after a
        // deadline set and removed within the entry: a wake-up for
        // nothing, rare.)
        if let Some(next) = s.d.deadline_bound()
            && s.armed.is_none_or(|armed| next < armed)
        {
            s.armed = Some(next);
            self.rearm.notify_one();
        }
        true
    }
}

/// What woke the loop.
enum Woken {
    Stop,
    Batch(usize),
    /// The store filed commits (taken by every entry: see `State::turn`).
    Committed,
    Deadline,
    Rearm,
    Turn,
}

/// Runs the core task until every connection task and the accept loop are
/// gone or `stop` is cancelled.
pub(super) async fn run(
    core: Arc<SharedCore>,
    mut inbox: mpsc::Receiver<ToCore>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(256);
    let commits = match core.lock() {
        Some(s) => s.d.commits(),
        None => return,
    };
    loop {
        let deadline = match core.lock() {
            Some(mut s) => {
                s.armed = s.d.next_deadline();
                s.armed
            }
            None => return,
        };
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let woken = tokio::select! {
            biased;
            _ = stop.cancelled() => Woken::Stop,
            n = inbox.recv_many(&mut batch, 256) => Woken::Batch(n),
            () = commits.filed() => Woken::Committed,
            _ = sleep => Woken::Deadline,
            _ = core.rearm.notified() => Woken::Rearm,
            _ = tokio::time::sleep(TURN) => Woken::Turn,
        };
        let Some(mut s) = core.lock() else {
            return;
        };
        s.turn();
        match woken {
            Woken::Stop | Woken::Batch(0) => break,
            Woken::Batch(_) => {
                // Deadlines already due are applied first (see `handle_now`).
                s.d.begin();
                for msg in batch.drain(..) {
                    s.d.handle(msg);
                }
            }
            Woken::Committed => {}
            Woken::Deadline => s.d.begin_woken(),
            Woken::Rearm | Woken::Turn => s.d.begin(),
        }
        if let Some(seen) = s.d.finish_entry() {
            s.seen = seen;
        }
    }
    if let Some(mut s) = core.lock() {
        s.d.close_all();
    }
}
