//! The integration tests that run on every platform, Windows (under Wine
//! in CI) included: they spawn the real `turnstiled` on a fresh endpoint (a
//! socket file on Unix, a named pipe on Windows) and talk to it through the
//! client library only. Tests that need Unix signals, socket permissions or
//! raw Unix sockets live in the other files, which are `cfg(unix)`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use turnstile_client::proto::EventKind;
use turnstile_client::{Client, ConnectOptions, QueueUpdate};

struct Broker {
    child: Child,
    endpoint: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_broker() -> Broker {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = tempfile::tempdir().unwrap();
    let endpoint = if cfg!(windows) {
        PathBuf::from(format!(
            r"\\.\pipe\turnstile-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    } else {
        dir.path().join("turnstile.sock")
    };
    let child = Command::new(env!("CARGO_BIN_EXE_turnstiled"))
        .arg("--socket")
        .arg(&endpoint)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Broker {
        child,
        endpoint,
        _dir: dir,
    }
}

impl Broker {
    async fn client(&self, name: &str) -> Client {
        Client::connect(
            ConnectOptions::new(name)
                .socket(&self.endpoint)
                .retry_for(Duration::from_secs(20)),
        )
        .await
        .expect("connect")
    }
}

#[tokio::test]
async fn hello_ping_status() {
    let broker = spawn_broker();
    let c = broker.client("portable").await;
    assert_eq!(c.hello().protocol_version, 1);
    assert_eq!(c.hello().peer.as_ref().unwrap().pid, std::process::id());
    assert_eq!(c.ping(&b"x"[..]).await.unwrap(), &b"x"[..]);
    assert!(c.status(&[]).await.unwrap().resources.is_empty());
}

#[tokio::test]
async fn a_waiter_is_granted_when_the_holder_releases() {
    let broker = spawn_broker();
    let service = broker.client("service").await;
    let agent = broker.client("agent").await;
    let mut watch = agent.watch(&["pcm".into()], 0).await.unwrap();
    let job = service
        .acquire("pcm")
        .purpose("Install Office 97")
        .wait()
        .await
        .unwrap();
    let pending = agent.acquire("pcm").shared().start().await.unwrap();
    let QueueUpdate::Queued(q) = pending.state().clone() else {
        panic!("queued expected");
    };
    assert_eq!(q.position, 1);
    assert_eq!(q.ahead[0].purpose, "Install Office 97");
    let token = job.fencing_token();
    job.release().await.unwrap();
    let lease = tokio::time::timeout(Duration::from_secs(20), pending.wait_with(|_| {}))
        .await
        .unwrap()
        .unwrap();
    assert!(lease.fencing_token() > token);
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        kinds.push(watch.next().await.unwrap().kind);
    }
    assert_eq!(
        kinds,
        [
            EventKind::Granted,
            EventKind::Queued,
            EventKind::Released,
            EventKind::Granted
        ]
        .map(|k| k as i32)
    );
}

/// A holder process that dies (killed: `TerminateProcess` on Windows,
/// SIGKILL on Unix) hands over to the waiter.
#[tokio::test]
async fn a_killed_holder_process_hands_over() {
    let broker = spawn_broker();
    // Connecting first waits until the broker is up (the CLI does not retry).
    let observer = broker.client("observer").await;
    // `turnstile run` holding the lease while this test binary sleeps.
    let mut holder = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .arg("--socket")
        .arg(&broker.endpoint)
        .args(["run", "res", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["sleep_role", "--exact", "--test-threads=1"])
        .env("TURNSTILE_TEST_ROLE", "sleep")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while observer.status(&["res".into()]).await.unwrap().resources[0]
        .holders
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder never held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pending = observer.acquire("res").start().await.unwrap();
    holder.kill().unwrap();
    let _ = holder.wait();
    let granted = tokio::time::timeout(Duration::from_secs(20), pending.wait_with(|_| {}))
        .await
        .expect("granted after the holder died");
    assert!(granted.is_ok());
}

/// Not a test: the long-running command of `a_killed_holder_process_hands_over`.
#[test]
fn sleep_role() {
    if std::env::var("TURNSTILE_TEST_ROLE").as_deref() == Ok("sleep") {
        std::thread::sleep(Duration::from_secs(30));
    }
}

/// Many tasks calling on one connection (in turn, each reads the socket
/// for its reply while no other does) each get their own answers, and a
/// watch on the same connection gets its events meanwhile.
async fn many_tasks_on_one_connection(broker: &Broker) {
    let c = broker.client("many").await;
    let mut watch = c.watch(&[], 0).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..16u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40u32 {
                let payload = format!("{t}-{i}").into_bytes();
                assert_eq!(c.ping(payload.clone()).await.unwrap(), &payload[..]);
                if i % 10 == 0 {
                    let lease = c.acquire(&format!("many/{t}")).wait().await.unwrap();
                    lease.release().await.unwrap();
                }
            }
        }));
    }
    // Several calls of one task at once: whoever reads wakes the others.
    let pings = (0..20u32).map(|i| {
        let c = c.clone();
        async move { (i, c.ping(i.to_string().into_bytes()).await.unwrap()) }
    });
    for (i, pong) in futures::future::join_all(pings).await {
        assert_eq!(pong, i.to_string().as_bytes());
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut released = std::collections::BTreeSet::new();
    while released.len() < 16 {
        let event = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("the watch's events")
            .expect("the connection stays up");
        if event.kind == EventKind::Released as i32 {
            released.insert(event.state.unwrap().resource);
        }
    }
}

#[tokio::test]
async fn many_tasks_share_one_connection_on_a_current_thread_runtime() {
    let broker = spawn_broker();
    many_tasks_on_one_connection(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_share_one_connection_on_a_multi_thread_runtime() {
    let broker = spawn_broker();
    many_tasks_on_one_connection(&broker).await;
}

/// A call dropped while it waits for its reply (reading the socket for it)
/// hands the reading back: pushes still arrive while nobody calls, and the
/// connection still answers.
#[tokio::test]
async fn a_call_dropped_while_it_waits_leaves_pushes_flowing() {
    let broker = spawn_broker();
    let agent = broker.client("agent").await;
    let mut watch = agent.watch(&["pcm".into()], 0).await.unwrap();
    {
        let ping = agent.ping(&b"dropped"[..]);
        futures::pin_mut!(ping);
        // Sent, and (unless the broker was quicker) reading for its reply.
        let _ = futures::poll!(ping.as_mut());
    }
    let service = broker.client("service").await;
    let lease = service.acquire("pcm").wait().await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("the Granted event arrives while nobody calls")
        .unwrap();
    assert_eq!(event.kind, EventKind::Granted as i32);
    assert_eq!(agent.ping(&b"after"[..]).await.unwrap(), &b"after"[..]);
    lease.release().await.unwrap();
}
