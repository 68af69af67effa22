//! Detach and re-attach: a lease or queue place with a detach grace
//! outlives its connection for that grace, its TTL suspended, and comes
//! back to whoever shows its secret from the same uid.

use super::*;
use crate::core::{CoreError, PeerIdentity, ResumeToken};

const TOKEN: ResumeToken = ResumeToken([7; ResumeToken::LEN]);

/// A request of `mode` with a detach grace of `grace_ms` and [`TOKEN`].
fn detachable(resource: &str, mode: Mode, grace_ms: u32) -> AcquireRequest<'_> {
    AcquireRequest {
        detach_grace_ms: grace_ms,
        resume_token: Some(TOKEN),
        ttl_ms: 1000,
        ..request(resource, mode)
    }
}

/// Opens a session for `name` as `uid`.
fn connect_as(core: &mut Core, name: &str, uid: u32) -> SessionId {
    let who = PeerIdentity {
        uid,
        pid: 1,
        ..PeerIdentity::default()
    };
    core.connect_peer(name.to_string(), who).session
}

/// Whether `lease` of `resource` shows as detached in status.
fn detached(core: &Core, resource: &str, lease: LeaseId) -> bool {
    let r = &core.status(&[resource.to_string()]).resources[0];
    r.holders
        .iter()
        .chain(r.waiters.iter())
        .find(|l| l.lease_id == lease)
        .is_some_and(|l| l.detached)
}

#[test]
fn a_queued_agent_detaches_and_reattaches_at_its_place() {
    // The job holds; the agent queues with a grace, dies, and a new
    // process re-attaches within the grace: same place in the queue,
    // watchers see DETACHED then REATTACHED, and the grant goes to the new
    // connection.
    let mut core = core();
    let job = connect(&mut core, "job");
    let other = connect(&mut core, "other");
    let agent = connect(&mut core, "agent");
    let watcher = connect(&mut core, "ui");
    core.watch(watcher, vec!["pcm".into()], 0, 0).unwrap();
    let j = expect_granted(&acquire_ex(&mut core, job, "pcm", 0)).lease_id;
    let q = expect_queued(
        &acquire(&mut core, agent, detachable("pcm", Mode::Shared, 5000), 1).0,
        1,
    );
    assert_eq!(q.resume_token, Some(TOKEN), "the owner gets its secret");
    let behind = expect_queued(&acquire_sh(&mut core, other, "pcm", 2), 2).lease_id;

    let changes = core.goodbye(agent, 10);
    assert_eq!(event_kinds(&changes), vec![EventKind::Detached]);
    assert!(detached(&core, "pcm", q.lease_id));
    assert_eq!(
        waiters(&core, "pcm"),
        vec![q.lease_id, behind],
        "its place is kept"
    );

    let again = connect(&mut core, "agent (restarted)");
    let (outcome, changes) = core.reattach(again, q.lease_id, &TOKEN, 4000).unwrap();
    assert_eq!(expect_queued(&outcome, 1).lease_id, q.lease_id);
    assert_eq!(event_kinds(&changes), vec![EventKind::Reattached]);
    assert!(!detached(&core, "pcm", q.lease_id));

    let changes = release(&mut core, job, j, 5000);
    let to: Vec<(SessionId, LeaseId)> = lease_updates(&changes)
        .into_iter()
        .filter(|(_, _, u)| matches!(u, LeaseUpdate::Granted(_)))
        .map(|(s, l, _)| (s, l))
        .collect();
    assert_eq!(to, vec![(again, q.lease_id), (other, behind)]);
}

#[test]
fn a_detached_lease_ends_when_its_grace_runs_out() {
    // Nobody re-attaches: at the end of the grace the lease ends with
    // DISCONNECTED and the next in line is granted; a late Reattach is
    // NOT_FOUND.
    let mut core = core();
    let a = connect(&mut core, "a");
    let b = connect(&mut core, "b");
    let watcher = connect(&mut core, "ui");
    core.watch(watcher, vec!["pcm".into()], 0, 0).unwrap();
    let l = expect_granted(&acquire(&mut core, a, detachable("pcm", Mode::Exclusive, 3000), 0).0)
        .lease_id;
    let w = expect_queued(&acquire_ex(&mut core, b, "pcm", 1), 1).lease_id;
    core.goodbye(a, 100);
    assert_eq!(
        core.next_deadline(),
        Some(3100),
        "the grace, not the TTL, is what runs"
    );
    assert!(granted(&core.expire(3099)).is_empty());
    let changes = core.expire(3100);
    assert_eq!(event_kinds(&changes)[0], EventKind::Disconnected);
    assert_eq!(
        granted(&changes)
            .iter()
            .map(|g| g.lease_id)
            .collect::<Vec<_>>(),
        vec![w]
    );
    let again = connect(&mut core, "a2");
    assert_eq!(
        core.reattach(again, l, &TOKEN, 3200).unwrap_err(),
        CoreError::UnknownLease(l)
    );
}

