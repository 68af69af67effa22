//! History (DESIGN "History") against the real `turnstiled`: every way a
//! lease ends is recorded, the record survives a restart, the bounds per
//! resource (count and age) hold, and `turnstile history` shows it with
//! `--since` and `--limit`.
#![cfg(unix)]

mod support;

use std::time::{Duration, Instant};

use support::*;
use turnstile_proto::v1::{self, client_frame::Body, reply, server_frame};

fn acquire(resource: &str, purpose: &str) -> v1::Acquire {
    v1::Acquire {
        resource: resource.into(),
        mode: v1::Mode::Exclusive as i32,
        purpose: purpose.into(),
        ..Default::default()
    }
}

/// Acquires on a raw connection; returns the lease id (granted or queued).
async fn take(raw: &mut Raw, req: v1::Acquire) -> u64 {
    match raw.request(Body::Acquire(req)).await {
        reply::Result::Acquire(v1::AcquireReply {
            outcome: Some(v1::acquire_reply::Outcome::Granted(g)),
        }) => g.lease_id,
        reply::Result::Acquire(v1::AcquireReply {
            outcome: Some(v1::acquire_reply::Outcome::Queued(q)),
        }) => q.lease_id,
        other => panic!("acquire: {other:?}"),
    }
}

/// Waits for the Lost of `lease` on `raw`.
async fn lost(raw: &mut Raw, lease: u64) -> v1::Lost {
    raw.expect_push(|b| match b {
        server_frame::Body::LeaseUpdate(v1::LeaseUpdate {
            lease_id,
            change: Some(v1::lease_update::Change::Lost(l)),
        }) if *lease_id == lease => Some(l.clone()),
        _ => None,
    })
    .await
}

async fn history(raw: &mut Raw, resource: &str, since_ms: u64, limit: u32) -> v1::History {
    match raw
        .request(Body::GetHistory(v1::GetHistory {
            resource: resource.into(),
            since_ms,
            limit,
        }))
        .await
    {
        reply::Result::History(h) => h,
        other => panic!("history: {other:?}"),
    }
}

