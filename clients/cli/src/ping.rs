//! `turnstile ping [--count N] [--size BYTES]`: round trips to the broker,
//! the time of one or min/p50/p99/max of many, and the broker's version.

use std::time::{Duration, Instant};

use turnstile_client::{Client, ClientError, ConnectOptions};

use crate::format;
use crate::{EXIT_OK, EXIT_USAGE};

pub async fn run(
    opts: ConnectOptions,
    count: u32,
    size: usize,
    json: bool,
) -> Result<u8, ClientError> {
    let client = Client::connect(opts).await?;
    let limit = client.hello().max_frame_bytes as usize;
    // The payload travels in one frame with a few bytes of header.
    let room = limit.saturating_sub(PING_FRAME_OVERHEAD);
    if size > room {
        eprintln!(
            "turnstile ping: --size {size} is over what the broker takes in one frame: at most {room} bytes (its frame limit is {limit} bytes, turnstiled --max-frame-bytes)"
        );
        return Ok(EXIT_USAGE);
    }
    ping(&client, count.max(1), size, json).await
}

/// The bytes of a ping frame besides its payload, counted generously:
/// request id, field tags and length prefixes.
const PING_FRAME_OVERHEAD: usize = 32;

async fn ping(client: &Client, count: u32, size: usize, json: bool) -> Result<u8, ClientError> {
    let payload = bytes::Bytes::from(vec![0u8; size]);
    let mut samples = Vec::with_capacity(count as usize);
    let started = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        client.ping(payload.clone()).await?;
        samples.push(t.elapsed());
    }
    let total = started.elapsed();
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let hello = client.hello();
    if json {
        // Whole nanoseconds, so that no float noise (33.031000000000006)
        // reaches the output.
        let us = |d: Duration| (d.as_secs_f64() * 1e9).round() / 1e3;
        println!(
            "{}",
            serde_json::json!({
                "broker_version": hello.broker_version,
                "count": count,
                "size": size,
                "min_us": us(pick(0.0)),
                "p50_us": us(pick(0.5)),
                "p99_us": us(pick(0.99)),
                "max_us": us(pick(1.0)),
                "per_second": (f64::from(count) / total.as_secs_f64()).round(),
            })
        );
    } else if count == 1 {
        println!(
            "pong from turnstiled {} (protocol {}): {} bytes in {}",
            hello.broker_version,
            hello.protocol_version,
            size,
            format::micros(pick(0.0))
        );
    } else {
        println!(
            "{count} pings of {size} bytes to turnstiled {}: min {}  p50 {}  p99 {}  max {}  ({:.0}/s)",
            hello.broker_version,
            format::micros(pick(0.0)),
            format::micros(pick(0.5)),
            format::micros(pick(0.99)),
            format::micros(pick(1.0)),
            f64::from(count) / total.as_secs_f64()
        );
    }
    Ok(EXIT_OK)
}
