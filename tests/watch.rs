//! Watches end to end: every change in order, resume or resync after a gap,
//! slow watchers bounded and harmless to others, the CLI's JSON stream.
//!
//! Unix only: it uses signals, socket files and raw Unix sockets
//! (`tests/portable.rs` holds the tests every platform runs).
#![cfg(unix)]

mod support;

use std::io::BufRead;
use std::time::Instant;

use support::*;
use turnstile_client::proto::{self as v1, EventKind, client_frame::Body, reply, server_frame};
use turnstile_client::{WatchItem, Watcher};

/// A watcher sees GRANTED then RELEASED, with increasing revisions and
/// states that match `status`.
#[tokio::test]
async fn a_watcher_sees_granted_then_released_in_revision_order() {
    let broker = spawn_broker();
    let watcher = broker.client("ui").await;
    let mut watch = watcher.watch(&["pcm".into()], 0).await.unwrap();
    assert!(watch.started().snapshot[0].holders.is_empty());
    let service = broker.client("service").await;
    let lease = service.acquire("pcm").purpose("job").wait().await.unwrap();
    let granted = watch.next().await.unwrap();
    assert_eq!(granted.kind, EventKind::Granted as i32);
    let state = granted.state.clone().unwrap();
    let status = service.status(&["pcm".into()]).await.unwrap();
    assert_eq!(
        state.holders[0].lease_id,
        status.resources[0].holders[0].lease_id
    );
    assert_eq!(state.holders[0].purpose, "job");
    assert_eq!(state.revision, status.resources[0].revision);
    lease.release().await.unwrap();
    let released = watch.next().await.unwrap();
    assert_eq!(released.kind, EventKind::Released as i32);
    assert!(released.revision > granted.revision);
    assert!(released.state.unwrap().holders.is_empty());
    assert!(released.detail.contains("released"), "{}", released.detail);
}

/// A hundred watchers over 500 changes all end on the final state.
#[tokio::test]
async fn a_hundred_watchers_all_reach_the_final_state() {
    let broker = spawn_broker();
    let mut watches = Vec::new();
    for i in 0..100 {
        let c = broker.client(&format!("ui{i}")).await;
        let w = c.watch(&["res".into()], 0).await.unwrap();
        watches.push((c, w));
    }
    let worker = broker.client("worker").await;
    for i in 0..250 {
        let l = worker
            .acquire("res")
            .purpose(format!("job {i}"))
            .wait()
            .await
            .unwrap();
        l.release().await.unwrap();
    }
    let last = worker.acquire("res").purpose("final").wait().await.unwrap();
    let status = worker.status(&["res".into()]).await.unwrap();
    let final_revision = status.resources[0].revision;
    for (_c, w) in &mut watches {
        let mut previous = 0;
        loop {
            let e = tokio::time::timeout(PATIENCE, w.next())
                .await
                .expect("event in time")
                .expect("stream open");
            assert!(e.revision > previous, "revisions strictly increase");
            previous = e.revision;
            if e.revision == final_revision {
                let s = e.state.unwrap();
                assert_eq!(s.holders[0].purpose, "final");
                break;
            }
        }
    }
    last.release().await.unwrap();
}

/// A watcher that never reads while 20 000 changes happen costs bounded
/// memory and does not hold up a watcher that reads.
#[tokio::test]
async fn a_stalled_watcher_costs_bounded_memory_and_delays_nobody() {
    let broker = spawn_broker();
    let mut stalled = broker.raw().await;
    let r = stalled
        .request(Body::Watch(v1::Watch {
            resources: vec![],
            start_revision: 0,
        }))
        .await;
    assert!(matches!(r, reply::Result::Watch(_)));
    let reader = broker.client("reader").await;
    let mut live = reader.watch(&["hot".into()], 0).await.unwrap();
    let worker = broker.client("worker").await;
    let before = rss_kib(broker.pid());
    let started = Instant::now();
    for i in 0..10_000 {
        let l = worker
            .acquire("hot")
            .purpose(format!(
                "change {i} with a purpose long enough to fill the queue"
            ))
            .wait()
            .await
            .unwrap();
        l.release().await.unwrap();
    }
    let after = rss_kib(broker.pid());
    let status = worker.status(&["hot".into()]).await.unwrap();
    let final_revision = status.revision;
    assert_eq!(status.resources[0].revision, final_revision);
    loop {
        let e = tokio::time::timeout(PATIENCE, live.next())
            .await
            .expect("the live watcher keeps up")
            .unwrap();
        if e.revision >= final_revision {
            break;
        }
    }
    println!(
        "20 000 changes in {:?}; broker RSS {before} KiB -> {after} KiB with a stalled watcher",
        started.elapsed()
    );
    assert!(
        after < before + 16 * 1024,
        "broker memory grew by {} KiB",
        after - before
    );
    // The stalled watcher, once it reads, finds the newest state, coalesced.
    let mut newest = 0;
    let mut saw_coalesced = false;
    let mut received = 0;
    while newest < final_revision {
        match stalled.next_frame().await {
            Some(server_frame::Body::WatchEvent(e)) => {
                newest = newest.max(e.revision);
                saw_coalesced |= e.coalesced;
                received += 1;
            }
            Some(_) => {}
            None => panic!("the stalled watcher was disconnected"),
        }
    }
    println!("the stalled watcher then read {received} events for {final_revision} revisions");
    assert!(saw_coalesced, "a stalled watcher is sent coalesced states");
}

