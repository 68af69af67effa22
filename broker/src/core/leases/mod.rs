//! The lease table: who holds each resource, who waits for it and in what
//! order, and every rule that moves a request from waiting to holding.
//!
//! Invariants (checked by the property tests):
//! - a resource is held by one EXCLUSIVE lease or by any number of SHARED
//!   ones, never both;
//! - waiters are granted strictly in the order they asked: a SHARED request
//!   behind a queued EXCLUSIVE one waits, and consecutive SHARED requests at
//!   the head are granted together;
//! - on a resource with a capacity (a counting semaphore) the holders'
//!   permits never add up to more than it, an EXCLUSIVE lease there takes
//!   them all, and a waiter that needs more than are free blocks those
//!   behind it (no barging);
//! - a request that left the queue (cancel, time-out, disconnect) is never
//!   granted afterwards;
//! - a detached lease (its connection closed within a detach grace) keeps
//!   its place, held or queued, and its TTL does not run until it is
//!   re-attached or its grace runs out;
//! - fencing tokens strictly increase;
//! - the waiters of a resource are told their place (`Queued`) at most
//!   once per waiter interval, with the newest state, and none is left
//!   with a stale place once an interval has passed (tested in
//!   `core/tests/pacing.rs`; a round over a long queue goes out in chunks).
//!
//! The table's fields are private: every rule is a method that writes
//! what it causes (revisions, fencing tokens, deadlines, watch events,
//! updates for owners) into one [`Effects`] sink, and delivers nothing.
//! It keeps each session's leases (and its quota) itself; the core checks
//! that a session is open before it asks. Read-only views are in
//! [`views`].

mod views;

use crate::core::LeaseView;
use std::collections::VecDeque;
use std::sync::Arc;

use super::Map;
use super::effects::{Deadline, Effects};
use super::{
    AcquireOutcome, AcquireRequest, BadArgument, Cause, CoreConfig, CoreError, Ending, EventKind,
    FencingToken, Grant, LeaseId, LeaseUpdate, LostReason, MAX_AHEAD, Millis, Mode, Peer, Progress,
    QueuePosition, ResumeToken, SessionId, WaitPolicy, WrongState, YieldRequest, check_name,
    check_text,
};

/// How many ended leases are remembered, so that a late request on one is
/// told how it ended rather than "unknown".
const REMEMBERED_ENDINGS: usize = 4096;

/// Most waiters told their place in one call of the core: a round over a
/// longer queue goes on in the next calls, 1 ms apart, so that the core
/// task answers other clients between chunks (50 000 waiters took the
/// core task ~0.5 s in one go; in chunks of 1 024 a ping's p99 was 41 ms,
/// of 256 9 ms: `floods` long mode, release build).
pub(crate) const TOLD_PER_CALL: usize = 256;

/// How many pairs of empty holder and waiter lists are kept for the next
/// resources to enter the table.
const SPARE_LISTS: usize = 64;

/// The largest room (in leases) of a list kept for reuse: a list grown by
/// a long queue is let go.
const SPARE_LIST_ROOM: usize = 8;

/// How many idle resources stay in the table (marked idle) with their
/// typical hold time, so that the next wait estimate on them still knows
/// it, and the next request on them finds them in place.
pub(crate) const REMEMBERED_HOLD_TIMES: usize = 4096;

#[derive(Clone, Debug)]
enum LeaseState {
    Waiting {
        queued_at: Millis,
        give_up_at: Option<Millis>,
    },
    Held {
        fencing: FencingToken,
        granted_at: Millis,
        expires_at: Millis,
        /// When `queued_at` was, if it waited at all.
        queued_at: Option<Millis>,
    },
}

/// Where a resource is in [`LeaseTable::slots`]: fixed while it is in the
/// table (in use or idle), given to another resource after it is let go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Slot(usize);

#[derive(Clone, Debug)]
struct Lease {
    id: LeaseId,
    resource: Arc<str>,
    /// Where its resource is: a lease finds it without hashing its name
    /// (four lookups by name per Acquire + Release were ~430 instructions
    /// of a cycle: issue 14).
    slot: Slot,
    mode: Mode,
    purpose: Arc<str>,
    peer: Arc<Peer>,
    ttl_ms: u32,
    state: LeaseState,
    progress: Option<Progress>,
    /// Permits of the resource's semaphore it takes (0: not a semaphore).
    permits: u32,
    /// How long it outlives its connection (0: not at all).
    detach_grace_ms: u32,
    /// The owner's secret for re-attaching (with a grace only).
    resume_token: Option<ResumeToken>,
    /// While its connection is gone: when the grace runs out.
    detached_until: Option<Millis>,
    /// Called stalled after this long without progress (0: never).
    stall_after_ms: u32,
    /// When a held, attached lease is next due to be called stalled.
    stall_at: Option<Millis>,
    /// Kept alive but no progress for `stall_after_ms`.
    stalled: bool,
    /// A pending revoke of this holder: when, and whose request.
    revoke: Option<(Millis, Arc<YieldRequest>)>,
    /// Why the fleet took this `global/` lease back (it ends `Revoked`).
    fleet_lost: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Resource {
    name: Arc<str>,
    /// Granted leases, in grant order.
    holders: Vec<LeaseId>,
    /// Queued requests, first come first.
    waiters: VecDeque<LeaseId>,
    revision: super::Revision,
    /// Smoothed duration of past holds, for wait estimates.
    typical_hold_ms: Option<u64>,
    /// Its semaphore capacity; 0 = not a semaphore. Fixed while the
    /// resource is in the table (while anyone holds or waits).
    capacity: u32,
    /// When its waiters were last told where they stand (the pace runs
    /// from there).
    told_at: Option<Millis>,
    /// Waiters from this index on are owed an update that the pace held
    /// back; it goes out at `told_at + interval` with the newest state.
    owed_from: Option<usize>,
    /// A round of updates under way over a long queue: the waiters from
    /// this index on are told at the next call ([`TOLD_PER_CALL`] a call).
    telling_from: Option<usize>,
    /// Out of use: nobody holds or waits, and the table answers as if it
    /// did not have it (see [`LeaseTable::resource`]); it stays only so
    /// that its typical hold time is remembered and so that the next
    /// request on it finds its entry (an entry removed and inserted again
    /// per Acquire + Release was ~450 instructions of a cycle: issue 14).
    idle: bool,
    /// Its name is in `idle_order` (it was idle once and not yet let go).
    remembered: bool,
}

/// The lease limits, from the core's configuration.
#[derive(Clone, Copy, Debug)]
struct Limits {
    default_ttl_ms: u32,
    min_ttl_ms: u32,
    max_ttl_ms: u32,
    max_per_session: usize,
    max_waiters_per_uid: usize,
    max_leases_per_uid: usize,
    own_uid: u32,
    /// `CoreConfig::waiter_update_interval_ms`.
    waiter_update_interval_ms: u64,
    /// `CoreConfig::waiter_updates_per_second` (at least 1).
    waiter_updates_per_second: u64,
    fleet: bool,
}

impl Limits {
    /// Whether `uid` is bound by the per-user limits (root and the
    /// broker's own user are not).
    fn binds(&self, uid: u32) -> bool {
        uid != 0 && uid != self.own_uid
    }

