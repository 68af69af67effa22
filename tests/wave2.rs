//! Wave 2 against the real `turnstiled`: a SIGKILLed agent re-attaching
//! from a new process with its token, a wrong token refused, revoke as
//! root and refused as `nobody`, a stalled holder seen by a watcher, and
//! `Peer.user` as root and as `nobody`.
//!
//! The agent and `nobody` are this test binary re-executed (see
//! [`role`]); the `nobody` cases need root to start a process as another
//! user and are skipped with a note otherwise.
#![cfg(unix)]

mod support;

use std::io::BufReader;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use turnstile_client::proto::{self as v1, client_frame::Body};
use turnstile_client::{Client, ClientError, ErrorCode, EventKind, ResumeToken, kinds};

/// This test binary re-executed as the role `role` against `broker`.
fn role_command(broker: &Broker, role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["role", "--exact", "--nocapture", "--test-threads=1"])
        .env("TURNSTILE_TEST_ROLE", role)
        .env("TURNSTILE_SOCKET", &broker.socket)
        .stdin(Stdio::null());
    cmd
}

/// Runs the role `role` as nobody to its end; returns its ROLE lines.
fn as_nobody(broker: &Broker, role: &str) -> Vec<String> {
    let out = role_command(broker, role)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the nobody role failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().filter_map(role_line).collect()
}

/// Waits on `watch` for an event of `kind`.
async fn expect_event(
    watch: &mut turnstile_client::WatchStream,
    kind: EventKind,
) -> v1::WatchEvent {
    loop {
        let e = tokio::time::timeout(PATIENCE, watch.next())
            .await
            .expect("an event in time")
            .expect("the watch goes on");
        if kinds::event_kind(&e) == Some(kind) {
            return e;
        }
    }
}

