//! The core task's loop: it owns the [`Dispatcher`] (and so the core),
//! takes what the connection tasks send in batches, applies the deadlines
//! that are due before anything else, and sleeps until the next one.
//!
//! It also notices when the broker itself was not running: the loop turns
//! at least every [`TURN`], so a longer gap between two turns means the
//! process was stopped or the task blocked. That time is taken out of the
//! core's clock ([`Dispatcher::broker_stopped`]) before anything else is
//! done, so that the KeepAlives waiting in the sockets are read before a
//! lease they keep alive can expire.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ToCore;
use super::dispatch::Dispatcher;

/// The loop turns at least this often, even with nothing to do.
const TURN: Duration = Duration::from_millis(100);

/// A gap between two turns longer than this is the broker's own stall,
/// not scheduling noise: generous, so that a busy machine does not
/// stretch leases for nothing.
const STALL: Duration = Duration::from_millis(1000);

/// What woke the loop.
enum Woken {
    Stop,
    Batch(usize),
    Deadline,
    Turn,
}

/// Runs the core task until every connection task and the accept loop are
/// gone or `stop` is cancelled.
pub(super) async fn run(
    mut d: Dispatcher,
    mut inbox: mpsc::Receiver<ToCore>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(256);
    // Real time (not tokio's, which tests pause and advance): a stall is
    // the process not running.
    let mut last_turn = Instant::now();
    // The latest core time anything was done at: a skip never goes below.
    let mut seen = d.now();
    loop {
        let deadline = d.next_deadline();
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
            _ = sleep => Woken::Deadline,
            _ = tokio::time::sleep(TURN) => Woken::Turn,
        };
        let turn = Instant::now();
        let gap = turn.duration_since(last_turn);
        last_turn = turn;
        if gap > STALL {
            d.broker_stopped(gap - TURN, seen);
        }
        match woken {
            Woken::Stop | Woken::Batch(0) => break,
            Woken::Batch(_) => {
                // Deadlines already due are applied first: a KeepAlive that
                // arrives after the TTL ran out must find the lease expired.
                d.expire(false);
                for msg in batch.drain(..) {
                    d.handle(msg);
                }
            }
            Woken::Deadline => d.expire(true),
            Woken::Turn => d.expire(false),
        }
        seen = d.now();
    }
    d.close_all();
}