    /// How long the `waiters` of one resource go between two updates: the
    /// configured interval, or longer for a queue that could not all be
    /// told within it at `waiter_updates_per_second`.
    fn waiter_interval(&self, waiters: usize) -> Millis {
        let by_rate = (waiters as u64).saturating_mul(1000) / self.waiter_updates_per_second;
        self.waiter_update_interval_ms.max(by_rate)
    }
}

/// Resources and leases. A resource with neither holders nor waiters is
/// out of use: every question about it is answered as if the table did
/// not have it; it is kept, marked idle, only while it is among the last
/// [`REMEMBERED_HOLD_TIMES`] to become idle, for its typical hold time.
pub(crate) struct LeaseTable {
    limits: Limits,
    /// Where each resource in the table is, by name.
    resources: Map<Arc<str>, Slot>,
    /// Resources in use, and (marked `idle`) recently idle ones; `None`
    /// is a free slot, listed in `free_slots`.
    slots: Vec<Option<Resource>>,
    free_slots: Vec<Slot>,
    leases: Map<LeaseId, Lease>,
    /// Each session's leases, held or queued.
    by_session: Map<SessionId, Vec<LeaseId>>,
    next_lease: u64,
    endings: Map<LeaseId, Ending>,
    ending_order: VecDeque<LeaseId>,
    /// Resources that became idle with a typical hold time, first idle
    /// first (at most [`REMEMBERED_HOLD_TIMES`]); the first is let go from
    /// the table (if still idle then) when another comes in.
    idle_order: VecDeque<Slot>,
    /// Requests waiting in queues, per uid (`--max-waiters-per-uid`); a
    /// uid with none waiting may stay at 0 (see [`count_down`]).
    waiting_per_uid: Map<u32, usize>,
    /// Leases, held or queued, per uid bound by the per-user limits
    /// (`--max-leases-per-uid`); a uid with none may stay at 0.
    leases_per_uid: Map<u32, usize>,
    /// Capacities fixed by the broker's config file.
    configured: Map<Arc<str>, u32>,
    /// Resources whose waiters are owed an update held back by the pace
    /// or the rest of a round (each has `owed_from` or `telling_from`
    /// set), each once, oldest first.
    owed: VecDeque<Arc<str>>,
    /// Waiters on `global/` resources the fleet admitted, with the fencing
    /// token etcd gave them (see [`LeaseTable::admit`]). A `global/` waiter
    /// is never granted without its admission.
    admitted: Map<LeaseId, FencingToken>,
    /// Where `global/` waiters stand in their queue across hosts, as the
    /// fleet last told: position, and the requests ahead (holders first).
    /// Shown instead of the local place while known.
    global_places: Map<LeaseId, (u32, Vec<LeaseView>)>,
    /// Empty holder and waiter lists of resources let go from the table,
    /// for the next ones to come in (at most [`SPARE_LISTS`]).
    spare: Vec<(Vec<LeaseId>, VecDeque<LeaseId>)>,
    /// The purpose of every lease that gives none, shared (an `Arc<str>`
    /// made per lease was an allocation and a free per Acquire + Release).
    no_purpose: Arc<str>,
}

impl LeaseTable {
    /// An empty table with the limits of `config`.
    pub(crate) fn new(config: &CoreConfig) -> LeaseTable {
        LeaseTable {
            limits: Limits {
                default_ttl_ms: config.default_ttl_ms,
                min_ttl_ms: config.min_ttl_ms,
                max_ttl_ms: config.max_ttl_ms,
                max_per_session: config.max_leases_per_session,
                max_waiters_per_uid: config.max_waiters_per_uid,
                max_leases_per_uid: config.max_leases_per_uid,
                own_uid: config.own_uid,
                waiter_update_interval_ms: config.waiter_update_interval_ms,
                waiter_updates_per_second: config.waiter_updates_per_second.max(1),
                fleet: config.fleet,
            },
            admitted: Map::default(),
            global_places: Map::default(),
            waiting_per_uid: Map::default(),
            leases_per_uid: Map::default(),
            resources: Map::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            leases: Map::default(),
            by_session: Map::default(),
            next_lease: 0,
            endings: Map::default(),
            ending_order: VecDeque::new(),
            idle_order: VecDeque::new(),
            owed: VecDeque::new(),
            no_purpose: Arc::from(""),
            spare: Vec::new(),
            configured: config
                .capacities
                .iter()
                .map(|(name, c)| (Arc::from(name.as_str()), *c))
                .collect(),
        }
    }

    /// Checks a request's name, purpose and TTL; answers the TTL in force
    /// (the default for 0).
    pub(crate) fn check(&self, req: &AcquireRequest<'_>) -> Result<u32, CoreError> {
        check_name("resource", &req.resource)?;
        check_text("purpose", &req.purpose)?;
        let limits = self.limits;
        if is_global(&req.resource) {
            if !limits.fleet {
                return Err(CoreError::InvalidArgument(BadArgument::NoFleet {
                    resource: req.resource.to_string(),
                }));
            }
            if req.wait == WaitPolicy::NoWait {
                return Err(CoreError::InvalidArgument(BadArgument::GlobalNoWait {
                    resource: req.resource.to_string(),
                }));
            }
        }
        let ttl_ms = if req.ttl_ms == 0 {
            limits.default_ttl_ms
        } else {
            req.ttl_ms
        };
        if !(limits.min_ttl_ms..=limits.max_ttl_ms).contains(&ttl_ms) {
            return Err(CoreError::InvalidArgument(BadArgument::TtlOutOfRange {
                ttl_ms,
                min: limits.min_ttl_ms,
                max: limits.max_ttl_ms,
            }));
        }
        if req.detach_grace_ms > limits.max_ttl_ms {
            return Err(CoreError::InvalidArgument(BadArgument::GraceTooLong {
                grace_ms: req.detach_grace_ms,
                max: limits.max_ttl_ms,
            }));
        }
        if req.detach_grace_ms > 0 && req.resume_token.is_none() {
            return Err(CoreError::InvalidArgument(BadArgument::NoResumeToken));
        }
        Ok(ttl_ms)
    }

    /// The capacity `req` will find on its resource, and the permits its
    /// lease takes there; refuses a capacity other than the resource's and
    /// more permits than it has.
    /// `existing` is the resource as the table has it, if it does.
    fn capacity_for(
        &self,
        req: &AcquireRequest<'_>,
        existing: Option<&Resource>,
    ) -> Result<(u32, u32), CoreError> {
        let name = req.resource.as_ref();
        let fixed = match (self.configured.get(name), existing) {
            (Some(&c), _) => Some((c, ", fixed by the broker's config")),
            (None, Some(res)) => Some((res.capacity, " while it is in use")),
            (None, None) => None,
        };
        let capacity = match fixed {
            Some((c, why)) if req.capacity != 0 && req.capacity != c => {
                return Err(CoreError::InvalidArgument(BadArgument::CapacityMismatch {
                    resource: req.resource.to_string(),
                    capacity: c,
                    asked: req.capacity,
                    fixed: why,
                }));
            }
            Some((c, _)) => c,
            None => req.capacity,
        };
        let permits = match (capacity, req.mode) {
            (0, _) => 0,
            (c, Mode::Exclusive) => c,
            (c, Mode::Shared) => {
                let p = req.permits.max(1);
                if p > c {
                    return Err(CoreError::InvalidArgument(BadArgument::TooManyPermits {
                        resource: req.resource.to_string(),
                        permits: p,
                        capacity: c,
                    }));
                }
                p
            }
        };
        Ok((capacity, permits))
    }

