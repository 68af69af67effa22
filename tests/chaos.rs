//! The chaos tier: real contender processes against the real broker, with
//! faults injected for real (SIGKILL and SIGSTOP of holders and waiters),
//! and the whole history checked afterwards rather than eyeballed.
//!
//! Short by default (a few seconds, as CI runs it); longer with
//! `TURNSTILE_CHAOS_SECS=60`. The schedule is random: its seed is printed,
//! and `TURNSTILE_CHAOS_SEED=N` replays it.
//!
//! The contenders are this test binary re-executed (`TURNSTILE_CHAOS_ROLE`).
//! Unix only (signals).
#![cfg(unix)]

mod support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use turnstile_client::proto as v1;
use turnstile_client::{Client, ConnectOptions};

const ROLE: &str = "TURNSTILE_CHAOS_ROLE";
const RESOURCE: &str = "chaos";

fn chaos_duration() -> Duration {
    let secs = std::env::var("TURNSTILE_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    Duration::from_secs(secs)
}

/// A small deterministic generator (xorshift64*), so a failing schedule can
/// be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("TURNSTILE_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("chaos seed {seed} (replay with TURNSTILE_CHAOS_SEED={seed})");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// The contender role: take the lease EXCLUSIVE with a 1 s TTL, hold it a
/// few milliseconds, release it; forever, logging each step as a line.
/// A no-op when run as an ordinary test.
#[test]
fn contender_role() {
    if std::env::var(ROLE).as_deref() != Ok("contender") {
        return;
    }
    let socket = std::env::var("TURNSTILE_SOCKET").expect("TURNSTILE_SOCKET");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let name = format!("contender-{}", std::process::id());
        let client = Client::connect(ConnectOptions::new(&name).socket(&socket))
            .await
            .expect("connect");
        let mut rng = Rng(u64::from(std::process::id()) * 7919 + 1);
        let mut out = std::io::stdout();
        loop {
            let lease = match client
                .acquire(RESOURCE)
                .exclusive()
                .ttl(Duration::from_secs(1))
                .purpose(&name)
                .wait()
                .await
            {
                Ok(lease) => lease,
                Err(e) => {
                    let _ = writeln!(out, "ACQUIRE_ERR {e}");
                    return;
                }
            };
            let _ = writeln!(out, "GRANT {} {}", lease.id(), lease.fencing_token());
            let _ = out.flush();
            tokio::time::sleep(rng.millis(1, 15)).await;
            let id = lease.id();
            match lease.release().await {
                Ok(()) => writeln!(out, "RELEASE_OK {id}"),
                Err(e) => writeln!(out, "RELEASE_ERR {id} {e}"),
            }
            .unwrap();
            out.flush().unwrap();
        }
    });
}

fn spawn_contender(socket: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args([
            "contender_role",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, "contender")
        .env("TURNSTILE_SOCKET", socket)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a contender")
}

/// Records every watch event of `resource` on a thread of its own.
fn record_history(socket: &Path) -> (Arc<Mutex<Vec<v1::WatchEvent>>>, std::sync::mpsc::Sender<()>) {
    let history = Arc::new(Mutex::new(Vec::new()));
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (ready, is_ready) = std::sync::mpsc::channel::<()>();
    let socket = socket.to_path_buf();
    let into = history.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = Client::connect(ConnectOptions::new("chaos-watcher").socket(&socket))
                .await
                .expect("connect the watcher");
            let mut stream = client
                .watch(&[RESOURCE.to_string()], 0)
                .await
                .expect("watch");
            ready.send(()).unwrap();
            loop {
                tokio::select! {
                    event = stream.next() => match event {
                        Some(e) => into.lock().unwrap().push(e),
                        None => return,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {
                        if stopped.try_recv().is_ok() {
                            return;
                        }
                    }
                }
            }
        });
    });
    is_ready.recv_timeout(PATIENCE).expect("the watch started");
    (history, stop)
}

/// What the history shows, checked as it is read.
#[derive(Default)]
struct Verdict {
    grants: usize,
    expired: HashSet<u64>,
    disconnected: usize,
}

