//! The broker's pure state machine: sessions, the lease table, watches,
//! the message queues ([`queues`]) and the global revision counter.
//!
//! The core does no I/O. It never reads a clock (every call takes `now`, a
//! monotonic time in milliseconds chosen by the caller), never touches a
//! socket or a channel and knows nothing of protobuf. A mutation returns the
//! [`Change`]s it caused; the dispatch layer turns them into frames. That
//! makes every rule about leases, queues, fairness and expiry testable with
//! plain `#[test]`s and a fake clock (see `tests.rs`).

/// Declares id newtypes: a `u64` that prints as the number. Defined before
/// the `mod` lines so that every submodule can use it.
macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);
        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

mod leases;
mod names;
pub mod queues;
#[cfg(test)]
mod tests;
mod views;
mod watch;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

pub use leases::{AcquireOutcome, AcquireRequest, Grant, QueuePosition, WaitPolicy};
pub use names::{
    MAX_NAME_BYTES, MAX_NAMES_PER_REQUEST, MAX_TEXT_BYTES, check_name, check_name_count, check_text,
};
pub use views::{LeaseView, ResourceView, StatusView};
pub use watch::{StateEvent, WatchStart};

use queues::{
    ConsumerId, DeliveryId, Message, QueueChange, QueueConfig, QueueError, QueueInfo, QueueTable,
};

/// The core's hash map: foldhash, seeded at random per process. Hashing
/// was a fifth of the broker's instructions with SipHash (measured with
/// callgrind under the throughput benchmark); foldhash is several times
/// faster and its random seed keeps clients from choosing colliding names.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Monotonic time in milliseconds since an origin the caller picks (the
/// broker's start). Only differences between two values mean anything.
pub type Millis = u64;

id_type! {
    /// One connection's identity inside the broker, unique for the broker's lifetime.
    SessionId,
    /// A lease or a queued request for one, unique for the broker's lifetime.
    LeaseId,
    /// The token of a grant: strictly increasing per resource, never reused,
    /// also across broker restarts (the counter is persisted in blocks).
    FencingToken,
    /// The global change counter: every state change increments it.
    Revision,
    /// One watch (state subscription), unique for the broker's lifetime.
    WatchId,
}

/// Who is on the other end of a session, as the operating system told the
/// transport (uid and pid), plus the name the client gave itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The session this peer speaks through.
    pub session: SessionId,
    /// The name from `Hello`: informative only, never used for a decision.
    pub client_name: String,
    /// The peer's effective uid, from the kernel.
    pub uid: u32,
    /// The peer's process id, from the kernel.
    pub pid: u32,
}

/// EXCLUSIVE excludes every other holder; SHARED admits other SHARED holders.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One holder, nobody beside it.
    Exclusive,
    /// Any number of SHARED holders together.
    Shared,
}

/// How far a holder's job has got, as the holder last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Steps done.
    pub done: u32,
    /// Steps in all (0 = unknown).
    pub total: u32,
    /// What the holder is doing now.
    pub message: String,
}

/// Why a lease or a place in the queue was lost.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// A holder's TTL ran out without a KeepAlive.
    Expired,
    /// A waiter's `max_wait_ms` ran out before its turn came.
    TimedOut,
}

/// What kind of state change a [`StateEvent`] reports.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A lease was granted.
    Granted,
    /// A holder released its lease.
    Released,
    /// A holder's TTL ran out.
    Expired,
    /// A holder's or waiter's connection closed.
    Disconnected,
    /// A request joined the queue.
    Queued,
    /// A waiter left the queue: cancelled, or its `max_wait_ms` ran out.
    Cancelled,
    /// A holder reported progress.
    Progress,
    /// The watcher's history no longer reached back: a fresh snapshot follows.
    Resync,
    /// Nothing happened for a while; the broker is alive.
    Heartbeat,
}

/// How a lease ended, remembered for a while so that a late request on it
/// gets an error that says what happened.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Released by its holder.
    Released,
    /// Cancelled while queued.
    Cancelled,
    /// TTL ran out.
    Expired,
    /// `max_wait_ms` ran out while queued.
    TimedOut,
    /// Its connection closed.
    Disconnected,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ending::Released => "released",
            Ending::Cancelled => "cancelled",
            Ending::Expired => "expired: its TTL ran out without a KeepAlive",
            Ending::TimedOut => "timed out in the queue",
            Ending::Disconnected => "ended when its connection closed",
        })
    }
}

