//! One connection's two tasks: the reader, which does the handshake and
//! hands decoded frames to the core task, and the writer, which drains the
//! connection's outbound queue into one socket write at a time.
//!
//! Neither ever waits on the core's state: the reader waits only for room
//! in the core's inbox (back-pressure on a flooding client), and the core
//! never waits for a writer (see `outbound.rs`).

use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use interprocess::local_socket::tokio::Stream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use turnstile_proto::v1;
use turnstile_proto::{PROTOCOL_VERSION, ServerCodec};

use super::ToCore;
use super::outbound::{Outbound, ReadGate};
use super::wire::{Refusal, error_reply};
use crate::core::SessionId;
use crate::platform::peer::PeerCredentials;
use crate::platform::stream::split;

/// What the reader needs to know about its connection.
pub struct ReaderSetup {
    /// The core task's inbox.
    pub to_core: mpsc::Sender<ToCore>,
    /// This connection's outbound queue.
    pub outbound: mpsc::Sender<Outbound>,
    /// Cancelled when the broker or the core ends the connection.
    pub cancel: CancellationToken,
    /// The kernel's word on the peer.
    pub creds: PeerCredentials,
    /// Closed by the core while the connection must not be read (its
    /// backlog or its requests in flight are at their bounds).
    pub gate: std::sync::Arc<ReadGate>,
    /// The frame limit.
    pub max_frame_bytes: u32,
    /// Time allowed to say Hello.
    pub handshake_timeout: Duration,
    /// Time allowed to finish a frame once begun.
    pub frame_timeout: Duration,
    /// Released when the connection ends (per-uid and total counts); gives
    /// the uid's handshake permits.
    pub slot: super::accounting::ConnectionSlot,
}

/// Splits a connection and runs its reader and writer until it ends.
pub fn spawn(stream: Stream, setup: ReaderSetup, outbound_rx: mpsc::Receiver<Outbound>) {
    let (recv, send) = split(stream);
    tokio::spawn(write_loop(send, outbound_rx, setup.cancel.clone()));
    tokio::spawn(read_loop(recv, setup));
}

/// Sends a last error (Reply id 0 unless `id` says otherwise).
fn farewell(out: &mpsc::Sender<Outbound>, id: u64, refusal: Refusal) {
    let _ = out.try_send(Outbound::frame(error_reply(id, refusal)));
}

async fn read_loop(recv: impl AsyncRead + Unpin, setup: ReaderSetup) {
    let to_core = setup.to_core.clone();
    let cancel = setup.cancel.clone();
    let gate = setup.gate.clone();
    let frame_timeout = setup.frame_timeout;
    // The handshake's state lives on the heap only while it runs, so an
    // idle connection keeps only the (smaller) request loop's state.
    let Some((mut frames, session, slot)) = Box::pin(handshake(recv, setup)).await else {
        return;
    };

    let reason = loop {
        // Not a frame more while the core says so: the client's writes
        // then block in the kernel (flow control, not refusal).
        if gate.is_closed() {
            tokio::select! {
                _ = cancel.cancelled() => break "closed by the broker".to_string(),
                _ = gate.wait_open() => {}
            }
        }
        // A frame begun must be finished within `frame_timeout` (slowloris):
        // an idle connection only wakes up to find its buffer empty.
        let next = tokio::select! {
            _ = cancel.cancelled() => break "closed by the broker".to_string(),
            n = tokio::time::timeout(frame_timeout, frames.next()) => n,
        };
        let next = match next {
            Ok(n) => n,
            Err(_) if frames.read_buffer().is_empty() => continue,
            Err(_) => {
                let refusal = Refusal::FrameUnfinished(frame_timeout);
                let message = refusal.to_string();
                let _ = to_core.send(ToCore::Fatal { session, refusal }).await;
                break message;
            }
        };
        match next {
            None => break "the client closed the connection".to_string(),
            Some(Ok(frame)) => {
                gate.hand();
                if to_core
                    .send(ToCore::Request { session, frame })
                    .await
                    .is_err()
                {
                    break "the broker is stopping".to_string();
                }
            }
            Some(Err(e)) => {
                let message = e.to_string();
                if let Some(refusal) = Refusal::bad_frame(e) {
                    let _ = to_core.send(ToCore::Fatal { session, refusal }).await;
                }
                break message;
            }
        }
    };
    let _ = to_core.send(ToCore::Goodbye { session, reason }).await;
    drop(slot);
}

