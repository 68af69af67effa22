//! Watches: live events, resource filters, resuming from a revision,
//! resync when history is gone, heartbeats and the watch quota.

use super::*;
use crate::core::{CoreError, Revision};

/// The state events `changes` delivered to `watch`, in order.
fn events_for(changes: &[Change], watch: WatchId) -> Vec<Arc<StateEvent>> {
    watch_events(changes)
        .into_iter()
        .filter(|(w, _)| *w == watch)
        .map(|(_, e)| e)
        .collect()
}

#[test]
fn watch_all_sees_every_state_event_in_revision_order() {
    // A watch on everything gets one event per state change, with strictly
    // increasing revisions and the resource's whole new state.
    let mut core = core();
    let ui = connect(&mut core, "ui");
    let svc = connect(&mut core, "service");
    let agent = connect(&mut core, "agent");
    let start = core.watch(ui, vec![], 0, 0).unwrap();
    assert!(!start.resync);
    assert!(start.replay.is_empty());
    assert!(start.snapshot.is_empty());
    let w = start.watch_id;

    let mut seen: Vec<Arc<StateEvent>> = Vec::new();
    let mut step = |changes: Vec<Change>, kinds: &[EventKind]| {
        let events = events_for(&changes, w);
        assert_eq!(
            events.iter().map(|e| e.kind).collect::<Vec<_>>(),
            kinds,
            "{changes:?}"
        );
        seen.extend(events);
    };
    let mut req = request("pcm", Mode::Exclusive);
    req.ttl_ms = 1000;
    let (outcome, changes) = acquire(&mut core, svc, req, 0);
    let held = lease_of(&outcome);
    step(changes, &[EventKind::Granted]);
    let (outcome, changes) = acquire(&mut core, agent, request("pcm", Mode::Shared), 1);
    let waiting = lease_of(&outcome);
    step(changes, &[EventKind::Queued]);
    let (outcome, changes) = acquire(&mut core, agent, request("other", Mode::Shared), 1);
    let other = lease_of(&outcome);
    step(changes, &[EventKind::Granted]);
    step(
        core.report_progress(svc, held, Default::default(), 2)
            .unwrap(),
        &[EventKind::Progress],
    );
    step(core.expire(1000), &[EventKind::Expired, EventKind::Granted]);
    let (outcome, changes) = acquire(&mut core, svc, request("pcm", Mode::Exclusive), 1001);
    let queued = lease_of(&outcome);
    step(changes, &[EventKind::Queued]);
    step(
        core.cancel(svc, queued, 1002).unwrap(),
        &[EventKind::Cancelled],
    );
    step(
        release(&mut core, agent, other, 1003),
        &[EventKind::Released],
    );
    step(core.goodbye(agent, 1004), &[EventKind::Disconnected]);

    let revisions: Vec<u64> = seen.iter().map(|e| e.revision.0).collect();
    assert!(revisions.windows(2).all(|r| r[0] < r[1]), "{revisions:?}");
    assert_eq!(seen.last().unwrap().revision, core.revision());
    // Each event carries the state right after its change.
    let expired = &seen[4];
    assert_eq!(expired.state.resource.as_ref(), "pcm");
    assert!(expired.state.holders.is_empty());
    assert_eq!(expired.state.waiters[0].lease_id, waiting);
    assert!(
        expired.cause.to_string().contains(&held.to_string()),
        "{}",
        expired.cause
    );
    let granted = &seen[5];
    assert_eq!(granted.state.holders[0].lease_id, waiting);
    assert_eq!(granted.state.revision, granted.revision);
    assert!(seen[8].state.holders.is_empty() && seen[8].state.waiters.is_empty());
}

#[test]
fn a_watch_on_named_resources_ignores_the_others() {
    // watch(["a"]) sees changes of "a" only; watch(all) sees both.
    let mut core = core();
    let ui = connect(&mut core, "ui");
    let svc = connect(&mut core, "service");
    let only_a = core.watch(ui, vec!["a".into()], 0, 0).unwrap().watch_id;
    let all = core.watch(ui, vec![], 0, 0).unwrap().watch_id;
    let (_, changes) = acquire(&mut core, svc, request("b", Mode::Exclusive), 0);
    assert!(events_for(&changes, only_a).is_empty());
    assert_eq!(events_for(&changes, all).len(), 1);
    let (_, changes) = acquire(&mut core, svc, request("a", Mode::Exclusive), 0);
    let events = events_for(&changes, only_a);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state.resource.as_ref(), "a");
    assert!(
        changes
            .iter()
            .all(|c| matches!(c, Change::Watch { session, .. } if *session == ui))
    );
}

