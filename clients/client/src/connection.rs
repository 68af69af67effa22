//! The connection: its socket, the requests waiting for their replies and
//! the routes of pushed frames (lease updates, watch events, deliveries),
//! behind one lock. It does not build requests or read their results (the
//! `Client` methods do).
//!
//! **No hand-over on the request/reply path.** A caller encodes its frame
//! and writes it to the socket itself; then, while no other caller is
//! reading, it reads the socket itself until its own reply comes (routing
//! whatever else it reads on the way), so a lone caller is woken by the
//! socket directly and by nothing else. When it has its reply it hands the
//! reading back to the driver task: it makes the driver the one the
//! socket wakes and polls the socket once more, routing what is already
//! there (no task is woken for that: the socket wakes the driver when the
//! next frame comes). Callers that wait while another reads get their
//! replies from whoever reads, who wakes them.
//!
//! **The driver task** reads whenever no caller does, so pushed frames are
//! routed while nobody calls; it writes what a full socket did not take
//! (a caller never waits for the socket: its bytes stay in the outgoing
//! buffer, which holds at most the frames of the calls in flight); and it
//! closes the socket once the last `Client` handle is gone.
//!
//! A call's future reads only while it is polled: one kept unfinished but
//! no longer polled, while holding the reading, holds up the other replies
//! and the pushes until it is polled again or dropped (dropping it hands
//! the reading back to the driver). Awaiting it, or racing it in
//! `select!` (which drops the loser), never does.
//!
//! A route is opened by whoever reads the reply that creates it (an
//! `AcquireReply`, a `WatchStarted`, a `ConsumeStarted`), before the next
//! frame is read, so a push that follows its reply immediately can never
//! be lost.
//!
//! **One waker for the socket.** The socket is always polled with the
//! connection's own waker, which wakes whoever reads at the moment (a call
//! or the driver, kept in an `AtomicWaker`): tokio never has the socket's
//! waker swapped, and a reader that knows the socket has not woken it
//! since it last answered `Pending` does not poll it again. So a lone
//! caller polls the socket twice per call (the read that brings its
//! reply, and the hand-back's), not three times: right after sending, it
//! only waits. The frames are split from the connection's own buffer with
//! the proto crate's codec, as `FramedRead` did.
//!
//! The lock is a `std` mutex, never held across an await or while waking
//! another task; on a current-thread runtime it is never contended.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, FramedRead};
use turnstile_proto::v1::{self, reply, server_frame};
use turnstile_proto::{ClientCodec, FrameError, encode_frame};

use crate::ClientError;

/// The requests' and routes' maps: keys are ids this client or the broker
/// numbered, hashed with foldhash (SipHash was ~400 instructions of a
/// Ping's ~6 300 in callgrind).
type Map<V> = HashMap<u64, V, foldhash::fast::RandomState>;

/// A pushed frame for one route.
#[derive(Debug, Clone)]
pub enum Push {
    /// A change of a lease or queued request.
    Lease(v1::LeaseUpdate),
    /// A state event of a watch.
    Watch(v1::WatchEvent),
    /// A message for a consumer.
    Delivery(v1::Delivery),
}

/// The answer to a request, and the route it opened, if any.
pub(crate) struct Response {
    pub result: reply::Result,
    pub pushes: Option<mpsc::UnboundedReceiver<Push>>,
}

/// The socket's reading half, split into frames (for the greeting; the
/// connection then reads the socket and splits its frames itself).
pub(crate) type Reader = FramedRead<Box<dyn AsyncRead + Send + Unpin>, ClientCodec>;

/// The most the reading asks the socket for at once.
const READ_CHUNK: usize = 8 << 10;

/// The socket's writing half.
pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Routes of pushed frames, keyed by the id the broker puts in them.
#[derive(Default)]
struct Routes {
    leases: Map<mpsc::UnboundedSender<Push>>,
    watches: Map<mpsc::UnboundedSender<Push>>,
    consumers: Map<mpsc::UnboundedSender<Push>>,
}

