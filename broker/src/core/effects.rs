//! The one sink every rule of the lease table writes its effects into: the
//! revision and fencing counters (with their persisted reservation), the
//! watches that hear of each state change, the deadline index, and the
//! [`Change`]s the call returns.
//!
//! The lease table never reaches into the rest of the core: it gets an
//! [`Effects`] for the duration of one call, and the core takes the
//! changes out at the end.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use super::watch::Watches;
use super::{
    Cause, Change, Ended, EventKind, FencingToken, LeaseId, LeaseUpdate, Millis, ResourceView,
    Revision, SessionId,
};

/// What happens at a deadline.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Deadline {
    /// A held lease's TTL ends, or a waiter's `max_wait_ms`.
    Lease(LeaseId),
    /// A detached lease's grace runs out.
    Grace(LeaseId),
    /// A holder is due to be called stalled unless it reported progress.
    Stall(LeaseId),
    /// A yield request with revoke runs out for this holder.
    Revoke(LeaseId),
    /// Quiet watches get their heartbeat.
    Heartbeats,
    /// Waiters owed an update held back by the pace get the newest state.
    WaiterUpdates,
}

/// Every pending deadline, earliest first: the set of a `BTreeSet`, at the
/// cost of a hash-set insert or remove and a heap push per deadline.
///
/// Almost every deadline is removed before it is due (a lease released
/// before its TTL, a waiter granted before its `max_wait_ms`), so removal
/// is lazy: it leaves the heap's copy in place, and a copy that is no
/// longer in `live` is skipped when it is at the top as the earliest is
/// asked for ([`Deadlines::first`], [`Deadlines::pop_first`], which are
/// exact). The top may be such a stale copy in between, so
/// [`Deadlines::bound`] is only no later than the earliest pending one.
/// The heap is rebuilt from `live` when stale copies outnumber live
/// entries (plus a slack), so its size stays within about twice what is
/// pending however many deadlines are set and removed. Entries come out in
/// the same order as from a `BTreeSet<(Millis, Deadline)>` (the heap is
/// ordered by the same tuple), so expiry order is unchanged. (A `BTreeSet`
/// insert and remove per grant were ~950 instructions per Acquire +
/// Release under the throughput benchmark; popping a removed top at once
/// was ~280 more per Release with 1 024 leases held: issue 14.)
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    live: std::collections::HashSet<(Millis, Deadline), foldhash::fast::RandomState>,
    heap: BinaryHeap<Reverse<(Millis, Deadline)>>,
}

/// Stale heap entries tolerated beyond the number of live ones before a
/// rebuild.
const STALE_SLACK: usize = 1024;

impl Deadlines {
    /// No deadline.
    pub(crate) fn new() -> Deadlines {
        Deadlines::default()
    }

    /// Adds a deadline; `false` if it was pending already.
    pub(crate) fn insert(&mut self, deadline: (Millis, Deadline)) -> bool {
        if !self.live.insert(deadline) {
            return false;
        }
        self.heap.push(Reverse(deadline));
        true
    }

    /// Removes a pending deadline; `false` if it was not pending.
    pub(crate) fn remove(&mut self, deadline: &(Millis, Deadline)) -> bool {
        if !self.live.remove(deadline) {
            return false;
        }
        if self.heap.len() > 2 * self.live.len() + STALE_SLACK {
            self.heap = self.live.iter().map(|d| Reverse(*d)).collect();
        }
        true
    }

    /// The earliest pending deadline.
    pub(crate) fn first(&mut self) -> Option<&(Millis, Deadline)> {
        self.skip_stale();
        self.heap.peek().map(|Reverse(d)| d)
    }

