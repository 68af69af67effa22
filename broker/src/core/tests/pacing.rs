//! Pacing of waiter updates: a waiter is told its place and the head's
//! progress at most once per `waiter_update_interval_ms`, with the newest
//! state; a change after a quiet interval goes out at once; grants and
//! losses are never held back.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::core::Progress;

const PACE: Millis = 250;

fn paced() -> Core {
    paced_core_with(CoreConfig {
        waiter_update_interval_ms: PACE,
        ..CoreConfig::default()
    })
}

fn work(done: u32) -> Progress {
    Progress {
        done,
        total: 100,
        message: format!("step {done}"),
    }
}

fn positions(updates: &[QueuePosition]) -> Vec<(LeaseId, u32)> {
    updates.iter().map(|q| (q.lease_id, q.position)).collect()
}

/// The holder's progress as the `Queued` update shows it.
#[track_caller]
fn head_progress(q: &QueuePosition) -> Option<u32> {
    assert_eq!(q.ahead[0].position, 0, "the holder comes first in {q:?}");
    q.ahead[0].progress.as_ref().map(|p| p.done)
}

#[test]
fn progress_reports_are_coalesced_into_the_newest() {
    // A holder reporting every 50 ms: the first report after a quiet time
    // reaches the waiters at once; the next ones within the interval are
    // held back and go out once, at the end of it, with the last progress.
    let mut core = paced();
    let [svc, a, b] = sessions(&mut core, ["service", "a", "b"]);
    let held = holds_ex(&mut core, svc, "pcm", 0);
    let wa = waits_sh(&mut core, a, "pcm", 0, 1);
    let wb = waits_sh(&mut core, b, "pcm", 0, 2);

    let now = core.report_progress(svc, held, work(1), 1000).unwrap();
    let told = queued(&now);
    assert_eq!(told.len(), 2);
    assert_eq!(head_progress(&told[0]), Some(1));

    for (i, t) in [1050, 1100, 1150, 1200].into_iter().enumerate() {
        let changes = core
            .report_progress(svc, held, work(2 + i as u32), t)
            .unwrap();
        assert!(queued(&changes).is_empty(), "held back at {t}: {changes:?}");
    }
    assert_eq!(core.next_deadline(), Some(1250));
    assert!(queued(&core.expire(1249)).is_empty());
    let told = queued(&core.expire(1250));
    let who: Vec<LeaseId> = told.iter().map(|q| q.lease_id).collect();
    assert_eq!(who, vec![wa, wb], "one update per waiter");
    assert!(told.iter().all(|q| head_progress(q) == Some(5)), "{told:?}");

    // Nothing owed any more: no update and no deadline left for it.
    assert!(core.expire(2000).is_empty());
}

#[test]
fn positions_are_prompt_after_a_quiet_interval_and_paced_in_a_burst() {
    // Waiters leaving the queue one after another: the first move is told
    // at once; the moves within the interval are held back and told once,
    // with the places as they stand then. A waiter that left is not told.
    let mut core = paced();
    let [svc, a, b, c, d] = sessions(&mut core, ["service", "a", "b", "c", "d"]);
    holds_ex(&mut core, svc, "pcm", 0);
    let wa = waits_ex(&mut core, a, "pcm", 0, 1);
    let wb = waits_ex(&mut core, b, "pcm", 0, 2);
    let wc = waits_ex(&mut core, c, "pcm", 0, 3);
    let wd = waits_ex(&mut core, d, "pcm", 0, 4);

    let changes = core.cancel(a, wa, 1000).unwrap();
    assert_eq!(
        positions(&queued(&changes)),
        vec![(wb, 1), (wc, 2), (wd, 3)]
    );
    // Within the interval: c leaves, then b.
    let changes = core.cancel(c, wc, 1010).unwrap();
    assert!(queued(&changes).is_empty());
    let changes = core.cancel(b, wb, 1020).unwrap();
    assert!(queued(&changes).is_empty());
    assert_eq!(positions(&queued(&core.expire(1250))), vec![(wd, 1)]);
}

