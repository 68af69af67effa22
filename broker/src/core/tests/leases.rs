//! Scenarios of the lease table: fairness, expiry, departures, refusals,
//! fencing tokens, progress and quotas.

use super::*;
use crate::core::{
    COUNTER_BLOCK, CoreError, Deadline, Ending, LostReason, MAX_NAME_BYTES, Progress,
    REMEMBERED_HOLD_TIMES,
};

fn ids(grants: &[Grant]) -> Vec<LeaseId> {
    grants.iter().map(|g| g.lease_id).collect()
}

fn positions(updates: &[QueuePosition]) -> Vec<(LeaseId, u32)> {
    updates.iter().map(|q| (q.lease_id, q.position)).collect()
}

fn progress(done: u32, total: u32, message: &str) -> Progress {
    Progress {
        done,
        total,
        message: message.to_string(),
    }
}

#[test]
fn fifo_with_mixed_modes() {
    // E1 holds while S2, S3, E4, S5 queue: each release grants the next batch
    // in request order, consecutive SHARED requests at the head together.
    let mut core = core();
    let c: Vec<SessionId> = (1..=5)
        .map(|i| connect(&mut core, &format!("client{i}")))
        .collect();
    let e1 = holds_ex(&mut core, c[0], "pcm", 0);
    let s2 = waits_sh(&mut core, c[1], "pcm", 10, 1);
    let s3 = waits_sh(&mut core, c[2], "pcm", 20, 2);
    let e4 = waits_ex(&mut core, c[3], "pcm", 30, 3);
    let s5 = waits_sh(&mut core, c[4], "pcm", 40, 4);
    assert_eq!(waiters(&core, "pcm"), vec![s2, s3, e4, s5]);

    let changes = release(&mut core, c[0], e1, 100);
    assert_eq!(ids(&granted(&changes)), vec![s2, s3]);
    let to: Vec<(SessionId, LeaseId)> = lease_updates(&changes)
        .into_iter()
        .filter(|(_, _, u)| matches!(u, LeaseUpdate::Granted(_)))
        .map(|(s, l, _)| (s, l))
        .collect();
    assert_eq!(to, vec![(c[1], s2), (c[2], s3)]);
    assert_eq!(holders(&core, "pcm"), vec![s2, s3]);
    assert_eq!(waiters(&core, "pcm"), vec![e4, s5]);
    assert_eq!(positions(&queued(&changes)), vec![(e4, 1), (s5, 2)]);

    let changes = release(&mut core, c[1], s2, 200);
    assert!(granted(&changes).is_empty(), "E4 must wait for S3");
    assert_eq!(holders(&core, "pcm"), vec![s3]);
    assert_eq!(waiters(&core, "pcm"), vec![e4, s5]);

    let changes = release(&mut core, c[2], s3, 300);
    assert_eq!(ids(&granted(&changes)), vec![e4]);
    assert_eq!(holders(&core, "pcm"), vec![e4]);
    assert_eq!(positions(&queued(&changes)), vec![(s5, 1)]);

    let changes = release(&mut core, c[3], e4, 400);
    assert_eq!(ids(&granted(&changes)), vec![s5]);
    assert!(waiters(&core, "pcm").is_empty());

    // Once nobody holds or waits, the resource is forgotten.
    release(&mut core, c[4], s5, 500);
    assert!(core.status(&[]).resources.is_empty());
}

#[test]
fn shared_request_waits_behind_a_queued_exclusive() {
    // SHARED holders do not let a later SHARED request jump a queued
    // EXCLUSIVE one, with or without NO_WAIT.
    let mut core = core();
    let [a, b, c] = sessions(&mut core, ["a", "b", "c"]);
    let s1 = holds_sh(&mut core, a, "pcm", 0);
    let e2 = waits_ex(&mut core, b, "pcm", 1, 1);
    let s3 = waits_sh(&mut core, c, "pcm", 2, 2);
    assert_eq!(holders(&core, "pcm"), vec![s1]);

    let mut no_wait = request("pcm", Mode::Shared);
    no_wait.wait = WaitPolicy::NoWait;
    assert!(matches!(
        core.acquire(c, no_wait, 3),
        Err(CoreError::Busy { .. })
    ));

    let changes = release(&mut core, a, s1, 10);
    assert_eq!(ids(&granted(&changes)), vec![e2]);
    let changes = release(&mut core, b, e2, 20);
    assert_eq!(ids(&granted(&changes)), vec![s3]);
}

