//! Counted permits: a resource with a capacity is a counting semaphore.
//! Strict FIFO still holds (no barging), an EXCLUSIVE lease takes every
//! permit, and the capacity belongs to the resource.

use super::*;
use crate::core::{BadArgument, CoreError};

/// A SHARED request for `permits` of a semaphore of `capacity`.
fn permits(resource: &str, permits: u32, capacity: u32) -> AcquireRequest<'_> {
    AcquireRequest {
        permits,
        capacity,
        ..request(resource, Mode::Shared)
    }
}

/// The permits held on `resource` and its capacity, as status shows them.
fn held(core: &Core, resource: &str) -> (u32, u32) {
    let r = &core.status(&[resource.to_string()]).resources[0];
    (r.permits_held, r.capacity)
}

#[test]
fn two_downloads_run_while_a_third_waits() {
    // A semaphore of 2: two SHARED leases of one permit each are granted,
    // the third waits and is granted when one of them is released.
    let mut core = core();
    let c: Vec<SessionId> = (1..=3)
        .map(|i| connect(&mut core, &format!("dl{i}")))
        .collect();
    let a = expect_granted(&acquire(&mut core, c[0], permits("downloads", 1, 2), 0).0);
    let b = expect_granted(&acquire(&mut core, c[1], permits("downloads", 0, 2), 1).0);
    let w = expect_queued(
        &acquire(&mut core, c[2], permits("downloads", 1, 2), 2).0,
        1,
    )
    .lease_id;
    assert_eq!(held(&core, "downloads"), (2, 2));
    let changes = release(&mut core, c[0], a.lease_id, 10);
    let g = granted(&changes);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].lease_id, w);
    assert!(g[0].fencing > b.fencing, "tokens strictly increase");
    assert_eq!(held(&core, "downloads"), (2, 2));
}

#[test]
fn mixed_shared_and_exclusive_in_fifo() {
    // Capacity 3: S(2) holds; E queues (it needs all 3); S(1) behind E waits
    // although one permit is free (no barging); when S(2) ends, E holds all
    // 3; when E ends, S(1) goes.
    let mut core = core();
    let c: Vec<SessionId> = (1..=3)
        .map(|i| connect(&mut core, &format!("c{i}")))
        .collect();
    let s2 = expect_granted(&acquire(&mut core, c[0], permits("sem", 2, 3), 0).0).lease_id;
    let ex = AcquireRequest {
        capacity: 3,
        ..request("sem", Mode::Exclusive)
    };
    let e = expect_queued(&acquire(&mut core, c[1], ex, 1).0, 1).lease_id;
    let s1 = expect_queued(&acquire(&mut core, c[2], permits("sem", 1, 0), 2).0, 2).lease_id;
    assert_eq!(held(&core, "sem"), (2, 3));

    let changes = release(&mut core, c[0], s2, 10);
    assert_eq!(
        granted(&changes)
            .iter()
            .map(|g| g.lease_id)
            .collect::<Vec<_>>(),
        vec![e]
    );
    assert_eq!(
        held(&core, "sem"),
        (3, 3),
        "an EXCLUSIVE lease takes every permit"
    );
    let status = core.status(&["sem".to_string()]);
    assert_eq!(status.resources[0].holders[0].permits, 3);

    let changes = release(&mut core, c[1], e, 20);
    assert_eq!(
        granted(&changes)
            .iter()
            .map(|g| g.lease_id)
            .collect::<Vec<_>>(),
        vec![s1]
    );
    assert_eq!(held(&core, "sem"), (1, 3));
}

#[test]
fn a_big_waiter_blocks_smaller_ones_behind_it() {
    // Capacity 3, 2 held: a waiter for 2 permits blocks a later waiter for
    // 1 even though 1 is free; releasing frees room for both in order.
    let mut core = core();
    let c: Vec<SessionId> = (1..=3)
        .map(|i| connect(&mut core, &format!("c{i}")))
        .collect();
    let h = expect_granted(&acquire(&mut core, c[0], permits("sem", 2, 3), 0).0).lease_id;
    let big = expect_queued(&acquire(&mut core, c[1], permits("sem", 2, 3), 1).0, 1).lease_id;
    let small = expect_queued(&acquire(&mut core, c[2], permits("sem", 1, 3), 2).0, 2).lease_id;
    assert_eq!(held(&core, "sem"), (2, 3));
    let changes = release(&mut core, c[0], h, 10);
    let ids: Vec<LeaseId> = granted(&changes).iter().map(|g| g.lease_id).collect();
    assert_eq!(ids, vec![big, small]);
    assert_eq!(held(&core, "sem"), (3, 3));
}

