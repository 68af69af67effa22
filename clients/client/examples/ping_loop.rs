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
//! worker; `raw`, no client library at all but a blocking socket writing
//! the same frames and reading the answers (one `sendto`, one `recvfrom`
//! that sleeps: the floor a client can reach, as the bench's raw-frame
//! client does); `tokio`, no client library either but the same frames
//! through tokio's own `UnixStream` on a current-thread runtime (what any
//! tokio client pays); `foreign`, each ping handed from the main thread to that worker
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

/// The floor: what a blocking client with the same frames pays (one
/// `sendto`, one `recvfrom` that sleeps), as the bench's raw-frame client.
#[cfg(unix)]
fn raw_pings(socket: &str, count: usize) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    use bytes::BytesMut;
    use std::io::{Read, Write};
    use turnstile_client::proto::{self, client_frame::Body, server_frame};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    let mut out = BytesMut::new();
    let mut buf = BytesMut::with_capacity(4096);
    let mut chunk = vec![0u8; 4096];
    let mut roundtrip = |s: &mut std::os::unix::net::UnixStream,
                         id: u64,
                         body: Body|
     -> Result<proto::ServerFrame, Box<dyn std::error::Error>> {
        encode_request(&mut out, id, body);
        s.write_all(&out)?;
        loop {
            if let Some(frame) = split_frame(&mut buf)? {
                return Ok(frame);
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err("the broker closed the connection".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let hello = Body::Hello(proto::Hello {
        protocol_version: turnstile_proto::PROTOCOL_VERSION,
        client_name: "ping-loop".into(),
    });
    roundtrip(&mut s, 1, hello)?;
    let mut ns = Vec::with_capacity(count);
    for id in 2..count as u64 + 2 {
        let t = Instant::now();
        let frame = roundtrip(
            &mut s,
            id,
            Body::Ping(proto::Ping {
                payload: PAYLOAD.into(),
            }),
        )?;
        ns.push(t.elapsed().as_nanos() as u64);
        match frame.body {
            Some(server_frame::Body::Reply(r)) if r.id == id => {}
            other => return Err(format!("expected the Pong to {id}, got {other:?}").into()),
        }
    }
    Ok(ns)
}

/// What any tokio client pays: the same frames through tokio's own
/// `UnixStream` (`write_all`, then reads until the answer is whole), no
/// client library, on a current-thread runtime.
#[cfg(unix)]
async fn tokio_pings(socket: &str, count: usize) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use turnstile_client::proto::{self, client_frame::Body, server_frame};
    let mut s = tokio::net::UnixStream::connect(socket).await?;
    let mut out = BytesMut::new();
    let mut buf = BytesMut::with_capacity(4096);
    let mut ns = Vec::with_capacity(count);
    for id in 1..count as u64 + 2 {
        let body = if id == 1 {
            Body::Hello(proto::Hello {
                protocol_version: turnstile_proto::PROTOCOL_VERSION,
                client_name: "ping-loop".into(),
            })
        } else {
            Body::Ping(proto::Ping {
                payload: PAYLOAD.into(),
            })
        };
        let t = Instant::now();
        encode_request(&mut out, id, body);
        s.write_all(&out).await?;
        let frame = loop {
            if let Some(frame) = split_frame(&mut buf)? {
                break frame;
            }
            buf.reserve(4096);
            if s.read_buf(&mut buf).await? == 0 {
                return Err("the broker closed the connection".into());
            }
        };
        if id > 1 {
            ns.push(t.elapsed().as_nanos() as u64);
        }
        match frame.body {
            Some(server_frame::Body::Reply(r)) if r.id == id => {}
            other => return Err(format!("expected the answer to {id}, got {other:?}").into()),
        }
    }
    Ok(ns)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .ok_or("usage: ping_loop SOCKET [COUNT] [multi|raw|tokio|foreign]")?;
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
        #[cfg(unix)]
        "raw" => raw_pings(&socket, count)?,
        #[cfg(unix)]
        "tokio" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(tokio_pings(&socket, count))?,
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

/// `out` becomes the frame of request `id` (the raw modes). Unix only, as they are.
#[cfg(unix)]
fn encode_request(
    out: &mut bytes::BytesMut,
    id: u64,
    body: turnstile_client::proto::client_frame::Body,
) {
    out.clear();
    turnstile_proto::encode_frame(
        &turnstile_client::proto::ClientFrame {
            id,
            body: Some(body),
        },
        out,
    );
}

/// The first whole frame in `buf`, taken from it (the raw modes). Unix only, as they are.
#[cfg(unix)]
fn split_frame(
    buf: &mut bytes::BytesMut,
) -> Result<Option<turnstile_client::proto::ServerFrame>, Box<dyn std::error::Error>> {
    use bytes::Buf;
    use prost::Message;
    let Ok(len) = prost::encoding::decode_varint(&mut &buf[..]) else {
        return Ok(None);
    };
    let prefix = prost::encoding::encoded_len_varint(len);
    let end = prefix + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let frame = turnstile_client::proto::ServerFrame::decode(&buf[prefix..end])?;
    buf.advance(end);
    Ok(Some(frame))
}