#[test]
fn a_resumed_watch_replays_exactly_what_came_after() {
    // Resuming from revision r replays the events after r (of the watched
    // resources), in order, without a snapshot.
    let mut core = core();
    let ui = connect(&mut core, "ui");
    let svc = connect(&mut core, "service");
    let live = core.watch(ui, vec![], 0, 0).unwrap().watch_id;
    let mut history: Vec<Arc<StateEvent>> = Vec::new();
    for (i, name) in ["a", "b", "a"].into_iter().enumerate() {
        let (_, changes) = acquire(&mut core, svc, request(name, Mode::Shared), i as u64);
        history.extend(events_for(&changes, live));
    }
    let r = core.revision();
    for (i, name) in ["b", "a", "a", "b"].into_iter().enumerate() {
        let (_, changes) = acquire(&mut core, svc, request(name, Mode::Shared), 10 + i as u64);
        history.extend(events_for(&changes, live));
    }
    let after_r: Vec<Arc<StateEvent>> =
        history.iter().filter(|e| e.revision > r).cloned().collect();
    assert_eq!(after_r.len(), 4);

    let resumed = core.watch(ui, vec![], r.0, 20).unwrap();
    assert!(!resumed.resync);
    assert!(resumed.snapshot.is_empty());
    assert_eq!(resumed.revision, core.revision());
    assert_eq!(resumed.replay, after_r);

    let resumed_a = core.watch(ui, vec!["a".into()], r.0, 20).unwrap();
    let only_a: Vec<_> = after_r
        .iter()
        .filter(|e| e.state.resource.as_ref() == "a")
        .cloned()
        .collect();
    assert_eq!(only_a.len(), 2);
    assert_eq!(resumed_a.replay, only_a);

    // Resuming from the current revision replays nothing.
    let up_to_date = core.watch(ui, vec![], core.revision().0, 20).unwrap();
    assert!(!up_to_date.resync);
    assert!(up_to_date.replay.is_empty());

    // A resumed watch then goes on live.
    let (_, changes) = acquire(&mut core, svc, request("a", Mode::Shared), 30);
    assert_eq!(events_for(&changes, resumed_a.watch_id).len(), 1);
}

#[test]
fn a_revision_older_than_the_history_gets_a_resync() {
    // With 4 events of history, resuming from before them gets a snapshot
    // marked resync (never a silent gap); from inside them, a replay.
    let mut core = core_with(CoreConfig {
        watch_history: 4,
        ..CoreConfig::default()
    });
    let ui = connect(&mut core, "ui");
    let svc = connect(&mut core, "service");
    // Someone watches, so the history records.
    core.watch(ui, vec!["z".into()], 0, 0).unwrap();
    let base = core.revision().0;
    let mut leases = Vec::new();
    for i in 0..10u64 {
        let name = if i % 2 == 0 { "a" } else { "b" };
        leases.push(lease_of(&acquire_sh(&mut core, svc, name, i)));
    }
    assert_eq!(core.revision().0, base + 10);

    let too_old = core.watch(ui, vec![], base + 1, 10).unwrap();
    assert!(too_old.resync);
    assert!(too_old.replay.is_empty());
    assert_eq!(too_old.revision, core.revision());
    assert_eq!(too_old.snapshot, core.status(&[]).resources);
    assert_eq!(too_old.snapshot.len(), 2);

    let just_too_old = core.watch(ui, vec!["a".into()], base + 5, 10).unwrap();
    assert!(just_too_old.resync);
    assert_eq!(
        just_too_old.snapshot,
        core.status(&["a".to_string()]).resources
    );

    let oldest_kept = core.watch(ui, vec![], base + 6, 10).unwrap();
    assert!(!oldest_kept.resync);
    let replayed: Vec<Revision> = oldest_kept.replay.iter().map(|e| e.revision).collect();
    assert_eq!(
        replayed,
        (base + 7..=base + 10).map(Revision).collect::<Vec<_>>()
    );

    // A revision from the future (another run's) is not trusted either.
    let future = core.watch(ui, vec![], base + 1000, 10).unwrap();
    assert!(future.resync);
}

