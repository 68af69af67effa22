//! Busy leases and the fair wait queue, end to end: real broker, real client
//! processes, real signals.
//!
//! Unix only: it uses signals, socket files and raw Unix sockets
//! (`tests/portable.rs` holds the tests every platform runs).
#![cfg(unix)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use turnstile_client::ClientError;
use turnstile_client::proto::{self as v1, ErrorCode, client_frame::Body, reply};

/// The seed scenario: the service holds `pcm` for a job; the agent that
/// starts meanwhile is queued at position 1, sees the job, and is granted
/// with a higher fencing token when the job ends.
#[tokio::test]
async fn the_agent_queues_behind_the_job_and_is_granted_when_it_ends() {
    let broker = spawn_broker();
    let service = broker.client("pcmsvc").await;
    let agent = broker.client("pcmwin").await;
    let job = service
        .acquire("pcm")
        .purpose("Install Office 97")
        .wait()
        .await
        .unwrap();
    job.progress(2, 5, "copying files").await.unwrap();

    let pending = agent
        .acquire("pcm")
        .shared()
        .purpose("initialise")
        .start()
        .await
        .unwrap();
    let turnstile_client::QueueUpdate::Queued(q) = pending.state().clone() else {
        panic!("the agent should be queued, not granted");
    };
    assert_eq!(q.position, 1);
    let holder = &q.ahead[0];
    assert_eq!(holder.purpose, "Install Office 97");
    assert_eq!(holder.holder.as_ref().unwrap().client_name, "pcmsvc");
    assert_eq!(holder.progress.as_ref().unwrap().done, 2);

    let job_token = job.fencing_token();
    job.release().await.unwrap();
    let init = tokio::time::timeout(PATIENCE, pending.wait_with(|_| {}))
        .await
        .expect("granted in time")
        .unwrap();
    assert!(init.fencing_token() > job_token);
    init.release().await.unwrap();
}

/// A holder process killed with SIGKILL: the kernel closes its socket and
/// the waiter is granted at once (the latency is printed, not asserted).
#[tokio::test]
async fn a_sigkilled_holder_hands_over_to_the_waiter_promptly() {
    let broker = spawn_broker();
    let mut holder =
        broker.cli_spawn(&["run", "pcm", "--purpose", "doomed job", "--", "sleep", "30"]);
    wait_for_holder(&broker, "pcm").await;
    let agent = broker.client("agent").await;
    let pending = agent.acquire("pcm").start().await.unwrap();
    assert!(matches!(
        pending.state(),
        turnstile_client::QueueUpdate::Queued(_)
    ));
    let killed = Instant::now();
    signal(holder.id() as i32, libc::SIGKILL);
    let lease = tokio::time::timeout(PATIENCE, pending.wait_with(|_| {}))
        .await
        .expect("granted after the holder died")
        .unwrap();
    let latency = killed.elapsed();
    println!("grant latency after the holder's SIGKILL: {latency:?}");
    assert!(latency < Duration::from_secs(5));
    let _ = holder.wait();
    lease.release().await.unwrap();
}

/// A hung holder (SIGSTOP) loses its lease when its TTL runs out; the
/// waiter is granted; after SIGCONT its KeepAlive and Release are refused.
#[tokio::test]
async fn a_stopped_holder_expires_and_its_late_requests_are_refused() {
    let broker = spawn_broker();
    let mut holder = HolderProcess::start(&broker, 500);
    let agent = broker.client("agent").await;
    let pending = agent.acquire("pcm").start().await.unwrap();
    holder.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let lease = tokio::time::timeout(PATIENCE, pending.wait_with(|_| {}))
        .await
        .expect("granted after the TTL")
        .unwrap();
    let waited = stopped.elapsed();
    println!("granted {waited:?} after the holder stopped (TTL 500 ms)");
    assert!(waited >= Duration::from_millis(400), "not before the TTL");
    holder.signal(libc::SIGCONT);
    assert_eq!(holder.command("keepalive"), "NOT_FOUND");
    assert_eq!(holder.command("release"), "NOT_FOUND");
    assert!(lease.fencing_token() > holder.fencing);
    lease.release().await.unwrap();
}

/// Twenty waiters of mixed modes are granted in the order they asked;
/// consecutive SHARED ones together.
#[tokio::test]
async fn twenty_waiters_in_mixed_modes_are_granted_in_order() {
    let broker = spawn_broker();
    let first = broker.client("first").await;
    let held = first.acquire("res").wait().await.unwrap();
    let shared = |i: usize| !i.is_multiple_of(3);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = broker.client(&format!("w{i}")).await;
        let mut req = client.acquire("res");
        if shared(i) {
            req = req.shared();
        }
        let pending = req.start().await.unwrap();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let lease = pending.wait_with(|_| {}).await.unwrap();
            order.lock().unwrap().push(i);
            lease.release().await.unwrap();
            drop(client);
        }));
    }
    held.release().await.unwrap();
    for t in tasks {
        tokio::time::timeout(PATIENCE, t).await.unwrap().unwrap();
    }
    // Batches: each EXCLUSIVE alone, each run of SHARED together.
    let mut batch_of = Vec::new();
    let mut batch = 0;
    for i in 0..20 {
        if !shared(i) || i == 0 || !shared(i - 1) {
            batch += 1;
        }
        batch_of.push(batch);
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 20);
    let batches: Vec<usize> = order.iter().map(|&i| batch_of[i]).collect();
    assert!(
        batches.windows(2).all(|w| w[0] <= w[1]),
        "granted out of order: {order:?} (batches {batches:?})"
    );
}