#[test]
fn grants_are_never_held_back() {
    // Within an interval of a progress update, the holder's release grants
    // the head at once; the waiters behind get their new place when the
    // interval is up.
    let mut core = paced();
    let [svc, a, b] = sessions(&mut core, ["service", "a", "b"]);
    let held = holds_ex(&mut core, svc, "pcm", 0);
    let wa = waits_ex(&mut core, a, "pcm", 0, 1);
    let wb = waits_ex(&mut core, b, "pcm", 0, 2);
    core.report_progress(svc, held, work(1), 1000).unwrap();

    let changes = release(&mut core, svc, held, 1100);
    assert_eq!(
        granted(&changes)
            .iter()
            .map(|g| g.lease_id)
            .collect::<Vec<_>>(),
        vec![wa]
    );
    assert!(queued(&changes).is_empty());
    let told = queued(&core.expire(1250));
    assert_eq!(positions(&told), vec![(wb, 1)]);
    assert_eq!(told[0].ahead[0].lease_id, wa, "the new holder ahead");
}

#[test]
fn a_long_queue_is_told_less_often() {
    // 100 waiters at 200 updates a second: every 500 ms, not every 250.
    let mut core = paced_core_with(CoreConfig {
        waiter_update_interval_ms: PACE,
        waiter_updates_per_second: 200,
        ..CoreConfig::default()
    });
    let svc = connect(&mut core, "service");
    let held = holds_ex(&mut core, svc, "pcm", 0);
    for i in 0..100 {
        let s = connect(&mut core, "agent");
        waits_sh(&mut core, s, "pcm", 0, i + 1);
    }
    let changes = core.report_progress(svc, held, work(1), 1000).unwrap();
    assert_eq!(queued(&changes).len(), 100);
    core.report_progress(svc, held, work(2), 1100).unwrap();
    assert_eq!(core.next_deadline(), Some(1500));
    assert!(queued(&core.expire(1250)).is_empty());
    let told = queued(&core.expire(1500));
    assert_eq!(told.len(), 100);
    assert!(told.iter().all(|q| head_progress(q) == Some(2)));
}

#[test]
fn a_long_round_goes_out_in_chunks_one_per_call() {
    // Two and a half chunks of waiters: a round tells one chunk per call
    // of the core, the rest at the next calls 1 ms apart (the core task
    // answers others in between); a report during the round is folded
    // into it (later chunks show it) and into the next round, at the end
    // of the interval.
    const C: usize = super::super::TOLD_PER_CALL;
    let n = 2 * C + C / 2;
    let mut core = paced();
    let svc = connect(&mut core, "service");
    let held = holds_ex(&mut core, svc, "pcm", 0);
    let mut session = connect(&mut core, "agents");
    for i in 0..n {
        // One session may hold 1 024 leases.
        if i % 1000 == 999 {
            session = connect(&mut core, "agents");
        }
        waits_sh(&mut core, session, "pcm", 0, i as u32 + 1);
    }
    let first = queued(&core.report_progress(svc, held, work(1), 1000).unwrap());
    assert_eq!(first.len(), C);
    assert_eq!(core.next_deadline(), Some(1001));
    let changes = core.report_progress(svc, held, work(2), 1000).unwrap();
    assert!(queued(&changes).is_empty());
    let second = queued(&core.expire(1001));
    assert_eq!(second.len(), C);
    assert_eq!(second[0].position as usize, C + 1);
    assert!(
        second.iter().all(|q| head_progress(q) == Some(2)),
        "newest state"
    );
    let third = queued(&core.expire(1002));
    assert_eq!(third.len(), n - 2 * C);
    assert_eq!(third.last().map(|q| q.position as usize), Some(n));
    // The report at 1000 is owed to the first chunk: a round at 1250.
    assert_eq!(core.next_deadline(), Some(1250));
    assert_eq!(queued(&core.expire(1250)).len(), C);
}

#[test]
fn every_waiter_is_updated_with_zero_interval() {
    // `--waiter-update-interval 0s`: every change is told at once.
    let mut core = paced_core_with(CoreConfig {
        waiter_update_interval_ms: 0,
        ..CoreConfig::default()
    });
    let [svc, a] = sessions(&mut core, ["service", "a"]);
    let held = holds_ex(&mut core, svc, "pcm", 0);
    waits_sh(&mut core, a, "pcm", 0, 1);
    for t in 1..5 {
        let changes = core.report_progress(svc, held, work(t as u32), t).unwrap();
        assert_eq!(queued(&changes).len(), 1, "at {t}");
    }
}

