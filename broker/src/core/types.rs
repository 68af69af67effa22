//! The core's vocabulary: ids, peers, modes, progress, how leases end and
//! why events happen, and the core's configuration. Plain data, no rules.

use std::borrow::Cow;
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
    /// The account name of the uid, from the OS; "" if it has none.
    pub user: String,
    /// The peer's logon session as the OS knows it; "" if unknown.
    pub login_session: String,
}

/// Who a connecting peer is, as the operating system told the transport.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Effective uid.
    pub uid: u32,
    /// Process id (0 when the platform does not say).
    pub pid: u32,
    /// The account name of the uid; "" if it has none.
    pub user: String,
    /// The logon session; "" if unknown.
    pub login_session: String,
}

/// The secret that lets a new connection take back a detached lease: at
/// least 128 random bits, drawn from the OS by the caller of the core.
/// It is shown to nobody but the owner: its `Debug` hides it, views never
/// carry it, and it is compared in constant time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ResumeToken(pub [u8; ResumeToken::LEN]);

impl ResumeToken {
    /// Bytes in a token (128 bits).
    pub const LEN: usize = 16;

    /// The token as the client sent it; `None` unless exactly [`Self::LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<ResumeToken> {
        <[u8; Self::LEN]>::try_from(bytes).ok().map(ResumeToken)
    }

    /// Equal, comparing every byte whatever the first difference (so the
    /// time taken says nothing about how much of a guess was right).
    pub fn matches(&self, other: &ResumeToken) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(<secret>)")
    }
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
    /// A yield request with revoke ran out its `within_ms`.
    Revoked,
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
    /// Someone asked the holders to make way.
    YieldRequested,
    /// A holder declined to make way.
    YieldDeclined,
    /// A holder lost its lease to a yield request with revoke.
    Revoked,
    /// A lease's connection closed and it is kept for its detach grace.
    Detached,
    /// A detached lease was taken back by its owner.
    Reattached,
    /// A holder that keeps its lease alive stopped reporting progress.
    Stalled,
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
    /// Its connection closed and its detach grace ran out unclaimed.
    GraceExpired,
    /// Revoked by a yield request whose `within_ms` ran out.
    Revoked,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ending::Released => "released",
            Ending::Cancelled => "cancelled",
            Ending::Expired => "expired: its TTL ran out without a KeepAlive",
            Ending::TimedOut => "timed out in the queue",
            Ending::Disconnected => "ended when its connection closed",
            Ending::GraceExpired => "ended when its connection closed and its detach grace ran out",
            Ending::Revoked => "revoked at someone's request",
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
    /// A holder of a `global/` resource lost it because its broker could
    /// not keep its place in the fleet (etcd unreachable).
    FleetLost {
        /// The lease.
        lease: LeaseId,
        /// Its holder.
        peer: Arc<Peer>,
        /// Why, for humans.
        detail: Arc<str>,
    },
    /// A holder lost its lease to a yield request with revoke.
    Revoked {
        /// The lease.
        lease: LeaseId,
        /// Its holder.
        peer: Arc<Peer>,
        /// The yield request that revoked it.
        by: Arc<YieldRequest>,
    },
    /// Someone asked the holders to make way.
    YieldRequested(Arc<YieldRequest>),
    /// A holder declined to make way.
    YieldDeclined {
        /// The lease.
        lease: LeaseId,
        /// Its holder.
        peer: Arc<Peer>,
        /// Why.
        reason: Arc<str>,
    },
    /// A lease's connection closed; it is kept for `grace_ms`.
    Detached {
        /// The lease.
        lease: LeaseId,
        /// Its owner as it was.
        peer: Arc<Peer>,
        /// How long it is kept.
        grace_ms: u32,
    },
    /// A detached lease was taken back.
    Reattached {
        /// The lease.
        lease: LeaseId,
        /// Its owner on its new connection.
        peer: Arc<Peer>,
    },
    /// A holder reported no progress for `after_ms`.
    Stalled {
        /// The lease.
        lease: LeaseId,
        /// Its holder.
        peer: Arc<Peer>,
        /// Its `stall_after_ms`.
        after_ms: u32,
    },
}

/// A request that the holders of a resource make way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YieldRequest {
    /// Who asks.
    pub requester: Arc<Peer>,
    /// Why.
    pub reason: Arc<str>,
    /// How long the holders have.
    pub within_ms: u32,
    /// Whether a holder still holding after `within_ms` loses its lease.
    pub revoke: bool,
}