    /// Asks for a lease for `peer` (its session open), with a request that
    /// passed [`LeaseTable::check`]. Granted at once when the resource is
    /// free for this mode **and** nobody waits; otherwise queued (or
    /// refused with [`CoreError::Busy`] under [`WaitPolicy::NoWait`]).
    pub(crate) fn acquire(
        &mut self,
        peer: Arc<Peer>,
        req: AcquireRequest<'_>,
        ttl_ms: u32,
        fx: &mut Effects,
    ) -> Result<AcquireOutcome, CoreError> {
        let session = peer.session;
        let limit = self.limits.max_per_session;
        if self.by_session.get(&session).map_or(0, Vec::len) >= limit {
            return Err(CoreError::Quota {
                what: "leases",
                limit,
            });
        }
        // The resource is looked up once for every question below (its
        // name was hashed at each of them: issue 14). An idle one is
        // answered for as if the table did not have it.
        let entry = self.resources.get(req.resource.as_ref()).copied();
        let existing = entry.and_then(|slot| self.res(slot)).filter(|r| !r.idle);
        let (capacity, permits) = self.capacity_for(&req, existing)?;
        let free_now = match existing {
            None => true,
            Some(res) => res.waiters.is_empty() && self.compatible(res, req.mode, permits),
        };
        let uid = peer.uid;
        let waiting = self.waiting_per_uid.get(&uid).copied().unwrap_or(0);
        let bounded = self.limits.binds(uid);
        let held = if bounded {
            self.leases_per_uid.get(&uid).copied().unwrap_or(0)
        } else {
            0
        };
        if bounded && held >= self.limits.max_leases_per_uid {
            return Err(CoreError::UserLeases {
                uid,
                limit: self.limits.max_leases_per_uid,
            });
        }
        if !free_now && bounded && waiting >= self.limits.max_waiters_per_uid {
            return Err(CoreError::UserWaiters {
                uid,
                limit: self.limits.max_waiters_per_uid,
            });
        }
        // A free resource whose grant is held back (no durable fencing
        // token yet) is not granted now either: NO_WAIT never queues.
        if free_now && req.wait == WaitPolicy::NoWait && !fx.can_grant() {
            return Err(CoreError::Busy {
                resource: req.resource.into_owned(),
                holder: "nobody holds it, but grants are held back until the broker can store \
                         its next fencing-token reservation (see the broker's log)"
                    .to_string(),
            });
        }
        if !free_now && req.wait == WaitPolicy::NoWait {
            let holder = existing
                .map(|r| self.describe_holders(r))
                .unwrap_or_default();
            return Err(CoreError::Busy {
                resource: req.resource.into_owned(),
                holder,
            });
        }

        let now = fx.now;
        self.next_lease += 1;
        let id = LeaseId(self.next_lease);
        // A local resource free now is granted straight away, without
        // passing through its queue (a push and a pop, and the queue's
        // allocation on a new resource: issue 14), when its fencing token
        // is durable; otherwise the request queues and waits for it.
        let straight = if free_now && !is_global(&req.resource) {
            fx.take_fencing()
        } else {
            None
        };
        let slot = match entry {
            Some(slot) => slot,
            None => {
                let name: Arc<str> = Arc::from(req.resource.as_ref());
                let (holders, waiters) = match self.spare.pop() {
                    Some((holders, waiters)) => (holders, waiters),
                    None => (Vec::new(), VecDeque::new()),
                };
                let slot = self.place(Resource {
                    name: name.clone(),
                    capacity,
                    holders,
                    waiters,
                    ..Resource::default()
                });
                self.resources.insert(name, slot);
                slot
            }
        };
        let Some(res) = self.slots.get_mut(slot.0).and_then(Option::as_mut) else {
            return Err(CoreError::Broken(
                "a resource left the table during a request",
            ));
        };
        if res.idle {
            // Back in use, with its typical hold time and the capacity of
            // this request (`forget_resource` left the rest as a new
            // resource has it).
            res.idle = false;
            res.capacity = capacity;
        }
        let name = res.name.clone();
        if straight.is_some() {
            res.holders.push(id);
        } else {
            res.waiters.push_back(id);
            *self.waiting_per_uid.entry(uid).or_insert(0) += 1;
        }
        if bounded {
            self.leases_per_uid.insert(uid, held + 1);
        }
        let give_up_at = (req.max_wait_ms > 0).then(|| now + u64::from(req.max_wait_ms));
        self.leases.insert(
            id,
            Lease {
                id,
                resource: name,
                slot,
                mode: req.mode,
                purpose: if req.purpose.is_empty() {
                    // Most requests say no purpose: one shared empty text.
                    self.no_purpose.clone()
                } else {
                    Arc::from(req.purpose.as_ref())
                },
                peer,
                ttl_ms,
                state: LeaseState::Waiting {
                    queued_at: now,
                    give_up_at,
                },
                progress: None,
                permits,
                detach_grace_ms: req.detach_grace_ms,
                resume_token: req.resume_token.filter(|_| req.detach_grace_ms > 0),
                detached_until: None,
                stall_after_ms: req.stall_after_ms,
                stall_at: None,
                stalled: false,
                revoke: None,
                fleet_lost: None,
            },
        );
        self.by_session.entry(session).or_default().push(id);

        if let Some(fencing) = straight {
            if let Some((_, g)) = self.hold(slot, id, fencing, fx) {
                return Ok(AcquireOutcome::Granted(g));
            }
            debug_assert!(false, "lease {id} vanished as it was granted");
            return Err(CoreError::Broken("a lease vanished as it was granted"));
        }
        // A local resource free now gets here only without a durable
        // fencing token: it waits at the head of its queue (`take_fencing`
        // asked for the next block).
        if free_now && is_global(&req.resource) {
            // Straight through the queue: granted without a QUEUED event.
            if let Some(g) = self.grant_head(slot, fx) {
                return Ok(AcquireOutcome::Granted(g));
            }
        }
        if let Some(at) = give_up_at {
            fx.deadlines.insert((at, Deadline::Lease(id)));
        }
        self.state_changed(slot, EventKind::Queued, |_| Cause::None, fx);
        // It joined at the back: its place is known without a search of
        // the queue (which made queueing n waiters quadratic).
        let position = self.res(slot).and_then(|res| {
            let index = res.waiters.len().checked_sub(1)?;
            let l = self.leases.get(&id)?;
            (res.waiters.back() == Some(&id)).then(|| self.position_of(res, index, l, now))
        });
        let Some(position) = position else {
            debug_assert!(false, "lease {id} left the queue it just joined");
            return Err(CoreError::Broken("a queued request left its queue at once"));
        };
        Ok(AcquireOutcome::Queued(position))
    }

    /// Extends a held lease's TTL from now; answers the TTL in force.
    /// On a waiter it changes nothing (waiters live as long as their
    /// connection).
    pub(crate) fn keep_alive(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        fx: &mut Effects,
    ) -> Result<u32, CoreError> {
        let l = self.owned(session, lease)?;
        let ttl = l.ttl_ms;
        if let LeaseState::Held { expires_at, .. } = l.state {
            let new_expiry = fx.now + u64::from(ttl);
            fx.deadlines.remove(&(expires_at, Deadline::Lease(lease)));
            fx.deadlines.insert((new_expiry, Deadline::Lease(lease)));
            if let Some(Lease {
                state: LeaseState::Held { expires_at, .. },
                ..
            }) = self.leases.get_mut(&lease)
            {
                *expires_at = new_expiry;
            }
        }
        Ok(ttl)
    }

    /// Ends a lease, held or still queued, and grants the next waiters.
    pub(crate) fn release(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        fx: &mut Effects,
    ) -> Result<(), CoreError> {
        let ending = match self.owned(session, lease)?.state {
            LeaseState::Held { .. } => Ending::Released,
            LeaseState::Waiting { .. } => Ending::Cancelled,
        };
        self.end_lease(lease, ending, fx);
        Ok(())
    }

    /// The fleet admits the waiter `lease` of a `global/` resource (its
    /// etcd key is among the first at the head of the resource's queue
    /// across hosts), with the fencing token etcd gave it: it is granted
    /// as soon as it heads the local queue too. An admission for a lease
    /// that is no longer waiting is ignored (it ended meanwhile).
    pub(crate) fn admit(&mut self, lease: LeaseId, token: FencingToken, fx: &mut Effects) {
        let Some(l) = self.leases.get(&lease) else {
            return;
        };
        if !matches!(l.state, LeaseState::Waiting { .. }) || !is_global(&l.resource) {
            return;
        }
        let slot = l.slot;
        self.admitted.insert(lease, token);
        if self.promote(slot, fx) {
            self.notify_waiters(slot, 0, fx);
        }
    }

    /// The fleet tells where the waiter `lease` of a `global/` resource
    /// stands across hosts: its position among the waiters there, and the
    /// requests ahead of it (holders first, at most [`MAX_AHEAD`]). Its
    /// owner is told at once; later local updates show the same.
    pub(crate) fn global_place(
        &mut self,
        lease: LeaseId,
        position: u32,
        mut ahead: Vec<LeaseView>,
        fx: &mut Effects,
    ) {
        let Some(l) = self.leases.get(&lease) else {
            return;
        };
        if !matches!(l.state, LeaseState::Waiting { .. }) || !is_global(&l.resource) {
            return;
        }
        let attached = l.detached_until.is_none().then_some(l.peer.session);
        ahead.truncate(MAX_AHEAD);
        self.global_places.insert(lease, (position, ahead));
        if let Some(session) = attached
            && let Some(pos) = self.queue_position(lease, fx.now)
        {
            fx.tell(session, lease, LeaseUpdate::Queued(pos));
        }
    }