#[tokio::test]
async fn a_sigkilled_agent_reattaches_from_a_new_process_at_its_place() {
    // The job holds pcm. The agent (another process) queues with a detach
    // grace and prints its token; it is SIGKILLed; watchers see DETACHED
    // and its place stays; this process re-attaches with the token and is
    // granted when the job ends.
    let broker = spawn_broker();
    let job = broker.client("job").await;
    let held = job.acquire("pcm").purpose("job 42").wait().await.unwrap();
    let ui = broker.client("ui").await;
    let mut watch = ui.watch(&["pcm".to_string()], 0).await.unwrap();

    let mut agent = role_command(&broker, "agent")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(agent.stdout.take().unwrap());
    let said = read_role_line(&mut out);
    let token: ResumeToken = said
        .strip_prefix("token ")
        .expect("a token line")
        .parse()
        .unwrap();
    expect_event(&mut watch, EventKind::Queued).await;
    let other = broker.client("other").await;
    let behind = other.acquire("pcm").shared().start().await.unwrap();

    signal(agent.id() as i32, libc::SIGKILL);
    wait_child(&mut agent);
    let e = expect_event(&mut watch, EventKind::Detached).await;
    let waiters = &e.state.as_ref().unwrap().waiters;
    assert_eq!(waiters[0].lease_id, token.lease_id, "its place is kept");
    assert!(waiters[0].detached);

    let again = broker.client("agent (restarted)").await;
    let pending = again.reattach(&token).await.unwrap();
    match pending.state() {
        turnstile_client::QueueUpdate::Queued(q) => assert_eq!(q.position, 1),
        other => panic!("expected queued at 1, got {other:?}"),
    }
    expect_event(&mut watch, EventKind::Reattached).await;
    held.release().await.unwrap();
    let lease = tokio::time::timeout(PATIENCE, pending.wait_with(|_| {}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.id(), token.lease_id);
    drop(behind);
}

#[tokio::test]
async fn a_wrong_token_or_a_second_reattach_is_not_found() {
    // The owner's connection closes (a raw one, dropped): a wrong token is
    // NOT_FOUND and leaves the owner's token good; used once, the lease is
    // attached and a second re-attach is NOT_FOUND too.
    let broker = spawn_broker();
    let ui = broker.client("ui").await;
    let mut watch = ui.watch(&["pcm".to_string()], 0).await.unwrap();
    let mut owner = broker.raw().await;
    let granted = match owner
        .request(Body::Acquire(v1::Acquire {
            resource: "pcm".into(),
            mode: v1::Mode::Exclusive as i32,
            detach_grace_ms: 30_000,
            ..Default::default()
        }))
        .await
    {
        v1::reply::Result::Acquire(v1::AcquireReply {
            outcome: Some(v1::acquire_reply::Outcome::Granted(g)),
        }) => g,
        other => panic!("expected a grant, got {other:?}"),
    };
    assert_eq!(granted.resume_token.len(), 16, "128 bits");
    let token = ResumeToken {
        lease_id: granted.lease_id,
        resource: "pcm".into(),
        secret: granted.resume_token.clone(),
    };
    drop(owner);
    expect_event(&mut watch, EventKind::Detached).await;

    let thief = broker.client("thief").await;
    let mut wrong = token.clone();
    wrong.secret = vec![0u8; 16].into();
    let e = thief.reattach(&wrong).await.err().expect("refused");
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    let short = ResumeToken {
        secret: token.secret.slice(..8),
        ..token.clone()
    };
    let e = thief.reattach(&short).await.err().expect("refused");
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");

    let again = broker.client("owner again").await;
    let back = again.reattach(&token).await.unwrap();
    assert!(
        matches!(back.state(), turnstile_client::QueueUpdate::Granted(g) if g.fencing_token == granted.fencing_token)
    );
    let e = broker
        .client("late")
        .await
        .reattach(&token)
        .await
        .err()
        .expect("refused");
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
}

#[tokio::test]
async fn a_stalled_holder_is_seen_by_a_watcher_and_progress_clears_it() {
    // The holder keeps its lease alive (the client does) but reports no
    // progress for 300 ms: watchers see STALLED with the lease marked
    // stalled; its next progress report clears it.
    let broker = spawn_broker();
    let ui = broker.client("ui").await;
    let mut watch = ui.watch(&["pcm".to_string()], 0).await.unwrap();
    let job = broker.client("job").await;
    let lease = job
        .acquire("pcm")
        .ttl(Duration::from_secs(30))
        .stall_after(Duration::from_millis(300))
        .wait()
        .await
        .unwrap();
    let e = expect_event(&mut watch, EventKind::Stalled).await;
    assert!(e.state.as_ref().unwrap().holders[0].stalled);
    assert!(e.detail.contains("stuck"), "{}", e.detail);
    lease.progress(1, 2, "copying").await.unwrap();
    let e = expect_event(&mut watch, EventKind::Progress).await;
    assert!(!e.state.as_ref().unwrap().holders[0].stalled);
}

#[tokio::test]
async fn revoke_as_root_takes_the_lease_and_the_next_in_line_goes() {
    // Root asks with revoke: the holder is told, then loses the lease with
    // REVOKED; the waiter is granted with a higher fencing token.
    if !is_root() {
        eprintln!("skipped: revoke is the broker's user's and root's by default; run as root");
        return;
    }
    let broker = spawn_broker();
    let job = broker.client("job").await;
    let lease = job.acquire("pcm").wait().await.unwrap();
    let agent = broker.client("agent").await;
    let pending = agent.acquire("pcm").start().await.unwrap();
    let admin = broker.client("admin").await;
    let holders_asked = admin
        .request_yield("pcm")
        .within(Duration::from_millis(200))
        .reason("maintenance")
        .revoke()
        .send()
        .await
        .unwrap();
    assert_eq!(holders_asked, 1, "the broker counts the holder it asked");
    let asked = tokio::time::timeout(PATIENCE, lease.next_yield_request())
        .await
        .unwrap()
        .unwrap();
    assert!(asked.revoke && asked.reason == "maintenance");
    let lost = tokio::time::timeout(PATIENCE, lease.lost()).await.unwrap();
    assert_eq!(lost.reason, Some(v1::LostReason::Revoked), "{lost:?}");
    let next = tokio::time::timeout(PATIENCE, pending.wait_with(|_| {}))
        .await
        .unwrap()
        .unwrap();
    assert!(next.fencing_token() > lease.fencing_token());
}

#[test]
fn nobody_may_ask_to_yield_but_not_revoke_and_is_named() {
    // As nobody: RequestYield is allowed (nobody may take SHARED leases),
    // with revoke it is PERMISSION_DENIED; Peer.user says "nobody".
    if !can_run_as_nobody() {
        return;
    }
    let broker = broker_for_two_users(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_job, _lease) = rt.block_on(async {
        let job = broker.client("job").await;
        let lease = job.acquire("pcm").wait().await.unwrap();
        (job, lease)
    });
    let lines = as_nobody(&broker, "nobody");
    assert_eq!(
        lines,
        vec![
            "user nobody",
            "yield OK, 1 asked",
            "revoke PERMISSION_DENIED"
        ],
        "{lines:?}"
    );
}

#[tokio::test]
async fn peer_user_is_the_account_name_of_the_uid() {
    let broker = spawn_broker();
    let c = broker.client("me").await;
    let peer = c.hello().peer.clone().unwrap();
    // SAFETY: geteuid touches no memory.
    let uid = unsafe { libc::geteuid() };
    let expected = nix_user_name(uid);
    assert_eq!(peer.user, expected, "uid {uid}");
    if is_root() {
        assert_eq!(peer.user, "root");
    }
}

/// The passwd name of `uid`, as `id -nu` says it ("" if none).
fn nix_user_name(uid: u32) -> String {
    let out = Command::new("id").args(["-nu", &uid.to_string()]).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => String::new(),
    }
}