impl Routes {
    /// Opens the route a reply creates.
    fn open(&mut self, result: &reply::Result) -> Option<mpsc::UnboundedReceiver<Push>> {
        let (map, key) = match result {
            reply::Result::Acquire(a) => (
                &mut self.leases,
                match &a.outcome {
                    Some(v1::acquire_reply::Outcome::Granted(g)) => g.lease_id,
                    Some(v1::acquire_reply::Outcome::Queued(q)) => q.lease_id,
                    None => return None,
                },
            ),
            reply::Result::Watch(w) => (&mut self.watches, w.watch_id),
            reply::Result::Consume(c) => (&mut self.consumers, c.consumer_id),
            _ => return None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        map.insert(key, tx);
        Some(rx)
    }

    fn route(&mut self, body: server_frame::Body) {
        let (map, key, push) = match body {
            server_frame::Body::LeaseUpdate(u) => (&mut self.leases, u.lease_id, Push::Lease(u)),
            server_frame::Body::WatchEvent(e) => (&mut self.watches, e.watch_id, Push::Watch(e)),
            server_frame::Body::Delivery(d) => {
                (&mut self.consumers, d.consumer_id, Push::Delivery(d))
            }
            server_frame::Body::Reply(_) => return,
        };
        if let Some(tx) = map.get(&key)
            && tx.send(push).is_err()
        {
            // Nobody listens any more: forget the route.
            map.remove(&key);
        }
    }
}

/// Who reads the socket now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reading {
    /// The driver task (its waker is the one the socket holds, once it ran).
    Driver,
    /// The call with this request id, while it waits for its reply.
    Call(u64),
}

/// A call's answer.
type Answer = Result<Response, ClientError>;

/// A request waiting for its reply.
struct Slot {
    /// Its answer, once another reader read it (boxed: a reply is large,
    /// and a call that reads its own answer never puts it here).
    answer: Option<Box<Answer>>,
    /// Whom to wake when the answer comes, while another reads.
    waker: Option<Waker>,
}

/// The waker the socket holds, always the same one: it wakes whoever
/// reads the socket at the moment, and notes that the socket spoke.
struct SocketWake {
    reader: AtomicWaker,
    /// The socket (or tokio's budget) woke us since the last check.
    woken: AtomicBool,
}

impl std::task::Wake for SocketWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.reader.wake();
    }
}

/// The socket's reading side.
struct Inbox {
    socket: Box<dyn AsyncRead + Send + Unpin>,
    /// Bytes read and not yet taken as frames.
    buf: BytesMut,
    codec: ClientCodec,
    /// `wake` as a `Waker`, the one every poll of the socket is given.
    waker: Waker,
    wake: Arc<SocketWake>,
    /// The socket's last poll said `Pending` (so it holds `waker`) and it
    /// has not woken us since: polling it again would say `Pending` again.
    idle: bool,
}

impl Inbox {
    fn new(reader: Reader) -> Inbox {
        let parts = reader.into_parts();
        let wake = Arc::new(SocketWake {
            reader: AtomicWaker::new(),
            woken: AtomicBool::new(false),
        });
        let mut buf = parts.read_buf;
        buf.reserve(READ_CHUNK);
        Inbox {
            socket: parts.io,
            buf,
            codec: parts.codec,
            waker: Waker::from(Arc::clone(&wake)),
            wake,
            idle: false,
        }
    }

    /// The next frame, reading the socket when none is buffered: `Pending`
    /// once the socket has no more (then the socket wakes `reader`),
    /// `Ready(None)` when it ended between two frames.
    fn poll_frame(&mut self, reader: &Waker) -> Poll<Option<Result<v1::ServerFrame, FrameError>>> {
        loop {
            if !self.buf.is_empty()
                && let Some(frame) = self.codec.decode(&mut self.buf).transpose()
            {
                return Poll::Ready(Some(frame));
            }
            if self.wake.woken.swap(false, Ordering::AcqRel) {
                self.idle = false;
            }
            if self.idle {
                break;
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
                self.buf.reserve(READ_CHUNK);
            }
            let mut cx = Context::from_waker(&self.waker);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.socket), &mut cx, &mut self.buf)
            {
                Poll::Pending => {
                    self.idle = true;
                    break;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(FrameError::Io(e)))),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(self.codec.decode_eof(&mut self.buf).transpose());
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
        // Only now, with nothing to read, is `reader` made the one the
        // socket wakes (a reader that gets its frame at once needs no
        // registering). A wake-up since the check above (the socket's,
        // or tokio's budget asking the task to yield) may have found
        // another reader registered: `reader` is then woken at once, to
        // look again.
        self.wake.reader.register(reader);
        if self.wake.woken.load(Ordering::Acquire) {
            reader.wake_by_ref();
        }
        Poll::Pending
    }
}

