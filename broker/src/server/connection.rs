//! One connection's task: it does the handshake, then reads frames, hands
//! each to the core by a direct call ([`SharedCore::handle_now`]), and
//! writes what the core queued for the connection (its answers, and what
//! others' requests caused for it), all the frames of one read in one
//! socket write.
//!
//! One task per connection, not a reader and a writer (issue 14): on the
//! current_thread runtime a request then costs no wake-up of another task
//! between its arrival and its answer's write, as in a bare echo server,
//! and an idle connection keeps one task, not two.
//!
//! It never waits on the core's state: the core never waits for it either
//! (see `outbound.rs`). Reading stops while the core's [`ReadGate`] is
//! closed (flow control); writing never blocks reading, so a client that
//! pipelines without reading its answers is paused by the gate, not by a
//! stuck write.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use interprocess::local_socket::tokio::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use turnstile_proto::v1;
use turnstile_proto::{FrameError, PROTOCOL_VERSION, ServerCodec};

use super::ToCore;
use super::core_task::SharedCore;
use super::outbound::{Outbound, ReadGate, Signal};
use super::wire::{Refusal, error_reply};
use crate::core::SessionId;
use crate::platform::peer::PeerCredentials;
use crate::platform::stream::split;

/// What the connection's task needs to know about its connection.
pub struct ReaderSetup {
    /// The core task's inbox (for the Hello).
    pub to_core: mpsc::Sender<ToCore>,
    /// The core, called directly for every frame after Hello.
    pub(super) core: Arc<SharedCore>,
    /// This connection's outbound queue.
    pub outbound: mpsc::Sender<Outbound>,
    /// Cancelled when the broker or the core ends the connection.
    pub cancel: CancellationToken,
    /// The kernel's word on the peer.
    pub creds: PeerCredentials,
    /// Closed by the core while the connection must not be read (its
    /// backlog or its requests in flight are at their bounds).
    pub gate: Arc<ReadGate>,
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

/// Splits a connection and serves it until it ends.
pub fn spawn(stream: Stream, setup: ReaderSetup, outbound_rx: mpsc::Receiver<Outbound>) {
    let (recv, send) = split(stream);
    tokio::spawn(serve(recv, send, setup, outbound_rx));
}

/// Sends a last error (Reply id 0 unless `id` says otherwise).
fn farewell(out: &mpsc::Sender<Outbound>, id: u64, refusal: Refusal) {
    let _ = out.try_send(Outbound::frame(error_reply(id, refusal)));
}

/// Smallest room offered to a read: an idle connection's buffer stays this
/// small; it grows (doubling) with what arrives, never past a frame's need.
const READ_ROOM: usize = 64;

/// A read buffer larger than this is let go once empty.
const KEEP_READ_BUFFER: usize = 64 * 1024;

/// Bytes of encoded frames gathered for one write before the queue is left
/// alone (what stays in the queue counts against the connection's bounds).
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Frames taken from the queue for one write at most.
const WRITE_BATCH_FRAMES: usize = 256;

/// The reading side: the socket half, the bytes read and not yet decoded.
struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    codec: ServerCodec,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads once: `Ok(0)` at the end of the stream.
    async fn read(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_ROOM {
            let grow = self.buf.capacity().max(READ_ROOM);
            self.buf.reserve(grow);
        }
        self.io.read_buf(&mut self.buf).await
    }

    /// Reads until a whole frame is decoded; `None` at a clean end.
    async fn next_frame(&mut self) -> Option<Result<v1::ClientFrame, FrameError>> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            match self.read().await {
                Ok(0) => {
                    return match self.codec.decode_eof(&mut self.buf) {
                        Ok(Some(frame)) => Some(Ok(frame)),
                        Ok(None) => None,
                        Err(e) => Some(Err(e)),
                    };
                }
                Ok(_) => {}
                Err(e) => return Some(Err(FrameError::Io(e))),
            }
        }
    }
}

/// The writing side: the socket half, the connection's queue and the bytes
/// encoded from it and not yet written.
struct FrameWriter<W> {
    io: W,
    rx: mpsc::Receiver<Outbound>,
    buf: BytesMut,
    batch: Vec<Outbound>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Encodes what is queued, without waiting, up to one write's worth.
    /// `true` when it stopped with frames left in the queue.
    fn fill(&mut self) -> bool {
        let mut frames = 0;
        while self.buf.len() < WRITE_BATCH_BYTES && frames < WRITE_BATCH_FRAMES {
            match self.rx.try_recv() {
                Ok(item) => item.encode(&mut self.buf),
                Err(_) => return false,
            }
            frames += 1;
        }
        true
    }

