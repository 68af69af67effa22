//! Counter persistence: the core asks for the next block of revisions and
//! fencing tokens half a block ahead ([`Change::ReserveCounters`]); it is
//! committed off the core task, retried until it is stored, and the core
//! told ([`crate::core::Core::counters_stored`]). The core never hands out
//! a fencing token above the durable reservation, so nothing here blocks
//! the core task, and a store that cannot write stops grants (loudly)
//! rather than letting a token be handed out twice across a restart.
//!
//! The queue writes a core call causes go to the store in order, without
//! waiting.

use std::time::Duration;

use crate::core::{Change, StoreOp};
use crate::server::ToCore;
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
        let to_core = self.to_core.clone();
        tokio::spawn(async move {
            if let Err(e) = commit.await {
                tracing::warn!(
                    "a queue update was not stored ({e}); a message may be delivered again after a restart, or with a lower attempt count"
                );
            }
            if !deliveries.is_empty() {
                let _ = to_core.send(ToCore::Deliveries { deliveries }).await;
            }
        });
    }
}
