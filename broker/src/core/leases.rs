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
//! It does not deliver anything: each change is returned as a [`Change`].

use std::collections::VecDeque;
use std::sync::Arc;

use super::Map;
use super::{
    Change, Core, CoreError, Deadline, Ending, EventKind, FencingToken, LeaseId, LeaseUpdate,
    LostReason, Millis, Mode, Peer, Progress, SessionId, check_name,
};

/// At most this many entries in `QueuePosition::ahead` (holders first,
/// then the waiters nearest the head); `position` still counts them all.
pub const MAX_AHEAD: usize = 64;

/// How many ended leases are remembered, so that a late request on one is
/// told how it ended rather than "unknown".
const REMEMBERED_ENDINGS: usize = 4096;

/// How many idle resources keep their typical hold time after they leave
/// the table, so that the next wait estimate on them still knows it.
const REMEMBERED_HOLD_TIMES: usize = 4096;

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
    pub ahead: Vec<super::LeaseView>,
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

#[derive(Clone, Debug)]
pub(super) enum LeaseState {
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
pub(super) struct Lease {
    pub id: LeaseId,
    pub resource: Arc<str>,
    pub mode: Mode,
    pub purpose: Arc<str>,
    pub peer: Arc<Peer>,
    pub ttl_ms: u32,
    pub state: LeaseState,
    pub progress: Option<Progress>,
}

#[derive(Debug, Default)]
pub(super) struct Resource {
    pub name: Arc<str>,
    /// Granted leases, in grant order.
    pub holders: Vec<LeaseId>,
    /// Queued requests, first come first.
    pub waiters: VecDeque<LeaseId>,
    pub revision: super::Revision,
    /// Smoothed duration of past holds, for wait estimates.
    pub typical_hold_ms: Option<u64>,
}

/// Resources and leases. Resources with neither holders nor waiters are
/// removed: the table only holds what is in use.
#[derive(Default)]
pub(super) struct LeaseTable {
    pub resources: Map<Arc<str>, Resource>,
    pub leases: Map<LeaseId, Lease>,
    next_lease: u64,
    endings: Map<LeaseId, Ending>,
    ending_order: VecDeque<LeaseId>,
    /// Typical hold times of resources removed while idle (bounded).
    idle_hold_times: Map<Arc<str>, u64>,
    idle_order: VecDeque<Arc<str>>,
}

impl LeaseTable {
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
            Mode::Shared => res
                .holders
                .iter()
                .all(|h| self.leases.get(h).is_some_and(|l| l.mode == Mode::Shared)),
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
}

pub(super) fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "an unnamed client"
    } else {
        name
    }
}

