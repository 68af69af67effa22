//! Core tests: every rule of the lease table, the watches and the counters,
//! driven with a fake clock and no runtime.
//!
//! - `leases.rs`: scenarios of the lease table (fairness, expiry, errors).
//! - `watch.rs`: watches, history, resync and heartbeats.
//! - `props.rs`: property tests over random command sequences.
//! - `permits.rs`, `reattach.rs`, `yield_.rs`, `stall.rs`: the wave-2
//!   rules (counted permits, detach and re-attach, yield and revoke,
//!   stalled holders); `props_wave2.rs`: their property test.
//! - `pacing.rs`: waiter updates paced and coalesced to the newest state.
//!
//! The queue tests live with the queue table (`core/queues/tests/`).
//!
//! Each scenario is a block with one sentence on top. The helpers below
//! panic with the caller's location (`#[track_caller]`).

mod fleet_gate;
mod leases;
mod pacing;
mod permits;
mod props;
mod props_wave2;
mod reattach;
mod stall;
mod watch;
mod yield_;

use std::sync::Arc;

use super::{
    AcquireOutcome, AcquireRequest, Change, Core, CoreConfig, Counters, EventKind, Grant, LeaseId,
    LeaseUpdate, Millis, Mode, QueuePosition, SessionId, StateEvent, WaitPolicy, WatchId,
};

/// A core with the default configuration and fresh counters, except that
/// waiters are told of every change at once (no pace): the scenarios below
/// check what each change tells; `pacing.rs` checks the pace.
pub(crate) fn core() -> Core {
    core_with(CoreConfig::default())
}

/// A core with `config` and fresh counters, waiters told at once.
pub(crate) fn core_with(config: CoreConfig) -> Core {
    paced_core_with(CoreConfig {
        waiter_update_interval_ms: 0,
        waiter_updates_per_second: u64::MAX,
        ..config
    })
}

/// A core with `config` and fresh counters, waiter updates paced as it says.
pub(crate) fn paced_core_with(config: CoreConfig) -> Core {
    Core::new(config, Counters::default()).0
}

/// Opens a session for a client called `name` (uid 1000, pid 4242).
pub(crate) fn connect(core: &mut Core, name: &str) -> SessionId {
    core.connect(name.to_string(), 1000, 4242).session
}

/// Opens one session per name, in order.
fn sessions<const N: usize>(core: &mut Core, names: [&str; N]) -> [SessionId; N] {
    names.map(|name| connect(core, name))
}

/// `resource` EXCLUSIVE must be granted at once; returns the lease.
#[track_caller]
fn holds_ex(core: &mut Core, session: SessionId, resource: &str, now: Millis) -> LeaseId {
    expect_granted(&acquire_ex(core, session, resource, now)).lease_id
}

/// `resource` SHARED must be granted at once; returns the lease.
#[track_caller]
fn holds_sh(core: &mut Core, session: SessionId, resource: &str, now: Millis) -> LeaseId {
    expect_granted(&acquire_sh(core, session, resource, now)).lease_id
}

/// `resource` EXCLUSIVE must queue at `position`; returns the lease.
#[track_caller]
fn waits_ex(
    core: &mut Core,
    session: SessionId,
    resource: &str,
    now: Millis,
    position: u32,
) -> LeaseId {
    expect_queued(&acquire_ex(core, session, resource, now), position).lease_id
}

/// `resource` SHARED must queue at `position`; returns the lease.
#[track_caller]
fn waits_sh(
    core: &mut Core,
    session: SessionId,
    resource: &str,
    now: Millis,
    position: u32,
) -> LeaseId {
    expect_queued(&acquire_sh(core, session, resource, now), position).lease_id
}

/// A queueing request with the default TTL, no max wait and no purpose.
fn request(resource: &str, mode: Mode) -> AcquireRequest<'static> {
    AcquireRequest {
        resource: resource.to_string().into(),
        mode,
        ttl_ms: 0,
        wait: WaitPolicy::Queue,
        max_wait_ms: 0,
        purpose: "".into(),
        ..AcquireRequest::default()
    }
}