/// Checks the broker's own history of the resource: revisions increase; an
/// EXCLUSIVE resource never has two holders; fencing tokens strictly
/// increase in grant order; leases are granted in the order they joined the
/// queue (FIFO).
#[track_caller]
fn check_history(events: &[v1::WatchEvent]) -> Verdict {
    let mut verdict = Verdict::default();
    let mut last_revision = 0;
    let mut last_token = 0;
    let mut holders: HashSet<u64> = HashSet::new();
    let mut joined: HashMap<u64, usize> = HashMap::new();
    let mut granted: HashSet<u64> = HashSet::new();
    let mut last_join_granted: Option<usize> = None;
    for e in events {
        if e.kind == v1::EventKind::Heartbeat as i32 {
            continue;
        }
        assert!(
            e.revision > last_revision,
            "revisions go forward: {} after {last_revision}",
            e.revision
        );
        last_revision = e.revision;
        assert!(!e.coalesced, "a watcher that keeps up sees every change");
        let Some(state) = &e.state else {
            panic!("an event without its state: {e:?}")
        };
        assert!(
            state.holders.len() <= 1,
            "two holders of an EXCLUSIVE lease at revision {}: {:?}",
            e.revision,
            state.holders
        );
        for w in &state.waiters {
            let n = joined.len();
            joined.entry(w.lease_id).or_insert(n);
        }
        let now: HashSet<u64> = state.holders.iter().map(|h| h.lease_id).collect();
        for h in &state.holders {
            if granted.insert(h.lease_id) {
                verdict.grants += 1;
                assert!(
                    h.fencing_token > last_token,
                    "fencing token {} granted after {last_token}",
                    h.fencing_token
                );
                last_token = h.fencing_token;
                if let Some(&order) = joined.get(&h.lease_id) {
                    assert!(
                        last_join_granted.is_none_or(|last| order > last),
                        "lease {} granted out of FIFO order at revision {}",
                        h.lease_id,
                        e.revision
                    );
                    last_join_granted = Some(order);
                }
            }
        }
        if e.kind == v1::EventKind::Expired as i32 {
            verdict.expired.extend(holders.difference(&now));
        }
        if e.kind == v1::EventKind::Disconnected as i32 {
            verdict.disconnected += 1;
        }
        holders = now;
    }
    verdict
}