#[test]
fn ttl_is_suspended_while_detached() {
    // A holder with a 1 s TTL detaches with a 10 s grace: it does not
    // expire at 1 s; re-attached at 8 s, its TTL runs again from then.
    let mut core = core();
    let a = connect(&mut core, "a");
    let l = expect_granted(&acquire(&mut core, a, detachable("pcm", Mode::Exclusive, 10_000), 0).0);
    assert_eq!(l.resume_token, Some(TOKEN));
    core.goodbye(a, 500);
    assert!(core.expire(5000).is_empty(), "no expiry while detached");
    assert_eq!(holders(&core, "pcm"), vec![l.lease_id]);
    let again = connect(&mut core, "a2");
    let (outcome, _) = core.reattach(again, l.lease_id, &TOKEN, 8000).unwrap();
    let g = expect_granted(&outcome);
    assert_eq!(g.fencing, l.fencing, "the same lease, the same token");
    assert_eq!(
        core.next_deadline(),
        Some(9000),
        "the TTL runs again from the re-attach"
    );
    let changes = core.expire(9000);
    assert!(holders(&core, "pcm").is_empty(), "expired at 9 s");
    let kinds: Vec<LeaseUpdate> = lease_updates(&changes)
        .into_iter()
        .map(|(_, _, u)| u.clone())
        .collect();
    assert!(matches!(kinds[..], [LeaseUpdate::Lost { .. }]), "{kinds:?}");
}

#[test]
fn wrong_token_other_uid_and_attached_leases_are_all_not_found() {
    // Every refusal of Reattach is the same NOT_FOUND: a wrong token,
    // another uid, a lease still attached, a lease that never was.
    let mut core = core();
    let a = connect_as(&mut core, "a", 1000);
    let l = expect_granted(&acquire(&mut core, a, detachable("pcm", Mode::Exclusive, 10_000), 0).0)
        .lease_id;
    let thief = connect_as(&mut core, "thief", 1001);
    assert_eq!(
        core.reattach(thief, l, &TOKEN, 1).unwrap_err(),
        CoreError::UnknownLease(l)
    );
    core.goodbye(a, 2);
    let wrong = ResumeToken([8; ResumeToken::LEN]);
    let same_uid = connect_as(&mut core, "a2", 1000);
    assert_eq!(
        core.reattach(same_uid, l, &wrong, 3).unwrap_err(),
        CoreError::UnknownLease(l)
    );
    assert_eq!(
        core.reattach(thief, l, &TOKEN, 3).unwrap_err(),
        CoreError::UnknownLease(l)
    );
    assert_eq!(
        core.reattach(same_uid, LeaseId(999), &TOKEN, 3)
            .unwrap_err(),
        CoreError::UnknownLease(LeaseId(999))
    );
    core.reattach(same_uid, l, &TOKEN, 4).unwrap();
    let third = connect_as(&mut core, "a3", 1000);
    assert_eq!(
        core.reattach(third, l, &TOKEN, 5).unwrap_err(),
        CoreError::UnknownLease(l),
        "an attached lease cannot be taken over"
    );
}

#[test]
fn a_detached_waiter_granted_meanwhile_gets_its_grant_on_reattach() {
    // The holder ends while the waiter is detached: the waiter is granted
    // (its place is honoured) but nobody is told until it re-attaches, and
    // its TTL starts then.
    let mut core = core();
    let job = connect(&mut core, "job");
    let agent = connect(&mut core, "agent");
    let j = expect_granted(&acquire_ex(&mut core, job, "pcm", 0)).lease_id;
    let q = expect_queued(
        &acquire(
            &mut core,
            agent,
            detachable("pcm", Mode::Exclusive, 5000),
            1,
        )
        .0,
        1,
    )
    .lease_id;
    core.goodbye(agent, 2);
    let changes = release(&mut core, job, j, 3);
    assert!(
        granted(&changes).is_empty(),
        "a detached grantee is not told"
    );
    assert_eq!(holders(&core, "pcm"), vec![q]);
    let again = connect(&mut core, "agent2");
    let (outcome, _) = core.reattach(again, q, &TOKEN, 4000).unwrap();
    expect_granted(&outcome);
    assert_eq!(core.next_deadline(), Some(5000), "TTL from the re-attach");
}

#[test]
fn without_a_grace_a_closed_connection_ends_the_lease_as_before() {
    let mut core = core();
    let a = connect(&mut core, "a");
    let watcher = connect(&mut core, "ui");
    core.watch(watcher, vec!["pcm".into()], 0, 0).unwrap();
    let g = expect_granted(&acquire_ex(&mut core, a, "pcm", 0));
    assert_eq!(g.resume_token, None, "no grace, no secret");
    let changes = core.goodbye(a, 1);
    assert_eq!(event_kinds(&changes), vec![EventKind::Disconnected]);
}