    /// A time no later than the earliest pending deadline (that of a
    /// removed one, possibly); `None` when none is pending.
    pub(crate) fn bound(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the earliest pending deadline out.
    pub(crate) fn pop_first(&mut self) -> Option<(Millis, Deadline)> {
        self.skip_stale();
        let Reverse(first) = self.heap.pop()?;
        self.live.remove(&first);
        Some(first)
    }

    /// Pops stale copies until the top is live (or the heap is empty).
    fn skip_stale(&mut self) {
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.live.contains(top) {
                break;
            }
            self.heap.pop();
        }
    }
}

/// Hands out revisions and fencing tokens, and asks for the next block of
/// them to be reserved durably well before the current one runs out.
///
/// A fencing token is never handed out above the durable reservation:
/// when the store cannot keep up (or fails), grants stop at the mark and
/// resume once [`Issuer::stored`] says the next block is durable. The next
/// block is asked for when half of the current one is used, so a healthy
/// store never makes anyone wait. Revisions keep counting past the mark
/// while the store fails (refusing state changes would leave dead holders
/// in place); a revision past it may be seen again after a restart, which
/// a watcher's resume answers with a resync.
pub(crate) struct Issuer {
    /// The current global revision.
    pub(crate) revision: Revision,
    next_fencing: u64,
    /// Every token handed out is at most this: it is durable.
    pub(crate) durable_until: u64,
    /// The reservation asked for (durable or not yet).
    requested_until: u64,
    /// How many ids one reservation covers (`CoreConfig::counter_block`).
    block: u64,
}

impl Issuer {
    /// Counters that continue above what a previous run reserved; the
    /// first reservation, `start + block`, must be durable before the core
    /// serves anything (see [`super::Core::new`]). A block under 2 is
    /// taken as 2 (half of it is the margin reserved ahead).
    pub(crate) fn new(start: u64, block: u64) -> Issuer {
        let block = block.max(2);
        Issuer {
            revision: Revision(start),
            next_fencing: start + 1,
            durable_until: start + block,
            requested_until: start + block,
            block,
        }
    }

    /// Asks for the next block when `value` is past the middle of the last
    /// one asked for.
    fn plan(&mut self, value: u64, changes: &mut Vec<Change>) {
        if value.saturating_add(self.block / 2) > self.requested_until {
            self.requested_until = value.max(self.requested_until) + self.block;
            changes.push(Change::ReserveCounters {
                reserve_until: self.requested_until,
            });
        }
    }

    /// The store made the reservation up to `until` durable.
    pub(crate) fn stored(&mut self, until: u64) {
        self.durable_until = self.durable_until.max(until);
        self.requested_until = self.requested_until.max(until);
    }

    /// Whether a grant can be given now (its token would be durable).
    pub(crate) fn can_grant(&self) -> bool {
        self.next_fencing <= self.durable_until
    }
}

/// The effects of one call on the core, as of `now`.
pub(crate) struct Effects<'a> {
    /// The time of the call.
    pub(crate) now: Millis,
    issuer: &'a mut Issuer,
    watches: &'a mut Watches,
    /// The deadline index.
    pub(crate) deadlines: &'a mut Deadlines,
    /// What the call returns, in order.
    pub(crate) changes: Vec<Change>,
    /// The core's outbox of leases that ended.
    ended: &'a mut Vec<Ended>,
}