#[test]
fn contenders_under_sigkill_and_sigstop_keep_every_promise() {
    let broker = spawn_broker();
    let mut rng = Rng::from_env();
    let (history, stop_history) = record_history(&broker.socket);
    let logs = broker.dir.join("contenders");
    std::fs::create_dir_all(&logs).unwrap();
    let log_of = |i: usize| logs.join(format!("{i}.log"));
    let mut contenders: Vec<Child> = (0..8)
        .map(|i| spawn_contender(&broker.socket, &log_of(i)))
        .collect();
    // Stopped contenders and when each is to be resumed.
    let mut stopped: Vec<(usize, Instant)> = Vec::new();
    let (mut kills, mut stops) = (0, 0);
    let deadline = Instant::now() + chaos_duration();
    while Instant::now() < deadline {
        std::thread::sleep(rng.millis(100, 300));
        let now = Instant::now();
        stopped.retain(|&(i, resume_at)| {
            if resume_at <= now {
                signal(contenders[i].id() as i32, libc::SIGCONT);
                false
            } else {
                true
            }
        });
        // Half the faults hit the holder of the moment, so that holders
        // (not only waiters) are killed and stopped.
        let holder_pid = history.lock().unwrap().last().and_then(|e| {
            e.state
                .as_ref()
                .and_then(|s| s.holders.first())
                .and_then(|h| h.holder.as_ref())
                .map(|p| p.pid)
        });
        let target = match holder_pid {
            Some(pid) if rng.below(2) == 0 => contenders.iter().position(|c| c.id() == pid),
            _ => None,
        }
        .unwrap_or_else(|| rng.below(contenders.len() as u64) as usize);
        if stopped.iter().any(|&(i, _)| i == target) {
            continue;
        }
        if rng.below(2) == 0 {
            signal(contenders[target].id() as i32, libc::SIGKILL);
            let _ = contenders[target].wait();
            contenders[target] = spawn_contender(&broker.socket, &log_of(target));
            kills += 1;
        } else {
            // Longer than the 1 s TTL: the lease expires while it sleeps.
            signal(contenders[target].id() as i32, libc::SIGSTOP);
            stopped.push((target, now + rng.millis(1200, 2000)));
            stops += 1;
        }
    }
    for &(i, _) in &stopped {
        signal(contenders[i].id() as i32, libc::SIGCONT);
    }
    // The resumed contenders try to release what the broker took back:
    // wait until each of them has said how that went.
    let resumed: Vec<usize> = stopped.iter().map(|&(i, _)| i).collect();
    let settle = Instant::now();
    while settle.elapsed() < PATIENCE
        && resumed.iter().any(|&i| {
            let text = std::fs::read_to_string(log_of(i)).unwrap_or_default();
            text.lines().last().is_some_and(|l| l.starts_with("GRANT"))
        })
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in &mut contenders {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = stop_history.send(());
    let events = history.lock().unwrap().clone();
    let verdict = check_history(&events);
    eprintln!(
        "{kills} kills, {stops} stops; {} grants, {} expired, {} disconnected, {} events",
        verdict.grants,
        verdict.expired.len(),
        verdict.disconnected,
        events.len()
    );
    assert!(
        verdict.grants >= 10 && kills + stops > 0,
        "the contenders made progress under faults"
    );
    // A holder resumed after its lease expired is refused: no release of an
    // expired lease succeeded.
    for i in 0..contenders.len() {
        let text = std::fs::read_to_string(log_of(i)).unwrap_or_default();
        for line in text.lines() {
            if let Some(id) = line.strip_prefix("RELEASE_OK ") {
                let id: u64 = id.trim().parse().unwrap();
                assert!(
                    !verdict.expired.contains(&id),
                    "lease {id} expired, yet its resumed holder's release succeeded"
                );
            }
        }
    }
    let mut out = std::io::stderr();
    let _ = writeln!(out, "history checked: {} events", events.len());
}

/// The checker itself can fail: histories with each violation are refused.
mod checker {
    use super::*;

    fn lease(id: u64, token: u64) -> v1::Lease {
        v1::Lease {
            lease_id: id,
            fencing_token: token,
            ..Default::default()
        }
    }

    fn event(
        revision: u64,
        kind: v1::EventKind,
        holders: &[(u64, u64)],
        waiters: &[u64],
    ) -> v1::WatchEvent {
        v1::WatchEvent {
            revision,
            kind: kind as i32,
            state: Some(v1::ResourceState {
                resource: RESOURCE.into(),
                revision,
                holders: holders.iter().map(|&(id, t)| lease(id, t)).collect(),
                waiters: waiters.iter().map(|&id| lease(id, 0)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    use v1::EventKind::{Granted, Queued, Released};

    #[test]
    fn a_good_history_passes() {
        let v = check_history(&[
            event(1, Granted, &[(1, 10)], &[]),
            event(2, Queued, &[(1, 10)], &[2]),
            event(3, Queued, &[(1, 10)], &[2, 3]),
            event(4, Released, &[], &[2, 3]),
            event(5, Granted, &[(2, 11)], &[3]),
        ]);
        assert_eq!(v.grants, 2);
    }

    #[test]
    #[should_panic(expected = "two holders")]
    fn two_holders_fail() {
        check_history(&[event(1, Granted, &[(1, 10), (2, 11)], &[])]);
    }

    #[test]
    #[should_panic(expected = "fencing token")]
    fn a_token_going_back_fails() {
        check_history(&[
            event(1, Granted, &[(1, 10)], &[]),
            event(2, Released, &[], &[]),
            event(3, Granted, &[(2, 9)], &[]),
        ]);
    }

    #[test]
    #[should_panic(expected = "FIFO")]
    fn barging_fails() {
        check_history(&[
            event(1, Granted, &[(1, 10)], &[]),
            event(2, Queued, &[(1, 10)], &[2, 3]),
            event(3, Released, &[], &[2, 3]),
            event(4, Granted, &[(3, 11)], &[2]),
            event(5, Released, &[], &[2]),
            event(6, Granted, &[(2, 12)], &[]),
        ]);
    }
}

/// A broker stopped for 3 s (SIGSTOP) while five holders with a 1 s TTL
/// keep their leases alive: none is lost, since their KeepAlives were sent
/// on time; the broker's own stall does not count against them.
#[test]
fn a_stopped_broker_expires_no_lease_kept_alive_on_time() {
    let broker = spawn_broker();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = broker.client("holders").await;
        let mut leases = Vec::new();
        for i in 0..5 {
            let lease = client
                .acquire(&format!("kept-{i}"))
                .exclusive()
                .ttl(Duration::from_secs(1))
                .wait()
                .await
                .expect("acquire");
            leases.push(lease);
        }
        broker.signal(libc::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(3)).await;
        broker.signal(libc::SIGCONT);
        // Two TTLs after the broker is back: every lease still held.
        let lost = tokio::time::timeout(
            Duration::from_secs(2),
            futures::future::select_all(leases.iter().map(|l| Box::pin(l.lost()))),
        )
        .await;
        if let Ok((reason, index, _)) = lost {
            panic!("lease kept-{index}, kept alive on time, was lost: {reason:?}");
        }
        drop(lost);
        let status = client.status(&[]).await.expect("status");
        let held = status
            .resources
            .iter()
            .filter(|r| r.holders.len() == 1)
            .count();
        assert_eq!(held, 5, "every lease is still held: {status:?}");
        for lease in leases {
            lease.release().await.expect("release");
        }
    });
    assert!(
        broker.log_text().contains("the broker did not run for"),
        "the stall is logged:\n{}",
        broker.log_text()
    );
}

/// The depth (ready + unacknowledged) of each queue the broker knows.
async fn depths(broker: &Broker) -> HashMap<String, u64> {
    let client = broker.client("depths").await;
    let status = client.status(&[]).await.expect("status");
    status
        .queues
        .iter()
        .map(|q| (q.queue.clone(), q.ready + q.unacked))
        .collect()
}

/// Acknowledged messages never come back: an ack is answered only once its
/// removal is durable, so a SIGKILL right after the last Done loses none.
#[test]
fn acked_messages_stay_acked_across_a_broker_kill() {
    let mut broker = spawn_broker();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = broker.client("publisher").await;
        for i in 0..300 {
            client
                .publish("acked", format!("m{i}").into_bytes(), &[])
                .await
                .expect("publish");
        }
        let mut consumer = client.consume("acked", 64).await.expect("consume");
        for _ in 0..300 {
            let d = tokio::time::timeout(PATIENCE, consumer.next())
                .await
                .expect("a delivery in time")
                .expect("a delivery");
            d.ack().await.expect("ack");
        }
    });
    broker.kill();
    let broker = start_in(&broker.dir.clone(), &[]);
    let left = rt.block_on(depths(&broker));
    assert_eq!(
        left.get("acked").copied().unwrap_or(0),
        0,
        "acknowledged messages came back after the kill: {left:?}"
    );
}

/// A message whose every delivery ends in a broker crash still reaches its
/// dead-letter queue after --max-delivery-attempts (5): the attempt is
/// stored as the message goes out, not only when it is handed back.
#[test]
fn attempts_survive_broker_crash_loops_and_reach_the_dead_letter_queue() {
    let mut first = spawn_broker();
    let dir = first.dir.clone();
    // The directory outlives every restart below.
    let _dir = first._tmp.take();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = first.client("publisher").await;
        client
            .publish("poison", b"crashes".to_vec(), &[])
            .await
            .expect("publish");
    });
    let mut broker = first;
    let mut attempts = Vec::new();
    // The attempt is group-committed as the message goes out, without
    // delaying the delivery: a kill in the same millisecond may lose one
    // count, never more, so the message reaches QUEUE.dead within a few
    // more crashes than --max-delivery-attempts.
    for _ in 0..10 {
        if rt.block_on(depths(&broker)).get("poison.dead") == Some(&1) {
            break;
        }
        let held = rt.block_on(async {
            let client = broker.client("consumer").await;
            let mut consumer = client.consume("poison", 1).await.expect("consume");
            let d = tokio::time::timeout(PATIENCE, consumer.next())
                .await
                .expect("a delivery in time")
                .expect("a delivery");
            (client, consumer, d)
        });
        attempts.push(held.2.attempt());
        // The broker dies with the delivery unacknowledged. The delivery
        // is held until then: dropped, it would be handed back (a Nack),
        // and a broker quick enough to see that before the kill would
        // send the consumer a next attempt nobody counts here.
        broker.kill();
        drop(held);
        broker = start_in(&dir, &[]);
    }
    assert!(
        attempts.windows(2).all(|w| w[0] <= w[1]) && attempts.last() == Some(&5),
        "each crash counts as an attempt: {attempts:?}"
    );
    let left = rt.block_on(depths(&broker));
    assert_eq!(left.get("poison").copied().unwrap_or(0), 0, "{left:?}");
    assert_eq!(left.get("poison.dead").copied(), Some(1), "{left:?}");
}

