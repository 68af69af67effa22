//! Counter persistence: a reservation of revisions and fencing tokens is
//! made durable before anything that may carry one leaves, and the queue
//! writes a core call causes go to the store in order, without waiting.

use crate::core::{Change, StoreOp};
use crate::store::StoreError;

use super::Dispatcher;

impl Dispatcher {
    pub(super) fn reserve_first(&mut self, changes: &[Change]) {
        for c in changes {
            if let Change::ReserveCounters { .. } = c {
                self.persist(c);
            }
        }
    }

    /// Makes a counter reservation durable before anything after it is
    /// sent, so that no fencing token or revision is handed out twice
    /// across a restart. The core task waits for this one commit: it
    /// happens once every [`crate::core::COUNTER_BLOCK`] tokens or
    /// revisions, and every frame after it must wait for it anyway.
    /// (Without a store the counters only live as long as the broker.)
    pub(super) fn persist(&mut self, change: &Change) {
        let Change::ReserveCounters { reserve_until } = *change else {
            return;
        };
        if reserve_until <= self.reserved {
            return;
        }
        let mut tries = 0;
        while let Err(e) = self.reserve(reserve_until) {
            tries += 1;
            if tries == 3 {
                tracing::error!(
                    reserve_until,
                    "the counter reservation could not be stored: {e}; fencing tokens and revisions \
                     handed out from now on may be handed out again after a restart"
                );
                self.reserved = reserve_until;
                return;
            }
            tracing::warn!(
                reserve_until,
                "the counter reservation could not be stored, retrying: {e}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Commits a counter reservation and waits for it.
    pub(super) fn reserve(&mut self, reserve_until: u64) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            let op = StoreOp::ReserveCounters { reserve_until };
            futures::executor::block_on(store.enqueue(vec![op]))?;
        }
        tracing::debug!(reserve_until, "counter reservation stored");
        self.reserved = reserve_until;
        Ok(())
    }

    /// Hands writes to the store without waiting: they are committed in the
    /// order enqueued, and a failure is only logged (the message concerned
    /// is delivered again after a restart, which at-least-once allows).
    pub(super) fn store_detached(&self, ops: Vec<StoreOp>) {
        let Some(store) = &self.store else {
            return;
        };
        let commit = store.enqueue(ops);
        tokio::spawn(async move {
            if let Err(e) = commit.await {
                tracing::warn!(
                    "a queue update was not stored ({e}); an acknowledged message may be delivered again after a restart"
                );
            }
        });
    }
}