/// Not a test of its own: the processes the tests above start.
#[tokio::test]
async fn role() {
    let Ok(role) = std::env::var("TURNSTILE_TEST_ROLE") else {
        return;
    };
    let client = Client::connect_default(&role).await.unwrap();
    match role.as_str() {
        "agent" => {
            let pending = client
                .acquire("pcm")
                .shared()
                .detach_grace(Duration::from_secs(60))
                .purpose("initialise")
                .start()
                .await
                .unwrap();
            println!("ROLE: token {}", pending.resume_token().unwrap());
            // Killed here, mid-wait.
            std::future::pending::<()>().await;
        }
        "nobody" => {
            println!("ROLE: user {}", client.hello().peer.as_ref().unwrap().user);
            let verdict = |r: Result<u32, ClientError>| match r {
                Ok(asked) => format!("OK, {asked} asked"),
                Err(e) => e.code().map_or(e.to_string(), |c| {
                    c.as_str_name()
                        .trim_start_matches("ERROR_CODE_")
                        .to_string()
                }),
            };
            let r = client.request_yield("pcm").reason("please").send().await;
            println!("ROLE: yield {}", verdict(r));
            let r = client.request_yield("pcm").revoke().send().await;
            println!("ROLE: revoke {}", verdict(r));
        }
        other => panic!("unknown role {other}"),
    }
}

#[tokio::test]
async fn the_cli_asks_to_yield_and_shows_permits_stuck_holders_and_users() {
    // `turnstile yield` reaches the holder; `status` and `why` show the
    // semaphore's permits, a stuck holder and the account name.
    let broker = spawn_broker();
    let job = broker.client("job").await;
    let lease = job
        .acquire("downloads")
        .shared()
        .capacity(2)
        .permits(2)
        .stall_after(Duration::from_millis(100))
        .wait()
        .await
        .unwrap();
    let ui = broker.client("ui").await;
    let mut watch = ui.watch(&["downloads".to_string()], 0).await.unwrap();
    expect_event(&mut watch, EventKind::Stalled).await;

    let (code, out, err) = broker.cli(&[
        "yield",
        "downloads",
        "--within",
        "2m",
        "--reason",
        "Install now",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out, "asked the holder of downloads to make way within 2 min 0 s\n",
        "{err}"
    );
    // The count is the broker's: a resource nobody holds asks nobody.
    let (code, out, err) = broker.cli(&["yield", "printer"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "nobody holds printer: nobody was asked to make way\n");
    let (code, out, err) = broker.cli(&["--json", "yield", "downloads"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["holders"], 1, "{out}");
    let asked = tokio::time::timeout(PATIENCE, lease.next_yield_request())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (asked.reason.as_str(), asked.within_ms, asked.revoke),
        ("Install now", 120_000, false)
    );
    let requester = asked.requester.unwrap();
    assert!(
        requester.client_name.starts_with("turnstile-cli"),
        "{requester:?}"
    );

    let (code, out, _) = broker.cli(&["status", "downloads"]);
    assert_eq!(code, 0);
    assert!(out.contains("2 of 2 permits held"), "{out}");
    assert!(out.contains("[stuck"), "{out}");
    let me = nix_user_name(unsafe { libc::geteuid() });
    if !me.is_empty() {
        assert!(out.contains(&format!("({me}, pid")), "{out}");
    }
    let (_, out, _) = broker.cli(&["why", "downloads"]);
    assert!(
        out.contains("[stuck: alive but no progress") && out.contains("semaphore"),
        "{out}"
    );
    let (_, out, _) = broker.cli(&["--json", "status", "downloads"]);
    assert!(
        out.contains("\"permits_held\":2") && out.contains("\"stalled\":true"),
        "{out}"
    );
    lease.decline_yield("almost done").await.unwrap();
    let e = expect_event(&mut watch, EventKind::YieldDeclined).await;
    assert!(e.detail.contains("almost done"), "{}", e.detail);
}

#[test]
fn the_demo_tells_the_wave_2_story() {
    // Two downloads run while the third waits; the killed agent re-attaches
    // at its place; the stuck job shows as stuck; the job makes way when
    // asked and the agent initialises; never "Timed out".
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
    for line in [
        "Download of fonts.cab waits: 2 downloads already run",
        "re-attached to its place in the queue (position 1)",
        "stuck: alive but no progress",
        "making way at this checkpoint",
        "Initialized",
        "Job 'Install Office 97' resumed",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("Timed out"), "{stdout}");
}