/// Reads the Hello (within the deadline), checks it and opens the session
/// with the core; `None` when the connection ended or was refused.
async fn handshake<R: AsyncRead + Unpin>(
    recv: R,
    setup: ReaderSetup,
) -> Option<(
    FramedRead<R, ServerCodec>,
    SessionId,
    super::accounting::ConnectionSlot,
)> {
    let ReaderSetup {
        to_core,
        outbound,
        cancel,
        creds,
        gate,
        max_frame_bytes,
        handshake_timeout,
        frame_timeout: _,
        slot,
    } = setup;
    // One of this uid's handshake permits first: until then the Hello waits
    // in the socket, and the deadline to say it has not begun.
    let handshake_permit = tokio::select! {
        _ = cancel.cancelled() => return None,
        p = slot.handshake_permit() => p?,
    };
    // Small to start with: an idle connection costs little; the buffer grows
    // to the frames that arrive (never past the frame limit).
    let mut frames = FramedRead::with_capacity(recv, ServerCodec::new(max_frame_bytes), 64);

    // The handshake: the first frame must be Hello, within the deadline.
    let first = tokio::select! {
        _ = cancel.cancelled() => return None,
        r = tokio::time::timeout(handshake_timeout, frames.next()) => r,
    };
    let hello_frame = match first {
        Err(_) => {
            tracing::info!(
                uid = creds.uid,
                pid = creds.pid,
                "closing a connection that sent no Hello within {handshake_timeout:?}"
            );
            farewell(&outbound, 0, Refusal::NoHello(handshake_timeout));
            return None;
        }
        Ok(None) => return None,
        Ok(Some(Err(e))) => {
            tracing::info!(
                uid = creds.uid,
                pid = creds.pid,
                "closing a connection before Hello: {e}"
            );
            if let Some(refusal) = Refusal::bad_frame(e) {
                farewell(&outbound, 0, refusal);
            }
            return None;
        }
        Ok(Some(Ok(frame))) => frame,
    };
    let hello = match hello_frame.body {
        Some(v1::client_frame::Body::Hello(h)) => h,
        _ => {
            tracing::info!(
                uid = creds.uid,
                pid = creds.pid,
                "closing a connection whose first frame was not Hello"
            );
            farewell(&outbound, 0, Refusal::FirstFrameNotHello);
            return None;
        }
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        tracing::info!(
            uid = creds.uid,
            pid = creds.pid,
            version = hello.protocol_version,
            "refusing an unsupported protocol version"
        );
        farewell(
            &outbound,
            hello_frame.id,
            Refusal::UnsupportedVersion(hello.protocol_version),
        );
        return None;
    }
    drop(handshake_permit);
    // The account and logon session, looked up off the runtime's thread
    // (a user lookup may go through NSS).
    let mut creds = creds;
    let looked_up = tokio::task::spawn_blocking(move || {
        creds.look_up_names();
        creds
    });
    let creds = tokio::select! {
        _ = cancel.cancelled() => return None,
        c = looked_up => c.ok()?,
    };

    let (session_tx, session_rx) = oneshot::channel();
    let hello_msg = ToCore::Hello {
        id: hello_frame.id,
        hello,
        creds,
        outbound: outbound.clone(),
        cancel: cancel.clone(),
        gate,
        session: session_tx,
    };
    if to_core.send(hello_msg).await.is_err() {
        return None;
    }
    let session = session_rx.await.ok()?;
    drop(outbound);
    Some((frames, session, slot))
}

async fn write_loop(
    mut send: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Outbound>,
    cancel: CancellationToken,
) {
    // Grows with the first burst; no room is reserved while idle.
    let mut batch = Vec::new();
    // Allocated at the first write, not while the connection idles.
    let mut buf = BytesMut::new();
    loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => 0,
            n = rx.recv_many(&mut batch, 256) => n,
        };
        if n == 0 {
            break;
        }
        for item in batch.drain(..) {
            item.encode(&mut buf);
        }
        let write = tokio::select! {
            _ = cancel.cancelled() => break,
            r = send.write_all(&buf) => r,
        };
        if write.is_err() {
            break;
        }
        buf.clear();
        // Do not keep large buffers around after a burst.
        if buf.capacity() > 256 * 1024 {
            buf = BytesMut::new();
        }
        if batch.capacity() > 256 {
            batch = Vec::new();
        }
    }
    // Flush what is already queued (a farewell error), briefly.
    rx.close();
    while let Ok(item) = rx.try_recv() {
        item.encode(&mut buf);
    }
    if !buf.is_empty() {
        let _ = tokio::time::timeout(Duration::from_millis(500), send.write_all(&buf)).await;
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), send.shutdown()).await;
}

/// Writes what is queued for a refused connection (its one error), then
/// closes it.
pub fn spawn_farewell(stream: Stream, outbound_rx: mpsc::Receiver<Outbound>) {
    let (_recv, send) = split(stream);
    tokio::spawn(write_loop(send, outbound_rx, CancellationToken::new()));
}
