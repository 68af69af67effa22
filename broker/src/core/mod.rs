//! The broker's pure state machine: sessions, the lease table
//! ([`leases`]), watches ([`watch`]), the message queues ([`queues`]) and
//! the global revision counter.
//!
//! The core does no I/O. It never reads a clock (every call takes `now`, a
//! monotonic time in milliseconds chosen by the caller), never touches a
//! socket or a channel and knows nothing of protobuf. A mutation returns the
//! [`Change`]s it caused; the dispatch layer turns them into frames. That
//! makes every rule about leases, queues, fairness and expiry testable with
//! plain `#[test]`s and a fake clock (see `tests/`).
//!
//! This file keeps [`Core`]: which sessions are open, the one
//! [`Core::goodbye`] path, and the deadline index ([`Core::next_deadline`],
//! [`Core::expire`]). Each table keeps its own rules: a lease call is one
//! line here that hands the lease table an [`effects::Effects`] sink; queue
//! calls go to [`Core::queues`] directly. Vocabulary is in `types.rs`,
//! changes in `changes.rs`, refusals in `errors.rs`.

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

mod changes;
#[cfg(any(test, fuzzing))]
pub mod check;
mod effects;
mod errors;
mod leases;
mod names;
pub(crate) mod queues;
#[cfg(test)]
mod tests;
mod types;
mod watch;

use std::sync::Arc;

pub use changes::{Change, Ended, LeaseUpdate};
pub use errors::{BadArgument, CoreError, QueueError, WrongState};
pub use names::{
    MAX_NAME_BYTES, MAX_NAMES_PER_REQUEST, MAX_TEXT_BYTES, check_name, check_name_count, check_text,
};
#[cfg(fuzzing)]
pub use queues::QueueTable;
pub use queues::{
    DEAD_LETTER_SUFFIX, DEFAULT_PREFETCH, Delivery, DropReason, HEADER_DEAD_LETTER_QUEUE,
    HEADER_DEAD_LETTER_SEQ, MAX_PREFETCH, Message, QueueChange, QueueConfig, QueueInfo, StoreOp,
};
pub use types::{
    AcquireOutcome, AcquireRequest, COUNTER_BLOCK, Cause, ConsumerId, CoreConfig, Counters,
    DeliveryId, Ending, EventKind, FencingToken, Grant, LeaseId, LeaseView, LostReason, MAX_AHEAD,
    Millis, Mode, Peer, PeerIdentity, Progress, QueuePosition, ResourceView, ResumeToken, Revision,
    SessionId, StateEvent, StatusView, WaitPolicy, WatchId, WatchStart, YieldRequest,
};
pub use watch::HISTORY_LINGER_MS;

use effects::{Deadline, Deadlines, Effects, Issuer};
pub use leases::GLOBAL_PREFIX;
use leases::LeaseTable;
#[cfg(test)]
use leases::REMEMBERED_HOLD_TIMES;
#[cfg(test)]
use leases::TOLD_PER_CALL;
#[cfg(not(fuzzing))]
use queues::QueueTable;
use watch::Watches;

/// The core's hash map: foldhash, seeded at random per process. Hashing
/// was a fifth of the broker's instructions with SipHash (measured with
/// callgrind under the throughput benchmark); foldhash is several times
/// faster and its random seed keeps clients from choosing colliding names.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The counter reservation a new core needs durable before it serves
/// anything: every revision and fencing token it hands out until the next
/// reservation is at most `reserve_until`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The high-water mark to persist.
    pub reserve_until: u64,
}

/// The whole broker state. One task owns it; nothing else touches it.
pub struct Core {
    config: CoreConfig,
    /// The open sessions.
    sessions: Map<SessionId, Arc<Peer>>,
    next_session: u64,
    issuer: Issuer,
    leases: LeaseTable,
    watches: Watches,
    /// The message queues. Queue operations need no session of the core's
    /// (except [`Core::consume`], which checks it): call the table.
    pub(crate) queues: QueueTable,
    deadlines: Deadlines,
    /// Leases that ended since the dispatch layer last took them.
    ended: Vec<Ended>,
    /// A list of changes handed back empty by the dispatch layer
    /// ([`Core::recycle_changes`]), for the next call to fill: a call that
    /// tells someone something (a handoff's grant, a watch event) took an
    /// allocation and a free for its list.
    spare_changes: Vec<Change>,
}

/// The largest list of changes kept for reuse (a fan-out to many watchers
/// makes one entry per watcher).
const SPARE_CHANGES_ROOM: usize = 4096;