/// What caused a state event, kept as data: the sentence is only written
/// when someone reads it (formatting it for every change was a sixth of
/// the broker's instructions under load, measured with callgrind).
#[derive(Clone, Debug, PartialEq)]
pub enum Cause {
    /// Nothing worth a sentence (a request queued, progress, a heartbeat).
    None,
    /// A lease or a queued request ended.
    Ended {
        /// The lease.
        lease: LeaseId,
        /// Its owner.
        peer: Arc<Peer>,
        /// How it ended.
        ending: Ending,
        /// Whether it was held (else it was queued).
        was_holder: bool,
        /// Its TTL.
        ttl_ms: u32,
    },
    /// A lease was granted.
    Granted {
        /// The lease.
        lease: LeaseId,
        /// Its new holder.
        peer: Arc<Peer>,
        /// Its fencing token.
        fencing: FencingToken,
    },
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = |f: &mut fmt::Formatter<'_>, lease: &LeaseId, p: &Peer| {
            write!(
                f,
                "lease {lease} of {} (uid {}, pid {})",
                leases::display_name(&p.client_name),
                p.uid,
                p.pid
            )
        };
        match self {
            Cause::None => Ok(()),
            Cause::Ended {
                lease,
                peer,
                ending,
                was_holder,
                ttl_ms,
            } => {
                who(f, lease, peer)?;
                match ending {
                    Ending::Released => f.write_str(" released"),
                    Ending::Cancelled => f.write_str(" left the queue"),
                    Ending::Expired => write!(f, " expired: no KeepAlive within {ttl_ms} ms"),
                    Ending::TimedOut => f.write_str(" gave up waiting (max_wait reached)"),
                    Ending::Disconnected if *was_holder => {
                        f.write_str(" ended: its connection closed")
                    }
                    Ending::Disconnected => f.write_str(" left the queue: its connection closed"),
                }
            }
            Cause::Granted {
                lease,
                peer,
                fencing,
            } => write!(
                f,
                "lease {lease} granted to {} (uid {}, pid {}) with fencing token {fencing}",
                leases::display_name(&peer.client_name),
                peer.uid,
                peer.pid
            ),
        }
    }
}

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
}

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
    #[error("ttl_ms {ttl_ms} is outside the accepted range {min}..={max} ms")]
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
    /// The session has said goodbye.
    #[error("session {0} is closed")]
    SessionClosed(SessionId),
}

/// The core's limits and defaults. Every one is a broker flag.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// TTL used when a request says 0.
    pub default_ttl_ms: u32,
    /// Smallest TTL accepted.
    pub min_ttl_ms: u32,
    /// Largest TTL accepted.
    pub max_ttl_ms: u32,
    /// Leases (held or queued) one session may have at once.
    pub max_leases_per_session: usize,
    /// Watches one session may have at once.
    pub max_watches_per_session: usize,
    /// State events remembered for watchers that resume.
    pub watch_history: usize,
    /// A watch quiet for this long gets a heartbeat (0 = never).
    pub heartbeat_ms: u64,
    /// The message queues' limits.
    pub queues: QueueConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            default_ttl_ms: 15_000,
            min_ttl_ms: 100,
            max_ttl_ms: 3_600_000,
            max_leases_per_session: 1024,
            max_watches_per_session: 64,
            watch_history: 4096,
            heartbeat_ms: 10_000,
            queues: QueueConfig::default(),
        }
    }
}

/// How many ids the counters may hand out past their persisted
/// reservation before another reservation must be written.
pub const COUNTER_BLOCK: u64 = 1 << 20;

fn queue_changes(changes: Vec<QueueChange>) -> Vec<Change> {
    changes.into_iter().map(Change::Queue).collect()
}

/// Where the persisted counters stood when the broker started.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// The high-water mark persisted by the previous run: every revision
    /// and fencing token it handed out is at most this.
    pub reserved_until: u64,
}

struct Session {
    peer: Arc<Peer>,
    leases: Vec<LeaseId>,
    watches: Vec<WatchId>,
}

/// The whole broker state. One task owns it; nothing else touches it.
pub struct Core {
    config: CoreConfig,
    sessions: Map<SessionId, Session>,
    next_session: u64,
    revision: Revision,
    next_fencing: u64,
    reserved_until: u64,
    leases: leases::LeaseTable,
    watches: watch::Watches,
    queues: QueueTable,
    deadlines: BTreeSet<(Millis, Deadline)>,
}