impl Core {
    /// Asks for a lease. Granted at once when the resource is free for this
    /// mode **and** nobody waits; otherwise queued (or refused with
    /// [`CoreError::Busy`] under [`WaitPolicy::NoWait`]).
    pub fn acquire(
        &mut self,
        session: SessionId,
        req: AcquireRequest,
        now: Millis,
    ) -> Result<(AcquireOutcome, Vec<Change>), CoreError> {
        check_name("resource", &req.resource)?;
        super::check_text("purpose", &req.purpose)?;
        let ttl_ms = if req.ttl_ms == 0 {
            self.config.default_ttl_ms
        } else {
            req.ttl_ms
        };
        if !(self.config.min_ttl_ms..=self.config.max_ttl_ms).contains(&ttl_ms) {
            return Err(CoreError::InvalidArgument(format!(
                "a time to live of {ttl_ms} ms is outside the accepted range {}..={} ms",
                self.config.min_ttl_ms, self.config.max_ttl_ms
            )));
        }
        let limit = self.config.max_leases_per_session;
        let sess = self.session_mut(session)?;
        if sess.leases.len() >= limit {
            return Err(CoreError::Quota {
                what: "leases",
                limit,
            });
        }
        let peer = sess.peer.clone();

        let table = &mut self.leases;
        let free_now = match table.resources.get(req.resource.as_str()) {
            None => true,
            Some(res) => res.waiters.is_empty() && table.compatible(res, req.mode),
        };
        if !free_now && req.wait == WaitPolicy::NoWait {
            let holder = table
                .resources
                .get(req.resource.as_str())
                .map(|r| table.describe_holders(r))
                .unwrap_or_default();
            return Err(CoreError::Busy {
                resource: req.resource,
                holder,
            });
        }

        table.next_lease += 1;
        let id = LeaseId(table.next_lease);
        let name: Arc<str> = match table.resources.get_key_value(req.resource.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(req.resource.as_str()),
        };
        let typical_hold_ms = table.idle_hold_times.get(&name).copied();
        let res = table
            .resources
            .entry(name.clone())
            .or_insert_with(|| Resource {
                name: name.clone(),
                typical_hold_ms,
                ..Resource::default()
            });
        res.waiters.push_back(id);
        table.leases.insert(
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
                    give_up_at: (req.max_wait_ms > 0).then(|| now + u64::from(req.max_wait_ms)),
                },
                progress: None,
            },
        );
        if let Some(s) = self.sessions.get_mut(&session) {
            s.leases.push(id);
        }

        let mut changes = Vec::new();
        if free_now {
            // Straight through the queue: granted without a QUEUED event.
            let grant = self.grant_head(&name, now, &mut changes);
            if let Some(g) = grant {
                return Ok((AcquireOutcome::Granted(g), changes));
            }
        }
        if let Some(LeaseState::Waiting {
            give_up_at: Some(at),
            ..
        }) = self.leases.leases.get(&id).map(|l| &l.state)
        {
            self.deadlines.insert((*at, Deadline::Lease(id)));
        }
        self.state_changed(
            &name,
            EventKind::Queued,
            super::Cause::None,
            now,
            &mut changes,
        );
        let position = self
            .queue_position(id, now)
            .ok_or_else(|| CoreError::WrongState(format!("lease {id} vanished")))?;
        Ok((AcquireOutcome::Queued(position), changes))
    }

    /// Extends a held lease's TTL from `now`; answers the TTL in force.
    /// On a waiter it changes nothing (waiters live as long as their
    /// connection).
    pub fn keep_alive(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        now: Millis,
    ) -> Result<u32, CoreError> {
        let l = self.leases.owned(session, lease)?;
        let ttl = l.ttl_ms;
        if let LeaseState::Held { expires_at, .. } = l.state {
            let new_expiry = now + u64::from(ttl);
            self.deadlines.remove(&(expires_at, Deadline::Lease(lease)));
            self.deadlines.insert((new_expiry, Deadline::Lease(lease)));
            if let Some(Lease {
                state: LeaseState::Held { expires_at, .. },
                ..
            }) = self.leases.leases.get_mut(&lease)
            {
                *expires_at = new_expiry;
            }
        }
        Ok(ttl)
    }

    /// Ends a lease, held or still queued, and grants the next waiters.
    pub fn release(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        now: Millis,
    ) -> Result<Vec<Change>, CoreError> {
        let l = self.leases.owned(session, lease)?;
        let ending = match l.state {
            LeaseState::Held { .. } => Ending::Released,
            LeaseState::Waiting { .. } => Ending::Cancelled,
        };
        let mut changes = Vec::new();
        self.end_lease(lease, ending, now, &mut changes);
        Ok(changes)
    }

    /// Leaves the queue. A request that was granted meanwhile is not
    /// cancelled: the caller is told it holds the lease and must release it.
    pub fn cancel(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        now: Millis,
    ) -> Result<Vec<Change>, CoreError> {
        let l = self.leases.owned(session, lease)?;
        if let LeaseState::Held { .. } = l.state {
            return Err(CoreError::WrongState(format!(
                "lease {lease} was already granted; release it instead"
            )));
        }
        let mut changes = Vec::new();
        self.end_lease(lease, Ending::Cancelled, now, &mut changes);
        Ok(changes)
    }

    /// Records a holder's progress and tells watchers and waiters.
    pub fn report_progress(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        progress: Progress,
        now: Millis,
    ) -> Result<Vec<Change>, CoreError> {
        let l = self.leases.owned(session, lease)?;
        if let LeaseState::Waiting { .. } = l.state {
            return Err(CoreError::WrongState(format!(
                "lease {lease} is still queued; only a holder reports progress"
            )));
        }
        super::check_text("progress message", &progress.message)?;
        if progress.total != 0 && progress.done > progress.total {
            return Err(CoreError::InvalidArgument(format!(
                "progress done ({}) exceeds total ({})",
                progress.done, progress.total
            )));
        }
        let resource = l.resource.clone();
        if let Some(l) = self.leases.leases.get_mut(&lease) {
            l.progress = Some(progress);
        }
        let mut changes = Vec::new();
        self.state_changed(
            &resource,
            EventKind::Progress,
            super::Cause::None,
            now,
            &mut changes,
        );
        self.notify_waiters(&resource, 0, now, &mut changes);
        Ok(changes)
    }

    /// A deadline of this lease passed: expire it if held, drop it from the
    /// queue if waiting. A stale deadline (the lease was kept alive or has
    /// ended) is ignored.
    pub(super) fn lease_deadline(
        &mut self,
        lease: LeaseId,
        now: Millis,
        changes: &mut Vec<Change>,
    ) {
        let Some(l) = self.leases.leases.get(&lease) else {
            return;
        };
        let ending = match l.state {
            LeaseState::Held { expires_at, .. } if expires_at <= now => Ending::Expired,
            LeaseState::Waiting {
                give_up_at: Some(at),
                ..
            } if at <= now => Ending::TimedOut,
            _ => return,
        };
        self.end_lease(lease, ending, now, changes);
    }

    /// The one way a lease ends: [`Core::detach_lease`], then
    /// [`Core::settle`] its resource.
    pub(super) fn end_lease(
        &mut self,
        lease: LeaseId,
        ending: Ending,
        now: Millis,
        changes: &mut Vec<Change>,
    ) {
        if let Some((name, from)) = self.detach_lease(lease, ending, now, changes) {
            self.settle(&name, from, now, changes);
        }
    }

    /// Takes a lease out of the table, tells the owner when it did not ask
    /// for it (expiry, time-out) and emits the state event. Grants nobody:
    /// the caller must [`Core::settle`] the returned resource, from the
    /// returned waiter index on (the first whose position may have moved).
    pub(super) fn detach_lease(
        &mut self,
        lease: LeaseId,
        ending: Ending,
        now: Millis,
        changes: &mut Vec<Change>,
    ) -> Option<(Arc<str>, usize)> {
        let l = self.leases.leases.remove(&lease)?;
        self.leases.remember_ending(lease, ending);
        if let Some(s) = self.sessions.get_mut(&l.peer.session) {
            s.leases.retain(|x| *x != lease);
        }
        let res = self.leases.resources.get_mut(&l.resource)?;
        let (was_holder, waiter_index) = match l.state {
            LeaseState::Held {
                expires_at,
                granted_at,
                ..
            } => {
                self.deadlines.remove(&(expires_at, Deadline::Lease(lease)));
                res.holders.retain(|h| *h != lease);
                let held = now.saturating_sub(granted_at);
                res.typical_hold_ms = Some(match res.typical_hold_ms {
                    None => held,
                    Some(t) => (3 * t + held) / 4,
                });
                (true, 0)
            }
            LeaseState::Waiting { give_up_at, .. } => {
                if let Some(at) = give_up_at {
                    self.deadlines.remove(&(at, Deadline::Lease(lease)));
                }
                let index = res.waiters.iter().position(|w| *w == lease).unwrap_or(0);
                res.waiters.retain(|w| *w != lease);
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
        let cause = super::Cause::Ended {
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
            changes.push(Change::Lease {
                session: l.peer.session,
                lease,
                update: LeaseUpdate::Lost {
                    reason,
                    detail: cause.to_string(),
                },
            });
        }
        let name = l.resource.clone();
        self.state_changed(&name, kind, cause, now, changes);
        Some((name, waiter_index))
    }

    /// After leases of `name` ended: grants whoever can go now, then tells
    /// the waiters where they stand (all of them after a grant, else those
    /// from index `from` on), and forgets the resource if nobody uses it.
    pub(super) fn settle(
        &mut self,
        name: &Arc<str>,
        from: usize,
        now: Millis,
        changes: &mut Vec<Change>,
    ) {
        let granted = self.promote(name, now, changes);
        self.notify_waiters(name, if granted { 0 } else { from }, now, changes);
        self.drop_if_unused(name);
    }

    /// Grants waiters from the head for as long as they fit beside the
    /// holders. Returns whether anyone was granted.
    fn promote(&mut self, name: &Arc<str>, now: Millis, changes: &mut Vec<Change>) -> bool {
        let mut any = false;
        while let Some(grant) = self.grant_head(name, now, changes) {
            any = true;
            changes.push(Change::Lease {
                session: self
                    .leases
                    .leases
                    .get(&grant.lease_id)
                    .map(|l| l.peer.session)
                    .unwrap_or_default(),
                lease: grant.lease_id,
                update: LeaseUpdate::Granted(grant),
            });
        }
        any
    }

    /// Grants the head waiter if it fits beside the holders, emitting the
    /// GRANTED state event. The caller tells the grantee.
    fn grant_head(
        &mut self,
        name: &Arc<str>,
        now: Millis,
        changes: &mut Vec<Change>,
    ) -> Option<Grant> {
        let table = &self.leases;
        let res = table.resources.get(name)?;
        let head = *res.waiters.front()?;
        let mode = table.leases.get(&head)?.mode;
        if !table.compatible(res, mode) {
            return None;
        }
        let fencing = self.take_fencing(changes);
        let res = self.leases.resources.get_mut(name)?;
        res.waiters.pop_front();
        res.holders.push(head);
        let l = self.leases.leases.get_mut(&head)?;
        let queued_at = match l.state {
            LeaseState::Waiting {
                queued_at,
                give_up_at,
            } => {
                if let Some(at) = give_up_at {
                    self.deadlines.remove(&(at, Deadline::Lease(head)));
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
        let cause = super::Cause::Granted {
            lease: head,
            peer: l.peer.clone(),
            fencing,
        };
        self.deadlines.insert((expires_at, Deadline::Lease(head)));
        self.state_changed(name, EventKind::Granted, cause, now, changes);
        Some(grant)
    }

    /// Sends every waiter from `from` (0-based) on its new position.
    fn notify_waiters(&self, name: &Arc<str>, from: usize, now: Millis, changes: &mut Vec<Change>) {
        let Some(res) = self.leases.resources.get(name) else {
            return;
        };
        for &w in res.waiters.iter().skip(from) {
            if let (Some(pos), Some(l)) = (self.queue_position(w, now), self.leases.leases.get(&w))
            {
                changes.push(Change::Lease {
                    session: l.peer.session,
                    lease: w,
                    update: LeaseUpdate::Queued(pos),
                });
            }
        }
    }

    /// Where a waiting lease stands, with what is ahead and an estimate.
    fn queue_position(&self, lease: LeaseId, now: Millis) -> Option<QueuePosition> {
        let table = &self.leases;
        let l = table.leases.get(&lease)?;
        let res = table.resources.get(&l.resource)?;
        let index = res.waiters.iter().position(|w| *w == lease)?;
        let mut ahead = Vec::new();
        for id in res.holders.iter().chain(res.waiters.iter().take(index)) {
            if ahead.len() == MAX_AHEAD {
                break;
            }
            if let Some(a) = table.leases.get(id) {
                ahead.push(super::views::lease_view(a, 0));
            }
        }
        for (i, v) in ahead.iter_mut().enumerate().skip(res.holders.len()) {
            v.position = (i - res.holders.len() + 1) as u32;
        }
        Some(QueuePosition {
            lease_id: lease,
            position: index as u32 + 1,
            ahead,
            estimated_wait_ms: self.estimate_wait(res, index, now),
        })
    }

    /// The wait for the waiter at `index`: the holders' remaining time
    /// (from their progress rate, else the resource's typical hold time),
    /// plus a typical hold for each waiter ahead.
    fn estimate_wait(&self, res: &Resource, index: usize, now: Millis) -> Option<u64> {
        let mut holders_left: Option<u64> = None;
        for h in &res.holders {
            let Some(l) = self.leases.leases.get(h) else {
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
        if let Some(res) = self.leases.resources.get(name)
            && res.holders.is_empty()
            && res.waiters.is_empty()
            && let Some(res) = self.leases.resources.remove(name)
            && let Some(t) = res.typical_hold_ms
        {
            self.leases.remember_hold_time(&res.name, t);
        }
    }
}
