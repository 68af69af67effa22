//! The core's refusals. Queue outcomes (granted, queued) are values, not
//! errors; these are what a request is refused with, each saying why.

use std::sync::Arc;

use super::{ConsumerId, DeliveryId, Ending, LeaseId, SessionId, WatchId};

/// Refusals. Queue outcomes (granted, queued) are values, not errors.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CoreError {
    /// A resource or queue name breaks the naming rule.
    #[error("invalid {what} name: {reason}")]
    InvalidName {
        /// "resource" or "queue".
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Some other argument is out of range.
    #[error(transparent)]
    InvalidArgument(BadArgument),
    /// No lease with this id was ever handed out (or it was long forgotten).
    #[error("lease {0} is not known to this broker")]
    UnknownLease(LeaseId),
    /// The lease existed but has ended.
    #[error("lease {lease} has already ended: {ending}")]
    Ended {
        /// The lease.
        lease: LeaseId,
        /// How it ended.
        ending: Ending,
    },
    /// The lease belongs to another connection.
    #[error("lease {0} belongs to another connection")]
    NotOwner(LeaseId),
    /// `WAIT_POLICY_NO_WAIT` and the resource cannot be granted now.
    #[error("{resource} is busy: {holder}")]
    Busy {
        /// The resource.
        resource: String,
        /// Who holds it, for what.
        holder: String,
    },
    /// The request is valid but the lease or session is in the wrong
    /// state for it.
    #[error(transparent)]
    WrongState(WrongState),
    /// A per-session quota is used up.
    #[error("too many {what} on this connection (limit {limit})")]
    Quota {
        /// What ran out: "leases", "watches".
        what: &'static str,
        /// The limit in force.
        limit: usize,
    },
    /// The uid already has `--max-waiters-per-uid` requests waiting in
    /// lease queues (RESOURCE_EXHAUSTED).
    #[error(
        "uid {uid} already has {limit} requests waiting for leases, the per-user limit (--max-waiters-per-uid)"
    )]
    UserWaiters {
        /// The requester.
        uid: u32,
        /// The limit in force.
        limit: usize,
    },
    /// The requester's uid is at its limit of leases, held or queued.
    #[error(
        "uid {uid} already has {limit} leases, held or waiting, the per-user limit (--max-leases-per-uid)"
    )]
    UserLeases {
        /// The requester.
        uid: u32,
        /// The limit in force.
        limit: usize,
    },
    /// No watch with this id on this session.
    #[error("watch {0} is not known on this connection")]
    UnknownWatch(WatchId),
    /// A queue operation was refused.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// One of the core's own invariants does not hold (a bug): the request
    /// is refused rather than answered from a broken table.
    #[error("internal error: {0}")]
    Broken(&'static str),
}

/// An argument out of range, other than a name.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadArgument {
    /// The TTL asked for is outside the configured range.
    #[error("a time to live of {ttl_ms} ms is outside the accepted range {min}..={max} ms")]
    TtlOutOfRange {
        /// The TTL asked for (the default already put in for 0).
        ttl_ms: u32,
        /// `min_ttl_ms`.
        min: u32,
        /// `max_ttl_ms`.
        max: u32,
    },
    /// A free-text field is longer than [`MAX_TEXT_BYTES`].
    #[error("{what} is {len} bytes long, the limit is {limit}")]
    TextTooLong {
        /// Which field.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// [`MAX_TEXT_BYTES`].
        limit: usize,
    },
    /// A request names a capacity other than the resource's.
    #[error("{resource} has capacity {capacity}{fixed}; this request asked for {asked}")]
    CapacityMismatch {
        /// The resource.
        resource: String,
        /// Its capacity (0 = not a semaphore).
        capacity: u32,
        /// What the request named.
        asked: u32,
        /// ", fixed by the broker's config" or ", while in use".
        fixed: &'static str,
    },
    /// More permits than the semaphore has.
    #[error("{permits} permits asked of {resource}, which has only {capacity}")]
    TooManyPermits {
        /// The resource.
        resource: String,
        /// Permits asked for.
        permits: u32,
        /// Its capacity.
        capacity: u32,
    },
    /// A detach grace longer than the longest TTL.
    #[error("detach_grace_ms {grace_ms} is over the limit of {max} ms (the longest TTL)")]
    GraceTooLong {
        /// The grace asked for.
        grace_ms: u32,
        /// `max_ttl_ms`.
        max: u32,
    },
    /// A detach grace without a resume token (a bug of the caller).
    #[error("a detach grace needs a resume token")]
    NoResumeToken,
    /// A `global/` name on a broker that belongs to no fleet.
    #[error(
        "{resource} is a global resource, but this broker has no fleet (start turnstiled with --fleet-etcd URL)"
    )]
    NoFleet {
        /// The resource.
        resource: String,
    },
    /// A `global/` request that will not wait: its place is decided by
    /// etcd, so whether it is free now cannot be answered at once.
    #[error(
        "{resource} is a global resource: a request on it must be able to wait (no-wait is not supported across hosts)"
    )]
    GlobalNoWait {
        /// The resource.
        resource: String,
    },
    /// A progress report with more steps done than in all.
    #[error("progress done ({done}) exceeds total ({total})")]
    ProgressOverTotal {
        /// Steps done.
        done: u32,
        /// Steps in all.
        total: u32,
    },
}