    /// The broker lost its place in the fleet: every holder of a `global/`
    /// resource loses its lease (`Lost{REVOKED}` with `detail`), every
    /// admission not yet used is forgotten; waiters keep their local
    /// places and are admitted again once the fleet is back. Local
    /// resources are not touched.
    pub(crate) fn fleet_lost(&mut self, detail: &str, fx: &mut Effects) {
        self.admitted.clear();
        self.global_places.clear();
        let detail: Arc<str> = Arc::from(detail);
        let mut held: Vec<LeaseId> = self
            .slots
            .iter()
            .flatten()
            .filter(|r| is_global(&r.name))
            .flat_map(|r| r.holders.iter().copied())
            .collect();
        held.sort_unstable();
        for lease in held {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.fleet_lost = Some(detail.clone());
            }
            self.end_lease(lease, Ending::Revoked, fx);
        }
    }

    /// Leaves the queue. A request that was granted meanwhile is not
    /// cancelled: the caller is told it holds the lease and must release it.
    pub(crate) fn cancel(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        fx: &mut Effects,
    ) -> Result<(), CoreError> {
        if let LeaseState::Held { .. } = self.owned(session, lease)?.state {
            return Err(CoreError::WrongState(WrongState::AlreadyGranted(lease)));
        }
        self.end_lease(lease, Ending::Cancelled, fx);
        Ok(())
    }

    /// Records a holder's progress and tells watchers and waiters.
    pub(crate) fn report_progress(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        progress: Progress,
        fx: &mut Effects,
    ) -> Result<(), CoreError> {
        let l = self.owned(session, lease)?;
        if let LeaseState::Waiting { .. } = l.state {
            return Err(CoreError::WrongState(WrongState::StillQueued(lease)));
        }
        check_text("progress message", &progress.message)?;
        if progress.total != 0 && progress.done > progress.total {
            return Err(CoreError::InvalidArgument(BadArgument::ProgressOverTotal {
                done: progress.done,
                total: progress.total,
            }));
        }
        let slot = l.slot;
        if let Some(l) = self.leases.get_mut(&lease) {
            l.progress = Some(progress);
            // Progress clears a stall and restarts its clock.
            l.stalled = false;
            if l.stall_after_ms > 0 {
                if let Some(at) = l.stall_at.take() {
                    fx.deadlines.remove(&(at, Deadline::Stall(lease)));
                }
                let at = fx.now + u64::from(l.stall_after_ms);
                l.stall_at = Some(at);
                fx.deadlines.insert((at, Deadline::Stall(lease)));
            }
        }
        self.state_changed(slot, EventKind::Progress, |_| Cause::None, fx);
        self.notify_waiters(slot, 0, fx);
        Ok(())
    }

    /// A deadline of this lease passed: expire it if held, drop it from the
    /// queue if waiting. A stale deadline (the lease was kept alive or has
    /// ended) is ignored.
    pub(crate) fn deadline(&mut self, lease: LeaseId, fx: &mut Effects) {
        let Some(l) = self.leases.get(&lease) else {
            return;
        };
        let now = fx.now;
        let attached = l.detached_until.is_none();
        let ending = match l.state {
            _ if l.detached_until.is_some_and(|until| until <= now) => Ending::GraceExpired,
            LeaseState::Held { .. } if l.revoke.as_ref().is_some_and(|(at, _)| *at <= now) => {
                Ending::Revoked
            }
            LeaseState::Held { expires_at, .. } if attached && expires_at <= now => Ending::Expired,
            LeaseState::Held { .. }
                if attached && !l.stalled && l.stall_at.is_some_and(|at| at <= now) =>
            {
                self.stall(lease, fx);
                return;
            }
            LeaseState::Waiting {
                give_up_at: Some(at),
                ..
            } if at <= now => Ending::TimedOut,
            _ => return,
        };
        self.end_lease(lease, ending, fx);
    }

    /// A holder kept its lease alive but reported no progress for its
    /// `stall_after_ms`: it is stuck. Watchers and waiters are told;
    /// nothing is revoked.
    fn stall(&mut self, lease: LeaseId, fx: &mut Effects) {
        let Some(l) = self.leases.get_mut(&lease) else {
            return;
        };
        l.stalled = true;
        l.stall_at = None;
        let cause = Cause::Stalled {
            lease,
            peer: l.peer.clone(),
            after_ms: l.stall_after_ms,
        };
        let slot = l.slot;
        self.state_changed(slot, EventKind::Stalled, move |_| cause, fx);
        self.notify_waiters(slot, 0, fx);
    }

    /// Takes back a detached lease or queue place for `peer` (a new
    /// session of the same uid) with the owner's secret. A wrong token,
    /// another uid, a lease that is not detached or has ended are all the
    /// same [`CoreError::UnknownLease`]: the answer tells a guesser nothing.
    pub(crate) fn reattach(
        &mut self,
        peer: Arc<Peer>,
        lease: LeaseId,
        token: &ResumeToken,
        fx: &mut Effects,
    ) -> Result<AcquireOutcome, CoreError> {
        let found = self.leases.get(&lease).is_some_and(|l| {
            l.detached_until.is_some()
                && l.peer.uid == peer.uid
                && l.resume_token.is_some_and(|t| t.matches(token))
        });
        if !found {
            return Err(CoreError::UnknownLease(lease));
        }
        let session = peer.session;
        let limit = self.limits.max_per_session;
        if self.by_session.get(&session).map_or(0, Vec::len) >= limit {
            return Err(CoreError::Quota {
                what: "leases",
                limit,
            });
        }
        let now = fx.now;
        let Some(l) = self.leases.get_mut(&lease) else {
            return Err(CoreError::UnknownLease(lease));
        };
        if let Some(until) = l.detached_until.take() {
            fx.deadlines.remove(&(until, Deadline::Grace(lease)));
        }
        l.peer = peer.clone();
        if let LeaseState::Held { expires_at, .. } = &mut l.state {
            // The TTL starts again from now: it did not run while detached.
            *expires_at = now + u64::from(l.ttl_ms);
            fx.deadlines.insert((*expires_at, Deadline::Lease(lease)));
            if l.stall_after_ms > 0 && !l.stalled {
                let at = now + u64::from(l.stall_after_ms);
                l.stall_at = Some(at);
                fx.deadlines.insert((at, Deadline::Stall(lease)));
            }
        }
        let slot = l.slot;
        let grant = match l.state {
            LeaseState::Held { fencing, .. } => Some(Grant {
                lease_id: lease,
                fencing,
                ttl_ms: l.ttl_ms,
                resume_token: l.resume_token,
            }),
            LeaseState::Waiting { .. } => None,
        };
        self.by_session.entry(session).or_default().push(lease);
        let cause = Cause::Reattached { lease, peer };
        self.state_changed(slot, EventKind::Reattached, move |_| cause, fx);
        match grant {
            Some(g) => Ok(AcquireOutcome::Granted(g)),
            None => match self.queue_position(lease, now) {
                Some(pos) => Ok(AcquireOutcome::Queued(pos)),
                None => Err(CoreError::Broken(
                    "a re-attached waiter is not in its queue",
                )),
            },
        }
    }

    /// Asks every holder of `resource` to make way; with `revoke`, a
    /// holder still holding after `within_ms` loses its lease (at once
    /// for 0). A resource nobody holds has nobody to ask: nothing happens.
    pub(crate) fn request_yield(
        &mut self,
        resource: &str,
        request: YieldRequest,
        fx: &mut Effects,
    ) -> Result<u32, CoreError> {
        check_name("resource", resource)?;
        check_text("reason", &request.reason)?;
        let Some(&slot) = self.resources.get(resource) else {
            return Ok(0);
        };
        let Some(res) = self.res(slot) else {
            return Ok(0);
        };
        let holders = res.holders.clone();
        if holders.is_empty() {
            return Ok(0);
        }
        let asked = u32::try_from(holders.len()).unwrap_or(u32::MAX);
        let request = Arc::new(request);
        let at = fx.now + u64::from(request.within_ms);
        for &h in &holders {
            let Some(l) = self.leases.get_mut(&h) else {
                continue;
            };
            if request.revoke {
                match &l.revoke {
                    Some((earlier, _)) if *earlier <= at => {}
                    _ => {
                        if let Some((old, _)) = l.revoke.take() {
                            fx.deadlines.remove(&(old, Deadline::Revoke(h)));
                        }
                        l.revoke = Some((at, request.clone()));
                        fx.deadlines.insert((at, Deadline::Revoke(h)));
                    }
                }
            }
            if l.detached_until.is_none() {
                let session = l.peer.session;
                fx.tell(session, h, LeaseUpdate::YieldRequested(request.clone()));
            }
        }
        let cause = Cause::YieldRequested(request.clone());
        self.state_changed(slot, EventKind::YieldRequested, move |_| cause, fx);
        if request.revoke && request.within_ms == 0 {
            let mut from = usize::MAX;
            for h in holders {
                if let Some((_, f)) = self.detach_lease(h, Ending::Revoked, fx) {
                    from = from.min(f);
                }
            }
            if from != usize::MAX {
                self.settle(slot, from, fx);
            }
        }
        Ok(asked)
    }