    /// Encodes what `recv_many` took.
    fn encode_batch(&mut self) {
        for item in self.batch.drain(..) {
            item.encode(&mut self.buf);
        }
        if self.batch.capacity() > WRITE_BATCH_FRAMES {
            self.batch = Vec::new();
        }
    }

    /// `n` bytes went out.
    fn wrote(&mut self, n: usize) {
        self.buf.advance(n);
        if self.buf.is_empty() && self.buf.capacity() > 256 * 1024 {
            // Do not keep large buffers around after a burst.
            self.buf = BytesMut::new();
        }
    }

    /// Writes what is queued until the queue is closed (the core forgot the
    /// connection, after answering what it had read), or `cancel`.
    async fn finish(mut self, cancel: &CancellationToken) {
        loop {
            self.fill();
            if self.buf.is_empty() {
                let n = tokio::select! {
                    _ = cancel.cancelled() => break,
                    n = self.rx.recv_many(&mut self.batch, WRITE_BATCH_FRAMES) => n,
                };
                if n == 0 {
                    break;
                }
                self.encode_batch();
                continue;
            }
            let write = tokio::select! {
                _ = cancel.cancelled() => break,
                r = self.io.write_all(&self.buf) => r,
            };
            if write.is_err() {
                return;
            }
            self.buf.clear();
        }
        // Flush what is already queued (a farewell error), briefly.
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            item.encode(&mut self.buf);
        }
        if !self.buf.is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(500), self.io.write_all(&self.buf))
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), self.io.shutdown()).await;
    }
}

async fn serve(
    recv: impl AsyncRead + Unpin,
    send: impl AsyncWrite + Unpin,
    setup: ReaderSetup,
    rx: mpsc::Receiver<Outbound>,
) {
    let core = setup.core.clone();
    let cancel = setup.cancel.clone();
    let gate = setup.gate.clone();
    let frame_timeout = setup.frame_timeout;
    let mut out = FrameWriter {
        io: send,
        rx,
        buf: BytesMut::new(),
        batch: Vec::new(),
    };
    // The handshake's state lives on the heap only while it runs, so an
    // idle connection keeps only the (smaller) request loop's state.
    let Some((mut reader, session, slot)) = Box::pin(handshake(recv, setup)).await else {
        out.finish(&cancel).await;
        return;
    };

    let reason = {
        // A frame begun must be finished within `frame_timeout`
        // (slowloris): one timer per connection, made at the first
        // unfinished frame and reset when another begins.
        let mut frame_deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut deadline_armed = false;
        // Complete frames may wait in the buffer while the gate is closed.
        let mut undecoded = false;
        // The Hello's answer is queued already.
        let mut queued = true;
        loop {
            if undecoded && !gate.is_closed() {
                match decode_and_handle(&mut reader, &core, session, &gate) {
                    Ok(progress) => {
                        undecoded = progress.stopped_at_gate;
                        arm_deadline(
                            &reader,
                            &progress,
                            frame_timeout,
                            &mut frame_deadline,
                            &mut deadline_armed,
                        );
                    }
                    Err(reason) => break reason,
                }
            }
            // Answers and events queued meanwhile go into this write.
            if gate.take_queued() || queued {
                queued = out.fill();
            }
            let open = !undecoded && !gate.is_closed();
            let closed = gate.is_closed();
            let writing = !out.buf.is_empty();
            tokio::select! {
                biased;
                signal = poll_fn(|cx| gate.poll_signal(cx)) => match signal {
                    Signal::Ended => break "closed by the broker".to_string(),
                    // Taken at the top of the loop.
                    Signal::Queued => {}
                },
                w = poll_fn(|cx| Pin::new(&mut out.io).poll_write(cx, &out.buf)), if writing => {
                    match w {
                        Ok(0) => break "the connection accepts no more bytes".to_string(),
                        Ok(n) => out.wrote(n),
                        Err(e) => break format!("writing to the connection failed: {e}"),
                    }
                }
                r = reader.read(), if open => match r {
                    Ok(0) => {
                        break match reader.codec.decode_eof(&mut reader.buf) {
                            Err(e) => e.to_string(),
                            Ok(_) => "the client closed the connection".to_string(),
                        };
                    }
                    Ok(_) => undecoded = true,
                    Err(e) => break FrameError::Io(e).to_string(),
                },
                _ = gate.wait_open(), if closed => {}
                _ = async {
                    match frame_deadline.as_mut() {
                        Some(sleep) => sleep.await,
                        None => std::future::pending().await,
                    }
                }, if deadline_armed => {
                    let refusal = Refusal::FrameUnfinished(frame_timeout);
                    let message = refusal.to_string();
                    core.handle_now([ToCore::Fatal { session, refusal }]);
                    break message;
                }
            }
        }
    };
    core.handle_now([ToCore::Goodbye { session, reason }]);
    drop(slot);
    out.finish(&cancel).await;
}

