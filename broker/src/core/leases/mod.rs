//! The lease table: who holds each resource, who waits for it and in what
//! order, and every rule that moves a request from waiting to holding.
//!
//! Invariants (checked by the property tests):
//! - a resource is held by one EXCLUSIVE lease or by any number of SHARED
//!   ones, never both;
//! - waiters are granted strictly in the order they asked: a SHARED request
//!   behind a queued EXCLUSIVE one waits, and consecutive SHARED requests at
//!   the head are granted together;
//! - a request that left the queue (cancel, time-out, disconnect) is never
//!   granted afterwards;
//! - fencing tokens strictly increase.
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
    QueuePosition, SessionId, WaitPolicy, WrongState, check_name, check_text, display_name,
};

/// How many ended leases are remembered, so that a late request on one is
/// told how it ended rather than "unknown".
const REMEMBERED_ENDINGS: usize = 4096;

/// How many idle resources keep their typical hold time after they leave
/// the table, so that the next wait estimate on them still knows it.
const REMEMBERED_HOLD_TIMES: usize = 4096;

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

#[derive(Clone, Debug)]
struct Lease {
    id: LeaseId,
    resource: Arc<str>,
    mode: Mode,
    purpose: Arc<str>,
    peer: Arc<Peer>,
    ttl_ms: u32,
    state: LeaseState,
    progress: Option<Progress>,
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
}

/// The lease limits, from the core's configuration.
#[derive(Clone, Copy, Debug)]
struct Limits {
    default_ttl_ms: u32,
    min_ttl_ms: u32,
    max_ttl_ms: u32,
    max_per_session: usize,
    max_waiters_per_uid: usize,
    own_uid: u32,
}

