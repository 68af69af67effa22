//! What a call through the C ABI costs: the ping round trip through
//! `ts_ping` (as a C program makes it: the caller's thread hands the call
//! to the library's I/O thread and waits) against the Rust client's
//! `Client::ping` on a current-thread runtime (as an async Rust program
//! makes it: one thread), side by side in one run, in alternating rounds
//! against the same broker, for each placement of the broker.
//!
//! With `--broker PATH`, it starts that `turnstiled` itself, twice: pinned
//! to the client's first CPU (co-located), then to another CPU (cross-CPU),
//! with `taskset` (Linux). Pin the client itself with `taskset -c 0`:
//!
//!     cargo build --release --bin turnstiled
//!     taskset -c 0 cargo run --release -p turnstile-ffi --example ping_cost -- \
//!         --broker target/release/turnstiled 20000
//!
//! Without `--broker`, it measures against a running broker's socket:
//!
//!     cargo run --release -p turnstile-ffi --example ping_cost -- --socket /tmp/ts.sock 20000
//!
//! Prints, per placement, p50, p99 and mean (µs) of each and the difference
//! of the medians, and the load average before and after (the figures hold
//! only on a quiet machine).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use turnstile::{TS_WAIT_FOREVER, ts_client_close, ts_connect, ts_error, ts_ping};

const ROUNDS: u32 = 10;
const PAYLOAD: &[u8] = &[0; 16];

struct Args {
    broker: Option<PathBuf>,
    socket: Option<String>,
    count: u32,
}

fn args() -> Args {
    let usage = "usage: ping_cost (--broker TURNSTILED | --socket SOCKET) [COUNT]";
    let mut a = Args {
        broker: None,
        socket: None,
        count: 20_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--broker" => a.broker = Some(it.next().expect(usage).into()),
            "--socket" => a.socket = Some(it.next().expect(usage)),
            n => a.count = n.parse().expect(usage),
        }
    }
    assert!(a.broker.is_some() != a.socket.is_some(), "{usage}");
    a
}

/// The CPUs this process may run on (Linux), from /proc/self/status.
fn allowed_cpus() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A `turnstiled` pinned to `cpu`, on a socket in `dir`.
struct Broker {
    child: Child,
    socket: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_broker(exe: &Path, cpu: u32, dir: &Path) -> Broker {
    let socket = dir.join(format!("broker-cpu{cpu}.sock"));
    let child = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(exe)
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.join(format!("data-cpu{cpu}")))
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start turnstiled under taskset (util-linux)");
    Broker { child, socket }
}

/// Both clients against one broker; (C ABI, Rust client) histograms in ns.
fn measure(socket: &str, count: u32) -> (Histogram<u64>, Histogram<u64>) {
    let per_round = (count / ROUNDS).max(1);

    // The C ABI: one ts_client, blocking ts_ping calls from this thread.
    let c_socket = CString::new(socket).unwrap();
    let mut client = std::ptr::null_mut();
    let e = unsafe {
        ts_connect(
            c_socket.as_ptr(),
            c"ping-cost-ffi".as_ptr(),
            5000,
            &mut client,
        )
    };
    assert_eq!(e, ts_error::TS_OK, "ts_connect");

    // The Rust client, driven on this thread by a current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rust = rt
        .block_on(turnstile_client::Client::connect(
            turnstile_client::ConnectOptions::new("ping-cost-rust")
                .socket(socket)
                .retry_for(Duration::from_secs(5)),
        ))
        .expect("connect");

    let mut ffi = Histogram::<u64>::new(3).unwrap();
    let mut native = Histogram::<u64>::new(3).unwrap();
    // Warm-up, both.
    for _ in 0..1000 {
        unsafe { ts_ping(client, PAYLOAD.as_ptr(), PAYLOAD.len(), TS_WAIT_FOREVER) };
        rt.block_on(rust.ping(PAYLOAD)).unwrap();
    }
    for _ in 0..ROUNDS {
        for _ in 0..per_round {
            let t = Instant::now();
            let e = unsafe { ts_ping(client, PAYLOAD.as_ptr(), PAYLOAD.len(), TS_WAIT_FOREVER) };
            ffi.record(t.elapsed().as_nanos() as u64).unwrap();
            assert_eq!(e, ts_error::TS_OK);
        }
        rt.block_on(async {
            for _ in 0..per_round {
                let t = Instant::now();
                rust.ping(PAYLOAD).await.unwrap();
                native.record(t.elapsed().as_nanos() as u64).unwrap();
            }
        });
    }
    unsafe { ts_client_close(client) };
    (ffi, native)
}

fn report(placement: &str, ffi: &Histogram<u64>, native: &Histogram<u64>) {
    let us = |ns: u64| ns as f64 / 1000.0;
    println!("{placement}");
    for (name, h) in [
        ("  Rust client (current_thread)", native),
        ("  C ABI ts_ping", ffi),
    ] {
        println!(
            "{name:32} n={:6}  p50 {:7.1} µs  p99 {:7.1} µs  mean {:7.1} µs",
            h.len(),
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.99)),
            h.mean() / 1000.0
        );
    }
    println!(
        "  C ABI - Rust client: p50 {:+.1} µs, p99 {:+.1} µs",
        us(ffi.value_at_quantile(0.5)) - us(native.value_at_quantile(0.5)),
        us(ffi.value_at_quantile(0.99)) - us(native.value_at_quantile(0.99)),
    );
}

fn main() {
    let a = args();
    let cpus = allowed_cpus();
    println!(
        "client CPUs {cpus}; load average before: {}",
        load_average()
    );
    match (&a.broker, &a.socket) {
        (Some(exe), _) => {
            let dir = tempfile::tempdir().expect("temp dir");
            // The client's first CPU, and another one.
            let first: u32 = cpus
                .split([',', '-'])
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let online = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
            let other = if first + 1 < online.max(2) {
                first + 1
            } else {
                0
            };
            for (cpu, placement) in [
                (
                    first,
                    format!("broker on CPU {first} (co-located with the client)"),
                ),
                (other, format!("broker on CPU {other} (cross-CPU)")),
            ] {
                let b = spawn_broker(exe, cpu, dir.path());
                let (ffi, native) = measure(&b.socket.to_string_lossy(), a.count);
                report(&placement, &ffi, &native);
            }
        }
        (None, Some(socket)) => {
            let (ffi, native) = measure(socket, a.count);
            report(
                &format!("broker at {socket} (placement not set here)"),
                &ffi,
                &native,
            );
        }
        (None, None) => unreachable!("checked by args()"),
    }
    println!("load average after: {}", load_average());
}
