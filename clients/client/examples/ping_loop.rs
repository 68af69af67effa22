//! One `Client::ping` after another against a running broker, to profile
//! the client library's request/reply path (how many instructions, system
//! calls and context switches one round trip costs):
//!
//!     cargo build --release -p turnstile-client --example ping_loop
//!     taskset -c 0 target/release/turnstiled --socket /tmp/ts.sock --data-dir /tmp/ts.data &
//!     taskset -c 0 perf stat -e task-clock,context-switches,instructions:u \
//!         target/release/examples/ping_loop /tmp/ts.sock 20000
//!     taskset -c 0 strace -f -c target/release/examples/ping_loop /tmp/ts.sock 20000
//!
//! Arguments: SOCKET [COUNT (default 20 000)] [MODE]. The client runs on a
//! current-thread runtime (an async Rust program) unless MODE says:
//! `multi`, every ping from one task on a multi-thread runtime of one
//! worker; `foreign`, each ping handed from the main thread to that worker
//! as a task whose answer comes back on a `std` channel, as libturnstile's
//! blocking calls do (`clients/ffi/src/runtime.rs`). Prints p50 and mean of
//! the round trips (µs); the counts above divided by COUNT are per ping
//! (connecting costs a few dozen system calls on top).

use std::time::Instant;

use turnstile_client::{Client, ClientError, ConnectOptions};

const PAYLOAD: &[u8] = &[7; 64];

async fn pings(socket: String, count: usize) -> Result<Vec<u64>, ClientError> {
    let client = Client::connect(ConnectOptions::new("ping-loop").socket(socket)).await?;
    let mut ns = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let pong = client.ping(PAYLOAD).await?;
        ns.push(t.elapsed().as_nanos() as u64);
        assert_eq!(
            pong.len(),
            PAYLOAD.len(),
            "the broker echoed another payload"
        );
    }
    Ok(ns)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .ok_or("usage: ping_loop SOCKET [COUNT] [multi]")?;
    let count: usize = args
        .next()
        .map(|c| c.parse())
        .transpose()?
        .unwrap_or(20_000);
    let mode = args.next().unwrap_or_else(|| "current_thread".into());
    let multi = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
    };
    let mut ns = match mode.as_str() {
        "multi" => {
            let rt = multi()?;
            let task = rt.spawn(pings(socket, count));
            rt.block_on(task)??
        }
        "foreign" => {
            let rt = multi()?;
            let options = ConnectOptions::new("ping-loop").socket(socket);
            let client = rt.block_on(Client::connect(options))?;
            let mut ns = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                let c = client.clone();
                rt.spawn(async move {
                    let _ = tx.send(c.ping(PAYLOAD).await);
                });
                let pong = rx.recv()??;
                ns.push(t.elapsed().as_nanos() as u64);
                assert_eq!(
                    pong.len(),
                    PAYLOAD.len(),
                    "the broker echoed another payload"
                );
            }
            ns
        }
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(pings(socket, count))?,
    };
    ns.sort_unstable();
    let mean = ns.iter().sum::<u64>() as f64 / ns.len().max(1) as f64;
    let p50 = ns.get(ns.len() / 2).copied().unwrap_or(0);
    println!(
        "{} pings ({}): p50 {:.1} µs, mean {:.1} µs",
        ns.len(),
        mode,
        p50 as f64 / 1000.0,
        mean / 1000.0
    );
    Ok(())
}