    /// A holder answers a yield request: it will not make way. Watchers
    /// are told why; a pending revoke still stands.
    pub(crate) fn decline_yield(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        reason: &str,
        fx: &mut Effects,
    ) -> Result<(), CoreError> {
        let l = self.owned(session, lease)?;
        if let LeaseState::Waiting { .. } = l.state {
            return Err(CoreError::WrongState(WrongState::NotHolding(lease)));
        }
        check_text("reason", reason)?;
        let cause = Cause::YieldDeclined {
            lease,
            peer: l.peer.clone(),
            reason: Arc::from(reason),
        };
        let slot = l.slot;
        self.state_changed(slot, EventKind::YieldDeclined, move |_| cause, fx);
        Ok(())
    }

    /// The connection of a lease with a detach grace closed: the lease
    /// keeps its place, its TTL and stall clocks stop, and the grace runs.
    fn keep_detached(&mut self, lease: LeaseId, fx: &mut Effects) {
        let Some(l) = self.leases.get_mut(&lease) else {
            return;
        };
        let until = fx.now + u64::from(l.detach_grace_ms);
        l.detached_until = Some(until);
        fx.deadlines.insert((until, Deadline::Grace(lease)));
        if let LeaseState::Held { expires_at, .. } = l.state {
            fx.deadlines.remove(&(expires_at, Deadline::Lease(lease)));
        }
        if let Some(at) = l.stall_at.take() {
            fx.deadlines.remove(&(at, Deadline::Stall(lease)));
        }
        let cause = Cause::Detached {
            lease,
            peer: l.peer.clone(),
            grace_ms: l.detach_grace_ms,
        };
        let slot = l.slot;
        self.state_changed(slot, EventKind::Detached, move |_| cause, fx);
    }