#[test]
fn ttl_expires_exactly_at_the_deadline() {
    // A lease granted at 500 with a 1000 ms TTL lives through 1499 and ends
    // at 1500: the owner is told, the next waiter is granted.
    let mut core = core();
    let [svc, agent] = sessions(&mut core, ["service", "agent"]);
    assert_eq!(core.next_deadline(), None);
    let mut req = request("pcm", Mode::Exclusive);
    req.ttl_ms = 1000;
    let lease = expect_granted(&acquire(&mut core, svc, req, 500).0);
    assert_eq!(lease.ttl_ms, 1000);
    assert_eq!(core.next_deadline(), Some(1500));
    let waiter = waits_ex(&mut core, agent, "pcm", 600, 1);

    assert!(core.expire(1499).is_empty());
    assert_eq!(holders(&core, "pcm"), vec![lease.lease_id]);

    let changes = core.expire(1500);
    let updates = lease_updates(&changes);
    assert_eq!(updates.len(), 2, "{updates:?}");
    assert_eq!((updates[0].0, updates[0].1), (svc, lease.lease_id));
    assert!(matches!(
        updates[0].2,
        LeaseUpdate::Lost {
            reason: LostReason::Expired,
            ..
        }
    ));
    assert_eq!((updates[1].0, updates[1].1), (agent, waiter));
    assert!(matches!(updates[1].2, LeaseUpdate::Granted(_)));
    assert_eq!(holders(&core, "pcm"), vec![waiter]);
    // The new holder's default TTL runs from its grant.
    assert_eq!(core.next_deadline(), Some(1500 + 15_000));
}

#[test]
fn keep_alive_extends_the_ttl() {
    // A KeepAlive at 800 moves a 1000 ms TTL to 1800; nothing expires before.
    let mut core = core();
    let svc = connect(&mut core, "service");
    let mut req = request("pcm", Mode::Exclusive);
    req.ttl_ms = 1000;
    let lease = expect_granted(&acquire(&mut core, svc, req, 0).0).lease_id;
    assert_eq!(core.keep_alive(svc, lease, 800), Ok(1000));
    assert_eq!(core.next_deadline(), Some(1800));
    assert!(core.expire(1000).is_empty());
    assert!(core.expire(1799).is_empty());
    assert_eq!(holders(&core, "pcm"), vec![lease]);
    let changes = core.expire(1800);
    assert!(matches!(
        lease_updates(&changes)[..],
        [(
            _,
            _,
            LeaseUpdate::Lost {
                reason: LostReason::Expired,
                ..
            }
        )]
    ));

    // A stale deadline left in the index does not expire a kept-alive lease
    // early (white box: the entry is put there by hand).
    let mut req = request("pcm", Mode::Exclusive);
    req.ttl_ms = 1000;
    let lease = expect_granted(&acquire(&mut core, svc, req, 2000).0).lease_id;
    assert_eq!(core.keep_alive(svc, lease, 2900), Ok(1000));
    core.deadlines.insert((3000, Deadline::Lease(lease)));
    assert_eq!(core.next_deadline(), Some(3000));
    assert!(core.expire(3000).is_empty());
    assert_eq!(holders(&core, "pcm"), vec![lease]);
    assert_eq!(core.next_deadline(), Some(3900));

    // A KeepAlive on a waiter answers the TTL and changes nothing.
    let agent = connect(&mut core, "agent");
    let mut req = request("pcm", Mode::Exclusive);
    req.ttl_ms = 5000;
    let waiter = expect_queued(&acquire(&mut core, agent, req, 3000).0, 1).lease_id;
    assert_eq!(core.keep_alive(agent, waiter, 3100), Ok(5000));
    assert_eq!(core.next_deadline(), Some(3900));
    assert_eq!(waiters(&core, "pcm"), vec![waiter]);
}

#[test]
fn goodbye_releases_held_leases_and_promotes_the_next() {
    // A session that goes away loses everything it held; the next waiter is
    // granted and watchers see DISCONNECTED before GRANTED.
    let mut core = core();
    let [svc, agent, ui] = sessions(&mut core, ["service", "agent", "ui"]);
    core.watch(ui, vec![], 0, 0).unwrap();
    expect_granted(&acquire_ex(&mut core, svc, "pcm", 0));
    expect_granted(&acquire_sh(&mut core, svc, "logs", 0));
    let waiter = waits_ex(&mut core, agent, "pcm", 10, 1);

    let changes = core.goodbye(svc, 100);
    let updates = lease_updates(&changes);
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!((updates[0].0, updates[0].1), (agent, waiter));
    assert!(matches!(updates[0].2, LeaseUpdate::Granted(_)));
    assert_eq!(
        event_kinds(&changes),
        vec![
            EventKind::Disconnected,
            EventKind::Disconnected,
            EventKind::Granted
        ]
    );
    assert_eq!(holders(&core, "pcm"), vec![waiter]);
    let names: Vec<_> = core
        .status(&[])
        .resources
        .iter()
        .map(|r| r.resource.to_string())
        .collect();
    assert_eq!(names, vec!["pcm"]);
    assert!(core.peer(svc).is_none());

    // A second goodbye, or one for a session never seen, does nothing.
    assert!(core.goodbye(svc, 200).is_empty());
    assert!(core.goodbye(SessionId(999), 200).is_empty());
}