/// Why a valid request does not apply to the lease or session it names.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WrongState {
    /// `Cancel` on a request that was granted meanwhile.
    #[error("lease {0} was already granted; release it instead")]
    AlreadyGranted(LeaseId),
    /// `ReportProgress` on a request still in the queue.
    #[error("lease {0} is still queued; only a holder reports progress")]
    StillQueued(LeaseId),
    /// `DeclineYield` on a request still in the queue.
    #[error("lease {0} is still queued; only a holder declines to yield")]
    NotHolding(LeaseId),
    /// The session has said goodbye.
    #[error("session {0} is closed")]
    SessionClosed(SessionId),
}

/// Refusals of queue operations.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    /// The queue holds `max_depth` messages (RESOURCE_EXHAUSTED).
    #[error("queue {queue} is full: it holds {limit} messages, its limit")]
    QueueFull {
        /// The queue.
        queue: Arc<str>,
        /// `max_depth`.
        limit: u64,
    },
    /// The message would take the queue past `max_bytes` (RESOURCE_EXHAUSTED).
    #[error("queue {queue} is full: {size} more bytes would take it past its limit of {limit}")]
    QueueBytesFull {
        /// The queue.
        queue: Arc<str>,
        /// The refused message's size.
        size: u64,
        /// `max_bytes`.
        limit: u64,
    },
    /// The publisher's uid already has its share of the queue
    /// (`--max-queue-depth-per-uid`, `--max-queue-bytes-per-uid`), so that
    /// no user can fill a queue others depend on (RESOURCE_EXHAUSTED).
    #[error(
        "uid {uid} already has its share of queue {queue}: at most {limit} {what} per user \
         ({flag}) until its messages are consumed",
        flag = if *what == "bytes" { "--max-queue-bytes-per-uid" } else { "--max-queue-depth-per-uid" }
    )]
    UserQuota {
        /// The queue.
        queue: Arc<str>,
        /// The publisher.
        uid: u32,
        /// "messages" or "bytes".
        what: &'static str,
        /// The limit reached.
        limit: u64,
    },
    /// The publisher's uid has its share of every queue together
    /// (`--max-stored-messages-per-uid`, `--max-stored-bytes-per-uid`), so
    /// that no user can fill the broker's memory, disk and startup time by
    /// spreading over many queues (RESOURCE_EXHAUSTED).
    #[error(
        "uid {uid} would have more than {limit} {what} stored over all queues, the per-user \
         limit ({flag}): its messages must be consumed before it publishes more"
    )]
    UserStored {
        /// The publisher.
        uid: u32,
        /// "messages" or "bytes".
        what: &'static str,
        /// The limit reached.
        limit: u64,
        /// The flag that sets it.
        flag: &'static str,
    },
    /// The publisher's uid has messages in `--max-queues-per-uid` queues
    /// and this one is not among them (RESOURCE_EXHAUSTED).
    #[error(
        "uid {uid} already has messages in {limit} queues, the per-user limit \
         (--max-queues-per-uid): publish to one of those, or let one be consumed empty first"
    )]
    UserQueues {
        /// The publisher.
        uid: u32,
        /// The limit reached.
        limit: u64,
    },
    /// No delivery in flight has this id: it never existed, or it was
    /// already acknowledged or handed back.
    #[error("delivery {0} is not known: never made, or already acknowledged or returned")]
    UnknownDelivery(DeliveryId),
    /// The delivery went to another session.
    #[error("delivery {0} belongs to another connection")]
    NotYourDelivery(DeliveryId),
    /// The session has no such consumer (NOT_FOUND).
    #[error("consumer {0} is not one of this connection's")]
    UnknownConsumer(ConsumerId),
    /// The session has `max_consumers_per_session` consumers (RESOURCE_EXHAUSTED).
    #[error("too many consumers on this connection (limit {limit})")]
    TooManyConsumers {
        /// The limit in force.
        limit: usize,
    },
}