    /// The session is gone: every lease of it leaves first, and only then
    /// are the next waiters granted (ending one lease must not grant
    /// another of the departing session's own queued requests on its way
    /// out).
    pub(crate) fn goodbye(&mut self, session: SessionId, fx: &mut Effects) {
        let mut touched: Vec<(Slot, usize)> = Vec::new();
        let leases = self.by_session.remove(&session).unwrap_or_default();
        // Its waiters leave their queues first, in one pass per queue: one
        // search of the queue per waiter made a connection with a thousand
        // waiters in a queue of 50 000 cost fifty million steps to close.
        let mut leaving: Map<Slot, std::collections::HashSet<LeaseId>> = Map::default();
        for lease in &leases {
            if let Some(l) = self.leases.get(lease)
                && l.detach_grace_ms == 0
                && matches!(l.state, LeaseState::Waiting { .. })
            {
                leaving.entry(l.slot).or_default().insert(*lease);
            }
        }
        for (&slot, gone) in &leaving {
            let Some(res) = self.slots.get_mut(slot.0).and_then(Option::as_mut) else {
                continue;
            };
            let mut index = 0;
            let mut first = None;
            res.waiters.retain(|w| {
                let stays = !gone.contains(w);
                if !stays && first.is_none() {
                    first = Some(index);
                }
                index += 1;
                stays
            });
            if let Some(first) = first {
                touched.push((slot, first));
            }
        }
        for lease in leases {
            if self
                .leases
                .get(&lease)
                .is_some_and(|l| l.detach_grace_ms > 0)
            {
                self.keep_detached(lease, fx);
                continue;
            }
            let Some((slot, from)) = self.detach_lease_from(lease, Ending::Disconnected, fx, true)
            else {
                continue;
            };
            match touched.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, first)) => *first = (*first).min(from),
                None => touched.push((slot, from)),
            }
        }
        for (slot, from) in touched {
            self.settle(slot, from, fx);
        }
    }

    fn remember_ending(&mut self, lease: LeaseId, ending: Ending) {
        if self.ending_order.len() == REMEMBERED_ENDINGS
            && let Some(old) = self.ending_order.pop_front()
        {
            self.endings.remove(&old);
        }
        self.ending_order.push_back(lease);
        self.endings.insert(lease, ending);
    }

    /// The lease, if `session` owns it and it is still alive.
    fn owned(&self, session: SessionId, lease: LeaseId) -> Result<&Lease, CoreError> {
        match self.leases.get(&lease) {
            Some(l) if l.peer.session == session => Ok(l),
            Some(_) => Err(CoreError::NotOwner(lease)),
            None => match self.endings.get(&lease) {
                Some(&ending) => Err(CoreError::Ended { lease, ending }),
                None => Err(CoreError::UnknownLease(lease)),
            },
        }
    }

    /// Can a lease of `mode` taking `permits` join the current holders of
    /// `res`? On a semaphore: if its permits fit beside theirs (an
    /// EXCLUSIVE lease takes them all, so it needs none held).
    fn compatible(&self, res: &Resource, mode: Mode, permits: u32) -> bool {
        if res.capacity > 0 {
            return self.permits_held(res) + u64::from(permits) <= u64::from(res.capacity);
        }
        match mode {
            Mode::Exclusive => res.holders.is_empty(),
            // Holders are one EXCLUSIVE lease or only SHARED ones: the
            // first tells (looking at all of them made granting N SHARED
            // waiters at once quadratic).
            Mode::Shared => res
                .holders
                .first()
                .is_none_or(|h| self.leases.get(h).is_some_and(|l| l.mode == Mode::Shared)),
        }
    }

    /// The permits the holders of `res` take together.
    fn permits_held(&self, res: &Resource) -> u64 {
        res.holders
            .iter()
            .filter_map(|h| self.leases.get(h))
            .map(|l| u64::from(l.permits))
            .sum()
    }

    fn describe_holders(&self, res: &Resource) -> String {
        let mut out = Vec::new();
        for h in &res.holders {
            if let Some(l) = self.leases.get(h) {
                let mut s = format!("held by {}", super::types::PeerName(&l.peer));
                if res.capacity > 0 {
                    s.push_str(&format!(" ({} of {} permits)", l.permits, res.capacity));
                }
                if !l.purpose.is_empty() {
                    s.push_str(&format!(" for \"{}\"", l.purpose));
                }
                out.push(s);
            }
        }
        if out.is_empty() {
            format!("{} request(s) queued ahead", res.waiters.len())
        } else {
            out.join(", ")
        }
    }

    /// Records a change of the state of the resource in `slot` under a new revision and hands
    /// the event to its watchers.
    fn state_changed(
        &mut self,
        slot: Slot,
        kind: EventKind,
        cause: impl FnOnce(&LeaseTable) -> Cause,
        fx: &mut Effects,
    ) {
        let revision = fx.next_revision();
        if let Some(res) = self.res_mut(slot) {
            res.revision = revision;
        }
        self.notify(slot, revision, kind, cause, fx);
    }

    /// As [`LeaseTable::state_changed`], for a caller that already gave
    /// the resource its new `revision` (it had the resource at hand).
    fn notify(
        &self,
        slot: Slot,
        revision: super::Revision,
        kind: EventKind,
        cause: impl FnOnce(&LeaseTable) -> Cause,
        fx: &mut Effects,
    ) {
        let Some(res) = self.res(slot) else {
            debug_assert!(false, "a change of a resource not in the table");
            return;
        };
        let now = fx.now;
        fx.notify_watchers(
            &res.name,
            revision,
            kind,
            || cause(self),
            |revision| self.view_in(res, revision, now),
        );
    }

    /// The one way a lease ends: [`LeaseTable::detach_lease`], then
    /// [`LeaseTable::settle`] its resource.
    fn end_lease(&mut self, lease: LeaseId, ending: Ending, fx: &mut Effects) {
        if let Some((slot, from)) = self.detach_lease(lease, ending, fx) {
            self.settle(slot, from, fx);
        }
    }

    /// Takes a lease out of the table, tells the owner when it did not ask
    /// for it (expiry, time-out) and emits the state event. Grants nobody:
    /// the caller must [`LeaseTable::settle`] the returned resource, from
    /// the returned waiter index on (the first whose position may have
    /// moved).
    fn detach_lease(
        &mut self,
        lease: LeaseId,
        ending: Ending,
        fx: &mut Effects,
    ) -> Option<(Slot, usize)> {
        self.detach_lease_from(lease, ending, fx, false)
    }

    /// As [`LeaseTable::detach_lease`]; with `dequeued`, a waiter was
    /// already taken out of its queue by the caller (who knows from which
    /// index the others moved: the index returned for it is meaningless).
    fn detach_lease_from(
        &mut self,
        lease: LeaseId,
        ending: Ending,
        fx: &mut Effects,
        dequeued: bool,
    ) -> Option<(Slot, usize)> {
        let l = self.leases.remove(&lease)?;
        if self.limits.binds(l.peer.uid) {
            count_down(&mut self.leases_per_uid, l.peer.uid);
        }
        self.remember_ending(lease, ending);
        if let Some(until) = l.detached_until {
            fx.deadlines.remove(&(until, Deadline::Grace(lease)));
        }
        if let Some(at) = l.stall_at {
            fx.deadlines.remove(&(at, Deadline::Stall(lease)));
        }
        if let Some((at, _)) = &l.revoke {
            fx.deadlines.remove(&(*at, Deadline::Revoke(lease)));
        }
        if let Some(mine) = self.by_session.get_mut(&l.peer.session) {
            mine.retain(|x| *x != lease);
        }
        let res = self.slots.get_mut(l.slot.0).and_then(Option::as_mut)?;
        let (was_holder, waiter_index) = match l.state {
            LeaseState::Held {
                expires_at,
                granted_at,
                ..
            } => {
                fx.deadlines.remove(&(expires_at, Deadline::Lease(lease)));
                res.holders.retain(|h| *h != lease);
                let held = fx.now.saturating_sub(granted_at);
                res.typical_hold_ms = Some(match res.typical_hold_ms {
                    None => held,
                    Some(t) => (3 * t + held) / 4,
                });
                (true, 0)
            }
            LeaseState::Waiting { give_up_at, .. } => {
                if let Some(at) = give_up_at {
                    fx.deadlines.remove(&(at, Deadline::Lease(lease)));
                }
                let index = if dequeued {
                    usize::MAX
                } else {
                    let index = res.waiters.iter().position(|w| *w == lease);
                    if let Some(i) = index {
                        res.waiters.remove(i);
                    }
                    index.unwrap_or(0)
                };
                count_down(&mut self.waiting_per_uid, l.peer.uid);
                (false, index)
            }
        };
        // The state event's revision, taken now that the resource is at
        // hand (nothing below takes another before the event is made).
        let revision = fx.next_revision();
        res.revision = revision;

        let kind = match ending {
            Ending::Released => EventKind::Released,
            Ending::Cancelled | Ending::TimedOut => EventKind::Cancelled,
            Ending::Expired => EventKind::Expired,
            Ending::Disconnected | Ending::GraceExpired => EventKind::Disconnected,
            Ending::Revoked => EventKind::Revoked,
        };
        // Formatted only where someone reads it (a watcher, a lost holder).
        self.admitted.remove(&lease);
        self.global_places.remove(&lease);
        let cause = match (&l.revoke, ending) {
            (_, Ending::Revoked) if l.fleet_lost.is_some() => Cause::FleetLost {
                lease,
                peer: l.peer.clone(),
                detail: l.fleet_lost.clone().unwrap_or_default(),
            },
            (Some((_, by)), Ending::Revoked) => Cause::Revoked {
                lease,
                peer: l.peer.clone(),
                by: by.clone(),
            },
            _ => Cause::Ended {
                lease,
                peer: l.peer.clone(),
                ending,
                was_holder,
                ttl_ms: l.ttl_ms,
            },
        };
        let lost = match ending {
            Ending::Expired => Some(LostReason::Expired),
            Ending::TimedOut => Some(LostReason::TimedOut),
            Ending::Revoked => Some(LostReason::Revoked),
            _ => None,
        };
        // A detached owner has no connection to be told on.
        if let Some(reason) = lost.filter(|_| l.detached_until.is_none()) {
            fx.tell(
                l.peer.session,
                lease,
                LeaseUpdate::Lost {
                    reason,
                    detail: cause.to_string(),
                },
            );
        }
        // The watchers get a copy of the cause only if there are any (an
        // `Arc` cloned and dropped per release otherwise); the line of the
        // resource's history keeps it, for the dispatch layer to record.
        let slot = l.slot;
        self.notify(slot, revision, kind, |_| cause.clone(), fx);
        fx.ended(super::Ended {
            lease: views::ended_lease_view(l),
            at: fx.now,
            kind,
            cause,
        });
        Some((slot, waiter_index))
    }

    /// After leases of the resource in `slot` ended: grants whoever can go now, then tells
    /// the waiters where they stand (all of them after a grant, else those
    /// from index `from` on), and forgets the resource if nobody uses it.
    fn settle(&mut self, slot: Slot, from: usize, fx: &mut Effects) {
        let Some(res) = self.res(slot) else {
            return;
        };
        if res.waiters.is_empty() && res.owed_from.is_none() {
            // Nobody to grant, nobody owed an update: what `promote` and
            // `notify_waiters` would find.
            if res.holders.is_empty() {
                self.forget_resource(slot);
            }
            return;
        }
        let granted = self.promote(slot, fx);
        self.notify_waiters(slot, if granted { 0 } else { from }, fx);
        self.drop_if_unused(slot);
    }

    /// Grants, on every resource, the waiters that could have been granted
    /// had their fencing tokens been durable (after the store caught up).
    pub(crate) fn settle_all(&mut self, fx: &mut Effects) {
        let waiting: Vec<Slot> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_ref().is_some_and(|r| !r.waiters.is_empty()))
            .map(|(i, _)| Slot(i))
            .collect();
        for slot in waiting {
            if self.promote(slot, fx) {
                self.notify_waiters(slot, 0, fx);
            }
        }
    }

    /// Grants waiters from the head for as long as they fit beside the
    /// holders, telling each grantee. Returns whether anyone was granted.
    fn promote(&mut self, slot: Slot, fx: &mut Effects) -> bool {
        let mut any = false;
        while let Some((session, grant)) = self.grant_head_to(slot, fx) {
            any = true;
            // A detached grantee learns of its grant when it re-attaches.
            if let Some(session) = session {
                fx.tell(session, grant.lease_id, LeaseUpdate::Granted(grant));
            }
        }
        any
    }

    /// Grants the head waiter if it fits beside the holders, emitting the
    /// GRANTED state event. The caller tells the grantee.
    fn grant_head(&mut self, slot: Slot, fx: &mut Effects) -> Option<Grant> {
        self.grant_head_to(slot, fx).map(|(_, grant)| grant)
    }

    /// As [`LeaseTable::grant_head`], with the grantee's session (none
    /// while it is detached).
    fn grant_head_to(
        &mut self,
        slot: Slot,
        fx: &mut Effects,
    ) -> Option<(Option<SessionId>, Grant)> {
        let res = self.res(slot)?;
        let head = *res.waiters.front()?;
        let l = self.leases.get(&head)?;
        if !self.compatible(res, l.mode, l.permits) {
            return None;
        }
        let global = is_global(&res.name);
        // A `global/` head goes only once the fleet admitted it, with the
        // token etcd gave it. Otherwise: no durable token, no grant: the
        // head waits until the store has reserved the next block (see
        // `Issuer`).
        let fencing = if global {
            let token = self.admitted.remove(&head)?;
            self.global_places.remove(&head);
            token
        } else {
            fx.take_fencing()?
        };
        let res = self.slots.get_mut(slot.0).and_then(Option::as_mut)?;
        res.waiters.pop_front();
        res.holders.push(head);
        if let Some(l) = self.leases.get(&head) {
            count_down(&mut self.waiting_per_uid, l.peer.uid);
        }
        self.hold(slot, head, fencing, fx)
    }

    /// Makes `lease`, already among the holders of the resource in `slot` and out of its
    /// queue, a held lease with `fencing`: its state, its deadlines, the
    /// GRANTED state event. The caller tells the grantee (the session
    /// returned, none while it is detached).
    fn hold(
        &mut self,
        slot: Slot,
        head: LeaseId,
        fencing: FencingToken,
        fx: &mut Effects,
    ) -> Option<(Option<SessionId>, Grant)> {
        let now = fx.now;
        let l = self.leases.get_mut(&head)?;
        let queued_at = match l.state {
            LeaseState::Waiting {
                queued_at,
                give_up_at,
            } => {
                if let Some(at) = give_up_at {
                    fx.deadlines.remove(&(at, Deadline::Lease(head)));
                }
                (queued_at != now).then_some(queued_at)
            }
            LeaseState::Held { .. } => None,
        };
        let expires_at = now + u64::from(l.ttl_ms);
        l.state = LeaseState::Held {
            fencing,
            granted_at: now,
            expires_at,
            queued_at,
        };
        let grant = Grant {
            lease_id: head,
            fencing,
            ttl_ms: l.ttl_ms,
            resume_token: l.resume_token,
        };
        let attached = l.detached_until.is_none();
        let session = attached.then_some(l.peer.session);
        // A detached grantee's TTL and stall clocks start when it re-attaches.
        if attached {
            fx.deadlines.insert((expires_at, Deadline::Lease(head)));
            if l.stall_after_ms > 0 {
                let at = now + u64::from(l.stall_after_ms);
                l.stall_at = Some(at);
                fx.deadlines.insert((at, Deadline::Stall(head)));
            }
        }
        // Made only for watchers: most grants have none to tell.
        let cause = move |t: &LeaseTable| match t.leases.get(&head) {
            Some(l) => Cause::Granted {
                lease: head,
                peer: l.peer.clone(),
                fencing,
            },
            None => Cause::None,
        };
        self.state_changed(slot, EventKind::Granted, cause, fx);
        Some((session, grant))
    }

    /// The waiters of the resource in `slot` from index `from` (0-based) on are owed
    /// their new place (or the head's new progress). Paced per resource,
    /// hence per waiter: when its waiters were told less than
    /// `waiter_update_interval_ms` ago, nothing is sent now; the resource
    /// is marked owed (from the lowest index owed) and one update per
    /// waiter, with the state as it stands then, goes out when the
    /// interval is up ([`LeaseTable::waiter_updates_due`]). A change after
    /// a quiet interval goes out at once. So a holder reporting progress
    /// ten times a second, or waiters churning at the head, cost each
    /// waiter a few updates a second, never one per change; grants and
    /// losses are not paced (they are not `Queued` updates).
    fn notify_waiters(&mut self, slot: Slot, from: usize, fx: &mut Effects) {
        let limits = self.limits;
        let Some(res) = self.slots.get_mut(slot.0).and_then(Option::as_mut) else {
            return;
        };
        if from >= res.waiters.len() && res.owed_from.is_none() {
            return;
        }
        if let Some(owed) = &mut res.owed_from {
            *owed = (*owed).min(from);
            return;
        }
        let interval = limits.waiter_interval(res.waiters.len());
        let due = res.told_at.map_or(0, |t| t.saturating_add(interval));
        if fx.now < due || res.telling_from.is_some() {
            // A round under way is listed, with its next call planned:
            // what is owed is looked at when the round ends.
            let listed = res.telling_from.is_some();
            res.owed_from = Some(from);
            if !listed {
                self.owed.push_back(res.name.clone());
                fx.deadlines.insert((due, Deadline::WaiterUpdates));
            }
            return;
        }
        self.start_round(slot, from, fx);
    }

    /// Tells the waiters of the resource in `slot` from `from` on where they stand, now:
    /// the first [`TOLD_PER_CALL`] at once, the rest in later calls (one
    /// chunk per turn of the core task, so that it answers others in
    /// between).
    fn start_round(&mut self, slot: Slot, from: usize, fx: &mut Effects) {
        let rest = self.tell_waiters(slot, from, fx);
        let Some(res) = self.slots.get_mut(slot.0).and_then(Option::as_mut) else {
            return;
        };
        res.told_at = Some(fx.now);
        res.telling_from = rest;
        if rest.is_some() {
            if res.owed_from.is_none() {
                self.owed.push_back(res.name.clone());
            }
            fx.deadlines.insert((fx.now + 1, Deadline::WaiterUpdates));
        }
    }

    /// Goes on with rounds under way, and sends the updates the pace held
    /// back whose time has come, each with the newest state; plans the
    /// next call for what is left.
    pub(crate) fn waiter_updates_due(&mut self, fx: &mut Effects) {
        let limits = self.limits;
        for _ in 0..self.owed.len() {
            let Some(name) = self.owed.pop_front() else {
                break;
            };
            let Some(&slot) = self.resources.get(&name) else {
                // Unused since: nobody is left to tell.
                continue;
            };
            let Some(cursor) = self.res(slot).map(|r| r.telling_from) else {
                continue;
            };
            if let Some(cursor) = cursor {
                let rest = self.tell_waiters(slot, cursor, fx);
                let Some(res) = self.res_mut(slot) else {
                    continue;
                };
                res.telling_from = rest;
                if rest.is_some() {
                    fx.deadlines.insert((fx.now + 1, Deadline::WaiterUpdates));
                    self.owed.push_back(name);
                    continue;
                }
            }
            let Some(res) = self.res_mut(slot) else {
                continue;
            };
            let Some(from) = res.owed_from else {
                continue;
            };
            let interval = limits.waiter_interval(res.waiters.len());
            let due = res.told_at.map_or(0, |t| t.saturating_add(interval));
            if fx.now < due {
                fx.deadlines.insert((due, Deadline::WaiterUpdates));
                self.owed.push_back(name);
                continue;
            }
            res.owed_from = None;
            self.start_round(slot, from, fx);
        }
    }

    /// Tells at most [`TOLD_PER_CALL`] waiters from `from` (0-based) on
    /// their place now; answers where to go on when more are left. One
    /// pass: each waiter's index is its place in the walk (not a search of
    /// the queue per waiter, which made a progress report with 50 000
    /// waiters quadratic), and the views of the holders and of the head of
    /// the queue are built once for all of them.
    fn tell_waiters(&self, slot: Slot, from: usize, fx: &mut Effects) -> Option<usize> {
        let res = self.res(slot)?;
        let head = self.head_views(res);
        for (index, &w) in res
            .waiters
            .iter()
            .enumerate()
            .skip(from)
            .take(TOLD_PER_CALL)
        {
            // A detached waiter has nobody to tell until it re-attaches.
            if let Some(l) = self.leases.get(&w).filter(|l| l.detached_until.is_none()) {
                let pos = self.position_at(res, index, l, &head, fx.now);
                fx.tell(l.peer.session, w, LeaseUpdate::Queued(pos));
            }
        }
        let next = from.saturating_add(TOLD_PER_CALL);
        (next < res.waiters.len()).then_some(next)
    }

    /// Where a waiting lease stands, with what is ahead and an estimate.
    fn queue_position(&self, lease: LeaseId, now: Millis) -> Option<QueuePosition> {
        let l = self.leases.get(&lease)?;
        let res = self.res(l.slot)?;
        let index = res.waiters.iter().position(|w| *w == lease)?;
        Some(self.position_of(res, index, l, now))
    }

    /// The holders, then the first waiters, as `ahead` shows them: at most
    /// [`MAX_AHEAD`] in all.
    fn head_views(&self, res: &Resource) -> Vec<LeaseView> {
        self.head_views_upto(res, MAX_AHEAD)
    }

    /// The first `n` of [`LeaseTable::head_views`].
    fn head_views_upto(&self, res: &Resource, n: usize) -> Vec<LeaseView> {
        let mut head: Vec<LeaseView> = res
            .holders
            .iter()
            .chain(res.waiters.iter())
            .filter_map(|id| self.leases.get(id))
            .take(n.min(MAX_AHEAD))
            .map(|a| views::lease_view(a, 0))
            .collect();
        for (i, v) in head.iter_mut().enumerate().skip(res.holders.len()) {
            v.position = (i - res.holders.len() + 1) as u32;
        }
        head
    }

    /// The position of the waiter at `index` of `res`'s queue; `head` from
    /// [`LeaseTable::head_views`] (for telling many waiters).
    fn position_at(
        &self,
        res: &Resource,
        index: usize,
        l: &Lease,
        head: &[LeaseView],
        now: Millis,
    ) -> QueuePosition {
        self.position_with(res, index, l, now, |before| {
            head[..before.min(head.len())].to_vec()
        })
    }

    /// As [`LeaseTable::position_at`], for one waiter: only the views
    /// ahead of it are made (the head of the queue made in full, then
    /// copied in part, was ~1 150 instructions of a queued Acquire).
    fn position_of(&self, res: &Resource, index: usize, l: &Lease, now: Millis) -> QueuePosition {
        self.position_with(res, index, l, now, |before| {
            self.head_views_upto(res, before)
        })
    }

    /// The position of the waiter at `index` of `res`'s queue, the views
    /// of the `before` requests ahead of it (holders first) made by
    /// `ahead(before)`, unless the fleet placed it.
    fn position_with(
        &self,
        res: &Resource,
        index: usize,
        l: &Lease,
        now: Millis,
        ahead: impl FnOnce(usize) -> Vec<LeaseView>,
    ) -> QueuePosition {
        if let Some((position, ahead)) = self.global_places.get(&l.id) {
            return QueuePosition {
                lease_id: l.id,
                position: *position,
                ahead: ahead.clone(),
                estimated_wait_ms: None,
                resume_token: l.resume_token,
            };
        }
        QueuePosition {
            lease_id: l.id,
            position: index as u32 + 1,
            ahead: ahead(res.holders.len() + index),
            estimated_wait_ms: self.estimate_wait(res, index, now),
            resume_token: l.resume_token,
        }
    }

    /// The wait for the waiter at `index`: the holders' remaining time
    /// (from their progress rate, else the resource's typical hold time),
    /// plus a typical hold for each waiter ahead; none while a holder has
    /// overrun what its estimate allowed.
    ///
    /// The broker's one estimate: `Queued.estimated_wait_ms` and a
    /// waiter's `Lease.estimated_wait_ms` in status and watch events both
    /// come from here.
    fn estimate_wait(&self, res: &Resource, index: usize, now: Millis) -> Option<u64> {
        let mut holders_left: Option<u64> = None;
        for h in &res.holders {
            let Some(l) = self.leases.get(h) else {
                continue;
            };
            let LeaseState::Held { granted_at, .. } = l.state else {
                continue;
            };
            let held = now.saturating_sub(granted_at);
            let left = match &l.progress {
                Some(p) if p.total > 0 && p.done > 0 => {
                    // `total` comes from the client: saturate, never overflow.
                    let rate_per_step = held / u64::from(p.done);
                    Some(rate_per_step.saturating_mul(u64::from(p.total - p.done.min(p.total))))
                }
                _ => res.typical_hold_ms.map(|t| t.saturating_sub(held)),
            }
            // A holder past its typical hold (or done by its own count but
            // still holding) has no known end: no estimate, rather than a
            // confident "about 1 ms" for as long as it overruns.
            .filter(|&left| left > 0)?;
            holders_left = Some(holders_left.map_or(left, |m| m.max(left)));
        }
        let ahead_waiters = index as u64;
        match (holders_left, res.typical_hold_ms) {
            (Some(h), Some(t)) => Some(h.saturating_add(ahead_waiters.saturating_mul(t))),
            (Some(h), None) if ahead_waiters == 0 => Some(h),
            (None, Some(t)) if res.holders.is_empty() => Some(ahead_waiters.saturating_mul(t)),
            _ => None,
        }
    }

    /// The resource in `slot`, in use or idle.
    fn res(&self, slot: Slot) -> Option<&Resource> {
        self.slots.get(slot.0)?.as_ref()
    }

    /// The resource in `slot`, to change.
    fn res_mut(&mut self, slot: Slot) -> Option<&mut Resource> {
        self.slots.get_mut(slot.0)?.as_mut()
    }

    /// Puts a resource coming into the table in a free slot, or a new one.
    fn place(&mut self, res: Resource) -> Slot {
        if let Some(slot) = self.free_slots.pop()
            && let Some(free) = self.slots.get_mut(slot.0)
            && free.is_none()
        {
            *free = Some(res);
            return slot;
        }
        self.slots.push(Some(res));
        Slot(self.slots.len() - 1)
    }

    fn drop_if_unused(&mut self, slot: Slot) {
        if let Some(res) = self.res(slot)
            && !res.idle
            && res.holders.is_empty()
            && res.waiters.is_empty()
        {
            self.forget_resource(slot);
        }
    }

    /// Takes a resource nobody uses out of use. With a typical hold time
    /// it stays in the table, idle, as one of the last
    /// [`REMEMBERED_HOLD_TIMES`] to become idle (the first of them is let
    /// go when that is more); without one it is let go at once.
    fn forget_resource(&mut self, slot: Slot) {
        let Some(res) = self.slots.get_mut(slot.0).and_then(Option::as_mut) else {
            return;
        };
        if res.idle {
            return;
        }
        if res.typical_hold_ms.is_none() {
            self.let_go(slot);
            return;
        }
        // As a new resource has them; only the name, the typical hold
        // time and (small) lists stay.
        res.idle = true;
        res.revision = super::Revision::default();
        res.capacity = 0;
        res.told_at = None;
        res.owed_from = None;
        res.telling_from = None;
        if res.holders.capacity() > SPARE_LIST_ROOM {
            res.holders = Vec::new();
        }
        if res.waiters.capacity() > SPARE_LIST_ROOM {
            res.waiters = VecDeque::new();
        }
        if res.remembered {
            return;
        }
        res.remembered = true;
        if self.idle_order.len() == REMEMBERED_HOLD_TIMES
            && let Some(old) = self.idle_order.pop_front()
        {
            match self.slots.get_mut(old.0).and_then(Option::as_mut) {
                Some(r) if r.idle => self.let_go(old),
                Some(r) => r.remembered = false,
                None => {}
            }
        }
        self.idle_order.push_back(slot);
    }

    /// Removes a resource out of use from the table, freeing its slot.
    fn let_go(&mut self, slot: Slot) {
        let Some(res) = self.slots.get_mut(slot.0).and_then(Option::take) else {
            return;
        };
        self.resources.remove(&res.name);
        self.free_slots.push(slot);
        // Its (empty) lists go to the next resource that comes into the
        // table: a resource used by one lease at a time otherwise costs an
        // allocation and a free per Acquire + Release. Only small ones,
        // and a bounded number, are kept.
        let Resource {
            mut holders,
            mut waiters,
            ..
        } = res;
        if self.spare.len() < SPARE_LISTS
            && holders.capacity() <= SPARE_LIST_ROOM
            && waiters.capacity() <= SPARE_LIST_ROOM
        {
            holders.clear();
            waiters.clear();
            self.spare.push((holders, waiters));
        }
    }
}

/// Whether `name` is arbitrated by the fleet across hosts.
pub(crate) fn is_global(name: &str) -> bool {
    name.starts_with(GLOBAL_PREFIX)
}

/// Names arbitrated by the fleet begin with this.
pub const GLOBAL_PREFIX: &str = "global/";

/// One of `uid`'s requests left a queue (granted or ended), or one of its
/// leases ended. Its count stays in the map at 0: a uid whose request
/// queues and is granted in turn (a contended handoff) costs no remove and
/// insert each time, and the map holds one entry per local user that ever
/// queued or held.
fn count_down(counts: &mut Map<u32, usize>, uid: u32) {
    if let Some(n) = counts.get_mut(&uid) {
        *n = n.saturating_sub(1);
    }
}