impl Core {
    /// A core whose counters continue above what a previous run reserved,
    /// and the reservation to persist before anything is served.
    pub fn new(config: CoreConfig, counters: Counters) -> (Core, Reservation) {
        let start = counters.reserved_until;
        let issuer = Issuer::new(start, config.counter_block);
        let reservation = Reservation {
            reserve_until: issuer.durable_until,
        };
        let core = Core {
            sessions: Map::default(),
            next_session: 1,
            issuer,
            leases: LeaseTable::new(&config),
            watches: Watches::new(
                config.watch_history,
                Revision(start),
                config.max_watches_per_session,
                config.heartbeat_ms,
            ),
            queues: QueueTable::new(config.queues.clone(), 0),
            deadlines: Deadlines::new(),
            ended: Vec::new(),
            spare_changes: Vec::new(),
            config,
        };
        (core, reservation)
    }

    /// The configuration in force.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The current global revision.
    pub fn revision(&self) -> Revision {
        self.issuer.revision
    }

    /// The message queues, for the fuzz target (inside the crate, the
    /// field).
    #[cfg(fuzzing)]
    pub fn queues(&self) -> &QueueTable {
        &self.queues
    }

    /// The message queues, for the fuzz target (inside the crate, the
    /// field).
    #[cfg(fuzzing)]
    pub fn queues_mut(&mut self) -> &mut QueueTable {
        &mut self.queues
    }

    /// Opens a session for a peer that has said Hello.
    /// The client's name is informative only; past [`MAX_NAME_BYTES`] it is
    /// cut (at a character boundary) rather than refused.
    pub fn connect(&mut self, client_name: String, uid: u32, pid: u32) -> Arc<Peer> {
        self.connect_peer(
            client_name,
            PeerIdentity {
                uid,
                pid,
                ..PeerIdentity::default()
            },
        )
    }