/// A waiter whose connection closes is skipped and never granted.
#[tokio::test]
async fn a_waiter_that_disconnects_is_skipped() {
    let broker = spawn_broker();
    let holder = broker.client("holder").await;
    let held = holder.acquire("res").wait().await.unwrap();
    let gone = broker.client("gone").await;
    let gone_pending = gone.acquire("res").start().await.unwrap();
    let stays = broker.client("stays").await;
    let mut pending = stays.acquire("res").start().await.unwrap();
    let turnstile_client::QueueUpdate::Queued(q) = pending.state() else {
        panic!()
    };
    assert_eq!(q.position, 2);
    drop(gone_pending);
    drop(gone);
    // The broker has seen the disconnect when `stays` moves up to first.
    let update = tokio::time::timeout(PATIENCE, pending.next_update())
        .await
        .expect("the departed waiter stayed queued")
        .unwrap();
    let turnstile_client::QueueUpdate::Queued(q) = update else {
        panic!("expected a new place in the queue, got {update:?}")
    };
    assert_eq!(q.position, 1);
    let s = holder.status(&["res".into()]).await.unwrap();
    assert_eq!(s.resources[0].waiters.len(), 1);
    assert_eq!(
        s.resources[0].waiters[0]
            .holder
            .as_ref()
            .unwrap()
            .client_name,
        "stays"
    );
    held.release().await.unwrap();
    let lease = tokio::time::timeout(PATIENCE, pending.wait_with(|_| {}))
        .await
        .unwrap()
        .unwrap();
    let s = holder.status(&["res".into()]).await.unwrap();
    assert_eq!(s.resources[0].holders.len(), 1);
    assert_eq!(
        s.resources[0].holders[0]
            .holder
            .as_ref()
            .unwrap()
            .client_name,
        "stays"
    );
    lease.release().await.unwrap();
}

/// NO_WAIT on a busy resource is an error naming the holder; the queue and
/// the holder are untouched.
#[tokio::test]
async fn no_wait_on_a_busy_resource_is_busy() {
    let broker = spawn_broker();
    let a = broker.client("a").await;
    let _held = a.acquire("res").purpose("the job").wait().await.unwrap();
    let b = broker.client("b").await;
    match b.acquire("res").no_wait().start().await {
        Err(ClientError::Broker { code, message }) => {
            assert_eq!(code, ErrorCode::Busy);
            assert!(message.contains("the job"), "{message}");
        }
        Err(e) => panic!("expected BUSY, got {e}"),
        Ok(_) => panic!("expected BUSY, got a grant"),
    }
}

/// Unknown enum values and bad names are refused, not defaulted.
#[tokio::test]
async fn bad_acquire_requests_are_refused_and_the_connection_stays_open() {
    let broker = spawn_broker();
    let mut raw = broker.raw().await;
    for (resource, mode) in [("res", 99), ("res", 0), ("", 1), ("a\u{1}b", 1)] {
        let r = raw
            .request(Body::Acquire(v1::Acquire {
                resource: resource.into(),
                mode,
                ..Default::default()
            }))
            .await;
        assert_eq!(error_code(&r), Some(ErrorCode::InvalidArgument), "{r:?}");
    }
    let r = raw
        .request(Body::Release(v1::Release { lease_id: 12345 }))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::NotFound), "{r:?}");
    let r = raw.request(Body::Ping(v1::Ping::default())).await;
    assert!(matches!(r, reply::Result::Pong(_)));
}

#[test]
fn turnstile_run_exits_with_the_commands_status_or_75_when_busy() {
    let broker = spawn_broker();
    let (code, _, _) = broker.cli(&["run", "res", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code, 3);
    let mut holder = broker.cli_spawn(&["run", "res", "--", "sleep", "30"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(wait_for_holder(&broker, "res"));
    let (code, _, err) = broker.cli(&["run", "res", "--no-wait", "--", "true"]);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("busy"), "{err}");
    let (code, _, err) = broker.cli(&["run", "res", "--max-wait", "300ms", "--", "true"]);
    assert_eq!(code, 75, "{err}");
    let (code, out, _) = broker.cli(&["why", "res"]);
    assert_eq!(code, 0);
    assert!(out.contains("is held EXCLUSIVE"), "{out}");
    signal(holder.id() as i32, libc::SIGKILL);
    let _ = holder.wait();
}

#[test]
fn the_demo_runs_to_completion() {
    let exe = std::env::current_exe().unwrap();
    let demo = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("demo"))
        .unwrap();
    let out = Command::new(&demo)
        .env("TURNSTILE_DEMO_FAST", "1")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", demo.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("initialization queued, position 1"),
        "{stdout}"
    );
    assert!(stdout.contains("Initialized"), "{stdout}");
    // The notice posted before the broker restarted reached the agent.
    assert!(
        stdout.contains("Notice 1: mandatory package 'Install Office 97'"),
        "{stdout}"
    );
    assert!(!stdout.contains("Timed out"), "{stdout}");
}