#[derive(Clone, Debug)]
enum Op {
    Progress,
    Join,
    Leave(usize),
    Release,
    Wait(Millis),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Progress),
        2 => Just(Op::Join),
        2 => (0..8usize).prop_map(Op::Leave),
        1 => Just(Op::Release),
        3 => (1..400 as Millis).prop_map(Op::Wait),
    ]
}

/// What a waiter was last told: when (`None` for its acquire reply,
/// which is not paced), its place, the holder's progress.
type Told = HashMap<LeaseId, (Option<Millis>, u32, Option<u32>)>;

fn seen_progress(q: &QueuePosition) -> Option<u32> {
    q.ahead
        .first()
        .and_then(|h| h.progress.as_ref())
        .map(|p| p.done)
}

/// Records the `Queued` updates among `changes`, checking the pace.
fn record(changes: &[Change], now: Millis, told: &mut Told) -> Result<(), TestCaseError> {
    for q in queued(changes) {
        if let Some((Some(at), _, _)) = told.get(&q.lease_id) {
            prop_assert!(
                now >= at + PACE,
                "{} told at {at} and again at {now}",
                q.lease_id
            );
        }
        told.insert(q.lease_id, (Some(now), q.position, seen_progress(&q)));
    }
    for g in granted(changes) {
        told.remove(&g.lease_id);
    }
    Ok(())
}

proptest! {
    /// Whatever happens: no waiter is told its place twice within the
    /// interval, and once the interval has passed with the deadlines
    /// applied, every waiter knows its current place and the holder's
    /// current progress.
    #[test]
    fn the_pace_holds_and_nothing_is_left_untold(ops in prop::collection::vec(op(), 1..60)) {
        let mut core = paced();
        let svc = connect(&mut core, "service");
        let mut now: Millis = 0;
        // The service's lease, while it holds one (waiters never report).
        let mut held = Some(holds_ex(&mut core, svc, "pcm", now));
        let mut step = 0u32;
        let mut waiting: Vec<(SessionId, LeaseId)> = Vec::new();
        let mut told = Told::new();
        for op in ops {
            let changes = match op {
                Op::Progress => match held {
                    Some(h) => {
                        step = (step + 1).min(100);
                        core.report_progress(svc, h, work(step), now).unwrap()
                    }
                    None => Vec::new(),
                },
                Op::Join => {
                    let s = connect(&mut core, "waiter");
                    if let AcquireOutcome::Queued(q) = acquire_ex(&mut core, s, "pcm", now) {
                        waiting.push((s, q.lease_id));
                        told.insert(q.lease_id, (None, q.position, seen_progress(&q)));
                    }
                    Vec::new()
                }
                Op::Leave(i) if !waiting.is_empty() => {
                    let (s, l) = waiting.remove(i % waiting.len());
                    told.remove(&l);
                    core.cancel(s, l, now).unwrap_or_default()
                }
                Op::Leave(_) => Vec::new(),
                Op::Release => match held.take() {
                    Some(h) => release(&mut core, svc, h, now),
                    None => Vec::new(),
                },
                Op::Wait(ms) => {
                    now += ms;
                    core.expire(now)
                }
            };
            record(&changes, now, &mut told)?;
            let granted: Vec<LeaseId> = granted(&changes).iter().map(|g| g.lease_id).collect();
            waiting.retain(|(_, l)| !granted.contains(l));
        }
        // Let the interval pass: everything owed goes out.
        now += PACE;
        let changes = core.expire(now);
        record(&changes, now, &mut told)?;
        let Some(view) = core.status(&["pcm".to_string()]).resources.pop() else {
            return Ok(());
        };
        let progress = view.holders.first().and_then(|h| h.progress.as_ref()).map(|p| p.done);
        for w in &view.waiters {
            let Some((_, place, seen)) = told.get(&w.lease_id) else {
                return Err(TestCaseError::fail(format!("{} never told", w.lease_id)));
            };
            prop_assert_eq!(*place, w.position, "{} told a stale place", w.lease_id);
            prop_assert_eq!(*seen, progress, "{} told stale progress", w.lease_id);
        }
    }
}
