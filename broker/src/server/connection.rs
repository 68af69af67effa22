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
//! Frames for the connection that the core makes while the task is
//! elsewhere (a grant, a watch event) are usually written by the core
//! itself, straight into the socket, when nothing waits before them; the
//! task writes what the socket did not take, and its own answers.
//!
//! It never waits on the core's state: the core never waits for it either
//! (see `outbound.rs`). Reading stops while the core's [`ReadGate`] is
//! closed (flow control); writing never blocks reading, so a client that
//! pipelines without reading its answers is paused by the gate, not by a
//! stuck write.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use interprocess::local_socket::tokio::Stream;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use turnstile_proto::{FrameError, PROTOCOL_VERSION, ServerCodec};
use turnstile_proto::{hot, v1};

use super::ToCore;
use super::core_task::SharedCore;
use super::outbound::{Drained, Outbound, ReadGate, Signal, others_woken};
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
    /// Cancelled when the broker stops (the core closes a connection it is
    /// done with through the gate).
    pub stop: CancellationToken,
    /// The kernel's word on the peer.
    pub creds: PeerCredentials,
    /// The connection's outbound queue, and what the core and the task
    /// signal each other (the read gate among them).
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
pub fn spawn(stream: Stream, setup: ReaderSetup) {
    let (recv, send) = split(stream);
    if let Some(direct) = send.direct() {
        setup.gate.attach(direct);
    }
    // The setup is boxed: a future keeps its arguments' room for as long
    // as it lives (968 -> 312 bytes of task state per connection).
    tokio::spawn(serve(recv, send, Box::new(setup)));
}

/// Sends a last error (Reply id 0 unless `id` says otherwise).
fn farewell(out: &ReadGate, id: u64, refusal: Refusal) {
    let _ = out.push(Outbound::frame(error_reply(id, refusal)));
}

/// Smallest room offered to a read: an idle connection's buffer stays this
/// small; it grows (doubling) with what arrives, never past a frame's need.
const READ_ROOM: usize = 64;

