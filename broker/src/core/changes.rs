//! What a mutation of the core returns: the [`Change`]s for the dispatch
//! layer to deliver, and what a lease's owner is told ([`LeaseUpdate`]).

use std::sync::Arc;

use super::{
    Cause, EventKind, Grant, LeaseId, LeaseView, LostReason, Millis, QueueChange, QueuePosition,
    SessionId, StateEvent, WatchId, YieldRequest,
};

/// A consequence of a mutation, for the dispatch layer to deliver.
#[derive(Clone, Debug)]
pub enum Change {
    /// Tell the session that owns `lease` what became of it.
    Lease {
        /// The owner.
        session: SessionId,
        /// The lease concerned.
        lease: LeaseId,
        /// What happened.
        update: LeaseUpdate,
    },
    /// Deliver a state event to one watch.
    Watch {
        /// The watcher's session.
        session: SessionId,
        /// The watch.
        watch: WatchId,
        /// The event, shared by every watcher that gets it.
        event: Arc<StateEvent>,
    },
    /// The counters reached their persisted reservation: persist
    /// `reserve_until` **before** delivering any change after this one, so
    /// that no token or revision is ever reused after a restart.
    ReserveCounters {
        /// The new high-water mark for both counters.
        reserve_until: u64,
    },
    /// A consequence of a queue operation: a delivery to push, a write for
    /// the store, or a line for the log.
    Queue(QueueChange),
}

/// A lease or a queued request that ended, granted or not, as it was at
/// its end: one line of its resource's history (DESIGN "History"), for the
/// dispatch layer to record.
///
/// Not a [`Change`]: every lease end makes one, so they gather in the
/// core's outbox ([`super::Core::each_ended`]), whose room is reused,
/// rather than in each call's list of changes (an allocation, a box and a
/// partition per release; measured with callgrind at ~1 200 instructions
/// per Acquire + Release cycle, against ~300 this way).
#[derive(Clone, Debug, PartialEq)]
pub struct Ended {
    /// The lease as it stood (position 0).
    pub lease: LeaseView,
    /// When it ended.
    pub at: Millis,
    /// What ended it: `Released`, `Expired`, `Disconnected`, `Cancelled`
    /// (also a wait that timed out) or `Revoked`.
    pub kind: EventKind,
    /// Who and why, as watchers are told (`cause.to_string()`).
    pub cause: Cause,
}

impl Change {
    /// The queue table's changes, as the core's.
    pub fn from_queue(changes: Vec<QueueChange>) -> Vec<Change> {
        changes.into_iter().map(Change::Queue).collect()
    }
}

/// What the owner of a lease is told when its lease changes.
#[derive(Clone, Debug, PartialEq)]
pub enum LeaseUpdate {
    /// The queued request is now a held lease.
    Granted(Grant),
    /// The waiter's position or what is ahead of it changed.
    Queued(QueuePosition),
    /// The lease or the place in the queue is gone.
    Lost {
        /// Why.
        reason: LostReason,
        /// A sentence for humans.
        detail: String,
    },
    /// Someone asks this holder to make way.
    YieldRequested(Arc<YieldRequest>),
}
