//! The baselines' servers: zero-logic tokio programs, each on a
//! current_thread runtime like the broker, that move the same bytes the
//! broker would and do nothing else. Each runs as its own process (the
//! bench binary in a role) and prints `READY` once it listens.
//!
//! They read into a plain buffer and write what they got with one
//! `write_all`: the "buffered" read pattern of research/actor-latency.md,
//! which parks right after the write, as the broker does.

use std::io::Write;

use anyhow::{Result, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn ready() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "READY");
    let _ = out.flush();
}

fn arg(args: &[String], i: usize) -> Result<&str> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| anyhow!("missing argument {i}"))
}

/// `echo PATH`: sends back whatever each connection sends.
pub fn echo(args: &[String]) -> Result<()> {
    let path = arg(args, 0)?.to_string();
    runtime()?.block_on(tokio::task::LocalSet::new().run_until(async move {
        let listener = UnixListener::bind(&path)?;
        ready();
        loop {
            let (mut stream, _) = listener.accept().await?;
            tokio::task::spawn_local(async move {
                let mut buf = vec![0u8; 16384];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    }))
}

/// `relay PATH`: pairs the first two connections and forwards each one's
/// bytes to the other: client → relay → peer, no logic.
pub fn relay(args: &[String]) -> Result<()> {
    let path = arg(args, 0)?.to_string();
    runtime()?.block_on(tokio::task::LocalSet::new().run_until(async move {
        let listener = UnixListener::bind(&path)?;
        ready();
        let (a, _) = listener.accept().await?;
        let (b, _) = listener.accept().await?;
        let (a_read, a_write) = a.into_split();
        let (b_read, b_write) = b.into_split();
        let one = tokio::task::spawn_local(forward(a_read, b_write));
        let other = tokio::task::spawn_local(forward(b_read, a_write));
        let _ = one.await;
        let _ = other.await;
        Ok(())
    }))
}

async fn forward(
    mut from: tokio::net::unix::OwnedReadHalf,
    mut to: tokio::net::unix::OwnedWriteHalf,
) {
    let mut buf = vec![0u8; 16384];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// `fanout-server FAN_PATH CONTROL_PATH N`: accepts N connections on
/// FAN_PATH, then one on CONTROL_PATH; whatever arrives on the control
/// connection is written, as it came, to each of the N in turn (one task,
/// one `write_all` per connection: `fanout_direct` of research/performance.md).
pub fn fanout_server(args: &[String]) -> Result<()> {
    let fan_path = arg(args, 0)?.to_string();
    let control_path = arg(args, 1)?.to_string();
    let n: usize = arg(args, 2)?.parse()?;
    runtime()?.block_on(async move {
        let fan = UnixListener::bind(&fan_path)?;
        let control = UnixListener::bind(&control_path)?;
        ready();
        let mut conns: Vec<UnixStream> = Vec::with_capacity(n);
        while conns.len() < n {
            conns.push(fan.accept().await?.0);
        }
        let (mut ctl, _) = control.accept().await?;
        let mut buf = vec![0u8; 65536];
        loop {
            let got = ctl.read(&mut buf).await?;
            if got == 0 {
                return Ok(());
            }
            for conn in &mut conns {
                conn.write_all(&buf[..got]).await?;
            }
        }
    })
}

/// `idle-server PATH N`: holds every connection with one task parked in a
/// read of 64 bytes (the floor of research/performance.md's idle figure);
/// prints `ALL` once N are accepted.
pub fn idle_server(args: &[String]) -> Result<()> {
    let path = arg(args, 0)?.to_string();
    let n: usize = arg(args, 1)?.parse()?;
    runtime()?.block_on(tokio::task::LocalSet::new().run_until(async move {
        let listener = UnixListener::bind(&path)?;
        ready();
        let mut accepted = 0usize;
        loop {
            let (mut stream, _) = listener.accept().await?;
            tokio::task::spawn_local(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
            accepted += 1;
            if accepted == n {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "ALL");
                let _ = out.flush();
            }
        }
    }))
}