impl fmt::Display for YieldRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", PeerName(&self.requester))?;
        if self.revoke {
            write!(f, " revokes the lease after {} ms", self.within_ms)?;
        } else {
            write!(
                f,
                " asks the holder to make way within {} ms",
                self.within_ms
            )?;
        }
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

/// A peer as sentences name it: its name, then its user (or uid) and pid.
pub(crate) struct PeerName<'a>(pub(crate) &'a Peer);

impl fmt::Display for PeerName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        f.write_str(display_name(&p.client_name))?;
        if p.user.is_empty() {
            write!(f, " (uid {}, pid {})", p.uid, p.pid)
        } else {
            write!(f, " ({}, pid {})", p.user, p.pid)
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = |f: &mut fmt::Formatter<'_>, lease: &LeaseId, p: &Peer| {
            write!(f, "lease {lease} of {}", PeerName(p))
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
                    Ending::GraceExpired => f.write_str(
                        " ended: its connection closed and its detach grace ran out (dead)",
                    ),
                    Ending::Revoked => f.write_str(" revoked"),
                }
            }
            Cause::FleetLost {
                lease,
                peer,
                detail,
            } => {
                who(f, lease, peer)?;
                write!(f, " lost: {detail}")
            }
            Cause::Revoked { lease, peer, by } => {
                who(f, lease, peer)?;
                write!(f, " revoked: {by}")
            }
            Cause::YieldRequested(req) => req.fmt(f),
            Cause::YieldDeclined {
                lease,
                peer,
                reason,
            } => {
                who(f, lease, peer)?;
                f.write_str(" declined to make way")?;
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            Cause::Detached {
                lease,
                peer,
                grace_ms,
            } => {
                who(f, lease, peer)?;
                write!(
                    f,
                    " detached: its connection closed; kept {grace_ms} ms for its owner to re-attach"
                )
            }
            Cause::Reattached { lease, peer } => {
                who(f, lease, peer)?;
                f.write_str(" re-attached")
            }
            Cause::Stalled {
                lease,
                peer,
                after_ms,
            } => {
                who(f, lease, peer)?;
                write!(f, " is stuck: alive but no progress for {after_ms} ms")
            }
            Cause::Granted {
                lease,
                peer,
                fencing,
            } => write!(
                f,
                "lease {lease} granted to {} with fencing token {fencing}",
                PeerName(peer)
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
    /// Requests one uid may have waiting in lease queues, over all its
    /// connections (root and `own_uid` are not bound by it).
    pub max_waiters_per_uid: usize,
    /// Leases (held or queued) one uid may have over all its connections
    /// (root and `own_uid` are not bound by it), so that no user can fill
    /// the broker's memory with leases on names nobody else uses.
    pub max_leases_per_uid: usize,
    /// The broker's own uid, trusted like root.
    pub own_uid: u32,
    /// Watches one session may have at once.
    pub max_watches_per_session: usize,
    /// State events remembered for watchers that resume.
    pub watch_history: usize,
    /// A watch quiet for this long gets a heartbeat (0 = never).
    pub heartbeat_ms: u64,
    /// The waiters of one resource are told where they stand (and the
    /// head's progress) at most once in this many milliseconds; changes in
    /// between are coalesced into the newest state, sent when the time
    /// comes (0 = at every change). See `LeaseTable::notify_waiters`.
    pub waiter_update_interval_ms: u64,
    /// Updates the waiters of one resource are sent per second at most:
    /// a queue too long to tell every waiter within the interval at this
    /// rate is told less often (50 000 waiters at 20 000/s: every 2.5 s),
    /// so that one long queue cannot take the broker's whole time.
    pub waiter_updates_per_second: u64,
    /// Revisions and fencing tokens one durable counter reservation covers
    /// (the next is reserved when half of it is used). Small blocks only
    /// cost more store writes; tests use them to cross a block quickly.
    pub counter_block: u64,
    /// The message queues' limits.
    pub queues: QueueConfig,
    /// Resources whose semaphore capacity the broker's config file fixes.
    pub capacities: Vec<(String, u32)>,
    /// Whether the broker belongs to a fleet (`--fleet-etcd`): `global/`
    /// names are refused without one, and granted only once the fleet
    /// admits them ([`crate::core::Core::admit`]) with one.
    pub fleet: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            default_ttl_ms: 15_000,
            min_ttl_ms: 100,
            max_ttl_ms: 3_600_000,
            max_leases_per_session: 1024,
            max_waiters_per_uid: 4096,
            max_leases_per_uid: 16_384,
            own_uid: 0,
            max_watches_per_session: 64,
            watch_history: 4096,
            heartbeat_ms: 10_000,
            waiter_update_interval_ms: 250,
            waiter_updates_per_second: 20_000,
            counter_block: COUNTER_BLOCK,
            queues: QueueConfig::default(),
            capacities: Vec::new(),
            fleet: false,
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
    /// Permits of the resource's semaphore it takes (0: not a semaphore).
    pub permits: u32,
    /// Its connection closed; it waits within its grace to be re-attached.
    pub detached: bool,
    /// A holder that reported no progress for its `stall_after_ms`.
    pub stalled: bool,
    /// For a waiter in a resource's state: the broker's estimate of its
    /// wait, the same figure its owner gets in `Queued` (see
    /// `LeaseTable::estimate_wait`); `None` when there is none, for a
    /// holder, and in views taken without a time.
    pub estimated_wait_ms: Option<u64>,
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
    /// Its semaphore capacity; 0 = not a semaphore.
    pub capacity: u32,
    /// Permits held now.
    pub permits_held: u32,
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
/// Small, since every waiter's every update carries them: a waiter needs
/// who holds and who is next, not the whole queue (that is `GetStatus`).
pub const MAX_AHEAD: usize = 8;

/// Whether a request that cannot be granted now joins the queue.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WaitPolicy {
    /// Join the FIFO queue and wait.
    Queue,
    /// Fail at once with [`CoreError::Busy`].
    NoWait,
}

/// An `Acquire` request, already converted from the wire. The default is
/// an EXCLUSIVE request on no resource (`""`, refused by name checks):
/// fill in at least the resource.
///
/// Its strings may be borrowed from the frame they were read from (the
/// broker reads the hot requests in place: issue 14); the table copies
/// what it keeps.
#[derive(Clone, Debug)]
pub struct AcquireRequest<'a> {
    /// The resource's name.
    pub resource: Cow<'a, str>,
    /// EXCLUSIVE or SHARED.
    pub mode: Mode,
    /// Time to live once granted; 0 = the broker's default.
    pub ttl_ms: u32,
    /// Queue or fail when busy.
    pub wait: WaitPolicy,
    /// Longest time to wait in the queue; 0 = as long as it takes.
    pub max_wait_ms: u32,
    /// What the lease is for, shown to everyone who looks.
    pub purpose: Cow<'a, str>,
    /// Permits of a semaphore a SHARED lease takes; 0 = 1.
    pub permits: u32,
    /// The resource's semaphore capacity; 0 = whatever it has.
    pub capacity: u32,
    /// How long the lease outlives its connection; 0 = not at all.
    pub detach_grace_ms: u32,
    /// A holder with no progress for this long is stalled; 0 = never.
    pub stall_after_ms: u32,
    /// The secret for re-attaching, drawn by the caller; required when
    /// `detach_grace_ms > 0` (a request with a grace and no token is
    /// refused), ignored otherwise.
    pub resume_token: Option<ResumeToken>,
}