/// Polls the history of `resource` until `done` holds for it.
async fn history_until(
    raw: &mut Raw,
    resource: &str,
    mut done: impl FnMut(&v1::History) -> bool,
) -> v1::History {
    let start = Instant::now();
    loop {
        let h = history(raw, resource, 0, 0).await;
        if done(&h) {
            return h;
        }
        assert!(start.elapsed() < PATIENCE, "history never came to: {h:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn purposes(h: &v1::History) -> Vec<&str> {
    h.entries.iter().map(|e| e.purpose.as_str()).collect()
}

/// SIGTERMs the broker and starts it again on the same socket and data.
fn restart(mut broker: Broker, args: &[&str]) -> Broker {
    broker.signal(libc::SIGTERM);
    assert!(broker.wait_exit().success(), "{}", broker.log_text());
    let tmp = broker._tmp.take();
    let mut again = start_in(&broker.dir, args);
    again._tmp = tmp;
    wait_ready(&again);
    again
}

// Each way a lease ends is one entry, newest last, with who, what for,
// its times and how it ended; the entries survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_lease_ends_is_recorded_and_survives_a_restart() {
    let broker = spawn_broker();
    wait_ready(&broker);
    let mut a = broker.raw().await;
    let mut b = broker.raw().await;

    // Released.
    let id = take(&mut a, acquire("pcm", "released")).await;
    a.request(Body::Release(v1::Release { lease_id: id })).await;
    // Expired: no KeepAlive within its TTL.
    let id = take(
        &mut a,
        v1::Acquire {
            ttl_ms: 100,
            ..acquire("pcm", "expired")
        },
    )
    .await;
    assert_eq!(
        lost(&mut a, id).await.reason,
        v1::LostReason::Expired as i32
    );
    // Cancelled, then timed out, while `a` holds.
    let held = take(&mut a, acquire("pcm", "holder")).await;
    let id = take(&mut b, acquire("pcm", "cancelled")).await;
    b.request(Body::Cancel(v1::Cancel { lease_id: id })).await;
    let id = take(
        &mut b,
        v1::Acquire {
            max_wait_ms: 100,
            ..acquire("pcm", "timed out")
        },
    )
    .await;
    assert_eq!(
        lost(&mut b, id).await.reason,
        v1::LostReason::TimedOut as i32
    );
    // Revoked: the holder loses its lease to a yield request with revoke.
    b.request(Body::RequestYield(v1::RequestYield {
        resource: "pcm".into(),
        within_ms: 0,
        reason: "urgent".into(),
        revoke: true,
    }))
    .await;
    assert_eq!(
        lost(&mut a, held).await.reason,
        v1::LostReason::Revoked as i32
    );
    // Disconnected: a waiter behind a holder, then both connections close.
    let mut c = broker.raw().await;
    take(&mut c, acquire("pcm", "disconnected holder")).await;
    take(&mut b, acquire("pcm", "disconnected waiter")).await;
    drop(b);
    history_until(&mut a, "pcm", |h| h.entries.len() == 6).await;
    drop(c);

    let want = [
        ("released", v1::EventKind::Released),
        ("expired", v1::EventKind::Expired),
        ("cancelled", v1::EventKind::Cancelled),
        ("timed out", v1::EventKind::Cancelled),
        ("holder", v1::EventKind::Revoked),
        ("disconnected waiter", v1::EventKind::Disconnected),
        ("disconnected holder", v1::EventKind::Disconnected),
    ];
    let h = history_until(&mut a, "pcm", |h| h.entries.len() >= want.len()).await;
    assert_eq!(
        purposes(&h),
        want.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        "{h:#?}"
    );
    for (e, (purpose, kind)) in h.entries.iter().zip(want) {
        assert_eq!(e.ended_by, kind as i32, "{purpose}: {e:#?}");
        assert_eq!(e.resource, "pcm");
        assert!(e.ended_at_ms >= e.queued_at_ms, "{e:#?}");
        let holder = e.holder.as_ref().expect("holder");
        assert_eq!(holder.pid, std::process::id(), "{e:#?}");
        assert_eq!(holder.client_name, "raw");
    }
    let by = |p: &str| h.entries.iter().find(|e| e.purpose == p).unwrap();
    // Granted ones have a token and a grant time, the others neither.
    assert!(by("released").fencing_token > 0 && by("released").granted_at_ms > 0);
    assert_eq!(by("released").queued_at_ms, by("released").granted_at_ms);
    assert_eq!(by("cancelled").granted_at_ms, 0);
    assert_eq!(by("cancelled").fencing_token, 0);
    assert!(by("timed out").detail.contains("max_wait"), "{h:#?}");
    // Only the wait whose max_wait ran out is flagged so.
    let flagged: Vec<&str> = h
        .entries
        .iter()
        .filter(|e| e.timed_out)
        .map(|e| e.purpose.as_str())
        .collect();
    assert_eq!(flagged, ["timed out"], "{h:#?}");
    assert!(by("holder").detail.contains("urgent"), "{h:#?}");
    assert!(by("expired").detail.contains("no KeepAlive"), "{h:#?}");
    // The waiter never got it: it waited from its request to its end.
    let waiter = by("disconnected waiter");
    assert_eq!(waiter.granted_at_ms, 0);
    // Other resources have their own history.
    assert!(history(&mut a, "other", 0, 0).await.entries.is_empty());
    drop(a);

    let broker = restart(broker, &[]);
    let mut a = broker.raw().await;
    let after = history(&mut a, "pcm", 0, 0).await;
    assert_eq!(after.entries, h.entries, "the history survives a restart");
}

// Past --history-max-entries the oldest entries of a resource go; past
// --history-max-age entries are no longer shown, and are gone from the
// file once the resource records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_is_bounded_by_count_and_age() {
    let broker = spawn_broker_with(&["--history-max-entries", "3"]);
    wait_ready(&broker);
    let mut a = broker.raw().await;
    for n in 1..=5 {
        let id = take(&mut a, acquire("pcm", &format!("job {n}"))).await;
        a.request(Body::Release(v1::Release { lease_id: id })).await;
    }
    let id = take(&mut a, acquire("spool", "spool job")).await;
    a.request(Body::Release(v1::Release { lease_id: id })).await;
    let h = history(&mut a, "pcm", 0, 0).await;
    assert_eq!(purposes(&h), ["job 3", "job 4", "job 5"], "{h:#?}");
    assert_eq!(
        purposes(&history(&mut a, "spool", 0, 0).await),
        ["spool job"]
    );
    drop(a);

    // Age: a one-second bound hides what ended over a second ago.
    let broker = restart(broker, &["--history-max-age", "1s"]);
    let mut a = broker.raw().await;
    history_until(&mut a, "pcm", |h| h.entries.is_empty()).await;
    let id = take(&mut a, acquire("pcm", "old")).await;
    a.request(Body::Release(v1::Release { lease_id: id })).await;
    let h = history(&mut a, "pcm", 0, 0).await;
    assert_eq!(
        purposes(&h),
        ["old"],
        "entries over a second old are hidden"
    );
    history_until(&mut a, "pcm", |h| h.entries.is_empty()).await;
    // A new entry on the resource drops the old ones from the file: no age
    // bound after the restart shows what is really kept.
    let id = take(&mut a, acquire("pcm", "new")).await;
    a.request(Body::Release(v1::Release { lease_id: id })).await;
    history_until(&mut a, "pcm", |h| !h.entries.is_empty()).await;
    drop(a);
    let broker = restart(broker, &["--history-max-age", "0s"]);
    let mut a = broker.raw().await;
    assert_eq!(purposes(&history(&mut a, "pcm", 0, 0).await), ["new"]);
    // And the other resource was swept at the first write after the
    // restart with the one-second bound.
    assert!(history(&mut a, "spool", 0, 0).await.entries.is_empty());
}