impl<'a> Effects<'a> {
    /// A sink for one call; its changes go into `changes` (empty, kept
    /// from an earlier call for its room).
    pub(crate) fn new(
        now: Millis,
        issuer: &'a mut Issuer,
        watches: &'a mut Watches,
        deadlines: &'a mut Deadlines,
        ended: &'a mut Vec<Ended>,
        changes: Vec<Change>,
    ) -> Effects<'a> {
        debug_assert!(changes.is_empty(), "a list of changes not emptied");
        Effects {
            now,
            issuer,
            watches,
            deadlines,
            changes,
            ended,
        }
    }

    /// A lease ended: a line for its resource's history.
    pub(crate) fn ended(&mut self, line: Ended) {
        self.ended.push(line);
    }

    /// The next fencing token, if it is durably reserved (asking for the
    /// next block when due); `None` stops the grant until it is.
    pub(crate) fn take_fencing(&mut self) -> Option<FencingToken> {
        let token = self.issuer.next_fencing;
        self.issuer.plan(token, &mut self.changes);
        if !self.issuer.can_grant() {
            return None;
        }
        self.issuer.next_fencing += 1;
        Some(FencingToken(token))
    }

    /// Whether a grant could be given now (its fencing token would be
    /// covered by the durable reservation).
    pub(crate) fn can_grant(&self) -> bool {
        self.issuer.can_grant()
    }

    /// The next revision, for a state change (asking for the next block
    /// when due).
    pub(crate) fn next_revision(&mut self) -> Revision {
        self.issuer.revision.0 += 1;
        let revision = self.issuer.revision;
        self.issuer.plan(revision.0, &mut self.changes);
        revision
    }

    /// Hands the event of a change of `name` at `revision` to every watch
    /// of that resource. `state` gives the resource's new state, taken
    /// only when someone will read it.
    pub(crate) fn notify_watchers(
        &mut self,
        name: &Arc<str>,
        revision: Revision,
        kind: EventKind,
        cause: impl FnOnce() -> Cause,
        state: impl FnOnce(Revision) -> ResourceView,
    ) {
        self.watches.state_changed(
            name,
            revision,
            kind,
            cause,
            state,
            self.now,
            &mut self.changes,
        );
    }

    /// Sends the heartbeats due now and plans the next round.
    pub(crate) fn heartbeats(&mut self) {
        self.watches.heartbeats(
            self.now,
            self.issuer.revision,
            self.deadlines,
            &mut self.changes,
        );
    }

    /// Tells the owner of `lease` what became of it.
    pub(crate) fn tell(&mut self, session: SessionId, lease: LeaseId, update: LeaseUpdate) {
        self.changes.push(Change::Lease {
            session,
            lease,
            update,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::{Deadline, Deadlines};
    use crate::core::LeaseId;

    /// One step on the index: insert, remove, or take the earliest.
    #[derive(Clone, Debug)]
    enum Step {
        Insert(u64, u64),
        Remove(u64, u64),
        Pop,
    }

    fn step() -> impl Strategy<Value = Step> {
        // Few times and leases, so that the same deadline comes back often.
        prop_oneof![
            (0..20u64, 0..8u64).prop_map(|(at, l)| Step::Insert(at, l)),
            (0..20u64, 0..8u64).prop_map(|(at, l)| Step::Remove(at, l)),
            Just(Step::Pop),
        ]
    }

    proptest! {
        /// The lazy index answers every call exactly as a `BTreeSet` of
        /// the same entries does, whatever the order of inserts, removals
        /// and pops (re-inserting what was removed included).
        #[test]
        fn answers_as_an_ordered_set(steps in proptest::collection::vec(step(), 0..400)) {
            let mut model: BTreeSet<(u64, Deadline)> = BTreeSet::new();
            let mut index = Deadlines::new();
            for s in steps {
                match s {
                    Step::Insert(at, l) => {
                        let d = (at, Deadline::Lease(LeaseId(l)));
                        prop_assert_eq!(index.insert(d), model.insert(d));
                    }
                    Step::Remove(at, l) => {
                        let d = (at, Deadline::Lease(LeaseId(l)));
                        prop_assert_eq!(index.remove(&d), model.remove(&d));
                    }
                    Step::Pop => prop_assert_eq!(index.pop_first(), model.pop_first()),
                }
                // The bound is never later than the earliest pending one.
                let earliest = model.first().map(|(at, _)| *at);
                prop_assert!(earliest.is_none_or(|e| index.bound().is_some_and(|b| b <= e)));
                prop_assert_eq!(index.first(), model.first());
                prop_assert_eq!(index.bound(), earliest);
            }
        }
    }
}
