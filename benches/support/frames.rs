//! Raw frames on a socket, the same way for the broker and for the bare
//! baselines: a request is encoded once with `encode_frame`, written with
//! one `write`, and answers are split on their varint prefix from one read
//! buffer. The broker and its baseline thus pay the same framing cost, and
//! the client library's own overhead stays out of every comparison (it has
//! its own, informational, row).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use bytes::{Buf, BytesMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turnstile_proto::v1::{self, client_frame::Body, reply, server_frame};
use turnstile_proto::{PROTOCOL_VERSION, encode_frame};

/// How long a lease of the harness lives without keep-alives: longer than
/// any measurement, so none expires under it.
pub const TTL_MS: u32 = 600_000;

/// One `ClientFrame`, encoded with its length prefix.
pub fn client_frame(id: u64, body: Body) -> BytesMut {
    let mut out = BytesMut::new();
    push_client_frame(&mut out, id, body);
    out
}

/// Appends one encoded `ClientFrame` to `out`.
pub fn push_client_frame(out: &mut BytesMut, id: u64, body: Body) {
    encode_frame(
        &v1::ClientFrame {
            id,
            body: Some(body),
        },
        out,
    );
}

/// `Hello` for protocol 1.
pub fn hello(name: &str) -> Body {
    Body::Hello(v1::Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: name.to_string(),
    })
}

/// `Ping` with the 64-byte payload.
pub fn ping() -> Body {
    Body::Ping(v1::Ping {
        payload: super::PAYLOAD.to_vec().into(),
    })
}

/// An exclusive `Acquire` that queues (or, with `no_wait`, refuses) when
/// the resource is taken.
pub fn acquire(resource: &str, no_wait: bool) -> Body {
    let wait = if no_wait {
        v1::WaitPolicy::NoWait
    } else {
        v1::WaitPolicy::Queue
    };
    Body::Acquire(v1::Acquire {
        resource: resource.to_string(),
        mode: v1::Mode::Exclusive as i32,
        ttl_ms: TTL_MS,
        wait: wait as i32,
        max_wait_ms: 0,
        purpose: String::new(),
        ..v1::Acquire::default()
    })
}

/// `Release` of a lease.
pub fn release(lease_id: u64) -> Body {
    Body::Release(v1::Release { lease_id })
}

/// `Watch` of some resources from now on.
pub fn watch(resources: &[&str]) -> Body {
    Body::Watch(v1::Watch {
        resources: resources.iter().map(|r| r.to_string()).collect(),
        start_revision: 0,
    })
}

/// Splits one whole frame off the front of `buf` and returns its message
/// bytes (prefix removed), or `None` while the frame is incomplete.
pub fn split_frame(buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    let mut len = 0u64;
    let mut prefix = 0;
    loop {
        let Some(&byte) = buf.get(prefix) else {
            return Ok(None);
        };
        if prefix == 10 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad varint"));
        }
        len |= u64::from(byte & 0x7f) << (7 * prefix);
        prefix += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let total = prefix + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    frame.advance(prefix);
    Ok(Some(frame))
}

/// Decodes a broker's frame.
pub fn server_frame(body: &[u8]) -> Result<v1::ServerFrame> {
    Ok(v1::ServerFrame::decode(body)?)
}

/// The reply in a frame, with its id; anything else is an error.
pub fn reply_of(frame: v1::ServerFrame) -> Result<(u64, reply::Result)> {
    match frame.body {
        Some(server_frame::Body::Reply(v1::Reply {
            id,
            result: Some(result),
        })) => match result {
            reply::Result::Error(e) => bail!("broker error on request {id}: {e:?}"),
            result => Ok((id, result)),
        },
        other => bail!("expected a reply, got {other:?}"),
    }
}

/// The lease granted by an `AcquireReply`, or an error if it was queued.
pub fn granted(result: &reply::Result) -> Result<u64> {
    match result {
        reply::Result::Acquire(v1::AcquireReply {
            outcome: Some(v1::acquire_reply::Outcome::Granted(g)),
        }) => Ok(g.lease_id),
        other => bail!("expected Granted, got {other:?}"),
    }
}