/// Floods `queue` with pipelined publishes (4 connections, 64 in flight
/// each) until at least `at_least` are confirmed, SIGKILLs the broker,
/// and starts it again on the same data with `args`, which must not find
/// its files damaged. Returns the new broker and the confirmed messages.
fn flood_kill_restart(
    rt: &tokio::runtime::Runtime,
    broker: Broker,
    dir: &Path,
    args: &[&str],
    queue: &str,
    at_least: u64,
) -> (Broker, Vec<String>) {
    let mut broker = broker;
    let pid = broker.pid();
    let got = rt.block_on(flood::flood_and_kill(
        &broker,
        queue,
        4,
        200,
        64,
        at_least,
        |_| {
            signal(pid, libc::SIGKILL);
            true
        },
    ));
    let _ = broker.child.wait();
    let broker = start_in(dir, args);
    assert!(
        !broker.log_text().contains("damaged"),
        "{}",
        broker.log_text()
    );
    (broker, got)
}

/// SIGKILL of the broker in the middle of a flood of pipelined publishes
/// (4 connections, 64 in flight each), several times over: after each
/// restart every message whose `Publish` answer arrived is stored, and no
/// message is stored twice. The log's torn tail, if the kill cut a write,
/// is dropped at the restart; what was answered was synced before.
#[test]
fn a_broker_killed_during_a_publish_flood_keeps_every_confirmed_message_once() {
    let mut broker = spawn_broker();
    let dir = broker.dir.clone();
    let _dir = broker._tmp.take();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut confirmed = Vec::new();
    for round in 0..3u64 {
        let queue = format!("flood{round}");
        let got;
        (broker, got) = flood_kill_restart(&rt, broker, &dir, &[], &queue, 500);
        assert!(got.len() >= 500, "{} confirmed", got.len());
        confirmed.push((queue, got));
    }
    for (queue, got) in &confirmed {
        let stored = rt.block_on(flood::check_stored_once(&broker, queue, got));
        println!(
            "FIGURE: {queue}: {} publishes confirmed before SIGKILL, {stored} stored after restart",
            got.len()
        );
    }
}