// `since_ms` and `limit` select the newest entries; the CLI shows them as
// a table with a summary, or as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_and_limit_select_and_the_cli_shows_them() {
    let broker = spawn_broker();
    wait_ready(&broker);
    let mut a = broker.raw().await;
    for n in 1..=3 {
        let id = take(&mut a, acquire("pcm", &format!("job {n}"))).await;
        a.request(Body::Release(v1::Release { lease_id: id })).await;
    }
    let all = history(&mut a, "pcm", 0, 0).await;
    assert_eq!(purposes(&all), ["job 1", "job 2", "job 3"]);
    assert!(!all.truncated);
    let newest = history(&mut a, "pcm", 0, 2).await;
    assert_eq!(purposes(&newest), ["job 2", "job 3"]);
    assert!(newest.truncated);
    let since = history(&mut a, "pcm", all.entries[2].ended_at_ms, 0).await;
    assert!(
        purposes(&since).ends_with(&["job 3"]) && !purposes(&since).contains(&"job 1")
            || all.entries[0].ended_at_ms == all.entries[2].ended_at_ms,
        "{since:#?}"
    );
    // A bad name is refused like anywhere else.
    let r = a
        .request(Body::GetHistory(v1::GetHistory {
            resource: String::new(),
            ..Default::default()
        }))
        .await;
    assert_eq!(error_code(&r), Some(v1::ErrorCode::InvalidArgument));

    let (code, out, err) = broker.cli(&["history", "pcm"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("LEASE  WHO"), "{out}");
    assert_eq!(
        lines.iter().filter(|l| l.contains("released")).count(),
        3,
        "{out}"
    );
    assert!(
        out.contains("3 leases (3 granted, 0 never granted)"),
        "{out}"
    );
    assert!(
        out.contains("wait  p50 ") && out.contains("hold  p50 "),
        "{out}"
    );
    let (code, out, err) = broker.cli(&["history", "pcm", "--no-legend", "--limit", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(|c: char| c.is_ascii_digit()), "{out}");
    assert!(out.contains("job 3") && !out.contains("job 2"), "{out}");
    assert_eq!(out.lines().count(), 1, "rows only: {out}");
    assert!(err.contains("older entries left out"), "{err}");
    let (code, out, err) = broker.cli(&["--json", "history", "pcm", "--since", "1h"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["summary"]["count"], 3);
    assert_eq!(v["entries"][0]["ended_by"], "RELEASED");
    assert!(v["entries"][0]["ended_at"].as_str().unwrap().ends_with('Z'));
    assert!(v["entries"][0]["hold_ms"].is_u64(), "{v}");
    assert!(v["summary"]["wait"]["p95_ms"].is_u64(), "{v}");
    let (code, out, _) = broker.cli(&["history", "nothing-here"]);
    assert_eq!(code, 0);
    assert_eq!(out, "no recorded lease of nothing-here matches\n");
    let (code, _, err) = broker.cli(&["history", "pcm", "--since", "soon"]);
    assert_eq!(code, 64, "{err}");
}

// Past --history-max-resources, whole histories go, taken from the user
// whose resources take most of the bound: nobody running leases on new
// names in a loop drops the oldest of nobody's own, not root's older one
// (by age alone, root's would have gone first), even after taking a lease
// on root's resource too (a resource counts against its oldest line's
// holder, not its newest's).
#[tokio::test]
async fn one_user_naming_resources_in_a_loop_drops_their_own_history() {
    if !can_run_as_nobody() {
        return;
    }
    let broker = broker_for_two_users(&["--history-max-resources", "10"]);
    let (code, _, err) = broker.cli(&["run", "pcm", "true"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli_as_nobody(&broker, &["run", "-s", "pcm", "true"]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = (0..12).map(|i| format!("nobody-{i:02}")).collect();
    for name in &names {
        let (code, _, err) = cli_as_nobody(&broker, &["run", "-s", name, "true"]);
        assert_eq!(code, 0, "{name}: {err}");
    }
    let mut raw = broker.raw().await;
    // Reading hands everything over first: the bound has been applied.
    let pcm = history(&mut raw, "pcm", 0, 0).await;
    assert_eq!(purposes(&pcm), ["true", "true"], "pcm's is kept: {pcm:#?}");
    let mut kept = Vec::new();
    for name in &names {
        if !history(&mut raw, name, 0, 0).await.entries.is_empty() {
            kept.push(name.clone());
        }
    }
    // 13 resources: down to nine, the four longest idle of nobody's gone.
    assert_eq!(kept, names[4..].to_vec());
    let log = broker.log_text();
    assert!(
        log.contains("(uid 65534)"),
        "the log says whose went:\n{log}"
    );
}