#[test]
fn capacity_is_fixed_while_busy_and_free_to_change_when_idle() {
    // The first request sets the capacity; another capacity while the
    // resource is held or waited for is refused naming the capacity; once
    // idle, a new capacity takes.
    let mut core = core();
    let a = connect(&mut core, "a");
    let b = connect(&mut core, "b");
    let l = expect_granted(&acquire(&mut core, a, permits("sem", 1, 2), 0).0).lease_id;
    let err = core.acquire(b, permits("sem", 1, 5), 1).unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::InvalidArgument(BadArgument::CapacityMismatch {
                capacity: 2,
                asked: 5,
                ..
            })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("capacity 2"), "{err}");
    // Capacity 0 means "whatever it has".
    expect_granted(&acquire(&mut core, b, permits("sem", 1, 0), 2).0);
    release(&mut core, a, l, 3);
    let status = core.status(&[]);
    let b_lease = status.resources[0].holders[0].lease_id;
    release(&mut core, b, b_lease, 4);
    // Idle now: forgotten, a new capacity takes.
    expect_granted(&acquire(&mut core, a, permits("sem", 4, 5), 5).0);
    assert_eq!(held(&core, "sem"), (4, 5));
}

#[test]
fn a_configured_capacity_is_fixed_for_good() {
    // `[[resources]] name = "downloads" capacity = 3`: a request for
    // another capacity is refused even while idle; one naming none gets 3.
    let mut core = core_with(CoreConfig {
        capacities: vec![("downloads".to_string(), 3)],
        ..CoreConfig::default()
    });
    let a = connect(&mut core, "a");
    let err = core.acquire(a, permits("downloads", 1, 2), 0).unwrap_err();
    assert!(
        err.to_string().contains("fixed by the broker's config"),
        "{err}"
    );
    assert_eq!(
        core.status(&["downloads".to_string()]).resources[0].capacity,
        3
    );
    expect_granted(&acquire(&mut core, a, permits("downloads", 3, 0), 1).0);
    assert_eq!(held(&core, "downloads"), (3, 3));
}

#[test]
fn more_permits_than_the_capacity_is_refused() {
    let mut core = core();
    let a = connect(&mut core, "a");
    let err = core.acquire(a, permits("sem", 4, 3), 0).unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::InvalidArgument(BadArgument::TooManyPermits {
                permits: 4,
                capacity: 3,
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn permits_come_back_on_expiry_and_disconnect() {
    // Permits belong to their lease: a holder that expires and one whose
    // connection closes both give theirs back, and the waiter goes.
    let mut core = core();
    let c: Vec<SessionId> = (1..=3)
        .map(|i| connect(&mut core, &format!("c{i}")))
        .collect();
    let req = AcquireRequest {
        ttl_ms: 1000,
        ..permits("sem", 1, 2)
    };
    expect_granted(&acquire(&mut core, c[0], req, 0).0);
    expect_granted(&acquire(&mut core, c[1], permits("sem", 1, 2), 0).0);
    let w = expect_queued(&acquire(&mut core, c[2], permits("sem", 2, 2), 0).0, 1).lease_id;
    let changes = core.expire(1000);
    assert!(granted(&changes).is_empty(), "one permit is still held");
    assert_eq!(held(&core, "sem"), (1, 2));
    let changes = core.goodbye(c[1], 1001);
    assert_eq!(
        granted(&changes)
            .iter()
            .map(|g| g.lease_id)
            .collect::<Vec<_>>(),
        vec![w]
    );
    assert_eq!(held(&core, "sem"), (2, 2));
}

#[test]
fn no_wait_on_a_full_semaphore_names_the_holders_and_permits() {
    let mut core = core();
    let a = connect(&mut core, "a");
    let b = connect(&mut core, "b");
    expect_granted(&acquire(&mut core, a, permits("sem", 2, 2), 0).0);
    let req = AcquireRequest {
        wait: WaitPolicy::NoWait,
        ..permits("sem", 1, 2)
    };
    let err = core.acquire(b, req, 1).unwrap_err();
    assert!(matches!(err, CoreError::Busy { .. }), "{err:?}");
    assert!(err.to_string().contains("2 of 2 permits"), "{err}");
}