#[test]
fn goodbye_never_grants_the_departing_sessions_own_requests() {
    // A session that holds a resource and also waits for it again leaves as
    // a whole: its own queued request is not granted on the way out.
    let mut core = core();
    let [svc, agent, ui] = sessions(&mut core, ["service", "agent", "ui"]);
    core.watch(ui, vec![], 0, 0).unwrap();
    let first = expect_granted(&acquire_ex(&mut core, svc, "pcm", 0));
    expect_queued(&acquire_ex(&mut core, svc, "pcm", 1), 1);
    let waiter = waits_ex(&mut core, agent, "pcm", 2, 2);

    let changes = core.goodbye(svc, 100);
    let grants = granted(&changes);
    assert_eq!(ids(&grants), vec![waiter]);
    assert!(lease_updates(&changes).iter().all(|(s, _, _)| *s == agent));
    assert_eq!(
        event_kinds(&changes),
        vec![
            EventKind::Disconnected,
            EventKind::Disconnected,
            EventKind::Granted
        ]
    );
    // No fencing token was spent on the departing request.
    assert_eq!(grants[0].fencing.0, first.fencing.0 + 1);

    // Same with two queued requests: leaving the EXCLUSIVE one must not let
    // the session's SHARED one join the SHARED holder.
    let mut core = super::core();
    let [holder, leaver, other] = sessions(&mut core, ["holder", "leaver", "other"]);
    expect_granted(&acquire_sh(&mut core, holder, "pcm", 0));
    expect_queued(&acquire_ex(&mut core, leaver, "pcm", 1), 1);
    expect_queued(&acquire_sh(&mut core, leaver, "pcm", 2), 2);
    let s = waits_sh(&mut core, other, "pcm", 3, 3);
    let changes = core.goodbye(leaver, 100);
    assert_eq!(ids(&granted(&changes)), vec![s]);
    assert!(
        lease_updates(&changes)
            .iter()
            .all(|(who, _, _)| *who == other)
    );
    assert_eq!(holders(&core, "pcm").len(), 2);
    assert!(waiters(&core, "pcm").is_empty());
}

#[test]
fn departed_waiters_are_never_granted() {
    // Waiters that leave by goodbye, cancel or max_wait are skipped for good,
    // and those behind them are told their new positions.
    let mut core = core();
    let [svc, gone, canceller, impatient, patient] = sessions(
        &mut core,
        ["service", "gone", "canceller", "impatient", "patient"],
    );
    let held = holds_ex(&mut core, svc, "pcm", 0);
    let w1 = waits_ex(&mut core, gone, "pcm", 0, 1);
    let w2 = waits_ex(&mut core, canceller, "pcm", 0, 2);
    let mut req = request("pcm", Mode::Exclusive);
    req.max_wait_ms = 500;
    let w3 = expect_queued(&acquire(&mut core, impatient, req, 0).0, 3).lease_id;
    let w4 = waits_ex(&mut core, patient, "pcm", 0, 4);
    assert_eq!(core.next_deadline(), Some(500));

    let changes = core.goodbye(gone, 100);
    assert!(granted(&changes).is_empty());
    assert_eq!(waiters(&core, "pcm"), vec![w2, w3, w4]);
    assert!(!lease_updates(&changes).iter().any(|(_, l, _)| *l == w1));
    assert_eq!(
        positions(&queued(&changes)),
        vec![(w2, 1), (w3, 2), (w4, 3)]
    );

    let changes = core.cancel(canceller, w2, 200).unwrap();
    assert!(granted(&changes).is_empty());
    assert_eq!(positions(&queued(&changes)), vec![(w3, 1), (w4, 2)]);
    assert_eq!(event_kinds(&changes), Vec::<EventKind>::new());

    assert!(core.expire(499).is_empty());
    let changes = core.expire(500);
    let updates = lease_updates(&changes);
    assert_eq!(updates.len(), 2, "{updates:?}");
    assert_eq!((updates[0].0, updates[0].1), (impatient, w3));
    assert!(matches!(
        updates[0].2,
        LeaseUpdate::Lost {
            reason: LostReason::TimedOut,
            ..
        }
    ));
    assert_eq!(positions(&queued(&changes)), vec![(w4, 1)]);
    assert_eq!(waiters(&core, "pcm"), vec![w4]);

    let changes = release(&mut core, svc, held, 600);
    assert_eq!(ids(&granted(&changes)), vec![w4]);
    assert!(waiters(&core, "pcm").is_empty());

    // A waiter that leaves from the back moves nobody, so nobody is told.
    let last = waits_ex(&mut core, svc, "pcm", 700, 1);
    let back = connect(&mut core, "back");
    let behind = waits_ex(&mut core, back, "pcm", 700, 2);
    let changes = core.cancel(back, behind, 800).unwrap();
    assert!(lease_updates(&changes).is_empty(), "{changes:?}");
    assert_eq!(waiters(&core, "pcm"), vec![last]);
}