/// Resuming from a revision gets exactly the missed events; resuming from
/// one older than the history gets a resync with a fresh snapshot.
#[tokio::test]
async fn resume_replays_missed_events_or_resyncs() {
    let broker = spawn_broker_with(&["--watch-history", "8"]);
    let client = broker.client("ui").await;
    // Revision 0 means "from now": make one change so there is a revision to resume from.
    acquire_release(&client, "b").await;
    // A UI watches, then its connection drops (the history keeps recording
    // for a while after the last watcher goes, so it can resume).
    let dropped = client.watch(&["a".into()], 0).await.unwrap();
    let start = dropped.started().revision;
    assert!(start > 0);
    drop(dropped);
    for _ in 0..3 {
        acquire_release(&client, "a").await;
    }
    // 6 changes: within the history of 8.
    let mut w = client.watch(&["a".into()], start).await.unwrap();
    assert!(!w.started().resync);
    let mut kinds = Vec::new();
    for _ in 0..6 {
        let e = w.next().await.unwrap();
        assert!(e.revision > start);
        kinds.push(e.kind);
    }
    assert_eq!(
        kinds,
        [EventKind::Granted, EventKind::Released]
            .repeat(3)
            .iter()
            .map(|k| *k as i32)
            .collect::<Vec<_>>()
    );
    drop(w);
    for _ in 0..10 {
        acquire_release(&client, "a").await;
    }
    let w = client.watch(&["a".into()], start).await.unwrap();
    assert!(w.started().resync, "the history no longer reaches back");
    assert_eq!(w.started().snapshot.len(), 1);
}

/// The resilient watcher reconnects after a broker restart and says so.
#[tokio::test]
async fn a_watcher_survives_a_broker_restart() {
    let mut broker = spawn_broker();
    let dir = broker.dir.clone();
    let mut watcher = Watcher::start(broker.options("ui"), vec!["pcm".into()])
        .await
        .unwrap();
    assert!(matches!(
        watcher.next().await,
        WatchItem::Snapshot { resync: false, .. }
    ));
    let c = broker.client("worker").await;
    acquire_release(&c, "pcm").await;
    for _ in 0..2 {
        let item = tokio::time::timeout(PATIENCE, watcher.next())
            .await
            .unwrap();
        assert!(matches!(item, WatchItem::Event(_)), "{item:?}");
    }
    drop(c);
    broker.kill();
    let item = tokio::time::timeout(PATIENCE, watcher.next())
        .await
        .unwrap();
    assert!(matches!(item, WatchItem::Disconnected(_)), "{item:?}");
    let again = start_in(&dir, &[]);
    let item = tokio::time::timeout(PATIENCE, watcher.next())
        .await
        .unwrap();
    assert_eq!(item, WatchItem::Reconnected);
    // The new broker's history cannot reach the old revisions: a resync.
    let item = tokio::time::timeout(PATIENCE, watcher.next())
        .await
        .unwrap();
    assert!(
        matches!(item, WatchItem::Snapshot { resync: true, .. }),
        "{item:?}"
    );
    let c = again.client("worker").await;
    let _l = c.acquire("pcm").wait().await.unwrap();
    let item = tokio::time::timeout(PATIENCE, watcher.next())
        .await
        .unwrap();
    assert!(
        matches!(&item, WatchItem::Event(e) if e.kind == EventKind::Granted as i32),
        "{item:?}"
    );
}

/// `turnstile --json watch` prints one JSON object per line.
#[tokio::test]
async fn the_cli_watch_json_output_parses() {
    let broker = spawn_broker();
    let mut cli = broker.cli_spawn(&["--json", "watch", "pcm"]);
    let stdout = cli.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut next_line = async || {
        tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("the CLI printed nothing more")
            .expect("the CLI's output ended")
    };
    let c = broker.client("service").await;
    // The CLI's watch is registered once its snapshot line is out.
    let mut lines = vec![next_line().await];
    c.acquire("pcm")
        .purpose("job")
        .wait()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    while !lines.last().is_some_and(|l| l.contains("RELEASED")) {
        lines.push(next_line().await);
    }
    signal(cli.id() as i32, libc::SIGKILL);
    let _ = cli.wait();
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds: Vec<&str> = parsed.iter().map(|v| v["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["SNAPSHOT", "GRANTED", "RELEASED"], "{lines:?}");
    assert_eq!(parsed[1]["state"]["holders"][0]["purpose"], "job");
}
