//! The peers turnstile is compared with, each started by the harness on a
//! private address as a server of the current placement, and each talked to
//! through its own well-kept client crate, as turnstile is through
//! `turnstile-client`:
//!
//! - **D-Bus**: a private `dbus-daemon` (its own configuration: one Unix
//!   socket in the run's temporary directory, EXTERNAL authentication,
//!   everything allowed), `org.freedesktop.DBus.GetId` through `zbus`; the
//!   daemon answers that call itself, so it is one request/reply through
//!   the bus, like a Ping through the broker;
//! - **NATS**: a private `nats-server` on a free loopback TCP port (it has
//!   no Unix sockets), a request/reply through `async-nats` to a responder
//!   in another process (`nats-responder`), so it is a message from one
//!   process through the server to another and back, as the contended
//!   handoff is from the holder through the broker to the waiter.
//!
//! When a peer is not installed, its row says SKIP (and the harness prints
//! a SKIP line); that is not a failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;

use crate::support::clock::now_ns;
use crate::support::procs::Peer;
use crate::support::stats::Latencies;
use crate::support::{PATIENCE, PAYLOAD, Plan};

/// The subject the NATS responder answers on.
const SUBJECT: &str = "turnstile.bench.request";

/// Requests each client sends before the timed ones.
const WARMUP: usize = 200;

/// Finds `program` on `PATH` (and in the sbin directories Debian puts
/// daemons in, which a non-root `PATH` may lack).
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A private `dbus-daemon`, stopped when dropped.
pub struct Dbus {
    _daemon: Peer,
    address: String,
}

impl Dbus {
    /// Why the D-Bus row cannot be taken here, if it cannot.
    pub fn unavailable() -> Option<String> {
        find("dbus-daemon")
            .is_none()
            .then(|| "SKIP: dbus-daemon is not installed (Debian package dbus-daemon)".to_string())
    }

    /// Starts a daemon of its own on a socket in the run's directory.
    pub fn start(plan: &Plan) -> Result<Dbus> {
        let program = find("dbus-daemon").ok_or_else(|| anyhow!("dbus-daemon not found"))?;
        let dir = plan.path("dbus");
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("bus");
        let config = dir.join("bus.conf");
        std::fs::write(&config, dbus_config(&socket))?;
        let mut daemon = Peer::program(
            &program,
            &[
                format!("--config-file={}", config.display()),
                "--nofork".into(),
                "--nopidfile".into(),
                "--print-address=1".into(),
            ],
            "dbus-daemon",
        )?;
        let address = daemon.line()?.trim().to_string();
        if !address.starts_with("unix:") {
            bail!("dbus-daemon printed {address:?} instead of its address");
        }
        Ok(Dbus {
            _daemon: daemon,
            address,
        })
    }

    /// `iters` GetId round trips (after a warm-up) on one connection.
    pub fn get_id(&self, iters: usize) -> Result<Latencies> {
        runtime()?.block_on(async {
            let conn = zbus::connection::Builder::address(self.address.as_str())
                .build()
                .await
                .context("connecting to the private dbus-daemon")?;
            let mut lat = Latencies::new();
            for i in 0..WARMUP + iters {
                let t0 = now_ns();
                let reply = conn
                    .call_method(
                        Some("org.freedesktop.DBus"),
                        "/org/freedesktop/DBus",
                        Some("org.freedesktop.DBus"),
                        "GetId",
                        &(),
                    )
                    .await?;
                let t1 = now_ns();
                let id: String = reply.body().deserialize()?;
                if id.len() != 32 {
                    bail!("GetId answered {id:?}");
                }
                if i >= WARMUP {
                    lat.record(t1 - t0);
                }
            }
            Ok(lat)
        })
    }
}

/// A bus configuration of its own: one socket, no activation, no policy
/// in the way (the bench talks only to the bus itself).
fn dbus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// A private `nats-server` on a loopback port, stopped when dropped.
pub struct Nats {
    _server: Peer,
    url: String,
}

impl Nats {
    /// Why the NATS row cannot be taken here, if it cannot.
    pub fn unavailable() -> Option<String> {
        find("nats-server")
            .is_none()
            .then(|| "SKIP: nats-server is not installed (Debian package nats-server)".to_string())
    }

    /// Starts a server of its own on a free loopback port.
    pub fn start() -> Result<Nats> {
        let program = find("nats-server").ok_or_else(|| anyhow!("nats-server not found"))?;
        // A port the kernel says is free; the race with another program
        // taking it in between shows as the server failing to listen.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let server = Peer::program(
            &program,
            &[
                "--addr".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--http_port".into(),
                "0".into(),
            ],
            "nats-server",
        )?;
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > PATIENCE {
                bail!("nats-server did not listen on 127.0.0.1:{port} within {PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Nats {
            _server: server,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }

    /// `iters` request/reply round trips (after a warm-up) to a responder
    /// in another process.
    pub fn request_reply(&self, iters: usize) -> Result<Latencies> {
        let mut responder = Peer::spawn("nats-responder", std::slice::from_ref(&self.url))?;
        responder.expect("READY")?;
        runtime()?.block_on(async {
            let client = async_nats::connect(self.url.as_str())
                .await
                .context("connecting to the private nats-server")?;
            let mut lat = Latencies::new();
            for i in 0..WARMUP + iters {
                let t0 = now_ns();
                let reply = client
                    .request(SUBJECT, bytes::Bytes::from_static(&PAYLOAD))
                    .await?;
                let t1 = now_ns();
                if reply.payload.len() != PAYLOAD.len() {
                    bail!("the responder sent back {} bytes", reply.payload.len());
                }
                if i >= WARMUP {
                    lat.record(t1 - t0);
                }
            }
            Ok(lat)
        })
    }
}

/// `nats-responder URL`: answers every request on [`SUBJECT`] with its own
/// payload.
pub fn nats_responder(args: &[String]) -> Result<()> {
    let url = args
        .first()
        .ok_or_else(|| anyhow!("missing the server URL"))?;
    runtime()?.block_on(async {
        let client = async_nats::connect(url.as_str()).await?;
        let mut requests = client.subscribe(SUBJECT).await?;
        // The subscription is known to the server once a flush returns.
        client.flush().await?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "READY")?;
            out.flush()?;
        }
        while let Some(msg) = requests.next().await {
            if let Some(reply) = msg.reply {
                client.publish(reply, msg.payload).await?;
            }
        }
        Ok(())
    })
}