/// Wakers to wake once the lock is let go.
type Wake = Vec<Waker>;

struct State {
    /// `None` once the connection is lost.
    reader: Option<Inbox>,
    /// Taken by the driver to shut it down once the connection is over.
    writer: Option<Writer>,
    /// The largest frame the broker takes: a larger request is refused
    /// here, unsent, rather than closing the connection (and ending its
    /// leases) at the broker.
    max_frame: usize,
    /// Encoded frames the socket has not taken yet.
    out: BytesMut,
    calls: Map<Slot>,
    routes: Routes,
    reading: Reading,
    /// The driver task's waker, once it was first polled.
    driver: Option<Waker>,
    /// Why the connection ended; every call from then on fails with it.
    lost: Option<ClientError>,
    /// The last `Client` handle is gone: write what is left, then close.
    closing: bool,
}

/// One connection to the broker, shared by the `Client` handles and the
/// driver task.
pub(crate) struct Connection {
    state: Mutex<State>,
}

impl Connection {
    /// Takes over a connected, greeted socket and starts its driver task
    /// on the current runtime; `max_frame` is the largest frame the broker
    /// takes (`HelloReply.max_frame_bytes`).
    pub(crate) fn start(reader: Reader, writer: Writer, max_frame: usize) -> Arc<Connection> {
        let conn = Arc::new(Connection {
            state: Mutex::new(State {
                max_frame,
                reader: Some(Inbox::new(reader)),
                writer: Some(writer),
                out: BytesMut::with_capacity(4096),
                calls: Map::default(),
                routes: Routes::default(),
                reading: Reading::Driver,
                driver: None,
                lost: None,
                closing: false,
            }),
        });
        tokio::spawn(drive(Arc::clone(&conn)));
        conn
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock panics; should something, the state is
        // still consistent between statements, so carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a request and waits for its answer.
    pub(crate) async fn call(&self, frame: &v1::ClientFrame) -> Result<Response, ClientError> {
        let mut wake = Wake::new();
        {
            let mut state = self.lock();
            if let Some(lost) = &state.lost {
                return Err(lost.clone());
            }
            state.send(frame, &mut wake)?;
            // Inserted after the send, under the same lock: nobody reads
            // the reply before its slot is there.
            state.calls.insert(
                frame.id,
                Slot {
                    answer: None,
                    waker: None,
                },
            );
        }
        wake_all(wake);
        let mut call = Call {
            conn: self,
            id: frame.id,
            done: false,
        };
        poll_fn(|cx| call.poll(cx)).await
    }

    /// Sends a request whose answer nobody waits for (drop paths); does
    /// nothing once the connection is lost.
    pub(crate) fn send_and_forget(&self, frame: &v1::ClientFrame) {
        let mut wake = Wake::new();
        {
            let mut state = self.lock();
            if state.lost.is_none() {
                // Only small frames go this way (Release, Nack, Unwatch).
                let _ = state.send(frame, &mut wake);
            }
        }
        wake_all(wake);
    }

    /// The last `Client` handle is gone: the driver writes what is left,
    /// closes the socket and ends.
    pub(crate) fn close(&self) {
        let driver = {
            let mut state = self.lock();
            state.closing = true;
            state.driver.clone()
        };
        if let Some(driver) = driver {
            driver.wake();
        }
    }

    /// One poll of the driver task: `Ready` with the writer to shut down
    /// once the connection is over.
    fn poll_drive(&self, cx: &mut Context<'_>) -> Poll<Option<Writer>> {
        let mut wake = Wake::new();
        let mut state = self.lock();
        if !state
            .driver
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.driver = Some(cx.waker().clone());
        }
        if state.lost.is_none() {
            state.flush(&mut wake);
        }
        if state.reading == Reading::Driver {
            let _ = state.read(cx.waker(), None, &mut wake);
        }
        if state.closing && state.out.is_empty() && state.lost.is_none() {
            state.lose(
                ClientError::Disconnected("the client was closed".into()),
                &mut wake,
            );
        }
        let over = state.lost.is_some().then(|| state.writer.take());
        drop(state);
        wake_all(wake);
        match over {
            Some(writer) => Poll::Ready(writer),
            None => Poll::Pending,
        }
    }
}