#[test]
fn stale_lease_ids_are_refused() {
    // Every verb on a lease that ended says how it ended; an id never
    // handed out is unknown; another session's lease is not yours.
    let mut core = core();
    let [svc, agent] = sessions(&mut core, ["service", "agent"]);

    #[track_caller]
    fn all_refused(core: &mut Core, session: SessionId, lease: LeaseId, expected: CoreError) {
        let now = 1_000_000;
        assert_eq!(core.release(session, lease, now).unwrap_err(), expected);
        assert_eq!(core.keep_alive(session, lease, now).unwrap_err(), expected);
        assert_eq!(
            core.report_progress(session, lease, progress(1, 2, ""), now)
                .unwrap_err(),
            expected
        );
        assert_eq!(core.cancel(session, lease, now).unwrap_err(), expected);
    }

    let released = holds_ex(&mut core, svc, "a", 0);
    release(&mut core, svc, released, 10);
    let ended = |lease, ending| CoreError::Ended { lease, ending };
    all_refused(&mut core, svc, released, ended(released, Ending::Released));
    // Also for someone else: an ended lease is ended, whoever asks.
    all_refused(
        &mut core,
        agent,
        released,
        ended(released, Ending::Released),
    );

    let mut req = request("b", Mode::Exclusive);
    req.ttl_ms = 100;
    let expired = expect_granted(&acquire(&mut core, svc, req, 0).0).lease_id;
    core.expire(100);
    all_refused(&mut core, svc, expired, ended(expired, Ending::Expired));

    let holder = holds_ex(&mut core, svc, "c", 0);
    let cancelled = lease_of(&acquire_ex(&mut core, agent, "c", 0));
    core.cancel(agent, cancelled, 1).unwrap();
    all_refused(
        &mut core,
        agent,
        cancelled,
        ended(cancelled, Ending::Cancelled),
    );

    let mut req = request("c", Mode::Exclusive);
    req.max_wait_ms = 100;
    let timed_out = lease_of(&acquire(&mut core, agent, req, 0).0);
    core.expire(100);
    all_refused(
        &mut core,
        agent,
        timed_out,
        ended(timed_out, Ending::TimedOut),
    );

    let leaver = connect(&mut core, "leaver");
    let disconnected = holds_ex(&mut core, leaver, "d", 0);
    core.goodbye(leaver, 1);
    all_refused(
        &mut core,
        agent,
        disconnected,
        ended(disconnected, Ending::Disconnected),
    );

    all_refused(
        &mut core,
        svc,
        LeaseId(999_999),
        CoreError::UnknownLease(LeaseId(999_999)),
    );

    // Someone else's live lease, held or queued, is refused and untouched.
    let queued = lease_of(&acquire_ex(&mut core, svc, "c", 2));
    all_refused(&mut core, agent, holder, CoreError::NotOwner(holder));
    all_refused(&mut core, agent, queued, CoreError::NotOwner(queued));
    assert_eq!(holders(&core, "c"), vec![holder]);
    assert_eq!(waiters(&core, "c"), vec![queued]);
}

#[test]
fn cancel_is_for_waiters_and_release_works_on_both() {
    // Cancelling a granted lease is refused and keeps it; releasing a queued
    // request takes it out of the queue like a cancel.
    let mut core = core();
    let [svc, agent, third] = sessions(&mut core, ["service", "agent", "third"]);
    let held = holds_ex(&mut core, svc, "pcm", 0);
    assert!(matches!(
        core.cancel(svc, held, 1),
        Err(CoreError::WrongState(_))
    ));
    assert_eq!(holders(&core, "pcm"), vec![held]);

    let waiting = waits_ex(&mut core, agent, "pcm", 2, 1);
    let behind = waits_ex(&mut core, third, "pcm", 3, 2);
    let changes = release(&mut core, agent, waiting, 4);
    assert!(granted(&changes).is_empty());
    assert_eq!(event_kinds(&changes), Vec::<EventKind>::new());
    assert_eq!(positions(&queued(&changes)), vec![(behind, 1)]);
    assert_eq!(waiters(&core, "pcm"), vec![behind]);
    assert_eq!(
        core.release(agent, waiting, 5).unwrap_err(),
        CoreError::Ended {
            lease: waiting,
            ending: Ending::Cancelled
        }
    );
    let changes = release(&mut core, svc, held, 6);
    assert_eq!(ids(&granted(&changes)), vec![behind]);
}