/// Largest room a read is offered for a burst of small frames: one
/// connection's burst is handled in entries of at most this much, so that
/// others are not kept waiting behind it.
const READ_BURST: usize = 4 * 1024;

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
    /// The last read filled all the room it was offered: more was likely
    /// waiting, so the next read is offered twice the room.
    filled: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads once: `Ok(0)` at the end of the stream.
    fn poll_read(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<usize>> {
        let (capacity, len) = (self.buf.capacity(), self.buf.len());
        if self.filled && capacity < READ_BURST {
            // A burst (a window of acks, pipelined requests): one read
            // takes more of it, up to `READ_BURST` (issue 14: a window of
            // 256 acks was 18 reads of ~126 bytes, each an entry into the
            // core).
            self.buf.reserve(2 * capacity - len);
        } else if capacity - len < READ_ROOM {
            self.buf.reserve(capacity.max(READ_ROOM));
        }
        let offered = self.buf.capacity() - self.buf.len();
        // The future only borrows the two: made afresh at each poll, it
        // keeps no state in the connection's task while it idles.
        let read = std::pin::pin!(self.io.read_buf(&mut self.buf));
        let polled = read.poll(cx);
        if let Poll::Ready(Ok(n)) = &polled {
            self.filled = *n == offered;
        }
        polled
    }

    /// Reads until a whole frame is decoded; `None` at a clean end.
    async fn next_frame(&mut self) -> Option<Result<v1::ClientFrame, FrameError>> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            match poll_fn(|cx| self.poll_read(cx)).await {
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

/// The writing side: the socket half and the bytes encoded from the
/// connection's queue and not yet written.
struct FrameWriter<W> {
    io: W,
    buf: BytesMut,
}

thread_local! {
    /// Where a connection's task encodes what is queued for it: shared by
    /// every connection of the thread, so that an idle connection keeps no
    /// write buffer. Only bytes the socket did not take at once move to the
    /// connection's own buffer.
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Encodes what is queued, without waiting, up to one write's worth,
    /// and writes it at once; what the socket does not take waits in the
    /// connection's own buffer (and what is queued behind that, too).
    async fn flush_queued(&mut self, gate: &ReadGate) -> std::io::Result<Drained> {
        if !self.buf.is_empty() {
            let before = self.buf.len();
            let drained = gate.drain_into(&mut self.buf, WRITE_BATCH_BYTES, WRITE_BATCH_FRAMES);
            gate.keep_buffered(self.buf.len() - before);
            return Ok(drained);
        }
        poll_fn(|cx| {
            Poll::Ready(SCRATCH.with_borrow_mut(|scratch| {
                let drained = gate.drain_into(scratch, WRITE_BATCH_BYTES, WRITE_BATCH_FRAMES);
                if scratch.is_empty() {
                    return Ok(drained);
                }
                let written = match Pin::new(&mut self.io).poll_write(cx, scratch) {
                    Poll::Ready(Ok(0)) => Err(std::io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => Ok(n),
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Ok(0),
                };
                if let Ok(n) = written {
                    self.buf.extend_from_slice(&scratch[n..]);
                    gate.keep_buffered(scratch.len() - n);
                }
                if self.buf.is_empty() {
                    // All of it went: the core may write straight to the
                    // socket again.
                    gate.wrote_all();
                }
                scratch.clear();
                if scratch.capacity() > KEEP_READ_BUFFER {
                    *scratch = BytesMut::new();
                }
                written.map(|_| drained)
            }))
        })
        .await
    }

    /// `n` bytes of the connection's own buffer went out: whether the
    /// core waits for this connection's uid and it is under its bound now
    /// (then it is told `Writable`).
    fn wrote(&mut self, n: usize, gate: &ReadGate) -> bool {
        self.buf.advance(n);
        let room = gate.wrote_buffered(n);
        if self.buf.is_empty() {
            // Rarely used (a socket that took part of a write): not kept.
            self.buf = BytesMut::new();
            gate.wrote_all();
        }
        room
    }

    /// Writes what is queued until the core is done with the connection
    /// (after answering what it had read); then closes it. Past a cut (the
    /// core closed it) or the broker's stop, only briefly.
    async fn finish(mut self, gate: &ReadGate, stop: &CancellationToken) {
        // From here the task writes everything, in order, with waits.
        gate.stop_direct();
        loop {
            let ended = gate.is_ended();
            if gate.is_cut() {
                break;
            }
            // Taken before draining: a frame queued after this wakes the
            // wait below again (and a stale flag does not spin it).
            gate.take_queued();
            // Not counted as held (`keep_buffered`): the core is done with
            // the connection or about to be, and then lets go of all it
            // counted for it; a `Writable` from here would not reach it.
            gate.drain_into(&mut self.buf, WRITE_BATCH_BYTES, WRITE_BATCH_FRAMES);
            if !self.buf.is_empty() {
                let write = tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = poll_fn(|cx| gate.poll_cut(cx)) => break,
                    r = self.io.write_all(&self.buf) => r,
                };
                if write.is_err() {
                    return;
                }
                self.buf.clear();
                continue;
            }
            if ended {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = poll_fn(|cx| gate.poll_signal(cx)) => {}
            }
        }
        self.close(gate).await;
    }

    /// Writes what is already queued (a farewell error) briefly, and closes.
    async fn close(mut self, gate: &ReadGate) {
        for item in gate.close_queue() {
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
    setup: Box<ReaderSetup>,
) {
    let core = setup.core.clone();
    let stop = setup.stop.clone();
    let gate = setup.gate.clone();
    let frame_timeout = setup.frame_timeout;
    let mut out = FrameWriter {
        io: send,
        buf: BytesMut::new(),
    };
    // The handshake's state lives on the heap only while it runs, so an
    // idle connection keeps only the (smaller) request loop's state.
    let Some((mut reader, session, slot)) = Box::pin(handshake(recv, setup)).await else {
        // No session was opened: what is queued is a refusal at most.
        Box::pin(out.close(&gate)).await;
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
                let woken = others_woken();
                match decode_and_handle(&mut reader, &core, session, &gate) {
                    Ok(progress) => {
                        if others_woken() != woken {
                            // What this batch queued for others (a
                            // waiter's grant the core could not write
                            // itself) is written by their tasks before
                            // this one writes its own answers.
                            tokio::task::yield_now().await;
                        }
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
                let drained = match out.flush_queued(&gate).await {
                    Ok(d) => d,
                    Err(e) => break format!("writing to the connection failed: {e}"),
                };
                queued = drained.more;
                if drained.room {
                    // The core keeps a backlog for this connection.
                    call_core(&core, &gate, [ToCore::Writable { session }]);
                }
                if queued && out.buf.is_empty() {
                    // The socket took a whole write and more is queued.
                    continue;
                }
            }
            // Frames left in the buffer are decoded before reading more;
            // the gate may have opened meanwhile (then this is ready now).
            let held = undecoded || gate.is_closed();
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
                        Ok(n) => {
                            if out.wrote(n, &gate) {
                                call_core(&core, &gate, [ToCore::Writable { session }]);
                            }
                        }
                        Err(e) => break format!("writing to the connection failed: {e}"),
                    }
                }
                r = poll_fn(|cx| reader.poll_read(cx)), if !held => match r {
                    Ok(0) => {
                        break match reader.codec.decode_eof(&mut reader.buf) {
                            Err(e) => e.to_string(),
                            Ok(_) => "the client closed the connection".to_string(),
                        };
                    }
                    Ok(_) => undecoded = true,
                    Err(e) => break FrameError::Io(e).to_string(),
                },
                _ = poll_fn(|cx| gate.poll_open(cx)), if held => {}
                _ = async {
                    match frame_deadline.as_mut() {
                        Some(sleep) => sleep.await,
                        None => std::future::pending().await,
                    }
                }, if deadline_armed => {
                    let refusal = Refusal::FrameUnfinished(frame_timeout);
                    let message = refusal.to_string();
                    call_core(&core, &gate, [ToCore::Fatal { session, refusal }]);
                    break message;
                }
            }
        }
    };
    call_core(&core, &gate, [ToCore::Goodbye { session, reason }]);
    drop(slot);
    // Boxed, like the handshake: its state is not kept while the
    // connection idles.
    Box::pin(out.finish(&gate, &stop)).await;
}

/// Calls the core from a connection's task: frames queued for it meanwhile
/// wake nobody (it looks at its queue next). `false` when the core is gone.
fn call_core(core: &SharedCore, gate: &ReadGate, msgs: impl IntoIterator<Item = ToCore>) -> bool {
    gate.set_busy(true);
    let handled = core.handle_now(msgs);
    gate.set_busy(false);
    handled
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
///
/// The hot requests (`Ping`, `Acquire`, `Release`) are read in place
/// (`turnstile_proto::hot`): handed to the core while their bytes are still
/// in the buffer, with no frame built, allocated and dropped (issue 14).
/// Any other frame is decoded by prost, as before.
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
    let FrameReader { buf, codec, .. } = reader;
    gate.set_busy(true);
    let entered = core.enter(|d| {
        // The gate is read between frames: a request that fills the
        // connection's bounds stops the ones behind it here.
        loop {
            if gate.is_closed() {
                progress.stopped_at_gate = !buf.is_empty();
                return;
            }
            let handled = codec.decode_with(buf, |body| {
                if let Some(frame) = hot::decode_request(body) {
                    gate.hand();
                    d.handle_hot(session, frame);
                    return Ok(());
                }
                let frame = v1::ClientFrame::decode(body)?;
                gate.hand();
                d.handle(ToCore::Request { session, frame });
                Ok(())
            });
            match handled {
                Ok(Some(())) => progress.frames += 1,
                Ok(None) => return,
                Err(e) => {
                    failed = Some(e.to_string());
                    if let Some(refusal) = Refusal::bad_frame(e) {
                        d.handle(ToCore::Fatal { session, refusal });
                    }
                    return;
                }
            }
        }
    });
    gate.set_busy(false);
    if !entered {
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
    setup: Box<ReaderSetup>,
) -> Option<(FrameReader<R>, SessionId, super::accounting::ConnectionSlot)> {
    let ReaderSetup {
        to_core,
        core: _,
        stop: cancel,
        creds,
        gate,
        max_frame_bytes,
        handshake_timeout,
        frame_timeout: _,
        slot,
    } = *setup;
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
        filled: false,
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
            farewell(&gate, 0, Refusal::NoHello(handshake_timeout));
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
                farewell(&gate, 0, refusal);
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
            farewell(&gate, 0, Refusal::FirstFrameNotHello);
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
            &gate,
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
        gate,
        session: session_tx,
    };
    if to_core.send(hello_msg).await.is_err() {
        return None;
    }
    let session = session_rx.await.ok()?;
    Some((reader, session, slot))
}

/// Writes what is queued for a refused connection (its one error), then
/// closes it.
pub fn spawn_farewell(stream: Stream, gate: Arc<ReadGate>) {
    let (_recv, send) = split(stream);
    let out = FrameWriter {
        io: send,
        buf: BytesMut::new(),
    };
    tokio::spawn(async move { out.close(&gate).await });
}
