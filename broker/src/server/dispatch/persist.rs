//! Counter persistence: the core asks for the next block of revisions and
//! fencing tokens half a block ahead ([`Change::ReserveCounters`]); it is
//! committed off the core task, retried until it is stored, and the core
//! told ([`crate::core::Core::counters_stored`]). The core never hands out
//! a fencing token above the durable reservation, so nothing here blocks
//! the core task, and a store that cannot write stops grants (loudly)
//! rather than letting a token be handed out twice across a restart.
//!
//! The queue writes a core call causes go to the store in order, without
//! waiting. Deliveries among them wait for their commit
//! ([`Dispatcher::store_then_deliver`]); an answer that must not overtake
//! them (`CancelConsume`'s) waits with them ([`AwaitingStore`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::{Change, QueueChange, SessionId, StoreOp};
use crate::server::ToCore;
use crate::server::outbound::Outbound;
use crate::store::StoreError;

use super::Dispatcher;

/// The longest pause between two tries of a reservation that failed.
const RETRY_AT_MOST: Duration = Duration::from_secs(5);

impl Dispatcher {
    /// Starts making a counter reservation durable, in the background.
    pub(super) fn persist(&mut self, change: &Change) {
        let Change::ReserveCounters { reserve_until } = *change else {
            return;
        };
        let Some(store) = self.store.clone() else {
            // Without a store the counters only live as long as the broker.
            let changes = self.core.counters_stored(reserve_until, self.clock.now());
            let now = self.clock.now();
            self.deliver(changes, now);
            return;
        };
        let to_core = self.to_core.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            loop {
                let op = StoreOp::ReserveCounters { reserve_until };
                match store.enqueue(vec![op]).await {
                    Ok(()) => break,
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::error!(
                            reserve_until,
                            "the counter reservation could not be stored ({e}); retrying in \
                             {pause:?}. No fencing token above the last stored reservation is \
                             handed out: grants stop there until it is stored"
                        );
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(RETRY_AT_MOST);
                    }
                }
            }
            let _ = to_core
                .send(ToCore::CountersStored {
                    until: reserve_until,
                })
                .await;
        });
    }

    /// The store made a reservation durable: grants held back go ahead.
    pub(super) fn counters_stored(&mut self, until: u64) {
        tracing::debug!(until, "counter reservation stored");
        let was_stopped = self.core.grants_stopped();
        let now = self.clock.now();
        let changes = self.core.counters_stored(until, now);
        if was_stopped {
            tracing::warn!(until, "the counter reservation is stored: grants resume");
        }
        self.deliver(changes, now);
    }

    /// Commits the first counter reservation and waits for it: nothing is
    /// served before it (at startup only).
    pub(super) fn reserve_at_start(&mut self, reserve_until: u64) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            let op = StoreOp::ReserveCounters { reserve_until };
            futures::executor::block_on(store.enqueue(vec![op]))?;
        }
        tracing::debug!(reserve_until, "counter reservation stored");
        Ok(())
    }

    /// Hands writes to the store: they are committed in the order enqueued.
    /// `deliveries` (the deliveries whose attempts are among the writes) go
    /// out once the commit is back, through the core task
    /// ([`ToCore::Deliveries`]); nothing else waits. A failure is logged and
    /// the deliveries go out all the same (an attempt count may then be
    /// low after a crash, which at-least-once allows).
    pub(super) fn store_then_deliver(&mut self, ops: Vec<StoreOp>, deliveries: Vec<Change>) {
        let Some(store) = &self.store else {
            let now = self.clock.now();
            self.deliver(deliveries, now);
            return;
        };
        let commit = store.enqueue(ops);
        let batch = (!deliveries.is_empty()).then(|| self.awaiting_store.start(&deliveries));
        let to_core = self.to_core.clone();
        tokio::spawn(async move {
            if let Err(e) = commit.await {
                tracing::warn!(
                    "a queue update was not stored ({e}); a message may be delivered again after a restart, or with a lower attempt count"
                );
            }
            if let Some(batch) = batch {
                let _ = to_core.send(ToCore::Deliveries { batch, deliveries }).await;
            }
        });
    }

    /// The deliveries of `batch` are stored: out they go, then the answers
    /// that waited for them.
    pub(super) fn deliveries_stored(&mut self, batch: u64, deliveries: Vec<Change>) {
        let now = self.clock.now();
        self.deliver(deliveries, now);
        for (session, id, answer) in self.awaiting_store.back(batch) {
            self.no_longer_in_flight(session, id);
            self.send_item(session, answer, true);
            // It goes on with what it sent meanwhile.
            self.resume(session);
        }
    }
}

/// Deliveries waiting for their commit, per batch
/// ([`Dispatcher::store_then_deliver`]), and the answers held behind
/// them. A `CancelConsume` is answered only once every delivery decided
/// for the connection before it is out: a client that has its `Done`
/// has every message the consumer was sent (the promise "nothing is
/// delivered to it after the Done"), so one that stops at a count or a
/// time never leaves a message it was sent unseen, its attempt used for
/// nothing.
#[derive(Debug, Default)]
pub(super) struct AwaitingStore {
    /// The last batch number given.
    last: u64,
    /// The batches not back yet, with the connections they deliver to.
    batches: BTreeMap<u64, Vec<SessionId>>,
    /// Answers held until no batch up to the number beside them delivers
    /// to their connection, with their request ids (counted in flight, so
    /// `--max-in-flight` bounds them per connection).
    held: Vec<(u64, SessionId, u64, Outbound)>,
}

impl AwaitingStore {
    /// A batch of `deliveries` goes to the store: its number.
    fn start(&mut self, deliveries: &[Change]) -> u64 {
        let mut sessions: Vec<SessionId> = deliveries
            .iter()
            .filter_map(|c| match c {
                Change::Queue(QueueChange::Deliver { session, .. }) => Some(*session),
                _ => None,
            })
            .collect();
        sessions.sort_unstable();
        sessions.dedup();
        self.last += 1;
        self.batches.insert(self.last, sessions);
        self.last
    }

    /// The newest batch not back yet that delivers to `session`.
    pub(super) fn newest_for(&self, session: SessionId) -> Option<u64> {
        self.batches
            .iter()
            .rev()
            .find(|(_, sessions)| sessions.binary_search(&session).is_ok())
            .map(|(&batch, _)| batch)
    }

    /// Holds `answer` to request `id` of `session` until no batch up to
    /// `after` delivers to it.
    pub(super) fn hold(&mut self, after: u64, session: SessionId, id: u64, answer: Outbound) {
        self.held.push((after, session, id, answer));
    }

    /// `batch` is back: the answers free to go now, in the order held.
    fn back(&mut self, batch: u64) -> Vec<(SessionId, u64, Outbound)> {
        self.batches.remove(&batch);
        if self.held.is_empty() {
            return Vec::new();
        }
        let batches = &self.batches;
        let waits = |after: u64, session: SessionId| {
            batches
                .range(..=after)
                .any(|(_, sessions)| sessions.binary_search(&session).is_ok())
        };
        let (waiting, free): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|&(after, session, _, _)| waits(after, session));
        self.held = waiting;
        free.into_iter()
            .map(|(_, session, id, answer)| (session, id, answer))
            .collect()
    }
}
