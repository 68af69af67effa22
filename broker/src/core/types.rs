//! The core's vocabulary: ids, peers, modes, progress, how leases end and
//! why events happen, and the core's configuration. Plain data, no rules.

use std::fmt;
use std::sync::Arc;

/// Monotonic time in milliseconds since an origin the caller picks (the
/// broker's start). Only differences between two values mean anything.
pub type Millis = u64;

id_type! {
    /// One `Consume` subscription, unique for the broker's lifetime.
    ConsumerId,
    /// One delivery of one message to one consumer, unique for the broker's
    /// lifetime: a redelivered message gets a new one.
    DeliveryId,
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
                display_name(&p.client_name),
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
                display_name(&peer.client_name),
                peer.uid,
                peer.pid
            ),
        }
    }
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

/// Where the persisted counters stood when the broker started.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// The high-water mark persisted by the previous run: every revision
    /// and fencing token it handed out is at most this.
    pub reserved_until: u64,
}

/// How a client is named in sentences: its name, or "an unnamed client".
pub(crate) fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "an unnamed client"
    } else {
        name
    }
}

/// One lease, held or queued.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseView {
    /// The lease.
    pub lease_id: LeaseId,
    /// Its resource.
    pub resource: Arc<str>,
    /// EXCLUSIVE or SHARED.
    pub mode: Mode,
    /// What it is for.
    pub purpose: Arc<str>,
    /// Who holds or wants it.
    pub holder: Arc<Peer>,
    /// The fencing token, once granted.
    pub fencing: Option<FencingToken>,
    /// The holder's last progress report.
    pub progress: Option<Progress>,
    /// When it was granted (monotonic ms).
    pub granted_at: Option<Millis>,
    /// When it joined the queue, if it ever waited (monotonic ms).
    pub queued_at: Option<Millis>,
    /// When its TTL runs out unless kept alive (monotonic ms).
    pub expires_at: Option<Millis>,
    /// 0 for holders; 1 = next in line for waiters.
    pub position: u32,
}

/// A resource's whole state.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceView {
    /// Its name.
    pub resource: Arc<str>,
    /// The revision of its last change.
    pub revision: Revision,
    /// Holders, in grant order.
    pub holders: Vec<LeaseView>,
    /// Waiters, first in line first.
    pub waiters: Vec<LeaseView>,
}

/// The answer to `GetStatus`.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusView {
    /// The global revision at the time of the snapshot.
    pub revision: Revision,
    /// The resources asked for, in name order.
    pub resources: Vec<ResourceView>,
}

/// At most this many entries in `QueuePosition::ahead` (holders first,
/// then the waiters nearest the head); `position` still counts them all.
pub const MAX_AHEAD: usize = 64;

/// Whether a request that cannot be granted now joins the queue.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WaitPolicy {
    /// Join the FIFO queue and wait.
    Queue,
    /// Fail at once with [`CoreError::Busy`].
    NoWait,
}

/// An `Acquire` request, already converted from the wire.
#[derive(Clone, Debug)]
pub struct AcquireRequest {
    /// The resource's name.
    pub resource: String,
    /// EXCLUSIVE or SHARED.
    pub mode: Mode,
    /// Time to live once granted; 0 = the broker's default.
    pub ttl_ms: u32,
    /// Queue or fail when busy.
    pub wait: WaitPolicy,
    /// Longest time to wait in the queue; 0 = as long as it takes.
    pub max_wait_ms: u32,
    /// What the lease is for, shown to everyone who looks.
    pub purpose: String,
}

/// A granted lease, as its holder is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The lease.
    pub lease_id: LeaseId,
    /// Its fencing token.
    pub fencing: FencingToken,
    /// The TTL in force; KeepAlive before it runs out.
    pub ttl_ms: u32,
}

/// Where a waiter stands.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuePosition {
    /// The queued request.
    pub lease_id: LeaseId,
    /// 1 = next in line.
    pub position: u32,
    /// Holders, then the waiters before it (at most [`MAX_AHEAD`]).
    pub ahead: Vec<LeaseView>,
    /// Estimated wait, from the holders' progress rate and the resource's
    /// past hold times; `None` when nothing is known.
    pub estimated_wait_ms: Option<u64>,
}

/// What `acquire` did.
#[derive(Clone, Debug, PartialEq)]
pub enum AcquireOutcome {
    /// Granted at once.
    Granted(Grant),
    /// Queued behind others.
    Queued(QueuePosition),
}

/// One state change as watchers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct StateEvent {
    /// The global revision of this change.
    pub revision: Revision,
    /// What happened.
    pub kind: EventKind,
    /// The resource's whole state after the change (empty for heartbeats).
    pub state: ResourceView,
    /// What caused it: which holder ended and why, who was granted with which
    /// token. Its `Display` is the sentence watchers get as `detail`.
    pub cause: Cause,
}

/// The answer to `Watch`.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchStart {
    /// The new watch.
    pub watch_id: WatchId,
    /// The revision the snapshot (or the replay) brings the watcher to.
    pub revision: Revision,
    /// Current states, unless the watch resumed from history.
    pub snapshot: Vec<ResourceView>,
    /// The requested revision was too old: the snapshot replaces the gap.
    pub resync: bool,
    /// Events after the requested revision, to deliver after the answer.
    pub replay: Vec<Arc<StateEvent>>,
}

/// The queue limits. Every one is a broker flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Messages one queue may hold: reserved, ready and unacknowledged together.
    pub max_depth: u64,
    /// Bytes one queue may hold (payloads plus header keys and values),
    /// counted like `max_depth`.
    pub max_bytes: u64,
    /// Messages one unprivileged uid may have in one queue (reserved,
    /// ready and unacknowledged together); root and the broker's own user
    /// count only against `max_depth`.
    pub max_depth_per_uid: u64,
    /// Bytes one unprivileged uid may have in one queue, counted like
    /// `max_depth_per_uid`.
    pub max_bytes_per_uid: u64,
    /// Deliveries a message may have; one that has had this many and comes
    /// back is moved to its dead-letter queue. 0 = no limit.
    pub max_attempts: u32,
    /// Consumers one session may have at once.
    pub max_consumers_per_session: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_depth: 100_000,
            max_bytes: 64 * 1024 * 1024,
            max_depth_per_uid: 10_000,
            max_bytes_per_uid: 8 * 1024 * 1024,
            max_attempts: 5,
            max_consumers_per_session: 64,
        }
    }
}
