//! The fleet's gate on `global/` resources: the core grants a global
//! waiter only once the fleet admits it, with the fencing token etcd gave
//! it; a broker without a fleet refuses global names; losing the fleet
//! takes global leases back and leaves local ones alone.

use super::*;
use crate::core::{BadArgument, CoreError, FencingToken, LostReason};

fn fleet_core() -> Core {
    core_with(CoreConfig {
        fleet: true,
        ..CoreConfig::default()
    })
}

#[test]
fn a_global_name_without_a_fleet_is_invalid() {
    // Without --fleet-etcd the request is refused, naming the flag.
    let mut core = core();
    let s = connect(&mut core, "c");
    let err = core
        .acquire(s, request("global/x", Mode::Exclusive), 0)
        .unwrap_err();
    assert!(
        matches!(err, CoreError::InvalidArgument(BadArgument::NoFleet { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("no fleet"), "{err}");
}

#[test]
fn a_global_waiter_is_granted_only_when_admitted_with_the_etcd_token() {
    // Free locally, it still queues; the admission grants it with etcd's
    // revision as its fencing token, not a local one.
    let mut core = fleet_core();
    let s = connect(&mut core, "c");
    let lease = expect_queued(&acquire_ex(&mut core, s, "global/x", 0), 1).lease_id;
    let changes = core.admit(lease, FencingToken(777), 5);
    let g = granted(&changes);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].lease_id, lease);
    assert_eq!(g[0].fencing, FencingToken(777));
    assert_eq!(holders(&core, "global/x"), vec![lease]);
}

#[test]
fn an_admission_waits_for_the_local_head_and_is_dropped_for_an_ended_lease() {
    // Two local waiters: the second's admission is kept until the first is
    // granted and gone; an admission of a lease that ended does nothing.
    let mut core = fleet_core();
    let [a, b] = sessions(&mut core, ["a", "b"]);
    let first = expect_queued(&acquire_ex(&mut core, a, "global/x", 0), 1).lease_id;
    let second = expect_queued(&acquire_ex(&mut core, b, "global/x", 1), 2).lease_id;
    assert!(granted(&core.admit(first, FencingToken(10), 2)).len() == 1);
    // Admitted early (as etcd could, with capacity): it still waits for
    // the local holder, whose compatibility rules still hold.
    assert!(granted(&core.admit(second, FencingToken(11), 3)).is_empty());
    let g = granted(&release(&mut core, a, first, 4));
    assert_eq!(g.len(), 1);
    assert_eq!((g[0].lease_id, g[0].fencing), (second, FencingToken(11)));
    release(&mut core, b, second, 5);
    assert!(core.admit(second, FencingToken(12), 6).is_empty());
}

#[test]
fn no_wait_on_a_global_name_is_refused() {
    let mut core = fleet_core();
    let s = connect(&mut core, "c");
    let req = AcquireRequest {
        wait: WaitPolicy::NoWait,
        ..request("global/x", Mode::Exclusive)
    };
    let err = core.acquire(s, req, 0).unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::InvalidArgument(BadArgument::GlobalNoWait { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn losing_the_fleet_takes_global_holders_back_and_keeps_the_rest() {
    // A global holder is told Lost(REVOKED) with the detail; its local
    // waiter stays queued and is not granted (no admission); a local lease
    // is untouched.
    let mut core = fleet_core();
    let [a, b, c] = sessions(&mut core, ["a", "b", "c"]);
    let held = expect_queued(&acquire_ex(&mut core, a, "global/x", 0), 1).lease_id;
    core.admit(held, FencingToken(5), 1);
    let waiting = expect_queued(&acquire_ex(&mut core, b, "global/x", 2), 1).lease_id;
    let local = holds_ex(&mut core, c, "pcm", 3);
    let changes = core.fleet_lost("etcd unreachable for 8 s", 4);
    let lost: Vec<_> = lease_updates(&changes)
        .into_iter()
        .filter_map(|(_, l, u)| match u {
            LeaseUpdate::Lost { reason, detail } => Some((l, *reason, detail.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!((lost[0].0, lost[0].1), (held, LostReason::Revoked));
    assert!(lost[0].2.contains("etcd unreachable"), "{}", lost[0].2);
    assert!(granted(&changes).is_empty());
    assert_eq!(waiters(&core, "global/x"), vec![waiting]);
    assert_eq!(holders(&core, "pcm"), vec![local]);
    // Back in the fleet, the waiter is admitted again and granted.
    assert_eq!(granted(&core.admit(waiting, FencingToken(9), 5)).len(), 1);
}

#[test]
fn a_global_waiter_is_shown_its_place_across_hosts() {
    // The fleet's place replaces the local one in the waiter's updates,
    // until it is granted.
    let mut core = fleet_core();
    let s = connect(&mut core, "c");
    let lease = expect_queued(&acquire_ex(&mut core, s, "global/x", 0), 1).lease_id;
    let mut remote = core.status(&[]).resources[0].waiters[0].clone();
    remote.purpose = std::sync::Arc::from("upload on host b");
    let changes = core.global_place(lease, 3, vec![remote.clone(), remote.clone()], 1);
    let q = queued(&changes);
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].position, q[0].ahead.len()), (3, 2));
    assert_eq!(&*q[0].ahead[0].purpose, "upload on host b");
    assert_eq!(granted(&core.admit(lease, FencingToken(4), 2)).len(), 1);
}
