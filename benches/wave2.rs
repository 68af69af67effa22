//! Wave-2 figures against a real `turnstiled` (release build), printed as
//! a small table:
//!
//! - **reattach**: a lease with a detach grace whose connection closed is
//!   taken back from a fresh connection; the time from sending `Reattach`
//!   to its `AcquireReply` (p50/p99/max over N).
//! - **yield fan-out**: one `RequestYield` on a resource watched by W
//!   connections; the time from sending it to the last watcher receiving
//!   its `YIELD_REQUESTED` event (per request, p50/max), and per watcher.
//!
//! Run with:
//!
//! ```sh
//! cargo bench --bench wave2                            # N = 2000, W = 1000
//! TURNSTILE_BENCH_QUICK=1 cargo bench --bench wave2
//! ```
//!
//! Client and broker share this VM's two cores; the figures include the
//! client's own work and cross-process wake-ups (see BENCHMARKS.md on
//! placement).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use turnstile_client::{Client, ConnectOptions, EventKind, kinds};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn broker(dir: &std::path::Path) -> (Child, std::path::PathBuf) {
    let socket = dir.join("turnstile.sock");
    let exe = std::env::current_exe().unwrap();
    let turnstiled = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|d| d.join("turnstiled"))
        .unwrap();
    let child = Command::new(turnstiled)
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--log-level", "warn", "--max-connections-per-uid", "5000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn turnstiled (cargo build --release --bin turnstiled)");
    (child, socket)
}

async fn connect(socket: &std::path::Path, name: &str) -> Client {
    Client::connect(
        ConnectOptions::new(name)
            .socket(socket)
            .retry_for(Duration::from_secs(10)),
    )
    .await
    .unwrap()
}

async fn reattach(socket: &std::path::Path, n: usize) -> Vec<Duration> {
    let ui = connect(socket, "ui").await;
    let mut watch = ui.watch(&["r".to_string()], 0).await.unwrap();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let owner = connect(socket, "owner").await;
        let lease = owner
            .acquire("r")
            .detach_grace(Duration::from_secs(30))
            .wait()
            .await
            .unwrap();
        let token = lease.detach().unwrap();
        drop(owner);
        loop {
            let e = watch.next().await.unwrap();
            if kinds::event_kind(&e) == Some(EventKind::Detached) {
                break;
            }
        }
        let again = connect(socket, "again").await;
        let t0 = Instant::now();
        let pending = again.reattach(&token).await.unwrap();
        times.push(t0.elapsed());
        pending.wait().await.unwrap().release().await.unwrap();
    }
    times
}

async fn fan_out(socket: &std::path::Path, watchers: usize, rounds: usize) -> Vec<Duration> {
    let mut streams = Vec::with_capacity(watchers);
    let mut clients = Vec::with_capacity(watchers);
    for i in 0..watchers {
        let c = connect(socket, &format!("w{i}")).await;
        streams.push(c.watch(&["pcm".to_string()], 0).await.unwrap());
        clients.push(c);
    }
    let holder = connect(socket, "holder").await;
    let _lease = holder.acquire("pcm").wait().await.unwrap();
    let asker = connect(socket, "asker").await;
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = Instant::now();
        asker
            .request_yield("pcm")
            .reason("bench")
            .send()
            .await
            .unwrap();
        for s in streams.iter_mut() {
            loop {
                let e = s.next().await.unwrap();
                if kinds::event_kind(&e) == Some(EventKind::YieldRequested) {
                    break;
                }
            }
        }
        times.push(t0.elapsed());
    }
    times
}

fn main() {
    // `cargo test --benches` runs this too: keep it tiny there.
    let quick = std::env::var_os("TURNSTILE_BENCH_QUICK").is_some()
        || std::env::args().any(|a| a == "--test" || a == "--list");
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (n, w, rounds) = if quick { (50, 50, 3) } else { (2000, 1000, 20) };
    let dir = tempfile::tempdir().unwrap();
    let (mut child, socket) = broker(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut r = rt.block_on(reattach(&socket, n));
    r.sort();
    println!(
        "reattach ({n} times): p50 {:?}  p99 {:?}  max {:?}",
        percentile(&r, 0.5),
        percentile(&r, 0.99),
        r[r.len() - 1]
    );
    let mut f = rt.block_on(fan_out(&socket, w, rounds));
    f.sort();
    println!(
        "yield fan-out to {w} watchers ({rounds} requests): until the last watcher has it p50 {:?}  max {:?}  ({:?} per watcher at p50)",
        percentile(&f, 0.5),
        f[f.len() - 1],
        percentile(&f, 0.5) / w as u32
    );
    let _ = child.kill();
    let _ = child.wait();
}
