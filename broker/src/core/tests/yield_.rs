//! Yield and revoke: asking the holders to make way, a holder declining,
//! and a revoke that takes the lease when `within_ms` runs out.

use super::*;
use crate::core::{CoreError, LostReason};

/// The yield requests among `changes`: (session told, lease).
fn yield_requests(changes: &[Change]) -> Vec<(SessionId, LeaseId)> {
    lease_updates(changes)
        .into_iter()
        .filter(|(_, _, u)| matches!(u, LeaseUpdate::YieldRequested(_)))
        .map(|(s, l, _)| (s, l))
        .collect()
}

#[test]
fn yield_then_decline() {
    // The user asks the job to make way: the holder is told, watchers see
    // YIELD_REQUESTED naming the requester; the job declines with a reason
    // and keeps its lease: watchers see YIELD_DECLINED with it.
    let mut core = core();
    let job = connect(&mut core, "job");
    let user = connect(&mut core, "user");
    let watcher = connect(&mut core, "ui");
    core.watch(watcher, vec!["pcm".into()], 0, 0).unwrap();
    let j = expect_granted(&acquire_ex(&mut core, job, "pcm", 0)).lease_id;
    let (asked, changes) = core
        .request_yield(user, "pcm", 30_000, "Install now clicked", false, 10)
        .unwrap();
    assert_eq!(asked, 1);
    assert_eq!(yield_requests(&changes), vec![(job, j)]);
    let events = watch_events(&changes);
    assert_eq!(events[0].1.kind, EventKind::YieldRequested);
    let detail = events[0].1.cause.to_string();
    assert!(
        detail.contains("user") && detail.contains("Install now clicked"),
        "{detail}"
    );

    let changes = core
        .decline_yield(job, j, "copying, 2 minutes left", 20)
        .unwrap();
    let events = watch_events(&changes);
    assert_eq!(events[0].1.kind, EventKind::YieldDeclined);
    assert!(events[0].1.cause.to_string().contains("2 minutes left"));
    assert!(core.expire(14_000).iter().all(|c| !matches!(
        c,
        Change::Lease {
            update: LeaseUpdate::Lost { .. },
            ..
        }
    )));
    assert_eq!(
        holders(&core, "pcm"),
        vec![j],
        "without revoke nothing is taken"
    );
}

#[test]
fn yield_with_revoke_grants_the_next_in_line_with_a_higher_token() {
    // A revoke within 5 s: the holder keeps the lease until then, then
    // loses it with LOST_REASON_REVOKED naming the requester, watchers see
    // REVOKED, and the next in line is granted with a higher token.
    let mut core = core();
    let job = connect(&mut core, "job");
    let agent = connect(&mut core, "agent");
    let admin = connect(&mut core, "admin");
    let watcher = connect(&mut core, "ui");
    core.watch(watcher, vec!["pcm".into()], 0, 0).unwrap();
    let j = expect_granted(&acquire_ex(&mut core, job, "pcm", 0));
    let w = expect_queued(&acquire_ex(&mut core, agent, "pcm", 1), 1).lease_id;
    core.request_yield(admin, "pcm", 5000, "maintenance", true, 100)
        .unwrap();
    // Kept alive meanwhile: the revoke still comes.
    core.keep_alive(job, j.lease_id, 4000).unwrap();
    assert!(core.expire(5099).is_empty());
    let changes = core.expire(5100);
    let lost: Vec<_> = lease_updates(&changes)
        .into_iter()
        .filter_map(|(s, l, u)| match u {
            LeaseUpdate::Lost { reason, detail } => Some((s, l, *reason, detail.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(
        (lost[0].0, lost[0].1, lost[0].2),
        (job, j.lease_id, LostReason::Revoked)
    );
    assert!(
        lost[0].3.contains("admin") && lost[0].3.contains("maintenance"),
        "{}",
        lost[0].3
    );
    assert_eq!(
        event_kinds(&changes),
        vec![EventKind::Revoked, EventKind::Granted]
    );
    let g = granted(&changes);
    assert_eq!(g[0].lease_id, w);
    assert!(g[0].fencing > j.fencing);
    assert!(matches!(
        core.release(job, j.lease_id, 5200).unwrap_err(),
        CoreError::Ended { .. }
    ));
}

#[test]
fn a_holder_that_makes_way_in_time_is_not_revoked() {
    // The holder releases before within_ms; the revoke does not touch the
    // next holder.
    let mut core = core();
    let job = connect(&mut core, "job");
    let agent = connect(&mut core, "agent");
    let admin = connect(&mut core, "admin");
    let j = expect_granted(&acquire_ex(&mut core, job, "pcm", 0)).lease_id;
    let w = expect_queued(&acquire_ex(&mut core, agent, "pcm", 1), 1).lease_id;
    core.request_yield(admin, "pcm", 5000, "", true, 100)
        .unwrap();
    release(&mut core, job, j, 2000);
    assert!(core.expire(10_000).is_empty());
    assert_eq!(holders(&core, "pcm"), vec![w]);
}

#[test]
fn revoke_within_zero_takes_every_holder_at_once() {
    let mut core = core();
    let a = connect(&mut core, "a");
    let b = connect(&mut core, "b");
    let admin = connect(&mut core, "admin");
    let w = connect(&mut core, "w");
    acquire_sh(&mut core, a, "pcm", 0);
    acquire_sh(&mut core, b, "pcm", 0);
    let e = expect_queued(&acquire_ex(&mut core, w, "pcm", 0), 1).lease_id;
    let (asked, changes) = core.request_yield(admin, "pcm", 0, "now", true, 5).unwrap();
    assert_eq!(asked, 2, "both shared holders were asked (and revoked)");
    assert_eq!(
        granted(&changes)
            .iter()
            .map(|g| g.lease_id)
            .collect::<Vec<_>>(),
        vec![e]
    );
    assert_eq!(holders(&core, "pcm"), vec![e]);
}

#[test]
fn yield_on_a_free_resource_asks_nobody() {
    let mut core = core();
    let a = connect(&mut core, "a");
    let (asked, changes) = core.request_yield(a, "pcm", 0, "", true, 0).unwrap();
    assert_eq!(asked, 0);
    assert!(changes.is_empty());
}

#[test]
fn only_a_holder_declines() {
    let mut core = core();
    let a = connect(&mut core, "a");
    let b = connect(&mut core, "b");
    acquire_ex(&mut core, a, "pcm", 0);
    let q = expect_queued(&acquire_ex(&mut core, b, "pcm", 0), 1).lease_id;
    assert!(core.decline_yield(b, q, "no", 1).is_err());
    assert!(core.decline_yield(a, q, "no", 1).is_err(), "not its lease");
}