/// Resources and leases. Resources with neither holders nor waiters are
/// removed: the table only holds what is in use.
pub(crate) struct LeaseTable {
    limits: Limits,
    resources: Map<Arc<str>, Resource>,
    leases: Map<LeaseId, Lease>,
    /// Each session's leases, held or queued.
    by_session: Map<SessionId, Vec<LeaseId>>,
    next_lease: u64,
    endings: Map<LeaseId, Ending>,
    ending_order: VecDeque<LeaseId>,
    /// Typical hold times of resources removed while idle (bounded).
    idle_hold_times: Map<Arc<str>, u64>,
    idle_order: VecDeque<Arc<str>>,
    /// Requests waiting in queues, per uid (`--max-waiters-per-uid`).
    waiting_per_uid: Map<u32, usize>,
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
                own_uid: config.own_uid,
            },
            waiting_per_uid: Map::default(),
            resources: Map::default(),
            leases: Map::default(),
            by_session: Map::default(),
            next_lease: 0,
            endings: Map::default(),
            ending_order: VecDeque::new(),
            idle_hold_times: Map::default(),
            idle_order: VecDeque::new(),
        }
    }

    /// Checks a request's name, purpose and TTL; answers the TTL in force
    /// (the default for 0).
    pub(crate) fn check(&self, req: &AcquireRequest) -> Result<u32, CoreError> {
        check_name("resource", &req.resource)?;
        check_text("purpose", &req.purpose)?;
        let limits = self.limits;
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
        Ok(ttl_ms)
    }

    /// Asks for a lease for `peer` (its session open), with a request that
    /// passed [`LeaseTable::check`]. Granted at once when the resource is
    /// free for this mode **and** nobody waits; otherwise queued (or
    /// refused with [`CoreError::Busy`] under [`WaitPolicy::NoWait`]).
    pub(crate) fn acquire(
        &mut self,
        peer: Arc<Peer>,
        req: AcquireRequest,
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
        let free_now = match self.resources.get(req.resource.as_str()) {
            None => true,
            Some(res) => res.waiters.is_empty() && self.compatible(res, req.mode),
        };
        let uid = peer.uid;
        let waiting = self.waiting_per_uid.get(&uid).copied().unwrap_or(0);
        let bounded = uid != 0 && uid != self.limits.own_uid;
        if !free_now && bounded && waiting >= self.limits.max_waiters_per_uid {
            return Err(CoreError::UserWaiters {
                uid,
                limit: self.limits.max_waiters_per_uid,
            });
        }
        if !free_now && req.wait == WaitPolicy::NoWait {
            let holder = self
                .resources
                .get(req.resource.as_str())
                .map(|r| self.describe_holders(r))
                .unwrap_or_default();
            return Err(CoreError::Busy {
                resource: req.resource,
                holder,
            });
        }

        let now = fx.now;
        self.next_lease += 1;
        let id = LeaseId(self.next_lease);
        let name: Arc<str> = match self.resources.get_key_value(req.resource.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(req.resource.as_str()),
        };
        let typical_hold_ms = self.idle_hold_times.get(&name).copied();
        let res = self
            .resources
            .entry(name.clone())
            .or_insert_with(|| Resource {
                name: name.clone(),
                typical_hold_ms,
                ..Resource::default()
            });
        res.waiters.push_back(id);
        *self.waiting_per_uid.entry(uid).or_insert(0) += 1;
        let give_up_at = (req.max_wait_ms > 0).then(|| now + u64::from(req.max_wait_ms));
        self.leases.insert(
            id,
            Lease {
                id,
                resource: name.clone(),
                mode: req.mode,
                purpose: Arc::from(req.purpose),
                peer,
                ttl_ms,
                state: LeaseState::Waiting {
                    queued_at: now,
                    give_up_at,
                },
                progress: None,
            },
        );
        self.by_session.entry(session).or_default().push(id);

        if free_now {
            // Straight through the queue: granted without a QUEUED event.
            if let Some(g) = self.grant_head(&name, fx) {
                return Ok(AcquireOutcome::Granted(g));
            }
        }
        if let Some(at) = give_up_at {
            fx.deadlines.insert((at, Deadline::Lease(id)));
        }
        self.state_changed(&name, EventKind::Queued, Cause::None, fx);
        let Some(position) = self.queue_position(id, now) else {
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
        let resource = l.resource.clone();
        if let Some(l) = self.leases.get_mut(&lease) {
            l.progress = Some(progress);
        }
        self.state_changed(&resource, EventKind::Progress, Cause::None, fx);
        self.notify_waiters(&resource, 0, fx);
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
        let ending = match l.state {
            LeaseState::Held { expires_at, .. } if expires_at <= now => Ending::Expired,
            LeaseState::Waiting {
                give_up_at: Some(at),
                ..
            } if at <= now => Ending::TimedOut,
            _ => return,
        };
        self.end_lease(lease, ending, fx);
    }

    /// The session is gone: every lease of it leaves first, and only then
    /// are the next waiters granted (ending one lease must not grant
    /// another of the departing session's own queued requests on its way
    /// out).
    pub(crate) fn goodbye(&mut self, session: SessionId, fx: &mut Effects) {
        let mut touched: Vec<(Arc<str>, usize)> = Vec::new();
        for lease in self.by_session.remove(&session).unwrap_or_default() {
            let Some((name, from)) = self.detach_lease(lease, Ending::Disconnected, fx) else {
                continue;
            };
            match touched.iter_mut().find(|(n, _)| *n == name) {
                Some((_, first)) => *first = (*first).min(from),
                None => touched.push((name, from)),
            }
        }
        for (name, from) in touched {
            self.settle(&name, from, fx);
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

    fn remember_hold_time(&mut self, name: &Arc<str>, typical_hold_ms: u64) {
        if let Some(t) = self.idle_hold_times.get_mut(name) {
            *t = typical_hold_ms;
            return;
        }
        if self.idle_order.len() == REMEMBERED_HOLD_TIMES
            && let Some(old) = self.idle_order.pop_front()
        {
            self.idle_hold_times.remove(&old);
        }
        self.idle_order.push_back(name.clone());
        self.idle_hold_times.insert(name.clone(), typical_hold_ms);
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

    /// Can `mode` join the current holders of `res`?
    fn compatible(&self, res: &Resource, mode: Mode) -> bool {
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

    fn describe_holders(&self, res: &Resource) -> String {
        let mut out = Vec::new();
        for h in &res.holders {
            if let Some(l) = self.leases.get(h) {
                let mut s = format!(
                    "held by {} (uid {}, pid {})",
                    display_name(&l.peer.client_name),
                    l.peer.uid,
                    l.peer.pid
                );
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

    /// Records a change of `name`'s state under a new revision and hands
    /// the event to its watchers.
    fn state_changed(&mut self, name: &Arc<str>, kind: EventKind, cause: Cause, fx: &mut Effects) {
        let revision = fx.next_revision();
        if let Some(res) = self.resources.get_mut(name) {
            res.revision = revision;
        }
        fx.notify_watchers(name, revision, kind, cause, |revision| {
            self.view_by_name(name, revision)
        });
    }

    /// The one way a lease ends: [`LeaseTable::detach_lease`], then
    /// [`LeaseTable::settle`] its resource.
    fn end_lease(&mut self, lease: LeaseId, ending: Ending, fx: &mut Effects) {
        if let Some((name, from)) = self.detach_lease(lease, ending, fx) {
            self.settle(&name, from, fx);
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
    ) -> Option<(Arc<str>, usize)> {
        let l = self.leases.remove(&lease)?;
        self.remember_ending(lease, ending);
        if let Some(mine) = self.by_session.get_mut(&l.peer.session) {
            mine.retain(|x| *x != lease);
        }
        let res = self.resources.get_mut(&l.resource)?;
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
                let index = res.waiters.iter().position(|w| *w == lease).unwrap_or(0);
                res.waiters.retain(|w| *w != lease);
                left_queue(&mut self.waiting_per_uid, l.peer.uid);
                (false, index)
            }
        };

        let kind = match ending {
            Ending::Released => EventKind::Released,
            Ending::Cancelled | Ending::TimedOut => EventKind::Cancelled,
            Ending::Expired => EventKind::Expired,
            Ending::Disconnected => EventKind::Disconnected,
        };
        // Formatted only where someone reads it (a watcher, a lost holder).
        let cause = Cause::Ended {
            lease,
            peer: l.peer.clone(),
            ending,
            was_holder,
            ttl_ms: l.ttl_ms,
        };
        let lost = match ending {
            Ending::Expired => Some(LostReason::Expired),
            Ending::TimedOut => Some(LostReason::TimedOut),
            _ => None,
        };
        if let Some(reason) = lost {
            fx.tell(
                l.peer.session,
                lease,
                LeaseUpdate::Lost {
                    reason,
                    detail: cause.to_string(),
                },
            );
        }
        let name = l.resource.clone();
        self.state_changed(&name, kind, cause, fx);
        Some((name, waiter_index))
    }

    /// After leases of `name` ended: grants whoever can go now, then tells
    /// the waiters where they stand (all of them after a grant, else those
    /// from index `from` on), and forgets the resource if nobody uses it.
    fn settle(&mut self, name: &Arc<str>, from: usize, fx: &mut Effects) {
        let granted = self.promote(name, fx);
        self.notify_waiters(name, if granted { 0 } else { from }, fx);
        self.drop_if_unused(name);
    }

    /// Grants, on every resource, the waiters that could have been granted
    /// had their fencing tokens been durable (after the store caught up).
    pub(crate) fn settle_all(&mut self, fx: &mut Effects) {
        let waiting: Vec<Arc<str>> = self
            .resources
            .iter()
            .filter(|(_, r)| !r.waiters.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        for name in waiting {
            if self.promote(&name, fx) {
                self.notify_waiters(&name, 0, fx);
            }
        }
    }

    /// Grants waiters from the head for as long as they fit beside the
    /// holders, telling each grantee. Returns whether anyone was granted.
    fn promote(&mut self, name: &Arc<str>, fx: &mut Effects) -> bool {
        let mut any = false;
        while let Some((session, grant)) = self.grant_head_to(name, fx) {
            any = true;
            fx.tell(session, grant.lease_id, LeaseUpdate::Granted(grant));
        }
        any
    }

    /// Grants the head waiter if it fits beside the holders, emitting the
    /// GRANTED state event. The caller tells the grantee.
    fn grant_head(&mut self, name: &Arc<str>, fx: &mut Effects) -> Option<Grant> {
        self.grant_head_to(name, fx).map(|(_, grant)| grant)
    }

    /// As [`LeaseTable::grant_head`], with the grantee's session.
    fn grant_head_to(&mut self, name: &Arc<str>, fx: &mut Effects) -> Option<(SessionId, Grant)> {
        let res = self.resources.get(name)?;
        let head = *res.waiters.front()?;
        let mode = self.leases.get(&head)?.mode;
        if !self.compatible(res, mode) {
            return None;
        }
        let now = fx.now;
        // No durable token, no grant: the head waits until the store has
        // reserved the next block (see `Issuer`).
        let fencing = fx.take_fencing()?;
        let res = self.resources.get_mut(name)?;
        res.waiters.pop_front();
        res.holders.push(head);
        let l = self.leases.get_mut(&head)?;
        left_queue(&mut self.waiting_per_uid, l.peer.uid);
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
        };
        let session = l.peer.session;
        let cause = Cause::Granted {
            lease: head,
            peer: l.peer.clone(),
            fencing,
        };
        fx.deadlines.insert((expires_at, Deadline::Lease(head)));
        self.state_changed(name, EventKind::Granted, cause, fx);
        Some((session, grant))
    }

    /// Sends every waiter from `from` (0-based) on its new position. One
    /// pass: each waiter's index is its place in the walk (not a search of
    /// the queue per waiter, which made a progress report with 50 000
    /// waiters quadratic), and the views of the holders and of the head of
    /// the queue are built once for all of them.
    fn notify_waiters(&self, name: &Arc<str>, from: usize, fx: &mut Effects) {
        let Some(res) = self.resources.get(name) else {
            return;
        };
        let head = self.head_views(res);
        for (index, &w) in res.waiters.iter().enumerate().skip(from) {
            if let Some(l) = self.leases.get(&w) {
                let pos = self.position_at(res, index, w, &head, fx.now);
                fx.tell(l.peer.session, w, LeaseUpdate::Queued(pos));
            }
        }
    }

    /// Where a waiting lease stands, with what is ahead and an estimate.
    fn queue_position(&self, lease: LeaseId, now: Millis) -> Option<QueuePosition> {
        let l = self.leases.get(&lease)?;
        let res = self.resources.get(&l.resource)?;
        let index = res.waiters.iter().position(|w| *w == lease)?;
        let head = self.head_views(res);
        Some(self.position_at(res, index, lease, &head, now))
    }

    /// The holders, then the first waiters, as `ahead` shows them: at most
    /// [`MAX_AHEAD`] in all.
    fn head_views(&self, res: &Resource) -> Vec<LeaseView> {
        let mut head: Vec<LeaseView> = res
            .holders
            .iter()
            .chain(res.waiters.iter())
            .filter_map(|id| self.leases.get(id))
            .take(MAX_AHEAD)
            .map(|a| views::lease_view(a, 0))
            .collect();
        for (i, v) in head.iter_mut().enumerate().skip(res.holders.len()) {
            v.position = (i - res.holders.len() + 1) as u32;
        }
        head
    }

    /// The position of the waiter at `index` of `res`'s queue; `head` from
    /// [`LeaseTable::head_views`].
    fn position_at(
        &self,
        res: &Resource,
        index: usize,
        lease: LeaseId,
        head: &[LeaseView],
        now: Millis,
    ) -> QueuePosition {
        let before = (res.holders.len() + index).min(head.len());
        QueuePosition {
            lease_id: lease,
            position: index as u32 + 1,
            ahead: head[..before].to_vec(),
            estimated_wait_ms: self.estimate_wait(res, index, now),
        }
    }

    /// The wait for the waiter at `index`: the holders' remaining time
    /// (from their progress rate, else the resource's typical hold time),
    /// plus a typical hold for each waiter ahead.
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
            }?;
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

    fn drop_if_unused(&mut self, name: &Arc<str>) {
        if let Some(res) = self.resources.get(name)
            && res.holders.is_empty()
            && res.waiters.is_empty()
            && let Some(res) = self.resources.remove(name)
            && let Some(t) = res.typical_hold_ms
        {
            self.remember_hold_time(&res.name, t);
        }
    }
}

/// One of `uid`'s requests left a queue (granted or ended).
fn left_queue(waiting: &mut Map<u32, usize>, uid: u32) {
    if let Some(n) = waiting.get_mut(&uid) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            waiting.remove(&uid);
        }
    }
}
