//! What a call through the C ABI costs: the ping round trip through
//! `ts_ping` (as a C program makes it) against the Rust client's
//! `Client::ping` on a current-thread runtime (as an async Rust program
//! makes it), in one run, in alternating rounds against the same broker.
//!
//!     cargo build --release --bin turnstiled
//!     target/release/turnstiled --socket /tmp/ts-bench.sock --data-dir /tmp/ts-bench &
//!     cargo run --release -p turnstile-ffi --example ping_cost -- /tmp/ts-bench.sock 20000
//!
//! Prints p50, p99 and mean for each (µs) and the difference of the medians.

use std::ffi::CString;
use std::time::Instant;

use hdrhistogram::Histogram;
use turnstile::{TS_WAIT_FOREVER, ts_client_close, ts_connect, ts_error, ts_ping};

const ROUNDS: u32 = 10;
const PAYLOAD: &[u8] = &[0; 16];

fn main() {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .expect("usage: ping_cost SOCKET [COUNT]  (a running turnstiled's socket)");
    let count: u32 = args.next().map_or(20_000, |c| c.parse().expect("COUNT"));
    let per_round = (count / ROUNDS).max(1);

    // The C ABI: one ts_client, blocking ts_ping calls from this thread.
    let c_socket = CString::new(socket.clone()).unwrap();
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
            turnstile_client::ConnectOptions::new("ping-cost-rust").socket(&socket),
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
    let us = |ns: u64| ns as f64 / 1000.0;
    for (name, h) in [
        ("rust client (current_thread)", &native),
        ("C ABI ts_ping", &ffi),
    ] {
        println!(
            "{name:30} n={:6}  p50 {:7.1} µs  p99 {:7.1} µs  mean {:7.1} µs",
            h.len(),
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.99)),
            h.mean() / 1000.0
        );
    }
    println!(
        "C ABI - Rust client, p50: {:+.1} µs",
        us(ffi.value_at_quantile(0.5)) - us(native.value_at_quantile(0.5))
    );
    unsafe { ts_client_close(client) };
}