/// Acquires with `req`, which must be accepted; returns outcome and changes.
#[track_caller]
fn acquire(
    core: &mut Core,
    session: SessionId,
    req: AcquireRequest,
    now: Millis,
) -> (AcquireOutcome, Vec<Change>) {
    match core.acquire(session, req, now) {
        Ok(done) => done,
        Err(e) => panic!("acquire refused: {e:?}"),
    }
}

/// Asks for `resource` EXCLUSIVE (default TTL, queueing).
#[track_caller]
pub(crate) fn acquire_ex(
    core: &mut Core,
    session: SessionId,
    resource: &str,
    now: Millis,
) -> AcquireOutcome {
    acquire(core, session, request(resource, Mode::Exclusive), now).0
}

/// Asks for `resource` SHARED (default TTL, queueing).
#[track_caller]
fn acquire_sh(core: &mut Core, session: SessionId, resource: &str, now: Millis) -> AcquireOutcome {
    acquire(core, session, request(resource, Mode::Shared), now).0
}

/// The outcome must be a grant.
#[track_caller]
pub(crate) fn expect_granted(outcome: &AcquireOutcome) -> Grant {
    match outcome {
        AcquireOutcome::Granted(g) => g.clone(),
        AcquireOutcome::Queued(q) => panic!("expected a grant, got queued: {q:?}"),
    }
}

/// The outcome must be a place in the queue at `position`.
#[track_caller]
fn expect_queued(outcome: &AcquireOutcome, position: u32) -> QueuePosition {
    match outcome {
        AcquireOutcome::Queued(q) => {
            assert_eq!(q.position, position, "queue position of {q:?}");
            q.clone()
        }
        AcquireOutcome::Granted(g) => panic!("expected queued at {position}, got granted: {g:?}"),
    }
}

/// The lease id an acquire handed out, granted or queued.
fn lease_of(outcome: &AcquireOutcome) -> LeaseId {
    match outcome {
        AcquireOutcome::Granted(g) => g.lease_id,
        AcquireOutcome::Queued(q) => q.lease_id,
    }
}

/// The lease updates among `changes`, in order.
fn lease_updates(changes: &[Change]) -> Vec<(SessionId, LeaseId, &LeaseUpdate)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Lease {
                session,
                lease,
                update,
            } => Some((*session, *lease, update)),
            _ => None,
        })
        .collect()
}

/// The leases told `Granted` among `changes`, in order.
fn granted(changes: &[Change]) -> Vec<Grant> {
    lease_updates(changes)
        .into_iter()
        .filter_map(|(_, _, u)| match u {
            LeaseUpdate::Granted(g) => Some(g.clone()),
            _ => None,
        })
        .collect()
}

/// The `Queued` updates among `changes`, in order.
fn queued(changes: &[Change]) -> Vec<QueuePosition> {
    lease_updates(changes)
        .into_iter()
        .filter_map(|(_, _, u)| match u {
            LeaseUpdate::Queued(q) => Some(q.clone()),
            _ => None,
        })
        .collect()
}

/// The state events among `changes` (with the watch they went to), in order.
fn watch_events(changes: &[Change]) -> Vec<(WatchId, Arc<StateEvent>)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Watch { watch, event, .. } => Some((*watch, event.clone())),
            _ => None,
        })
        .collect()
}

/// The kinds of the state events among `changes`, in order.
fn event_kinds(changes: &[Change]) -> Vec<EventKind> {
    watch_events(changes).iter().map(|(_, e)| e.kind).collect()
}

/// The holders of `resource`, in grant order, as `status` shows them.
fn holders(core: &Core, resource: &str) -> Vec<LeaseId> {
    let status = core.status(&[resource.to_string()]);
    status.resources[0]
        .holders
        .iter()
        .map(|l| l.lease_id)
        .collect()
}

/// The waiters of `resource`, first in line first, as `status` shows them.
fn waiters(core: &Core, resource: &str) -> Vec<LeaseId> {
    let status = core.status(&[resource.to_string()]);
    status.resources[0]
        .waiters
        .iter()
        .map(|l| l.lease_id)
        .collect()
}

/// `release` must succeed; returns its changes.
#[track_caller]
fn release(core: &mut Core, session: SessionId, lease: LeaseId, now: Millis) -> Vec<Change> {
    match core.release(session, lease, now) {
        Ok(changes) => changes,
        Err(e) => panic!("release of {lease} refused: {e:?}"),
    }
}