/// What happens at a deadline.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    /// A held lease's TTL ends, or a waiter's `max_wait_ms`.
    Lease(LeaseId),
    /// Quiet watches get their heartbeat.
    Heartbeats,
}

impl Core {
    /// A core whose counters continue above what a previous run reserved.
    /// Returns the reservation to persist before anything is served.
    pub fn new(config: CoreConfig, counters: Counters) -> (Core, Change) {
        let start = counters.reserved_until;
        let reserve_until = start + COUNTER_BLOCK;
        let watch_history = config.watch_history;
        let queues = QueueTable::new(config.queues.clone(), 0);
        let core = Core {
            config,
            sessions: Map::default(),
            next_session: 1,
            revision: Revision(start),
            next_fencing: start + 1,
            reserved_until: reserve_until,
            leases: leases::LeaseTable::default(),
            watches: watch::Watches::new(watch_history, Revision(start)),
            queues,
            deadlines: BTreeSet::new(),
        };
        (core, Change::ReserveCounters { reserve_until })
    }

    /// The configuration in force.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The current global revision.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Opens a session for a peer that has said Hello.
    /// The client's name is informative only; past [`MAX_NAME_BYTES`] it is
    /// cut (at a character boundary) rather than refused.
    pub fn connect(&mut self, mut client_name: String, uid: u32, pid: u32) -> Arc<Peer> {
        if client_name.len() > MAX_NAME_BYTES {
            let mut end = MAX_NAME_BYTES;
            while !client_name.is_char_boundary(end) {
                end -= 1;
            }
            client_name.truncate(end);
        }
        let session = SessionId(self.next_session);
        self.next_session += 1;
        let peer = Arc::new(Peer {
            session,
            client_name,
            uid,
            pid,
        });
        self.sessions.insert(
            session,
            Session {
                peer: peer.clone(),
                leases: Vec::new(),
                watches: Vec::new(),
            },
        );
        peer
    }

    /// The one goodbye path: the session's connection is gone (EOF, error,
    /// quota breach or clean close). Its leases end, its waiters leave their
    /// queues, its watches are dropped; the next waiters are granted; its
    /// consumers end and its unacknowledged deliveries go back to their
    /// queues (attempt kept raised) for other consumers.
    pub fn goodbye(&mut self, session: SessionId, now: Millis) -> Vec<Change> {
        let mut changes = Vec::new();
        let Some(gone) = self.sessions.remove(&session) else {
            return changes;
        };
        for watch in gone.watches {
            self.watches.remove(watch);
        }
        // Every lease of the session leaves first, and only then are the
        // next waiters granted: ending one lease must not grant another of
        // the departing session's own queued requests on its way out.
        let mut touched: Vec<(Arc<str>, usize)> = Vec::new();
        for lease in gone.leases {
            let Some((name, from)) =
                self.detach_lease(lease, Ending::Disconnected, now, &mut changes)
            else {
                continue;
            };
            match touched.iter_mut().find(|(n, _)| *n == name) {
                Some((_, first)) => *first = (*first).min(from),
                None => touched.push((name, from)),
            }
        }
        for (name, from) in touched {
            self.settle(&name, from, now, &mut changes);
        }
        changes.extend(self.queues.goodbye(session).into_iter().map(Change::Queue));
        changes
    }

    /// Puts back what the store held at startup: sequence numbers continue
    /// above `last_seq` ([`crate::store::Loaded::last_seq`]), and every
    /// queue gets its durable messages, whatever the limits say. Call it
    /// once, before any session connects. Messages already out of attempts
    /// are dead-lettered at once: the changes carry those writes.
    pub fn restore_queues(
        &mut self,
        last_seq: u64,
        queues: Vec<(String, Vec<Message>)>,
    ) -> Vec<Change> {
        self.queues = QueueTable::new(self.config.queues.clone(), last_seq);
        let mut changes = Vec::new();
        for (name, messages) in queues {
            changes.extend(
                self.queues
                    .load(&name, messages)
                    .into_iter()
                    .map(Change::Queue),
            );
        }
        changes
    }