#[test]
fn no_wait_is_busy_or_granted_at_once() {
    // NO_WAIT on a busy resource names the holder and its purpose and leaves
    // no trace; on a free one it is an ordinary grant.
    let mut core = core();
    let [svc, agent] = sessions(&mut core, ["service", "agent"]);
    let mut req = request("pcm", Mode::Exclusive);
    req.purpose = "job 42".into();
    let held = expect_granted(&acquire(&mut core, svc, req, 0).0).lease_id;
    let revision = core.revision();

    let mut req = request("pcm", Mode::Shared);
    req.wait = WaitPolicy::NoWait;
    match core.acquire(agent, req.clone(), 1) {
        Err(CoreError::Busy { resource, holder }) => {
            assert_eq!(resource, "pcm");
            assert!(holder.contains("service"), "{holder}");
            assert!(holder.contains("job 42"), "{holder}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(waiters(&core, "pcm").is_empty());
    assert_eq!(core.revision(), revision, "a refusal is not a state change");

    release(&mut core, svc, held, 2);
    let (outcome, changes) = acquire(&mut core, agent, req.clone(), 3);
    expect_granted(&outcome);
    assert!(lease_updates(&changes).is_empty(), "the grant is the reply");
    // SHARED beside SHARED with nobody waiting is free too.
    expect_granted(&acquire(&mut core, svc, req, 4).0);
    assert_eq!(holders(&core, "pcm").len(), 2);
}

#[test]
fn ttl_and_names_are_bounded() {
    // TTL 0 means the default 15 s; 100 ms to 1 hour is accepted; names are
    // 1 to 255 bytes without control characters.
    let mut core = core();
    let svc = connect(&mut core, "service");
    let grant = expect_granted(&acquire_ex(&mut core, svc, "default", 1000));
    assert_eq!(grant.ttl_ms, 15_000);
    assert_eq!(
        core.status(&["default".to_string()]).resources[0].holders[0].expires_at,
        Some(16_000)
    );
    for (ttl, ok) in [
        (99, false),
        (100, true),
        (3_600_000, true),
        (3_600_001, false),
    ] {
        let mut req = request(&format!("ttl-{ttl}"), Mode::Exclusive);
        req.ttl_ms = ttl;
        match core.acquire(svc, req, 0) {
            Ok((outcome, _)) => {
                assert!(ok, "ttl {ttl} accepted");
                assert_eq!(expect_granted(&outcome).ttl_ms, ttl);
            }
            Err(e) => {
                assert!(!ok, "ttl {ttl} refused: {e}");
                assert!(matches!(e, CoreError::InvalidArgument(_)), "{e:?}");
            }
        }
    }

    let long = "x".repeat(MAX_NAME_BYTES + 1);
    for bad in ["", long.as_str(), "pcm\u{7}", "a\nb"] {
        assert!(
            matches!(
                core.acquire(svc, request(bad, Mode::Exclusive), 0),
                Err(CoreError::InvalidName {
                    what: "resource",
                    ..
                })
            ),
            "{bad:?} accepted"
        );
        assert!(matches!(
            core.watch(svc, vec![bad.to_string()], 0, 0),
            Err(CoreError::InvalidName { .. })
        ));
    }
    expect_granted(&acquire_ex(&mut core, svc, &"x".repeat(MAX_NAME_BYTES), 0));
    expect_granted(&acquire_ex(&mut core, svc, "é/ü pcm", 0));
}

#[test]
fn fencing_tokens_strictly_increase() {
    // Tokens grow with every grant, across resources, and after a restart
    // they continue above what the previous run reserved.
    let (mut core, reserve) = Core::new(CoreConfig::default(), Counters::default());
    assert_eq!(reserve.reserve_until, COUNTER_BLOCK);
    let [a, b] = sessions(&mut core, ["a", "b"]);
    let mut tokens = Vec::new();
    let first = expect_granted(&acquire_ex(&mut core, a, "x", 0));
    tokens.push(first.fencing);
    tokens.push(expect_granted(&acquire_ex(&mut core, b, "y", 0)).fencing);
    let queued = waits_sh(&mut core, b, "x", 0, 1);
    let queued2 = waits_sh(&mut core, a, "x", 0, 2);
    let changes = release(&mut core, a, first.lease_id, 1);
    let grants = granted(&changes);
    assert_eq!(ids(&grants), vec![queued, queued2]);
    tokens.extend(grants.iter().map(|g| g.fencing));
    tokens.push(expect_granted(&acquire_sh(&mut core, a, "x", 2)).fencing);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert!(tokens[0].0 >= 1);

    // A restart from the persisted reservation starts above it.
    let persisted = 5 * COUNTER_BLOCK + 7;
    let (mut core, reserve) = Core::new(
        CoreConfig::default(),
        Counters {
            reserved_until: persisted,
        },
    );
    assert_eq!(reserve.reserve_until, persisted + COUNTER_BLOCK);
    assert_eq!(core.revision().0, persisted);
    let a = connect(&mut core, "a");
    let grant = expect_granted(&acquire_ex(&mut core, a, "x", 0));
    assert!(grant.fencing.0 > persisted);
    assert!(core.revision().0 > persisted);
}

#[test]
fn the_next_block_is_asked_for_half_a_block_ahead() {
    // ReserveCounters for the next block comes once half of the current one
    // is used, long before a value past it is needed; once per block.
    let (mut core, first) = Core::new(CoreConfig::default(), Counters::default());
    let a = connect(&mut core, "a");
    // White box: pretend most of the first half is used.
    core.issuer.revision.0 = COUNTER_BLOCK / 2 - 2;
    let mut asked = Vec::new();
    for now in 0..4 {
        let lease = expect_granted(&acquire_ex(&mut core, a, "x", now)).lease_id;
        let mut changes = release(&mut core, a, lease, now);
        changes.extend(acquire(&mut core, a, request("y", Mode::Shared), now).1);
        asked.extend(changes.into_iter().filter_map(|c| match c {
            Change::ReserveCounters { reserve_until } => Some(reserve_until),
            _ => None,
        }));
    }
    assert_eq!(
        asked,
        [first.reserve_until + COUNTER_BLOCK],
        "one request per block"
    );
    assert!(
        core.revision().0 < first.reserve_until,
        "asked well before the mark"
    );
}

#[test]
fn no_fencing_token_is_handed_out_above_the_durable_reservation() {
    // When the store has not (yet) made the next block durable, the waiter
    // whose token would be past the mark stays queued; once the block is
    // stored, it is granted with a token inside it.
    let (mut core, first) = Core::new(CoreConfig::default(), Counters::default());
    let a = connect(&mut core, "a");
    let b = connect(&mut core, "b");
    let held = expect_granted(&acquire_ex(&mut core, a, "x", 0));
    // White box: the durable mark is the token just handed out.
    core.issuer.durable_until = held.fencing.0;
    let waiting = expect_queued(&acquire_ex(&mut core, b, "x", 1), 1).lease_id;
    let changes = release(&mut core, a, held.lease_id, 2);
    assert!(granted(&changes).is_empty(), "no durable token, no grant");
    assert!(core.grants_stopped());
    // A free resource is not granted either: its request queues, or is
    // refused as busy under NO_WAIT (it never queues).
    expect_queued(&acquire_ex(&mut core, a, "z", 3), 1);
    let no_wait = AcquireRequest {
        wait: WaitPolicy::NoWait,
        ..request("free", Mode::Exclusive)
    };
    match core.acquire(b, no_wait, 3) {
        Err(CoreError::Busy { holder, .. }) => assert!(holder.contains("held back"), "{holder}"),
        other => panic!("NO_WAIT while grants are held back: {other:?}"),
    }
    assert!(waiters(&core, "free").is_empty());
    let changes = core.counters_stored(first.reserve_until, 4);
    let grants = granted(&changes);
    assert_eq!(ids(&grants).len(), 2, "both held-back waiters: {changes:?}");
    assert!(grants.iter().any(|g| g.lease_id == waiting));
    assert!(
        grants
            .iter()
            .all(|g| g.fencing.0 > held.fencing.0 && g.fencing.0 <= first.reserve_until)
    );
    assert!(!core.grants_stopped());
}

#[test]
fn progress_is_pushed_to_every_waiter() {
    // A holder's progress report reaches each waiter with the holder (and
    // its progress) in `ahead`, and a wait estimate from the progress rate.
    let mut core = core();
    let [svc, a1, a2, ui] = sessions(&mut core, ["service", "agent1", "agent2", "ui"]);
    let w = core.watch(ui, vec![], 0, 0).unwrap().watch_id;
    let mut req = request("pcm", Mode::Exclusive);
    req.purpose = "job".into();
    let held = expect_granted(&acquire(&mut core, svc, req, 0).0).lease_id;
    let w1 = expect_queued(&acquire_ex(&mut core, a1, "pcm", 500), 1);
    assert_eq!(w1.ahead.len(), 1);
    assert_eq!(w1.ahead[0].lease_id, held);
    assert_eq!(w1.estimated_wait_ms, None, "nothing known yet");
    let w2 = waits_ex(&mut core, a2, "pcm", 1000, 2);
    let w1 = w1.lease_id;

    let changes = core
        .report_progress(svc, held, progress(2, 5, "copying"), 2000)
        .unwrap();
    let updates = lease_updates(&changes);
    assert_eq!(updates.len(), 2, "{updates:?}");
    assert_eq!((updates[0].0, updates[0].1), (a1, w1));
    assert_eq!((updates[1].0, updates[1].1), (a2, w2));
    let pushed = queued(&changes);
    for q in &pushed {
        assert_eq!(q.ahead[0].lease_id, held);
        assert_eq!(q.ahead[0].progress, Some(progress(2, 5, "copying")));
        assert_eq!(q.ahead[0].position, 0);
    }
    assert_eq!(pushed[0].position, 1);
    // 2 steps in 2000 ms: 3 steps left, about 3000 ms.
    assert_eq!(pushed[0].estimated_wait_ms, Some(3000));
    assert_eq!(pushed[1].position, 2);
    assert_eq!(pushed[1].ahead.len(), 2);
    assert_eq!(
        (pushed[1].ahead[1].lease_id, pushed[1].ahead[1].position),
        (w1, 1)
    );
    let events = watch_events(&changes);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, w);
    assert_eq!(events[0].1.kind, EventKind::Progress);
    assert_eq!(
        events[0].1.state.holders[0].progress,
        Some(progress(2, 5, "copying"))
    );
    // One estimate: the waiters in the watch event and in the status
    // carry the figure their owners were pushed, and holders none.
    let seen: Vec<Option<u64>> = events[0]
        .1
        .state
        .waiters
        .iter()
        .map(|w| w.estimated_wait_ms)
        .collect();
    let sent: Vec<Option<u64>> = pushed.iter().map(|q| q.estimated_wait_ms).collect();
    assert_eq!(seen, sent);
    let status = core.status_at(&["pcm".to_string()], 2000);
    let shown: Vec<Option<u64>> = status.resources[0]
        .waiters
        .iter()
        .map(|w| w.estimated_wait_ms)
        .collect();
    assert_eq!(shown, sent);
    assert_eq!(status.resources[0].holders[0].estimated_wait_ms, None);

    // Only a holder reports, and done may not exceed a known total.
    assert!(matches!(
        core.report_progress(a1, w1, progress(1, 2, ""), 2100),
        Err(CoreError::WrongState(_))
    ));
    assert!(matches!(
        core.report_progress(svc, held, progress(6, 5, ""), 2100),
        Err(CoreError::InvalidArgument(_))
    ));
    assert!(
        core.report_progress(svc, held, progress(7, 0, "?"), 2100)
            .is_ok()
    );
}

#[test]
fn wait_estimates_use_past_hold_times() {
    // Without progress, a waiter's estimate is the typical hold time left
    // for the holder plus one typical hold per waiter ahead.
    let mut core = core();
    let [svc, agent] = sessions(&mut core, ["service", "agent"]);
    let lease = holds_ex(&mut core, svc, "pcm", 0);
    release(&mut core, svc, lease, 4000);
    expect_granted(&acquire_ex(&mut core, svc, "pcm", 5000));
    let first = expect_queued(&acquire_ex(&mut core, agent, "pcm", 6000), 1);
    assert_eq!(first.estimated_wait_ms, Some(3000));
    let second = expect_queued(&acquire_ex(&mut core, agent, "pcm", 6000), 2);
    assert_eq!(second.estimated_wait_ms, Some(7000));
    // The holder overruns its typical hold: nobody knows how long it will
    // take now, and the estimate says so rather than "about 1 ms".
    let waiters = |at| -> Vec<Option<u64>> {
        core.status_at(&["pcm".to_string()], at).resources[0]
            .waiters
            .iter()
            .map(|w| w.estimated_wait_ms)
            .collect()
    };
    assert_eq!(waiters(8000), [Some(1000), Some(5000)]);
    assert_eq!(waiters(9000), [None, None]);
    assert_eq!(waiters(60_000), [None, None]);
}

#[test]
fn idle_resources_are_out_of_status_and_remember_hold_times_for_a_while() {
    // A resource nobody uses is not in the status; its typical hold time
    // outlives it for the last REMEMBERED_HOLD_TIMES resources to become
    // idle, and no longer.
    let mut core = core();
    let [svc, agent] = sessions(&mut core, ["service", "agent"]);
    let lease = holds_ex(&mut core, svc, "pcm", 0);
    release(&mut core, svc, lease, 4000);
    assert!(core.status_at(&[], 4000).resources.is_empty());
    let shown = core.status_at(&["pcm".to_string()], 4000);
    assert!(shown.resources[0].holders.is_empty());
    let held = expect_granted(&acquire_ex(&mut core, svc, "pcm", 5000));
    let first = expect_queued(&acquire_ex(&mut core, agent, "pcm", 6000), 1);
    assert_eq!(first.estimated_wait_ms, Some(3000), "remembered");
    // `pcm` is idle again; as many others become idle after it.
    core.goodbye(agent, 7000);
    release(&mut core, svc, held.lease_id, 7000);
    for i in 0..REMEMBERED_HOLD_TIMES {
        let l = holds_ex(&mut core, svc, &format!("other-{i}"), 7000);
        release(&mut core, svc, l, 7010);
    }
    assert!(core.status_at(&[], 7010).resources.is_empty());
    let agent = connect(&mut core, "agent");
    expect_granted(&acquire_ex(&mut core, svc, "pcm", 8000));
    let first = expect_queued(&acquire_ex(&mut core, agent, "pcm", 9000), 1);
    assert_eq!(first.estimated_wait_ms, None, "forgotten");
}

#[test]
fn lease_quota_per_session() {
    // A session holds or queues at most `max_leases_per_session` leases; one
    // that ends frees a place, and a refused request takes none.
    let mut core = core_with(CoreConfig {
        max_leases_per_session: 2,
        ..CoreConfig::default()
    });
    let [svc, other] = sessions(&mut core, ["service", "other"]);
    let held = holds_ex(&mut core, svc, "a", 0);
    expect_granted(&acquire_ex(&mut core, other, "b", 0));
    let mut busy = request("b", Mode::Exclusive);
    busy.wait = WaitPolicy::NoWait;
    assert!(matches!(
        core.acquire(svc, busy, 0),
        Err(CoreError::Busy { .. })
    ));
    expect_queued(&acquire_ex(&mut core, svc, "b", 0), 1);
    assert_eq!(
        core.acquire(svc, request("c", Mode::Exclusive), 0)
            .unwrap_err(),
        CoreError::Quota {
            what: "leases",
            limit: 2
        }
    );
    release(&mut core, svc, held, 1);
    expect_granted(&acquire_ex(&mut core, svc, "c", 2));
}

#[test]
fn a_huge_progress_total_does_not_overflow_the_estimate() {
    // A holder kept alive for months that reports 1 of u32::MAX steps gives
    // a saturated estimate, not an arithmetic overflow.
    let mut core = core();
    let [svc, agent] = sessions(&mut core, ["service", "agent"]);
    let mut req = request("pcm", Mode::Exclusive);
    req.ttl_ms = 3_600_000;
    let held = expect_granted(&acquire(&mut core, svc, req, 0).0).lease_id;
    let mut now = 0;
    for _ in 0..2_800 {
        now += 3_500_000;
        assert!(core.expire(now).is_empty());
        core.keep_alive(svc, held, now).unwrap();
    }
    core.report_progress(svc, held, progress(1, u32::MAX, ""), now)
        .unwrap();
    let queued = expect_queued(&acquire_ex(&mut core, agent, "pcm", now), 1);
    assert_eq!(queued.estimated_wait_ms, Some(u64::MAX));
}

#[test]
fn waiters_per_uid_are_bounded_over_all_its_sessions() {
    // One uid queues at most `max_waiters_per_uid` requests, whatever the
    // number of its connections; a grant frees a place; being granted at
    // once takes none; root is not bound.
    let mut core = core_with(CoreConfig {
        max_waiters_per_uid: 2,
        ..CoreConfig::default()
    });
    let svc = core.connect("service".into(), 0, 1).session;
    let a = connect(&mut core, "a");
    let b = connect(&mut core, "b");
    let held = expect_granted(&acquire_ex(&mut core, svc, "pcm", 0)).lease_id;
    expect_queued(&acquire_ex(&mut core, a, "pcm", 0), 1);
    expect_queued(&acquire_ex(&mut core, b, "pcm", 0), 2);
    assert_eq!(
        core.acquire(b, request("pcm", Mode::Exclusive), 0)
            .unwrap_err(),
        CoreError::UserWaiters {
            uid: 1000,
            limit: 2
        }
    );
    expect_granted(&acquire_ex(&mut core, b, "free", 0));
    expect_queued(&acquire_ex(&mut core, svc, "pcm", 0), 3);
    release(&mut core, svc, held, 1);
    expect_queued(&acquire_ex(&mut core, b, "pcm", 0), 3);
}

#[test]
fn leases_per_uid_are_bounded_over_all_its_sessions() {
    // One uid has at most `max_leases_per_uid` leases, held or queued,
    // whatever the number of its connections; an end frees a place, a
    // disconnect frees all of its session's; root is not bound.
    let mut core = core_with(CoreConfig {
        max_leases_per_uid: 3,
        ..CoreConfig::default()
    });
    let svc = core.connect("service".into(), 0, 1).session;
    let a = connect(&mut core, "a");
    let b = connect(&mut core, "b");
    let first = expect_granted(&acquire_ex(&mut core, a, "r1", 0)).lease_id;
    expect_granted(&acquire_ex(&mut core, b, "r2", 0));
    expect_granted(&acquire_ex(&mut core, svc, "busy", 0));
    expect_queued(&acquire_ex(&mut core, b, "busy", 0), 1);
    let full = CoreError::UserLeases {
        uid: 1000,
        limit: 3,
    };
    assert_eq!(
        core.acquire(a, request("r4", Mode::Exclusive), 0)
            .unwrap_err(),
        full
    );
    for i in 0..5 {
        expect_granted(&acquire_ex(&mut core, svc, &format!("root{i}"), 0));
    }
    release(&mut core, a, first, 1);
    expect_granted(&acquire_ex(&mut core, a, "r4", 1));
    assert_eq!(
        core.acquire(a, request("r5", Mode::Exclusive), 1)
            .unwrap_err(),
        full
    );
    core.goodbye(b, 2);
    expect_granted(&acquire_ex(&mut core, a, "r5", 2));
    expect_granted(&acquire_ex(&mut core, a, "r6", 2));
}

/// The history lines the core gathered: (lease, kind, granted at, ended at).
fn ended(core: &mut Core) -> Vec<(LeaseId, EventKind, Option<Millis>, Millis)> {
    let mut lines = Vec::new();
    core.each_ended(|e| lines.push((e.lease.lease_id, e.kind, e.lease.granted_at, e.at)));
    lines
}

#[test]
fn every_end_is_one_history_line_whether_watched_or_not() {
    // Nobody watches, yet each end leaves exactly one `Ended` with its
    // kind and times: a release, a cancel, a time-out (as CANCELLED), an
    // expiry and a disconnect, held or queued.
    let mut core = core();
    let [a, b] = sessions(&mut core, ["a", "b"]);
    let held = holds_ex(&mut core, a, "pcm", 0);
    let waiting = waits_ex(&mut core, b, "pcm", 10, 1);
    assert!(ended(&mut core).is_empty(), "nothing ended yet");
    core.cancel(b, waiting, 20).unwrap();
    assert_eq!(
        ended(&mut core),
        vec![(waiting, EventKind::Cancelled, None, 20)]
    );
    let (outcome, _) = acquire(
        &mut core,
        b,
        AcquireRequest {
            max_wait_ms: 100,
            ..request("pcm", Mode::Exclusive)
        },
        30,
    );
    let timed_out = lease_of(&outcome);
    core.expire(130);
    assert_eq!(
        ended(&mut core),
        vec![(timed_out, EventKind::Cancelled, None, 130)]
    );
    release(&mut core, a, held, 200);
    assert_eq!(
        ended(&mut core),
        vec![(held, EventKind::Released, Some(0), 200)]
    );
    let hung = holds_ex(&mut core, a, "pcm", 300);
    let ttl = u64::from(core.config().default_ttl_ms);
    core.expire(300 + ttl);
    assert_eq!(
        ended(&mut core),
        vec![(hung, EventKind::Expired, Some(300), 300 + ttl)]
    );
    let gone = holds_ex(&mut core, b, "pcm", 400_000);
    let queued = waits_ex(&mut core, b, "pcm", 400_001, 1);
    core.goodbye(b, 400_002);
    let mut lines = ended(&mut core);
    lines.sort_by_key(|l| l.0);
    assert_eq!(
        lines,
        vec![
            (gone, EventKind::Disconnected, Some(400_000), 400_002),
            (queued, EventKind::Disconnected, None, 400_002)
        ]
    );
}
