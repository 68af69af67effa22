//! The fleet against a real etcd (DESIGN "Fleet", issue #18): two or three
//! `turnstiled` on one machine stand for hosts (`--host-name a`, `b`, ...,
//! one socket each), and the tests start etcd themselves on loopback ports
//! with a temporary data directory: Debian's `etcd-server` (3.4), which
//! `.ci/run` installs. Without an `etcd` binary each test prints a SKIP
//! line and passes.
//!
//! The tests against etcd are built only with the `fleet` feature (`cargo
//! test --features fleet --test fleet`). The figures (`FIGURE ...` lines)
//! are printed, not asserted; the bounds asserted are those of the
//! contract (granted within the dead host's TTL, Lost before the TTL).
#![cfg(unix)]

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fleet_a_global_name_is_invalid() {
    let broker = spawn_broker();
    let c = broker.client("c").await;
    let Err(err) = c.acquire("global/x").start().await else {
        panic!("a global name was accepted by a broker without a fleet");
    };
    assert_eq!(
        err.code(),
        Some(turnstile_client::proto::ErrorCode::InvalidArgument)
    );
    assert!(err.to_string().contains("no fleet"), "{err}");
}

/// The tests against etcd: only with the `fleet` feature.
#[cfg(feature = "fleet")]
mod with_etcd {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use turnstile_client::{Client, QueueUpdate};

    /// The fleet TTL the tests give their brokers: short, so that failures
    /// show quickly, and above etcd's minimum lease TTL (1.5 s by default).
    const TTL: Duration = Duration::from_secs(3);