/// What one pass over the read buffer did.
struct Progress {
    /// Frames handled.
    frames: usize,
    /// It stopped because the gate closed, with bytes left to decode.
    stopped_at_gate: bool,
}

/// Decodes the complete frames in the buffer and hands them to the core,
/// while the gate is open; `Err` with the reason when the connection must
/// end (a broken frame: the core was told).
fn decode_and_handle<R>(
    reader: &mut FrameReader<R>,
    core: &SharedCore,
    session: SessionId,
    gate: &ReadGate,
) -> Result<Progress, String> {
    let mut progress = Progress {
        frames: 0,
        stopped_at_gate: false,
    };
    let mut failed = None;
    let mut frames = std::iter::from_fn(|| {
        if failed.is_some() {
            return None;
        }
        if gate.is_closed() {
            progress.stopped_at_gate = !reader.buf.is_empty();
            return None;
        }
        match reader.codec.decode(&mut reader.buf) {
            Ok(Some(frame)) => {
                progress.frames += 1;
                gate.hand();
                Some(ToCore::Request { session, frame })
            }
            Ok(None) => None,
            Err(e) => {
                let message = e.to_string();
                let fatal = Refusal::bad_frame(e).map(|refusal| ToCore::Fatal { session, refusal });
                failed = Some(message);
                fatal
            }
        }
    });
    // The gate is read between frames: a request that fills the
    // connection's bounds stops the ones behind it here.
    gate.set_busy(true);
    let handled = core.handle_now(&mut frames);
    gate.set_busy(false);
    if !handled {
        return Err("the broker is stopping".to_string());
    }
    if let Some(message) = failed {
        return Err(message);
    }
    if reader.buf.is_empty() && reader.buf.capacity() > KEEP_READ_BUFFER {
        reader.buf = BytesMut::new();
    }
    Ok(progress)
}

/// Starts, restarts or stops the frame deadline after a pass over the
/// buffer: running while an unfinished frame waits, from when it began.
fn arm_deadline<R>(
    reader: &FrameReader<R>,
    progress: &Progress,
    frame_timeout: Duration,
    deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    armed: &mut bool,
) {
    if reader.buf.is_empty() || progress.stopped_at_gate {
        // Nothing begun, or what waits is whole and held back by the gate.
        *armed = false;
        return;
    }
    if *armed && progress.frames == 0 {
        // The same unfinished frame: its deadline runs on.
        return;
    }
    let at = tokio::time::Instant::now() + frame_timeout;
    match deadline {
        Some(sleep) => sleep.as_mut().reset(at),
        None => *deadline = Some(Box::pin(tokio::time::sleep_until(at))),
    }
    *armed = true;
}

/// Reads the Hello (within the deadline), checks it and opens the session
/// with the core; `None` when the connection ended or was refused.
async fn handshake<R: AsyncRead + Unpin>(
    recv: R,
    setup: ReaderSetup,
) -> Option<(FrameReader<R>, SessionId, super::accounting::ConnectionSlot)> {
    let ReaderSetup {
        to_core,
        core: _,
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
    let mut reader = FrameReader {
        io: recv,
        buf: BytesMut::with_capacity(READ_ROOM),
        codec: ServerCodec::new(max_frame_bytes),
    };

    // The handshake: the first frame must be Hello, within the deadline.
    let first = tokio::select! {
        _ = cancel.cancelled() => return None,
        r = tokio::time::timeout(handshake_timeout, reader.next_frame()) => r,
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
    Some((reader, session, slot))
}

/// Writes what is queued for a refused connection (its one error), then
/// closes it.
pub fn spawn_farewell(stream: Stream, outbound_rx: mpsc::Receiver<Outbound>) {
    let (_recv, send) = split(stream);
    let out = FrameWriter {
        io: send,
        rx: outbound_rx,
        buf: BytesMut::new(),
        batch: Vec::new(),
    };
    tokio::spawn(async move { out.finish(&CancellationToken::new()).await });
}