    /// Reserves a sequence number and room in `queue` for a publish. Store
    /// the returned message, then call [`Core::publish_committed`] or
    /// [`Core::publish_failed`]; until then no later message of the queue is
    /// delivered. Publishes need no session: one whose connection closed
    /// meanwhile is completed all the same.
    pub fn begin_publish(
        &mut self,
        queue: &str,
        payload: Bytes,
        headers: Vec<(String, String)>,
    ) -> Result<Message, CoreError> {
        self.queues.begin_publish(queue, payload, headers)
    }

    /// The publish is durable: the message is ready, and delivered if a
    /// consumer has room.
    pub fn publish_committed(&mut self, queue: &str, message: Message) -> Vec<Change> {
        queue_changes(self.queues.publish_committed(queue, message))
    }

    /// The publish could not be stored: its reservation is released.
    pub fn publish_failed(&mut self, queue: &str, seq: u64) -> Vec<Change> {
        queue_changes(self.queues.publish_failed(queue, seq))
    }

    /// Subscribes the session to `queue`, at most `prefetch` deliveries
    /// unacknowledged at a time (0 = the default). Ready messages follow as
    /// changes.
    pub fn consume(
        &mut self,
        session: SessionId,
        queue: &str,
        prefetch: u32,
    ) -> Result<(ConsumerId, Vec<Change>), CoreError> {
        // A consumer of a closed session would never be cleaned up.
        self.session_mut(session)?;
        let (consumer, changes) = self.queues.consume(session, queue, prefetch)?;
        Ok((consumer, queue_changes(changes)))
    }

    /// The session handled the delivery: its message is gone.
    pub fn ack(
        &mut self,
        session: SessionId,
        delivery: DeliveryId,
    ) -> Result<Vec<Change>, CoreError> {
        Ok(queue_changes(self.queues.ack(session, delivery)?))
    }

    /// The session gives the delivery back: requeued (or dead-lettered when
    /// out of attempts), or dropped without `requeue`.
    pub fn nack(
        &mut self,
        session: SessionId,
        delivery: DeliveryId,
        requeue: bool,
    ) -> Result<Vec<Change>, CoreError> {
        Ok(queue_changes(self.queues.nack(session, delivery, requeue)?))
    }

    /// Every queue that holds anything or has a consumer, by name.
    pub fn queue_info(&self) -> Vec<QueueInfo> {
        self.queues.info()
    }

    /// The earliest moment at which [`Core::expire`] has work to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Ends every lease whose TTL ran out, drops every waiter whose
    /// `max_wait_ms` ran out and sends heartbeats, as of `now`.
    pub fn expire(&mut self, now: Millis) -> Vec<Change> {
        let mut changes = Vec::new();
        while let Some(&(at, what)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            match what {
                Deadline::Lease(lease) => self.lease_deadline(lease, now, &mut changes),
                Deadline::Heartbeats => self.heartbeats(now, &mut changes),
            }
        }
        changes
    }

    /// Every resource named (all when `resources` is empty), with holders
    /// and waiters in order.
    pub fn status(&self, resources: &[String]) -> StatusView {
        StatusView {
            revision: self.revision,
            resources: self.leases.views(resources, self.revision),
        }
    }

    /// The peer behind a session, if it is still connected.
    pub fn peer(&self, session: SessionId) -> Option<&Arc<Peer>> {
        self.sessions.get(&session).map(|s| &s.peer)
    }

    fn session_mut(&mut self, session: SessionId) -> Result<&mut Session, CoreError> {
        // The dispatch layer only calls with live sessions; a missing one
        // is answered like any bad request rather than trusted.
        self.sessions
            .get_mut(&session)
            .ok_or(CoreError::WrongState(WrongState::SessionClosed(session)))
    }

    /// Takes the next revision, reserving another block first if needed.
    fn bump_revision(&mut self, changes: &mut Vec<Change>) -> Revision {
        self.revision.0 += 1;
        self.ensure_reserved(self.revision.0, changes);
        self.revision
    }

    fn take_fencing(&mut self, changes: &mut Vec<Change>) -> FencingToken {
        let token = self.next_fencing;
        self.next_fencing += 1;
        self.ensure_reserved(token, changes);
        FencingToken(token)
    }

    fn ensure_reserved(&mut self, value: u64, changes: &mut Vec<Change>) {
        if value > self.reserved_until {
            self.reserved_until = value + COUNTER_BLOCK;
            // Pushed before the change that uses `value`: the dispatch layer
            // persists it before delivering anything after it.
            changes.push(Change::ReserveCounters {
                reserve_until: self.reserved_until,
            });
        }
    }
}