/// The same with checkpoints running beside the flood: a log of 256 KiB
/// (two halves of 128 KiB) and a checkpoint every 16 KiB, so that each kill
/// lands while the redb thread applies one generation and the writer
/// appends the next in the other half (or waits for it), at a different
/// moment each round. After each restart every confirmed message of the
/// round is stored once, and every message acked before is still gone.
#[test]
fn a_broker_killed_while_checkpoints_run_beside_a_publish_flood_keeps_every_confirmed_message_once()
{
    let args = [
        "--store-log-size",
        "262144",
        "--store-checkpoint-size",
        "16384",
    ];
    let mut broker = spawn_broker_with(&args);
    let dir = broker.dir.clone();
    let _dir = broker._tmp.take();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..5u64 {
        let queue = format!("flood{round}");
        let got;
        (broker, got) = flood_kill_restart(&rt, broker, &dir, &args, &queue, 1_000 + 700 * round);
        // The earlier rounds' messages were all acked: none comes back.
        let left = rt.block_on(depths(&broker));
        for earlier in 0..round {
            let queue = format!("flood{earlier}");
            assert_eq!(
                left.get(&queue).copied().unwrap_or(0),
                0,
                "{queue}: {left:?}"
            );
        }
        // Checked (consumed and acked) at once, so that the acks' removals
        // go through the log and its checkpoints during the next round.
        let stored = rt.block_on(flood::check_stored_once(&broker, &queue, &got));
        println!(
            "FIGURE: {queue}: {} publishes confirmed before SIGKILL, {stored} stored after restart",
            got.len()
        );
    }
}