/// A blocking connection speaking raw frames.
pub struct Conn {
    stream: UnixStream,
    buf: BytesMut,
}

impl Conn {
    /// Connects to a Unix socket.
    pub fn connect(path: &Path) -> Result<Conn> {
        let stream = UnixStream::connect(path)
            .map_err(|e| anyhow!("connecting to {}: {e}", path.display()))?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(8192),
        })
    }

    /// Connects to the broker and says Hello.
    pub fn broker(path: &Path, name: &str) -> Result<Conn> {
        let mut conn = Conn::connect(path)?;
        conn.send(&client_frame(1, hello(name)))?;
        match reply_of(conn.server()?)? {
            (_, reply::Result::Hello(_)) => Ok(conn),
            (_, other) => bail!("expected HelloReply, got {other:?}"),
        }
    }

    /// Writes bytes (one or more whole frames) with one write call.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// The next whole frame's message bytes.
    pub fn frame(&mut self) -> Result<BytesMut> {
        loop {
            if let Some(frame) = split_frame(&mut self.buf)? {
                return Ok(frame);
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the peer closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame from the broker, decoded.
    pub fn server(&mut self) -> Result<v1::ServerFrame> {
        server_frame(&self.frame()?)
    }

    /// The next frame from an echo (a `ClientFrame` sent back), decoded.
    pub fn echoed(&mut self) -> Result<v1::ClientFrame> {
        Ok(v1::ClientFrame::decode(self.frame()?)?)
    }

    /// The next reply from the broker.
    pub fn reply(&mut self) -> Result<(u64, reply::Result)> {
        reply_of(self.server()?)
    }

    /// Sends a request and waits for its reply.
    pub fn call(&mut self, id: u64, body: Body) -> Result<reply::Result> {
        self.send(&client_frame(id, body))?;
        let (got, result) = self.reply()?;
        if got != id {
            bail!("reply to {got}, expected {id}");
        }
        Ok(result)
    }
}

/// A tokio connection speaking raw frames.
pub struct AsyncConn {
    /// The socket.
    pub stream: tokio::net::UnixStream,
    buf: BytesMut,
}

impl AsyncConn {
    /// Connects to a Unix socket.
    pub async fn connect(path: &Path) -> Result<AsyncConn> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| anyhow!("connecting to {}: {e}", path.display()))?;
        Ok(AsyncConn {
            stream,
            buf: BytesMut::with_capacity(8192),
        })
    }

    /// Connects to the broker and says Hello.
    pub async fn broker(path: &Path, name: &str) -> Result<AsyncConn> {
        let mut conn = AsyncConn::connect(path).await?;
        conn.send(&client_frame(1, hello(name))).await?;
        match reply_of(server_frame(&conn.frame().await?)?)? {
            (_, reply::Result::Hello(_)) => Ok(conn),
            (_, other) => bail!("expected HelloReply, got {other:?}"),
        }
    }

    /// Writes bytes with as few write calls as the socket allows.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Reads whatever has arrived into the buffer; false at end of stream.
    pub async fn fill(&mut self) -> Result<bool> {
        self.buf.reserve(8192);
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }

    /// Splits off the next whole frame already in the buffer, if any.
    pub fn buffered(&mut self) -> Result<Option<BytesMut>> {
        Ok(split_frame(&mut self.buf)?)
    }

    /// The next whole frame's message bytes.
    pub async fn frame(&mut self) -> Result<BytesMut> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(frame);
            }
            if !self.fill().await? {
                bail!("the peer closed the connection");
            }
        }
    }

    /// Sends a request to the broker and waits for its reply (no pushes may
    /// come in between).
    pub async fn call(&mut self, id: u64, body: Body) -> Result<reply::Result> {
        self.send(&client_frame(id, body)).await?;
        let (got, result) = reply_of(server_frame(&self.frame().await?)?)?;
        if got != id {
            bail!("reply to {got}, expected {id}");
        }
        Ok(result)
    }
}
