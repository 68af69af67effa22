//! Stalled: a holder that keeps its lease alive but reports no progress
//! for `stall_after_ms` is stuck, told apart from dead and hung.

use super::*;
use crate::core::Progress;

fn stalled(core: &Core, resource: &str) -> bool {
    core.status(&[resource.to_string()]).resources[0].holders[0].stalled
}

#[test]
fn stall_then_progress_clears_it() {
    // S = 2 s: kept alive but silent, the job is stalled at 2 s (watchers
    // STALLED, the waiter a fresh Queued showing it); its next progress
    // report clears it (PROGRESS) and the clock starts again.
    let mut core = core();
    let job = connect(&mut core, "job");
    let agent = connect(&mut core, "agent");
    let watcher = connect(&mut core, "ui");
    core.watch(watcher, vec!["pcm".into()], 0, 0).unwrap();
    let req = AcquireRequest {
        stall_after_ms: 2000,
        ..request("pcm", Mode::Exclusive)
    };
    let j = expect_granted(&acquire(&mut core, job, req, 0).0).lease_id;
    expect_queued(&acquire_sh(&mut core, agent, "pcm", 10), 1);
    core.keep_alive(job, j, 1000).unwrap();
    assert!(core.expire(1999).is_empty());
    let changes = core.expire(2000);
    assert_eq!(event_kinds(&changes), vec![EventKind::Stalled]);
    let q = queued(&changes);
    assert_eq!(q.len(), 1);
    assert!(q[0].ahead[0].stalled, "the waiter sees the holder is stuck");
    assert!(stalled(&core, "pcm"));

    let changes = core
        .report_progress(
            job,
            j,
            Progress {
                done: 1,
                total: 3,
                message: "copying".into(),
            },
            3000,
        )
        .unwrap();
    assert_eq!(event_kinds(&changes), vec![EventKind::Progress]);
    assert!(!stalled(&core, "pcm"));
    // Stalled again 2 s after that report, not before.
    let changes = core.expire(4999);
    assert!(!event_kinds(&changes).contains(&EventKind::Stalled));
    let changes = core.expire(5000);
    assert!(event_kinds(&changes).contains(&EventKind::Stalled));
}

#[test]
fn stalled_is_reported_once_and_revokes_nothing() {
    let mut core = core();
    let job = connect(&mut core, "job");
    let watcher = connect(&mut core, "ui");
    core.watch(watcher, vec!["pcm".into()], 0, 0).unwrap();
    let req = AcquireRequest {
        stall_after_ms: 1000,
        ttl_ms: 60_000,
        ..request("pcm", Mode::Exclusive)
    };
    let j = expect_granted(&acquire(&mut core, job, req, 0).0).lease_id;
    assert_eq!(event_kinds(&core.expire(1000)), vec![EventKind::Stalled]);
    core.keep_alive(job, j, 30_000).unwrap();
    assert!(!event_kinds(&core.expire(50_000)).contains(&EventKind::Stalled));
    assert_eq!(holders(&core, "pcm"), vec![j]);
}

#[test]
fn without_stall_after_nobody_is_ever_stalled() {
    let mut core = core();
    let job = connect(&mut core, "job");
    expect_granted(&acquire_ex(&mut core, job, "pcm", 0));
    assert_eq!(core.next_deadline(), Some(15_000), "only the TTL");
}