/// The driver task: reads while no caller does, writes what the socket
/// did not take at once, closes the socket at the end.
async fn drive(conn: Arc<Connection>) {
    let writer = poll_fn(|cx| conn.poll_drive(cx)).await;
    if let Some(mut writer) = writer {
        let _ = writer.shutdown().await;
    }
}

fn wake_all(wake: Wake) {
    for w in wake {
        w.wake();
    }
}

/// A call waiting for its answer; dropped unfinished, it forgets its
/// request and hands the reading back to the driver.
struct Call<'a> {
    conn: &'a Connection,
    id: u64,
    done: bool,
}

impl Call<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Answer> {
        let mut wake = Wake::new();
        let answer = self.conn.lock().poll_answer(self.id, cx, &mut wake);
        wake_all(wake);
        if answer.is_ready() {
            self.done = true;
        }
        answer
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let driver = {
            let mut state = self.conn.lock();
            state.calls.remove(&self.id);
            if state.reading != Reading::Call(self.id) {
                return;
            }
            state.reading = Reading::Driver;
            state.driver.clone()
        };
        // The socket holds this call's waker: the driver must take it back.
        if let Some(driver) = driver {
            driver.wake();
        }
    }
}

impl State {
    /// Queues `frame` and writes as much of what is queued as the socket
    /// takes now; a frame larger than the broker takes is refused, and
    /// nothing is queued.
    fn send(&mut self, frame: &v1::ClientFrame, wake: &mut Wake) -> Result<(), ClientError> {
        let before = self.out.len();
        encode_frame(frame, &mut self.out);
        // The frame with its length prefix: only past the limit is the
        // body's own length worth computing.
        if self.out.len() - before > self.max_frame {
            let len = prost::Message::encoded_len(frame);
            if len > self.max_frame {
                self.out.truncate(before);
                return Err(too_large(len, self.max_frame));
            }
        }
        self.flush(wake);
        Ok(())
    }

    /// Writes what is queued until the socket would block; the driver is
    /// woken when it can take more (before the driver first ran, nobody is:
    /// its first poll writes what is left).
    fn flush(&mut self, wake: &mut Wake) {
        let State {
            writer,
            out,
            driver,
            ..
        } = self;
        let Some(writer) = writer.as_mut() else {
            return;
        };
        let mut cx = Context::from_waker(driver.as_ref().unwrap_or(Waker::noop()));
        let mut failed = None;
        while !out.is_empty() {
            match Pin::new(&mut *writer).poll_write(&mut cx, out) {
                Poll::Ready(Ok(0)) => {
                    failed = Some("the socket took nothing".to_string());
                    break;
                }
                Poll::Ready(Ok(n)) => out.advance(n),
                Poll::Ready(Err(e)) => {
                    failed = Some(e.to_string());
                    break;
                }
                Poll::Pending => break,
            }
        }
        if let Some(e) = failed {
            self.lose(
                ClientError::Disconnected(format!("writing to the broker failed: {e}")),
                wake,
            );
        }
    }

    /// The answer of call `id`, reading the socket for it when nobody else
    /// does.
    fn poll_answer(&mut self, id: u64, cx: &mut Context<'_>, wake: &mut Wake) -> Poll<Answer> {
        let Some(slot) = self.calls.get_mut(&id) else {
            // Only this call removes its slot; should it be missing,
            // the connection can no longer answer it.
            return Poll::Ready(Err(self.closed()));
        };
        if let Some(answer) = slot.answer.take() {
            self.calls.remove(&id);
            if self.reading == Reading::Call(id) {
                self.hand_back(wake);
            }
            return Poll::Ready(*answer);
        }
        match self.reading {
            Reading::Call(other) if other != id => {
                if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    slot.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            _ => self.reading = Reading::Call(id),
        }
        match self.read(cx.waker(), Some(id), wake) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(mine) => {
                let answer = match mine {
                    Some(answer) => answer,
                    // The connection was lost: the slot holds why.
                    None => match self.calls.get_mut(&id).and_then(|s| s.answer.take()) {
                        Some(answer) => *answer,
                        None => Err(self.closed()),
                    },
                };
                self.calls.remove(&id);
                if self.reading == Reading::Call(id) {
                    self.hand_back(wake);
                }
                Poll::Ready(answer)
            }
        }
    }