#[test]
fn quiet_watches_get_heartbeats() {
    // With heartbeat_ms 1000, a watch that got nothing for 1000 ms gets a
    // HEARTBEAT; one that got an event meanwhile waits for its own turn.
    let mut core = core_with(CoreConfig {
        heartbeat_ms: 1000,
        ..CoreConfig::default()
    });
    let ui = connect(&mut core, "ui");
    let svc = connect(&mut core, "service");
    let quiet = core.watch(ui, vec!["q".into()], 0, 0).unwrap().watch_id;
    let busy = core.watch(ui, vec!["b".into()], 0, 0).unwrap().watch_id;
    assert_eq!(core.next_deadline(), Some(1000));
    let (_, changes) = acquire(&mut core, svc, request("b", Mode::Exclusive), 500);
    assert_eq!(events_for(&changes, busy).len(), 1);

    assert!(core.expire(999).is_empty());
    let changes = core.expire(1000);
    let beats = watch_events(&changes);
    assert_eq!(beats.len(), 1, "{changes:?}");
    assert_eq!(beats[0].0, quiet);
    assert_eq!(beats[0].1.kind, EventKind::Heartbeat);
    assert_eq!(beats[0].1.revision, core.revision());
    assert_eq!(core.next_deadline(), Some(1500));

    let changes = core.expire(1500);
    let beats = watch_events(&changes);
    assert_eq!(beats.len(), 1, "{changes:?}");
    assert_eq!(beats[0].0, busy);
    assert_eq!(core.next_deadline(), Some(2000));
    let revision = core.revision();
    let changes = core.expire(2000);
    assert_eq!(events_for(&changes, quiet).len(), 1);
    assert_eq!(
        core.revision(),
        revision,
        "a heartbeat is not a state change"
    );

    // Once the watches are gone the heartbeats stop.
    core.goodbye(ui, 2100);
    assert!(watch_events(&core.expire(3000)).is_empty());
    assert_eq!(core.next_deadline(), Some(500 + 15_000));

    // heartbeat_ms 0 means never.
    let mut core = core_with(CoreConfig {
        heartbeat_ms: 0,
        ..CoreConfig::default()
    });
    let ui = connect(&mut core, "ui");
    core.watch(ui, vec![], 0, 0).unwrap();
    assert_eq!(core.next_deadline(), None);
}

#[test]
fn watch_quota_and_unwatch() {
    // A session has at most `max_watches_per_session` watches; unwatch frees
    // a place and stops the events; goodbye drops them all.
    let mut core = core_with(CoreConfig {
        max_watches_per_session: 1,
        ..CoreConfig::default()
    });
    let ui = connect(&mut core, "ui");
    let svc = connect(&mut core, "service");
    let w = core.watch(ui, vec![], 0, 0).unwrap().watch_id;
    assert_eq!(
        core.watch(ui, vec!["a".into()], 0, 0).unwrap_err(),
        CoreError::Quota {
            what: "watches",
            limit: 1
        }
    );
    assert_eq!(core.unwatch(svc, w), Err(CoreError::UnknownWatch(w)));
    assert_eq!(core.unwatch(ui, w), Ok(()));
    assert_eq!(core.unwatch(ui, w), Err(CoreError::UnknownWatch(w)));
    let (_, changes) = acquire(&mut core, svc, request("a", Mode::Exclusive), 0);
    assert!(watch_events(&changes).is_empty());

    let w2 = core.watch(ui, vec!["a".into()], 0, 0).unwrap();
    assert_eq!(w2.snapshot, core.status(&["a".to_string()]).resources);
    assert_ne!(w2.watch_id, w);
    core.goodbye(ui, 1);
    let (_, changes) = acquire(&mut core, svc, request("a", Mode::Shared), 2);
    assert!(watch_events(&changes).is_empty());
}

#[test]
fn history_is_kept_while_someone_watches_and_for_a_while_after() {
    // With nobody watching, changes keep no history: a resume gets a
    // resync. While someone watches, and for HISTORY_LINGER_MS after the
    // last watcher left, the history records and a resume replays.
    let mut core = core_with(CoreConfig::default());
    let ui = connect(&mut core, "ui");
    let svc = connect(&mut core, "service");
    acquire_sh(&mut core, svc, "a", 0);
    let before = core.revision().0;
    acquire_sh(&mut core, svc, "a", 1);
    let first = core.watch(ui, vec![], before, 2).unwrap();
    assert!(first.resync);
    core.unwatch(ui, first.watch_id).unwrap();

    let other = connect(&mut core, "other-ui");
    let w = core.watch(other, vec![], 0, 3).unwrap().watch_id;
    let from = core.revision().0;
    acquire_sh(&mut core, svc, "a", 4);
    core.unwatch(other, w).unwrap();
    // The last watcher left; changes within the linger are still recorded.
    let linger = crate::core::watch::HISTORY_LINGER_MS;
    acquire_sh(&mut core, svc, "a", 4 + linger - 10);
    let resumed = core.watch(ui, vec![], from, 4 + linger - 5).unwrap();
    assert!(!resumed.resync);
    assert_eq!(resumed.replay.len(), 2);
    core.unwatch(ui, resumed.watch_id).unwrap();
    // Long after the last watcher left, changes are no longer recorded (the
    // linger counts from the first change after the last watch went).
    acquire_sh(&mut core, svc, "a", 4 + 2 * linger);
    let later = core.revision().0;
    acquire_sh(&mut core, svc, "a", 4 + 3 * linger + 1);
    assert!(
        core.watch(ui, vec![], later, 4 + 3 * linger + 2)
            .unwrap()
            .resync
    );
}