impl Default for AcquireRequest<'_> {
    fn default() -> Self {
        AcquireRequest {
            resource: Cow::Borrowed(""),
            mode: Mode::Exclusive,
            ttl_ms: 0,
            wait: WaitPolicy::Queue,
            max_wait_ms: 0,
            purpose: Cow::Borrowed(""),
            permits: 0,
            capacity: 0,
            detach_grace_ms: 0,
            stall_after_ms: 0,
            resume_token: None,
        }
    }
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
    /// The secret for re-attaching, for the owner only.
    pub resume_token: Option<ResumeToken>,
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
    /// The secret for re-attaching, for the owner only.
    pub resume_token: Option<ResumeToken>,
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
    /// Messages one unprivileged uid may have over all queues together,
    /// counted like `max_depth_per_uid`.
    pub max_stored_messages_per_uid: u64,
    /// Bytes one unprivileged uid may have over all queues together.
    pub max_stored_bytes_per_uid: u64,
    /// Queues in which one unprivileged uid may have messages.
    pub max_queues_per_uid: u64,
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
            max_stored_messages_per_uid: 100_000,
            max_stored_bytes_per_uid: 64 * 1024 * 1024,
            max_queues_per_uid: 1000,
            max_attempts: 5,
            max_consumers_per_session: 64,
        }
    }
}
