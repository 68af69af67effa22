//! Read-only views of the lease table, as status, watch snapshots and
//! queue positions show them. Views are copies: holding one never holds
//! up the core. It changes nothing in the table.

use std::sync::Arc;

use super::{Lease, LeaseState, LeaseTable, Resource};
use crate::core::{FencingToken, LeaseView, Millis, ResourceView, Revision};

pub(super) fn lease_view(l: &Lease, position: u32) -> LeaseView {
    let (fencing, granted_at, queued_at, expires_at) = times(&l.state, l.detached_until);
    LeaseView {
        lease_id: l.id,
        resource: l.resource.clone(),
        mode: l.mode,
        purpose: l.purpose.clone(),
        holder: l.peer.clone(),
        fencing,
        progress: l.progress.clone(),
        granted_at,
        queued_at,
        expires_at,
        position,
        permits: l.permits,
        detached: l.detached_until.is_some(),
        stalled: l.stalled,
        estimated_wait_ms: None,
    }
}

/// As [`lease_view`] at position 0, for a lease that ended (its history
/// line): its names, holder and progress move into the view rather than
/// being copied.
pub(super) fn ended_lease_view(l: Lease) -> LeaseView {
    let (fencing, granted_at, queued_at, expires_at) = times(&l.state, l.detached_until);
    LeaseView {
        lease_id: l.id,
        resource: l.resource,
        mode: l.mode,
        purpose: l.purpose,
        holder: l.peer,
        fencing,
        progress: l.progress,
        granted_at,
        queued_at,
        expires_at,
        position: 0,
        permits: l.permits,
        detached: l.detached_until.is_some(),
        stalled: l.stalled,
        estimated_wait_ms: None,
    }
}

/// A lease's fencing token, grant, queueing and expiry times, as a view
/// shows them.
fn times(
    state: &LeaseState,
    detached_until: Option<Millis>,
) -> (
    Option<FencingToken>,
    Option<Millis>,
    Option<Millis>,
    Option<Millis>,
) {
    match *state {
        LeaseState::Waiting { queued_at, .. } => (None, None, Some(queued_at), None),
        LeaseState::Held {
            fencing,
            granted_at,
            expires_at,
            queued_at,
        } => {
            // A detached holder's TTL does not run: it has no expiry.
            let expires = detached_until.is_none().then_some(expires_at);
            (Some(fencing), Some(granted_at), queued_at, expires)
        }
    }
}

impl LeaseTable {
    /// A resource's state; as of `now`, its waiters carry the broker's
    /// estimate of their wait (the one figure `Queued` gives too).
    pub(super) fn view(&self, res: &Resource, now: Option<Millis>) -> ResourceView {
        let holders = res
            .holders
            .iter()
            .filter_map(|id| self.leases.get(id))
            .map(|l| lease_view(l, 0))
            .collect();
        let waiters = res
            .waiters
            .iter()
            .filter_map(|id| self.leases.get(id))
            .enumerate()
            .map(|(i, l)| {
                let mut v = lease_view(l, i as u32 + 1);
                v.estimated_wait_ms = now.and_then(|now| self.estimate_wait(res, i, now));
                v
            })
            .collect();
        ResourceView {
            resource: res.name.clone(),
            revision: res.revision,
            holders,
            waiters,
            capacity: res.capacity,
            permits_held: u32::try_from(self.permits_held(res)).unwrap_or(u32::MAX),
        }
    }

    /// The resource by name, if it is in use (an idle one is as absent).
    pub(super) fn resource(&self, name: &str) -> Option<&Resource> {
        let slot = *self.resources.get(name)?;
        self.res(slot).filter(|r| !r.idle)
    }

    /// The state of a resource of the table at `revision`; an idle one is
    /// shown empty, as a resource the table does not have.
    pub(super) fn view_in(&self, res: &Resource, revision: Revision, now: Millis) -> ResourceView {
        if !res.idle {
            return self.view(res, Some(now));
        }
        ResourceView {
            resource: res.name.clone(),
            revision,
            holders: Vec::new(),
            waiters: Vec::new(),
            capacity: self.configured.get(&res.name).copied().unwrap_or(0),
            permits_held: 0,
        }
    }

    /// Views of the named resources (all in use when `names` is empty), in
    /// name order. A named resource nobody uses is shown empty, as of
    /// `current` (the table keeps no state of idle resources, so their
    /// last revision is not known; `current` is a revision at which the
    /// state holds).
    pub(crate) fn views(
        &self,
        names: &[String],
        current: Revision,
        now: Option<Millis>,
    ) -> Vec<ResourceView> {
        self.views_in_order(names, current, now).collect()
    }

    /// [`LeaseTable::views`] one at a time: only the names are sorted up
    /// front, and each view is made when it is asked for, so that a caller
    /// that stops early (an answer that must fit in one frame) does the
    /// work of what it keeps, not of every resource in use.
    pub(crate) fn views_in_order<'a>(
        &'a self,
        names: &'a [String],
        current: Revision,
        now: Option<Millis>,
    ) -> impl Iterator<Item = ResourceView> + 'a {
        let mut order: Vec<&'a str> = if names.is_empty() {
            self.slots
                .iter()
                .flatten()
                .filter(|r| !r.idle)
                .map(|r| &*r.name)
                .collect()
        } else {
            names.iter().map(String::as_str).collect()
        };
        order.sort_unstable();
        order.dedup();
        order
            .into_iter()
            .map(move |name| match self.resource(name) {
                Some(r) => self.view(r, now),
                None => ResourceView {
                    resource: Arc::from(name),
                    revision: current,
                    holders: Vec::new(),
                    waiters: Vec::new(),
                    capacity: self.configured.get(name).copied().unwrap_or(0),
                    permits_held: 0,
                },
            })
    }
}