    /// Opens a session for a peer that has said Hello, with everything the
    /// OS told of it (account name and logon session too).
    pub fn connect_peer(&mut self, mut client_name: String, who: PeerIdentity) -> Arc<Peer> {
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
            uid: who.uid,
            pid: who.pid,
            user: who.user,
            login_session: who.login_session,
        });
        self.sessions.insert(session, peer.clone());
        peer
    }

    /// The one goodbye path: the session's connection is gone (EOF, error,
    /// quota breach or clean close). Its leases end, its waiters leave their
    /// queues, its watches are dropped; the next waiters are granted; its
    /// consumers end and its unacknowledged deliveries go back to their
    /// queues (attempt kept raised) for other consumers.
    pub fn goodbye(&mut self, session: SessionId, now: Millis) -> Vec<Change> {
        if self.sessions.remove(&session).is_none() {
            return Vec::new();
        }
        self.watches.goodbye(session);
        let (leases, mut fx) = self.split(now);
        leases.goodbye(session, &mut fx);
        let mut changes = fx.changes;
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

    /// The earliest moment at which [`Core::expire`] has work to do.
    pub fn next_deadline(&mut self) -> Option<Millis> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// A moment no later than [`Core::next_deadline`], cheaper to ask
    /// after every call: it may be that of a deadline removed since (a
    /// lease released before its TTL), which [`Core::expire`] then skips.
    pub fn deadline_bound(&self) -> Option<Millis> {
        self.deadlines.bound()
    }

    /// The store made the counter reservation up to `until` durable (it was
    /// asked for with [`Change::ReserveCounters`]): grants held back for
    /// want of a durable fencing token go ahead now.
    pub fn counters_stored(&mut self, until: u64, now: Millis) -> Vec<Change> {
        let could_not_grant = !self.issuer.can_grant();
        self.issuer.stored(until);
        if !could_not_grant {
            return Vec::new();
        }
        let (leases, mut fx) = self.split(now);
        leases.settle_all(&mut fx);
        fx.changes
    }

    /// Whether grants are held back until the store makes the next counter
    /// reservation durable.
    pub fn grants_stopped(&self) -> bool {
        !self.issuer.can_grant()
    }

    /// Ends every lease whose TTL ran out, drops every waiter whose
    /// `max_wait_ms` ran out, sends heartbeats and the waiter updates held
    /// back by the pace, as of `now`.
    pub fn expire(&mut self, now: Millis) -> Vec<Change> {
        let (leases, mut fx) = self.split(now);
        while let Some(&(at, what)) = fx.deadlines.first() {
            if at > now {
                break;
            }
            fx.deadlines.pop_first();
            match what {
                Deadline::Lease(lease)
                | Deadline::Grace(lease)
                | Deadline::Stall(lease)
                | Deadline::Revoke(lease) => leases.deadline(lease, &mut fx),
                Deadline::Heartbeats => fx.heartbeats(),
                Deadline::WaiterUpdates => leases.waiter_updates_due(&mut fx),
            }
        }
        fx.changes
    }

    /// The fleet admits a waiter of a `global/` resource with the fencing
    /// token etcd gave it (see DESIGN "Fleet"): it is granted once it heads
    /// the local queue. The fleet task decides; the core only obeys, so
    /// every rule of the local table still holds.
    pub fn admit(&mut self, lease: LeaseId, token: FencingToken, now: Millis) -> Vec<Change> {
        let (leases, mut fx) = self.split(now);
        leases.admit(lease, token, &mut fx);
        fx.changes
    }

    /// The fleet tells where a waiter of a `global/` resource stands across
    /// hosts (its position there and the requests ahead of it, whose
    /// `holder.client_name` names their host); its owner is told at once.
    pub fn global_place(
        &mut self,
        lease: LeaseId,
        position: u32,
        ahead: Vec<LeaseView>,
        now: Millis,
    ) -> Vec<Change> {
        let (leases, mut fx) = self.split(now);
        leases.global_place(lease, position, ahead, &mut fx);
        fx.changes
    }

    /// The broker lost (or may have lost) its etcd lease: every holder of a
    /// `global/` resource is told `Lost` with `detail`, waiters keep their
    /// places until the fleet admits them again.
    pub fn fleet_lost(&mut self, detail: &str, now: Millis) -> Vec<Change> {
        let (leases, mut fx) = self.split(now);
        leases.fleet_lost(detail, &mut fx);
        fx.changes
    }

    /// Every resource named (all when `resources` is empty), with holders
    /// and waiters in order.
    pub fn status(&self, resources: &[String]) -> StatusView {
        StatusView {
            revision: self.issuer.revision,
            resources: self.leases.views(resources, self.issuer.revision, None),
        }
    }

    /// [`Core::status`] as of `now`: waiters carry the broker's estimate
    /// of their wait.
    #[cfg(test)]
    pub fn status_at(&self, resources: &[String], now: Millis) -> StatusView {
        let (revision, views) = self.status_in_order(resources, now);
        StatusView {
            revision,
            resources: views.collect(),
        }
    }

    /// [`Core::status`] as of `now`, one resource at a time, in name order
    /// (see [`LeaseTable::views_in_order`]: a caller that stops early does
    /// not pay for the rest); waiters carry the broker's estimate of their
    /// wait. The revision is the snapshot's.
    pub fn status_in_order<'a>(
        &'a self,
        resources: &'a [String],
        now: Millis,
    ) -> (Revision, impl Iterator<Item = ResourceView> + 'a) {
        let revision = self.issuer.revision;
        (
            revision,
            self.leases.views_in_order(resources, revision, Some(now)),
        )
    }

    /// The peer behind a session, if it is still connected.
    pub fn peer(&self, session: SessionId) -> Option<&Arc<Peer>> {
        self.sessions.get(&session)
    }

    /// Asks for a lease (see [`LeaseTable::acquire`]): granted at once when
    /// the resource is free for this mode **and** nobody waits; otherwise
    /// queued (or refused with [`CoreError::Busy`] under
    /// [`WaitPolicy::NoWait`]).
    pub fn acquire(
        &mut self,
        session: SessionId,
        req: AcquireRequest<'_>,
        now: Millis,
    ) -> Result<(AcquireOutcome, Vec<Change>), CoreError> {
        let ttl_ms = self.leases.check(&req)?;
        let peer = self.open(session)?.clone();
        let (leases, mut fx) = self.split(now);
        let outcome = leases.acquire(peer, req, ttl_ms, &mut fx)?;
        Ok((outcome, fx.changes))
    }

    /// Extends a held lease's TTL from `now`; answers the TTL in force.
    /// On a waiter it changes nothing.
    pub fn keep_alive(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        now: Millis,
    ) -> Result<u32, CoreError> {
        let (leases, mut fx) = self.split(now);
        leases.keep_alive(session, lease, &mut fx)
    }

    /// Ends a lease, held or still queued, and grants the next waiters.
    pub fn release(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        now: Millis,
    ) -> Result<Vec<Change>, CoreError> {
        let (leases, mut fx) = self.split(now);
        leases.release(session, lease, &mut fx)?;
        Ok(fx.changes)
    }

    /// Leaves the queue; a request granted meanwhile is refused
    /// ([`WrongState::AlreadyGranted`]): release it instead.
    pub fn cancel(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        now: Millis,
    ) -> Result<Vec<Change>, CoreError> {
        let (leases, mut fx) = self.split(now);
        leases.cancel(session, lease, &mut fx)?;
        Ok(fx.changes)
    }

    /// Records a holder's progress and tells watchers and waiters.
    pub fn report_progress(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        progress: Progress,
        now: Millis,
    ) -> Result<Vec<Change>, CoreError> {
        let (leases, mut fx) = self.split(now);
        leases.report_progress(session, lease, progress, &mut fx)?;
        Ok(fx.changes)
    }

    /// Takes back a detached lease or queue place for this session, with
    /// the owner's secret (see [`LeaseTable::reattach`]). Answers as
    /// `acquire` does: held, or queued where it stands now.
    pub fn reattach(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        token: &ResumeToken,
        now: Millis,
    ) -> Result<(AcquireOutcome, Vec<Change>), CoreError> {
        let peer = self.open(session)?.clone();
        let (leases, mut fx) = self.split(now);
        let outcome = leases.reattach(peer, lease, token, &mut fx)?;
        Ok((outcome, fx.changes))
    }

    /// Asks every holder of `resource` to make way within `within_ms`;
    /// with `revoke`, those still holding then lose their lease. The
    /// policy decides who may ask before this is called. Returns how many
    /// holders were asked.
    pub fn request_yield(
        &mut self,
        session: SessionId,
        resource: &str,
        within_ms: u32,
        reason: &str,
        revoke: bool,
        now: Millis,
    ) -> Result<(u32, Vec<Change>), CoreError> {
        let requester = self.open(session)?.clone();
        let request = YieldRequest {
            requester,
            reason: Arc::from(reason),
            within_ms,
            revoke,
        };
        let (leases, mut fx) = self.split(now);
        let asked = leases.request_yield(resource, request, &mut fx)?;
        Ok((asked, fx.changes))
    }

    /// A holder declines a yield request; watchers are told why.
    pub fn decline_yield(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        reason: &str,
        now: Millis,
    ) -> Result<Vec<Change>, CoreError> {
        let (leases, mut fx) = self.split(now);
        leases.decline_yield(session, lease, reason, &mut fx)?;
        Ok(fx.changes)
    }

    /// Subscribes a session to the named resources (all when empty).
    /// `start_revision` 0 means "from now" (a snapshot); otherwise the events
    /// after it are replayed, or a snapshot with `resync` when the history
    /// no longer reaches back that far.
    pub fn watch(
        &mut self,
        session: SessionId,
        resources: Vec<String>,
        start_revision: u64,
        now: Millis,
    ) -> Result<WatchStart, CoreError> {
        check_name_count(resources.len())?;
        for r in &resources {
            check_name("resource", r)?;
        }
        self.open(session)?;
        let current = self.issuer.revision;
        let leases = &self.leases;
        self.watches.watch(
            session,
            &resources,
            start_revision,
            current,
            || leases.views(&resources, current, Some(now)),
            now,
            &mut self.deadlines,
        )
    }

    /// Ends a watch of this session.
    pub fn unwatch(&mut self, session: SessionId, watch: WatchId) -> Result<(), CoreError> {
        self.open(session)?;
        self.watches.unwatch(session, watch)
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
        self.open(session)?;
        let (consumer, changes) = self.queues.consume(session, queue, prefetch)?;
        Ok((consumer, Change::from_queue(changes)))
    }

    /// The peer of an open session; a closed one is refused like any bad
    /// request (the dispatch layer only calls with live sessions).
    fn open(&self, session: SessionId) -> Result<&Arc<Peer>, CoreError> {
        self.sessions
            .get(&session)
            .ok_or(CoreError::WrongState(WrongState::SessionClosed(session)))
    }

    /// The lease table, and a sink for the effects of one call on it.
    fn split(&mut self, now: Millis) -> (&mut LeaseTable, Effects<'_>) {
        let changes = std::mem::take(&mut self.spare_changes);
        (
            &mut self.leases,
            Effects::new(
                now,
                &mut self.issuer,
                &mut self.watches,
                &mut self.deadlines,
                &mut self.ended,
                changes,
            ),
        )
    }

    /// Hands back a list of changes the caller is done with, for a later
    /// call to fill (its contents are dropped; a list larger than
    /// [`SPARE_CHANGES_ROOM`] is let go).
    pub fn recycle_changes(&mut self, mut changes: Vec<Change>) {
        if changes.capacity() > self.spare_changes.capacity()
            && changes.capacity() <= SPARE_CHANGES_ROOM
        {
            changes.clear();
            self.spare_changes = changes;
        }
    }

    /// Lends `f` each lease that ended since the last call, oldest first,
    /// for the history (DESIGN "History"), then drops them where they lie:
    /// an [`Ended`] is ~230 bytes, and taking each out by value moved it
    /// once more per lease in a flood. The dispatch layer calls it after
    /// every call that may end a lease; the room is kept for the next.
    pub fn each_ended(&mut self, mut f: impl FnMut(&Ended)) {
        for ended in &self.ended {
            f(ended);
        }
        self.ended.clear();
    }
}