    /// Why a call can no longer be answered.
    fn closed(&self) -> ClientError {
        self.lost
            .clone()
            .unwrap_or_else(|| ClientError::Disconnected("the connection is closed".into()))
    }

    /// Gives the reading back to the driver: the socket wakes the driver
    /// from now on (and whatever is already buffered is routed now).
    fn hand_back(&mut self, wake: &mut Wake) {
        self.reading = Reading::Driver;
        if let Some(driver) = self.driver.take() {
            let _ = self.read(&driver, None, wake);
            self.driver.get_or_insert(driver);
        }
    }

    /// Reads and routes frames until the socket has no more (`Pending`:
    /// the socket then wakes `reader`), the answer to `me` came
    /// (`Ready(Some)`, with it), or the connection is lost (`Ready(None)`).
    fn read(&mut self, reader: &Waker, me: Option<u64>, wake: &mut Wake) -> Poll<Option<Answer>> {
        loop {
            let Some(inbox) = self.reader.as_mut() else {
                return Poll::Ready(None);
            };
            let frame = match inbox.poll_frame(reader) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => {
                    self.lose(
                        ClientError::Disconnected("the broker closed the connection".into()),
                        wake,
                    );
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.lose(
                        ClientError::Disconnected(format!("bad frame from the broker: {e}")),
                        wake,
                    );
                    return Poll::Ready(None);
                }
            };
            match frame.body {
                Some(server_frame::Body::Reply(r)) => {
                    let result = match r.result {
                        Some(reply::Result::Error(e)) => Err(ClientError::from_wire(e)),
                        Some(result) => {
                            let pushes = self.routes.open(&result);
                            Ok(Response { result, pushes })
                        }
                        None => Err(ClientError::Protocol("a reply without a result".into())),
                    };
                    if r.id == 0 {
                        // About no request: the broker is closing on us.
                        let why = result.err().unwrap_or_else(|| {
                            ClientError::Disconnected("the broker closed the connection".into())
                        });
                        self.lose(why, wake);
                        return Poll::Ready(None);
                    }
                    if me == Some(r.id) {
                        return Poll::Ready(Some(result));
                    }
                    // A reply nobody waits for (a call dropped, a request
                    // sent and forgotten) is dropped.
                    if let Some(slot) = self.calls.get_mut(&r.id) {
                        slot.answer = Some(Box::new(result));
                        if let Some(w) = slot.waker.take() {
                            wake.push(w);
                        }
                    }
                }
                Some(body) => self.routes.route(body),
                None => {}
            }
        }
    }

    /// The connection is over: every waiting call fails with `why`, every
    /// route ends, the driver is told.
    fn lose(&mut self, why: ClientError, wake: &mut Wake) {
        if self.lost.is_some() {
            return;
        }
        for slot in self.calls.values_mut() {
            if slot.answer.is_none() {
                slot.answer = Some(Box::new(Err(why.clone())));
                wake.extend(slot.waker.take());
            }
        }
        self.lost = Some(why);
        self.routes = Routes::default();
        self.reader = None;
        self.out.clear();
        self.reading = Reading::Driver;
        wake.extend(self.driver.clone());
    }
}

/// The refusal of a request larger than the broker takes, as the broker
/// would word it (the CLI and libturnstile map the code as the broker's).
pub(crate) fn too_large(len: usize, max: usize) -> ClientError {
    ClientError::Broker {
        code: crate::ErrorCode::FrameTooLarge,
        message: format!(
            "the request is {len} bytes, over the broker's limit of {max} bytes (its --max-frame-bytes); it was not sent"
        ),
    }
}