    /// One test at a time: they measure time-outs against a TTL, and several
    /// etcd and brokers at once on a 2-core machine would only blur that.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// The etcd binary, or `None` (with a SKIP line) when there is none.
    fn etcd_binary(test: &str) -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("TURNSTILE_ETCD") {
            return Some(PathBuf::from(p));
        }
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join("etcd");
            if p.is_file() {
                return Some(p);
            }
        }
        println!(
            "SKIP {test}: no etcd binary (install Debian's etcd-server, or set TURNSTILE_ETCD)"
        );
        None
    }

    /// `n` loopback ports, distinct from each other and from every port
    /// handed out before in this process. Each is free when chosen; the
    /// listeners are held until all `n` are, so the kernel cannot hand one
    /// out twice, and the set keeps tests running side by side from
    /// choosing the same one before either etcd binds it (seen: a member's
    /// peer port answered by another test's etcd, which never became
    /// healthy).
    fn free_ports(n: usize) -> Vec<u16> {
        static HANDED_OUT: Mutex<std::collections::BTreeSet<u16>> =
            Mutex::new(std::collections::BTreeSet::new());
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        let mut held = Vec::new();
        while held.len() < n {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
            let port = listener.local_addr().expect("its address").port();
            if handed_out.insert(port) {
                held.push(listener);
            }
        }
        held.iter()
            .map(|l| l.local_addr().expect("its address").port())
            .collect()
    }

    /// A local etcd cluster of one or more members, each on loopback ports
    /// with its own temporary data directory.
    struct Etcd {
        members: Vec<Member>,
        dir: tempfile::TempDir,
    }

    struct Member {
        child: Child,
        client_url: String,
    }

    impl Etcd {
        fn start(binary: &Path, size: usize) -> Etcd {
            let dir = tempfile::tempdir().expect("temp dir");
            let ports: Vec<(u16, u16)> = free_ports(2 * size)
                .chunks(2)
                .map(|pair| (pair[0], pair[1]))
                .collect();
            let cluster: Vec<String> = ports
                .iter()
                .enumerate()
                .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
                .collect();
            let token = format!("turnstile-test-{}", std::process::id());
            let mut members = Vec::new();
            for (i, (client, peer)) in ports.iter().enumerate() {
                let client_url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let log = std::fs::File::create(dir.path().join(format!("etcd-{i}.log"))).unwrap();
                let child = Command::new(binary)
                    .arg("--name")
                    .arg(format!("m{i}"))
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("m{i}")))
                    .args(["--listen-client-urls", &client_url])
                    .args(["--advertise-client-urls", &client_url])
                    .args(["--listen-peer-urls", &peer_url])
                    .args(["--initial-advertise-peer-urls", &peer_url])
                    .args(["--initial-cluster", &cluster.join(",")])
                    .args(["--initial-cluster-token", &token])
                    .args(["--initial-cluster-state", "new"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(log))
                    .spawn()
                    .expect("spawn etcd");
                members.push(Member { child, client_url });
            }
            let etcd = Etcd { members, dir };
            let start = Instant::now();
            while !etcd.members.iter().all(|m| health(&m.client_url)) {
                assert!(
                    start.elapsed() < PATIENCE,
                    "etcd did not become healthy; log:\n{}",
                    etcd.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            etcd
        }

        fn endpoints(&self) -> String {
            self.members
                .iter()
                .map(|m| m.client_url.clone())
                .collect::<Vec<_>>()
                .join(",")
        }

        fn log(&self) -> String {
            let mut out = String::new();
            for i in 0..self.members.len() {
                let path = self.dir.path().join(format!("etcd-{i}.log"));
                out.push_str(&std::fs::read_to_string(path).unwrap_or_default());
            }
            out
        }

        /// The index of the current leader.
        fn leader(&self) -> usize {
            let start = Instant::now();
            loop {
                for (i, m) in self.members.iter().enumerate() {
                    if let Some(status) = post(&m.client_url, "/v3/maintenance/status", "{}")
                        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&status)
                        && v["header"]["member_id"].is_string()
                        && v["header"]["member_id"] == v["leader"]
                    {
                        return i;
                    }
                }
                assert!(start.elapsed() < PATIENCE, "no etcd leader");
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        fn signal(&self, member: usize, sig: i32) {
            signal(self.members[member].child.id() as i32, sig);
        }
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            for m in &mut self.members {
                signal(m.child.id() as i32, libc::SIGCONT);
                let _ = m.child.kill();
                let _ = m.child.wait();
            }
        }
    }

    /// An HTTP request to etcd's JSON gateway; the body of a 200 answer.
    fn http(url: &str, request: &str) -> Option<String> {
        let addr = url.strip_prefix("http://")?;
        let mut s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    }

    fn health(url: &str) -> bool {
        http(
            url,
            "GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n",
        )
        .is_some_and(|b| b.contains("true"))
    }

    fn post(url: &str, path: &str, body: &str) -> Option<String> {
        http(
            url,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    }

    /// A broker of the fleet, standing for host `name`.
    fn host(etcd: &Etcd, name: &str) -> Broker {
        let ttl = format!("{}ms", TTL.as_millis());
        let b = spawn_broker_with(&[
            "--fleet-etcd",
            &etcd.endpoints(),
            "--host-name",
            name,
            "--fleet-ttl",
            &ttl,
            "--fleet-mirror-interval",
            "50ms",
        ]);
        wait_for(&format!("host {name} registered"), || {
            b.log_text().contains("fleet: registered with etcd")
        });
        b
    }

    /// Waits (bounded) until `cond` holds.
    #[track_caller]
    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < PATIENCE,
                "{what}: not within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `turnstile fleet status --json`.
    fn fleet_status(etcd: &Etcd) -> serde_json::Value {
        let out = Command::new(turnstile_cli())
            .args([
                "fleet",
                "status",
                "--json",
                "--fleet-etcd",
                &etcd.endpoints(),
            ])
            .output()
            .expect("run turnstile fleet status");
        assert!(
            out.status.success(),
            "fleet status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("fleet status JSON")
    }

    /// The hosts registered (with their description).
    fn hosts(status: &serde_json::Value) -> Vec<String> {
        status["hosts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|h| !h["record"].is_null())
                    .filter_map(|h| h["host"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The resources `host` mirrors.
    fn mirrored(status: &serde_json::Value, host: &str) -> Vec<serde_json::Value> {
        status["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["host"] == host)
            .flat_map(|h| h["resources"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// How many requests etcd's queue of the first global resource holds.
    fn global_requests(etcd: &Etcd) -> usize {
        fleet_status(etcd)["global"][0]["requests"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// A request for `resource` that must first wait for etcd.
    async fn queued(client: &Client, resource: &str, purpose: &str) -> turnstile_client::Pending {
        let pending = client
            .acquire(resource)
            .purpose(purpose)
            .start()
            .await
            .expect("acquire");
        assert!(
            matches!(pending.state(), QueueUpdate::Queued(_)),
            "a global request first waits for etcd: {:?}",
            pending.state()
        );
        pending
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_global_lease_is_handed_across_hosts_with_increasing_tokens() {
        let Some(bin) = etcd_binary("fleet handoff") else {
            return;
        };
        let _serial = SERIAL.lock().await;
        let etcd = Etcd::start(&bin, 1);
        let (a, b) = (host(&etcd, "a"), host(&etcd, "b"));
        let (ca, cb) = (a.client("job-a").await, b.client("job-b").await);

        let asked = Instant::now();
        let held = queued(&ca, "global/x", "inventory upload")
            .await
            .wait()
            .await
            .expect("granted on a");
        println!(
            "FIGURE global grant, uncontended: {:?} (acquire to grant, through etcd)",
            asked.elapsed()
        );
        let mut waiting = queued(&cb, "global/x", "inventory upload").await;
        wait_for("b's request in the global queue", || {
            global_requests(&etcd) == 2
        });
        // b's waiter sees its place across hosts: next in line, behind a's
        // holder (host and purpose).
        let place = tokio::time::timeout(PATIENCE, async {
            loop {
                if let QueueUpdate::Queued(q) = waiting.state()
                    && q.ahead.iter().any(|l| {
                        l.holder
                            .as_ref()
                            .is_some_and(|h| h.client_name == "job-a on a")
                            && l.purpose == "inventory upload"
                    })
                {
                    return q.clone();
                }
                waiting.next_update().await.expect("update");
            }
        })
        .await
        .expect("b's waiter is told who is ahead across hosts");
        assert_eq!(place.position, 1, "{place:?}");
        let token_a = held.fencing_token();
        let released = Instant::now();
        held.release().await.expect("release on a");
        let granted = tokio::time::timeout(PATIENCE, async {
            loop {
                if let QueueUpdate::Granted(_) = waiting.next_update().await.expect("update") {
                    return;
                }
            }
        })
        .await;
        assert!(granted.is_ok(), "b was not granted after a released");
        println!(
            "FIGURE global handoff across hosts: {:?} (release on a to grant on b)",
            released.elapsed()
        );
        let on_b = waiting.wait().await.expect("held on b");
        assert!(
            on_b.fencing_token() > token_a,
            "tokens increase across hosts: {} then {}",
            token_a,
            on_b.fencing_token()
        );
        on_b.release().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_global_semaphore_of_two_across_three_hosts() {
        let Some(bin) = etcd_binary("fleet semaphore") else {
            return;
        };
        let _serial = SERIAL.lock().await;
        let etcd = Etcd::start(&bin, 1);
        let brokers = [host(&etcd, "a"), host(&etcd, "b"), host(&etcd, "c")];
        let mut clients = Vec::new();
        for (i, b) in brokers.iter().enumerate() {
            clients.push(b.client(&format!("dl{i}")).await);
        }
        let mut held = Vec::new();
        for c in &clients[..2] {
            let p = c
                .acquire("global/dp")
                .shared()
                .capacity(2)
                .purpose("download")
                .start()
                .await
                .unwrap();
            held.push(
                tokio::time::timeout(PATIENCE, p.wait())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let mut third = clients[2]
            .acquire("global/dp")
            .shared()
            .capacity(2)
            .purpose("download")
            .start()
            .await
            .unwrap();
        wait_for("the third request in the global queue", || {
            global_requests(&etcd) == 3
        });
        // Two permits held, on two hosts: the third host waits (its queue
        // already shows it behind them in etcd; nothing grants it).
        let early = tokio::time::timeout(Duration::from_millis(500), third.next_update()).await;
        assert!(
            !matches!(early, Ok(Ok(QueueUpdate::Granted(_)))),
            "a third permit was granted"
        );
        held.remove(0).release().await.unwrap();
        let third = tokio::time::timeout(PATIENCE, third.wait())
            .await
            .expect("the third host is granted a permit")
            .unwrap();
        third.release().await.unwrap();
        held.remove(0).release().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_host_gives_way_within_its_ttl_and_its_keys_vanish() {
        let Some(bin) = etcd_binary("fleet dead host") else {
            return;
        };
        let _serial = SERIAL.lock().await;
        let etcd = Etcd::start(&bin, 1);
        let (mut a, b) = (host(&etcd, "a"), host(&etcd, "b"));
        let (ca, cb) = (a.client("job-a").await, b.client("job-b").await);
        let _held = queued(&ca, "global/x", "upload")
            .await
            .wait()
            .await
            .unwrap();
        // Mirror lag: a local change on b, until etcd shows it.
        let changed = Instant::now();
        let local = cb.acquire("pcm").purpose("job").wait().await.unwrap();
        wait_for("b's pcm mirrored", || {
            mirrored(&fleet_status(&etcd), "b")
                .iter()
                .any(|r| r["resource"] == "pcm")
        });
        println!(
            "FIGURE mirror lag: {:?} (local acquire to visible in etcd, polled with `turnstile fleet status`, --fleet-mirror-interval 50ms)",
            changed.elapsed()
        );
        let status = fleet_status(&etcd);
        assert_eq!(hosts(&status), ["a", "b"], "{status}");
        assert!(
            mirrored(&status, "a")
                .iter()
                .any(|r| r["resource"] == "global/x"),
            "{status}"
        );

        let waiting = queued(&cb, "global/x", "upload").await;
        wait_for("b's request in the global queue", || {
            global_requests(&etcd) == 2
        });
        let killed = Instant::now();
        a.kill();
        let on_b = tokio::time::timeout(PATIENCE, waiting.wait())
            .await
            .expect("b is granted once a's etcd lease runs out")
            .unwrap();
        let took = killed.elapsed();
        println!(
            "FIGURE dead host detected: {took:?} from SIGKILL of broker a to grant on b (TTL {TTL:?})"
        );
        assert!(
            took < TTL + Duration::from_secs(2),
            "b waited {took:?}, past a's TTL of {TTL:?} (and a generous 2 s)"
        );
        wait_for("a's keys gone", || {
            let s = fleet_status(&etcd);
            !hosts(&s).contains(&"a".to_string()) && mirrored(&s, "a").is_empty()
        });
        on_b.release().await.unwrap();
        local.release().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_cut_off_from_etcd_gives_up_global_leases_before_the_ttl() {
        let Some(bin) = etcd_binary("fleet etcd stopped") else {
            return;
        };
        let _serial = SERIAL.lock().await;
        let etcd = Etcd::start(&bin, 1);
        let a = host(&etcd, "a");
        let (c1, c2, c3) = (
            a.client("holder").await,
            a.client("waiter").await,
            a.client("local").await,
        );
        let held = queued(&c1, "global/x", "upload")
            .await
            .wait()
            .await
            .unwrap();
        let waiting = queued(&c2, "global/x", "upload").await;
        let local = c3.acquire("pcm").ttl(TTL).wait().await.unwrap();

        let stopped = Instant::now();
        etcd.signal(0, libc::SIGSTOP);
        let lost = tokio::time::timeout(PATIENCE, held.lost())
            .await
            .expect("the global holder is told Lost");
        let took = stopped.elapsed();
        println!("FIGURE etcd stopped to global holder Lost: {took:?} (TTL {TTL:?}): {lost:?}");
        assert!(
            took < TTL,
            "Lost after {took:?}, not before the TTL {TTL:?}"
        );
        assert!(format!("{lost:?}").contains("etcd"), "{lost:?}");
        // Local leases keep working: kept alive past the TTL, and new ones.
        tokio::time::sleep(TTL).await;
        assert!(local.lost_reason().is_none(), "the local lease was touched");
        let other = c3.acquire("pcm2").wait().await.expect("a local grant");
        other.release().await.unwrap();

        etcd.signal(0, libc::SIGCONT);
        // a registers again and its waiter joins the queue again: granted.
        let again = tokio::time::timeout(PATIENCE, waiting.wait())
            .await
            .expect("the waiter is granted after etcd is back")
            .unwrap();
        let registrations = a.log_text().matches("fleet: registered with etcd").count();
        assert!(registrations >= 2, "a did not register again");
        again.release().await.unwrap();
        local.release().await.unwrap();
    }

    /// Standard base64, as etcd's JSON gateway wants keys.
    fn base64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_holder_whose_etcd_key_vanishes_is_told_lost() {
        let Some(bin) = etcd_binary("fleet key deleted") else {
            return;
        };
        let _serial = SERIAL.lock().await;
        let etcd = Etcd::start(&bin, 1);
        let a = host(&etcd, "a");
        let c = a.client("holder").await;
        let held = queued(&c, "global/x", "upload").await.wait().await.unwrap();
        // Someone deletes every request of global/x behind the broker's back
        // (as etcd does when it expires a lease the broker thinks alive).
        let prefix = b"/turnstile/global/global%2Fx/";
        let mut end = prefix.to_vec();
        *end.last_mut().unwrap() += 1;
        let body = format!(
            "{{\"key\": \"{}\", \"range_end\": \"{}\"}}",
            base64(prefix),
            base64(&end)
        );
        let deleted = post(&etcd.members[0].client_url, "/v3/kv/deleterange", &body)
            .expect("etcd deletes the keys");
        assert!(deleted.contains("\"deleted\":\"1\""), "{deleted}");
        let lost = tokio::time::timeout(PATIENCE, held.lost())
            .await
            .expect("the holder is told Lost");
        assert!(format!("{lost:?}").contains("vanished"), "{lost:?}");
        wait_for("a registers again", || {
            a.log_text().matches("fleet: registered with etcd").count() >= 2
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_host_does_not_flood_etcd() {
        // 300 grants and releases of one local resource: the mirror writes
        // the newest state at most once per --fleet-mirror-interval (50 ms
        // here), so etcd's revision moves by about elapsed / 50 ms, not 600.
        let Some(bin) = etcd_binary("fleet coalescing") else {
            return;
        };
        let _serial = SERIAL.lock().await;
        let etcd = Etcd::start(&bin, 1);
        let a = host(&etcd, "a");
        let c = a.client("busy").await;
        let before = fleet_status(&etcd)["revision"].as_i64().unwrap();
        let start = Instant::now();
        for _ in 0..300 {
            acquire_release(&c, "pcm").await;
        }
        let elapsed = start.elapsed();
        wait_for("the last state mirrored (pcm free)", || {
            mirrored(&fleet_status(&etcd), "a").is_empty()
        });
        let writes = fleet_status(&etcd)["revision"].as_i64().unwrap() - before;
        let bound = (elapsed.as_millis() / 50) as i64 + 3;
        println!("300 grants in {elapsed:?}: {writes} etcd writes (at most {bound})");
        assert!(
            writes <= bound,
            "{writes} etcd writes for 600 changes in {elapsed:?}"
        );
    }

    /// One grant as the test saw it.
    #[derive(Clone, Debug)]
    struct Held {
        host: String,
        token: u64,
        from: Instant,
        to: Instant,
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_three_member_cluster_losing_its_leader_grants_nothing_twice() {
        let Some(bin) = etcd_binary("fleet three members") else {
            return;
        };
        let _serial = SERIAL.lock().await;
        let etcd = Etcd::start(&bin, 3);
        let (a, b) = (host(&etcd, "a"), host(&etcd, "b"));
        let history: Arc<Mutex<Vec<Held>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut workers = Vec::new();
        for (name, broker) in [("a", &a), ("b", &b)] {
            for i in 0..2 {
                let client = broker.client(&format!("{name}{i}")).await;
                let (history, stop, name) = (history.clone(), stop.clone(), name.to_string());
                workers.push(tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let Ok(p) = client.acquire("global/x").purpose(&name).start().await else {
                            return;
                        };
                        let Ok(Ok(lease)) =
                            tokio::time::timeout(Duration::from_secs(3), p.wait()).await
                        else {
                            continue;
                        };
                        let from = Instant::now();
                        let token = lease.fencing_token();
                        let to = tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(30)) => {
                                // Held until the release is sent: the broker
                                // may grant the next waiter (and its client
                                // see it) before this one reads its Done.
                                let sent = Instant::now();
                                let _ = lease.release().await;
                                sent
                            }
                            _ = lease.lost() => Instant::now(),
                        };
                        history.lock().unwrap().push(Held {
                            host: name.clone(),
                            token,
                            from,
                            to,
                        });
                    }
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let leader = etcd.leader();
        etcd.signal(leader, libc::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(5)).await;
        etcd.signal(leader, libc::SIGCONT);
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            let _ = tokio::time::timeout(PATIENCE, w).await;
        }
        let mut h = history.lock().unwrap().clone();
        h.sort_by_key(|x| x.from);
        assert!(h.len() >= 4, "too few grants to judge: {h:?}");
        for pair in h.windows(2) {
            assert!(
                pair[0].to <= pair[1].from,
                "granted twice at once: {:?} and {:?}",
                pair[0],
                pair[1]
            );
            assert!(
                pair[0].token < pair[1].token,
                "fencing tokens must increase: {:?} then {:?}",
                pair[0],
                pair[1]
            );
        }
        let hosts: std::collections::HashSet<&str> = h.iter().map(|x| x.host.as_str()).collect();
        println!(
            "{} grants over hosts {hosts:?}; leader m{leader} stopped for 5 s; none at once",
            h.len()
        );
    }
}