/// Waits until someone holds `resource`: a watch's snapshot shows it, or
/// a later event does.
async fn wait_for_holder(broker: &Broker, resource: &str) {
    let client = broker.client("observer").await;
    let mut watch = client.watch(&[resource.to_string()], 0).await.unwrap();
    if watch
        .started()
        .snapshot
        .iter()
        .any(|r| !r.holders.is_empty())
    {
        return;
    }
    loop {
        let event = tokio::time::timeout(PATIENCE, watch.next())
            .await
            .unwrap_or_else(|_| panic!("nobody took {resource}"))
            .expect("the watch ended");
        if event.state.is_some_and(|r| !r.holders.is_empty()) {
            return;
        }
    }
}

/// A holder in its own process (this test binary re-executed in the
/// `holder_role` test), driven over its stdin/stdout.
struct HolderProcess {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    fencing: u64,
}

impl HolderProcess {
    fn start(broker: &Broker, ttl_ms: u32) -> HolderProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["holder_role", "--exact", "--nocapture", "--test-threads=1"])
            .env("TURNSTILE_TEST_ROLE", "holder")
            .env("TURNSTILE_SOCKET", &broker.socket)
            .env("TURNSTILE_TEST_TTL", ttl_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let line = read_role_line(&mut out);
        let fencing = line
            .strip_prefix("GRANTED ")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("holder said {line:?}"));
        HolderProcess {
            child,
            out,
            fencing,
        }
    }

    fn signal(&self, sig: i32) {
        signal(self.child.id() as i32, sig);
    }

    fn command(&mut self, cmd: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        read_role_line(&mut self.out)
    }
}

impl Drop for HolderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Not a test of its own: the holder process of
/// `a_stopped_holder_expires_and_its_late_requests_are_refused`.
#[tokio::test]
async fn holder_role() {
    if std::env::var("TURNSTILE_TEST_ROLE").as_deref() != Ok("holder") {
        return;
    }
    let socket = std::env::var("TURNSTILE_SOCKET").unwrap();
    let ttl: u32 = std::env::var("TURNSTILE_TEST_TTL")
        .unwrap()
        .parse()
        .unwrap();
    let mut raw = Raw::connect(&socket).await;
    let r = raw
        .request(Body::Acquire(v1::Acquire {
            resource: "pcm".into(),
            mode: v1::Mode::Exclusive as i32,
            ttl_ms: ttl,
            purpose: "hung job".into(),
            ..Default::default()
        }))
        .await;
    let reply::Result::Acquire(v1::AcquireReply {
        outcome: Some(v1::acquire_reply::Outcome::Granted(g)),
    }) = r
    else {
        panic!("{r:?}")
    };
    println!("ROLE: GRANTED {}", g.fencing_token);
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let body = match line.unwrap().as_str() {
            "keepalive" => Body::KeepAlive(v1::KeepAlive {
                lease_id: g.lease_id,
            }),
            "release" => Body::Release(v1::Release {
                lease_id: g.lease_id,
            }),
            _ => continue,
        };
        let r = raw.request(body).await;
        let answer =
            error_code(&r).map_or("OK", |c| c.as_str_name().trim_start_matches("ERROR_CODE_"));
        println!("ROLE: {answer}");
    }
}

/// A user other than root and the broker's own has at most
/// `--max-leases-per-uid` leases over all its connections: an operator's
/// review held 100 000 as `nobody` (256 connections x 1 024 leases each
/// were allowed), and the broker's memory grew with them. Root is not
/// bound.
#[test]
fn a_users_leases_are_bounded_over_all_its_connections() {
    if !is_root() {
        eprintln!("SKIP: needs root to run the CLI as nobody");
        return;
    }
    let broker = broker_for_two_users(&["--max-leases-per-uid", "2"]);
    let mut holders: Vec<std::process::Child> = ["a", "b"]
        .iter()
        .map(|r| {
            cli_as_nobody_command(
                &broker,
                &["run", "-n", r, "--shared", "-q", "--", "sleep", "30"],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a holder")
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = broker.client("root").await;
        let start = Instant::now();
        loop {
            let status = client.status(&[]).await.unwrap();
            if status
                .resources
                .iter()
                .filter(|r| !r.holders.is_empty())
                .count()
                == 2
            {
                break;
            }
            assert!(start.elapsed() < PATIENCE, "the two holders never held");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let (code, _, err) = cli_as_nobody(&broker, &["run", "-n", "c", "--shared", "--", "true"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("--max-leases-per-uid"), "{err}");
    // Root takes as many as it likes.
    for r in ["c", "d", "e"] {
        let out = Command::new(turnstile_cli())
            .arg("--socket")
            .arg(&broker.socket)
            .args(["run", "-n", r, "--", "true"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    for h in &mut holders {
        let _ = h.kill();
        let _ = h.wait();
    }
}
