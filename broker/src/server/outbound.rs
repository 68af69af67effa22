//! What the core sends each connection ([`Outbound`]), what it knows of
//! each connection's outbound side ([`Conn`]), what the core and the
//! connection's task signal each other ([`ReadGate`]: the read gate, the
//! outbound queue, "frames queued", "closed"), and the rule that the core
//! never waits for a client.
//!
//! Frames go into the connection's bounded queue ([`ReadGate::push`],
//! at most [`OUTBOUND_QUEUE`] frames and half of `max_outbound_bytes`).
//! When the queue is full, replies and lease updates wait in a backlog
//! (bounded in bytes: past `max_outbound_bytes` the client is cut off, it
//! is not reading) while watch events are **coalesced**: only the newest state per
//! watch and resource is kept, and it is sent marked `coalesced` when the
//! queue has room again. So a stalled watcher costs bounded memory however
//! many changes happen, and never delays anyone else.
//!
//! A frame for a connection that has nothing waiting to go out (its queue
//! empty, its task holding no unwritten bytes and not itself inside the
//! core) is written by the core straight into the socket, without waiting
//! ([`ReadGate::push`], Unix only: see `platform::stream`); only what the
//! socket does not take is queued, and counts against the bounds as any
//! queued frame. So a waiter's grant or a watch event costs one `send` and
//! no wake-up and poll of the connection's task (issue 14), and a client
//! that does not read still costs only what its queue may hold: the socket
//! takes nothing more once its buffer is full, and the rest waits as
//! before. A connection's own answers, made while its task is inside the
//! core, are still queued and written by the task, all of one read in one
//! write.
//!
//! The backlog is counted at what it costs the broker (each frame's bytes
//! plus its allocations), not at its size on the wire: an empty `Pong` is a
//! few bytes on the wire and a few hundred in memory. Past half the bound
//! the connection's [`ReadGate`] closes: its reader stops reading, so a
//! client that writes and never reads stalls itself (its writes block in
//! the kernel) rather than growing the broker; it is cut off only when the
//! backlog still grows past the whole bound (events it did not ask for).
//! The same gate closes while the connection has `--max-in-flight`
//! requests awaiting answers (DESIGN "Flow control").

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc::error::TrySendError;
use turnstile_proto::{encode_frame, encode_watch_event_frame, hot, v1};

use crate::core::StateEvent;
use crate::platform::stream::Writer;

/// What a writer sends: a whole frame, or a watch event whose body was
/// encoded once for every watcher (without its `watch_id`, which the writer
/// prepends: protobuf accepts fields in any order).
#[derive(Debug)]
pub enum Outbound {
    /// A frame to encode (boxed: queue slots stay small, so an idle
    /// connection's queue costs little).
    Frame(Box<v1::ServerFrame>),
    /// `WatchEvent` bytes without field 1, and the watch id to add (boxed
    /// too: every slot of every connection's queue is this enum's size).
    WatchEvent(Box<WatchCopy>),
    /// A whole frame, already encoded: what a frame becomes when it waits
    /// in a backlog, where its bytes are all it may cost; and a hot answer
    /// too long to be [`Outbound::Inline`] (a `Pong` with its payload).
    Encoded(Bytes),
    /// A short frame already encoded, held in the queue's slot itself: a
    /// hot answer (`Done`, `AcquireReply { granted }`) costs no allocation
    /// and no encoding pass when it is written (issue 14).
    Inline(InlineFrame),
}

/// Bytes of an [`Outbound::Inline`] frame at most: as many as fit beside
/// the length and the enum's tag in the room the other variants take
/// (`Bytes`' four words), so queue slots do not grow.
pub const INLINE_FRAME: usize = 38;

/// A frame of at most [`INLINE_FRAME`] bytes.
#[derive(Clone, Copy)]
pub struct InlineFrame {
    len: u8,
    bytes: [u8; INLINE_FRAME],
}

impl InlineFrame {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for InlineFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("InlineFrame")
            .field(&self.as_slice())
            .finish()
    }
}

/// One watcher's copy of a state event.
#[derive(Debug)]
pub struct WatchCopy {
    /// The watch this copy is for.
    pub watch_id: u64,
    /// The encoded `WatchEvent` with `watch_id` left at 0 (so absent).
    pub body: Bytes,
}

impl Outbound {
    /// A frame to send.
    pub fn frame(f: v1::ServerFrame) -> Outbound {
        Outbound::Frame(Box::new(f))
    }

    /// A frame encoded by hand (a hot answer): inline when it is short,
    /// else in a buffer of its own, copied once; never a `ServerFrame`.
    pub fn encoded(frame: &hot::FrameBytes<'_>) -> Outbound {
        let (head, tail) = (frame.head(), frame.tail());
        let len = frame.len();
        if len > INLINE_FRAME {
            let mut buf = Vec::with_capacity(len);
            buf.extend_from_slice(head);
            buf.extend_from_slice(tail);
            return Outbound::Encoded(Bytes::from(buf));
        }
        let mut bytes = [0u8; INLINE_FRAME];
        let (first, rest) = bytes.split_at_mut(head.len());
        first.copy_from_slice(head);
        rest[..tail.len()].copy_from_slice(tail);
        Outbound::Inline(InlineFrame {
            len: len as u8,
            bytes,
        })
    }

    /// What this item costs the broker while it waits in a backlog: its
    /// bytes, the frame's own struct and the slot and allocations around it.
    pub fn cost(&self) -> usize {
        match self {
            Outbound::Frame(f) => frame_cost(prost::Message::encoded_len(f.as_ref())),
            Outbound::WatchEvent(w) => w.body.len() + std::mem::size_of::<WatchCopy>() + OVERHEAD,
            Outbound::Encoded(b) => b.len() + OVERHEAD,
            Outbound::Inline(f) => f.as_slice().len() + OVERHEAD,
        }
    }

    /// The item in the form it waits in a backlog: a frame is encoded
    /// there and then. A frame's structs cost several times its encoded
    /// size (a queue place carries up to eight `Lease`s, each with its own
    /// strings: ~1 KB on the wire, ~5 KB as structs), and the backlog is
    /// bounded by what it costs (issue #12 point 5).
    fn into_waiting(self) -> Outbound {
        match self {
            Outbound::Frame(f) => {
                let mut buf = BytesMut::new();
                encode_frame(f.as_ref(), &mut buf);
                Outbound::Encoded(buf.freeze())
            }
            other => other,
        }
    }

    /// Appends the item's frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Outbound::Frame(f) => encode_frame(f, dst),
            Outbound::WatchEvent(w) => encode_watch_event_frame(w.watch_id, &w.body, dst),
            Outbound::Encoded(b) => dst.extend_from_slice(b),
            Outbound::Inline(f) => dst.extend_from_slice(f.as_slice()),
        }
    }
}

/// What all the connections of one uid have waiting to go out (their
/// queues and backlogs, counted as [`Outbound::cost`]), against
/// `--max-outbound-bytes-per-uid`. The bound per connection alone let one
/// user that opens `--max-connections-per-uid` connections, asks each for
/// large answers and reads none hold that many times `--max-outbound-bytes`
/// (256 x 8 MiB). Past this bound the requests of every connection of the
/// uid wait, as one connection's do past half its own bound, until what
/// they have queued goes out: the user is slowed, the others are not.
/// Shared by the uid's connections (`accounting`); root and the broker's
/// own user have no bound.
///
/// The same account holds the uid's budget of reports per second
/// (`--report-bytes-per-uid-per-second`): bytes of status and history
/// answers built for it, paid off at the budget a second. Once it owes
/// more than a tenth of a second's budget its requests wait in the same
/// way, until the core task finds it paid off ([`UidOutbound::renew_budget`]).
/// A user that asked for large statuses in a loop on 16 connections,
/// reading every answer, took root's ping from ~80 µs to 3-4 ms
/// (`tests/floods.rs`): the outbound bound never bit, since nothing waited
/// to go out.
#[derive(Debug)]
pub struct UidOutbound {
    bytes: AtomicUsize,
    bound: usize,
    /// The core holds requests of this uid until `bytes` is back under
    /// `bound`: the task that takes it under says so ([`Drained::room`]).
    waiting: AtomicBool,
    /// Report bytes allowed a second (`usize::MAX`: no budget).
    budget: usize,
    /// What the uid owes of its reports (the core task's only).
    reports: Mutex<Reports>,
    /// It owes more than a burst: read with `bytes` by [`UidOutbound::over`].
    spent: AtomicBool,
}

/// A uid's report bytes not yet paid off: they are paid at its budget a
/// second, from `at` on.
#[derive(Debug, Default)]
struct Reports {
    owed: usize,
    at: Option<std::time::Instant>,
}

impl Reports {
    fn pay(&mut self, budget: usize, now: std::time::Instant) {
        if let Some(at) = self.at {
            let paid =
                budget as u128 * now.saturating_duration_since(at).as_nanos() / 1_000_000_000;
            self.owed = self
                .owed
                .saturating_sub(usize::try_from(paid).unwrap_or(usize::MAX));
        }
        self.at = Some(now);
    }
}

/// A uid waits once it owes more than its budget of this fraction of a
/// second: its reports come in bursts of at most that much (a budget
/// renewed a whole second at a time resumed all its waiting connections
/// at once, and root's ping waited 30-42 ms once a second for their
/// statuses).
const BURST_DIVISOR: usize = 10;

impl UidOutbound {
    /// A uid's account, bounded by `bound` bytes queued and `budget` bytes
    /// of reports a second (`usize::MAX`: no bound, no budget).
    pub fn new(bound: usize, budget: usize) -> Arc<UidOutbound> {
        Arc::new(UidOutbound {
            bytes: AtomicUsize::new(0),
            bound,
            waiting: AtomicBool::new(false),
            budget,
            reports: Mutex::new(Reports::default()),
            spent: AtomicBool::new(false),
        })
    }

    /// Counts `n` bytes of a report (a status or history answer) built for
    /// the uid against its budget.
    pub fn charge_report(&self, n: usize) {
        if self.budget == usize::MAX {
            return;
        }
        let mut reports = self.reports();
        reports.pay(self.budget, std::time::Instant::now());
        reports.owed = reports.owed.saturating_add(n);
        if reports.owed > self.budget / BURST_DIVISOR {
            self.spent.store(true, Ordering::Release);
        }
    }

    /// Pays off what the uid owes of its reports until `now`: whether it
    /// was past its budget and no longer is.
    pub fn renew_budget(&self, now: std::time::Instant) -> bool {
        if !self.spent.load(Ordering::Acquire) {
            return false;
        }
        let mut reports = self.reports();
        reports.pay(self.budget, now);
        reports.owed <= self.budget / BURST_DIVISOR && self.spent.swap(false, Ordering::AcqRel)
    }

    fn reports(&self) -> std::sync::MutexGuard<'_, Reports> {
        self.reports.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::AcqRel);
    }

    /// Takes `n` off (never below zero: a miscount must not wrap into a
    /// uid that waits for ever).
    fn release(&self, n: usize) {
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(n))
            });
    }

    /// [`UidOutbound::release`] by the connection's task: whether the core
    /// waits for this uid and it is under its bound now (told once).
    fn released_by_task(&self, n: usize) -> bool {
        self.release(n);
        !self.over() && self.waiting.swap(false, Ordering::AcqRel)
    }

    /// The uid has more queued than its bound, or has spent its report
    /// budget (owes more than a burst of it).
    pub fn over(&self) -> bool {
        self.bytes.load(Ordering::Acquire) > self.bound || self.spent.load(Ordering::Acquire)
    }

    /// The core holds requests of this uid: the task that takes it under
    /// its bound tells it.
    pub fn wait(&self) {
        self.waiting.store(true, Ordering::Release);
    }

    /// The uid owes more than a burst of its report budget (for logs).
    pub fn spent(&self) -> bool {
        self.spent.load(Ordering::Acquire)
    }

    /// Bytes queued for the uid (for tests and logs).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

/// What the core and a connection's task signal each other, without a
/// channel: whether the task may read its next frame (the gate), whether
/// frames were queued for it, and whether the core is done with it.
///
/// The core task closes the gate while the connection's backlog is over
/// half its bound or its requests awaiting answers are at
/// `--max-in-flight`, and opens it again when neither holds; the task
/// looks at the gate before each frame. It also stops after handing the
/// core [`MAX_HANDED`] frames it has not handled yet, so that what a client
/// can make the broker answer before the gate closes is bounded per
/// connection.
///
/// A frame queued while the task is itself inside the core (`busy`) wakes
/// nobody: the task looks at its queue when it comes back. So a request
/// and its answer cost the task one poll, as in a bare echo server.
#[derive(Debug, Default)]
pub struct ReadGate {
    closed: AtomicBool,
    handed: AtomicUsize,
    queued: AtomicBool,
    ended: AtomicBool,
    cut: AtomicBool,
    busy: AtomicBool,
    task: AtomicWaker,
    frames: Mutex<Frames>,
}

/// A connection's outbound queue: at most [`OUTBOUND_QUEUE`] frames the
/// core handed it and its task has not yet encoded. A `VecDeque` that is
/// empty holds no memory: an idle connection's queue costs nothing (a
/// tokio channel's was about 1 KiB: its cache-padded state and a first
/// block of 32 slots, issue 14).
#[derive(Debug, Default)]
struct Frames {
    items: VecDeque<Queued>,
    /// What the items cost ([`Outbound::cost`]): past `byte_bound` the
    /// queue takes no more, and the core keeps what follows in the
    /// connection's backlog, which closes the reader's gate when it grows
    /// (so a client that asks for large answers and reads none holds at
    /// most `--max-outbound-bytes` of them, not [`OUTBOUND_QUEUE`]).
    bytes: usize,
    /// Half of `--max-outbound-bytes` (0: no bound, before the connection's
    /// Hello).
    byte_bound: usize,
    /// The account of the connection's uid, which `bytes` count in too
    /// (`None` before it is known).
    uid: Option<Arc<UidOutbound>>,
    /// Bytes the task took from the queue and holds in its own buffer
    /// because the socket did not take them: still counted in `uid`
    /// until they are written ([`ReadGate::keep_buffered`]), so that a
    /// user whose connections read nothing holds no frame per connection
    /// beyond its bound.
    buffered: usize,
    /// The task is gone: nothing more is taken.
    closed: bool,
    /// The core waits for room (a [`ToCore::Writable`] when some is made).
    wants_room: bool,
    /// The core holds frames of this connection back (its backlog, or
    /// coalesced watch events) until the queue has room: a frame written
    /// from another thread ([`ReadGate::write_direct`]) would pass them.
    /// Set with `wants_room`; cleared once they are all queued.
    held: bool,
    /// The connection's task holds bytes taken from the queue that the
    /// socket has not all taken yet: nothing may be written past them.
    writing: bool,
    /// Where the core writes a frame at once when nothing waits before it
    /// (`None`: only the task writes; see [`ReadGate::attach`]).
    direct: Option<Writer>,
    /// The entry into the core ([`begin_entry`]) of the last direct write:
    /// within one entry a connection gets one, and what follows it is
    /// queued for its task, which writes it all in one write (a window of
    /// deliveries is one `send`, not one per delivery).
    direct_entry: u64,
}

impl Drop for Frames {
    /// What is still queued when the gate goes (a connection that ended
    /// before its Hello, or whose socket failed) leaves its uid's account.
    fn drop(&mut self) {
        if let Some(uid) = self.uid.take() {
            uid.release(self.bytes + self.buffered);
        }
    }
}

/// A frame in a connection's queue, with what it costs there.
#[derive(Debug)]
struct Queued {
    item: Outbound,
    cost: usize,
}

impl Queued {
    /// `item` as it waits in the queue: a large frame is encoded at once
    /// (its structs cost several times its bytes), a small one waits as it
    /// is and is encoded by the task.
    fn new(item: Outbound) -> Queued {
        if let Outbound::Frame(f) = &item {
            let len = prost::Message::encoded_len(f.as_ref());
            if len <= ENCODE_QUEUED {
                return Queued {
                    item,
                    cost: frame_cost(len),
                };
            }
        }
        let item = item.into_waiting();
        let cost = item.cost();
        Queued { item, cost }
    }
}

/// A frame larger than this (encoded) is queued as its bytes.
const ENCODE_QUEUED: usize = 4096;

/// A queue or backlog slot plus the allocator's bookkeeping of a box.
const OVERHEAD: usize = std::mem::size_of::<Outbound>() + 32;

/// What an [`Outbound::Frame`] of `len` encoded bytes costs where it waits.
fn frame_cost(len: usize) -> usize {
    len + std::mem::size_of::<v1::ServerFrame>() + OVERHEAD
}

/// Entries into the core so far (see `Frames::direct_entry`).
static ENTRY: AtomicU64 = AtomicU64::new(1);

/// The core is entered (a connection's batch, or a turn of the core task):
/// each connection may be written into at once again.
pub(super) fn begin_entry() {
    ENTRY.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    /// Where a frame written at once by the core is encoded: one buffer
    /// for the thread, so that writing costs no allocation.
    static DIRECT: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// A direct write's buffer larger than this is let go after the write.
const KEEP_DIRECT_BUFFER: usize = 64 * 1024;

impl Frames {
    /// Puts `item` at the end of the queue.
    fn queue(&mut self, item: Outbound) {
        let queued = Queued::new(item);
        self.bytes += queued.cost;
        if let Some(uid) = &self.uid {
            uid.add(queued.cost);
        }
        self.items.push_back(queued);
    }

    /// Writes `item` into the socket now when nothing waits before it and
    /// the connection's task is not inside the core (`busy`: its own
    /// answers go out together when it is back). What the socket did not
    /// take is returned, to be queued: the whole item, or the bytes left.
    fn write_now(&mut self, item: Outbound, busy: bool) -> Option<Outbound> {
        let entry = ENTRY.load(Ordering::Relaxed);
        if busy || self.writing || !self.items.is_empty() || self.direct_entry == entry {
            return Some(item);
        }
        let Some(writer) = self.direct.as_ref() else {
            return Some(item);
        };
        self.direct_entry = entry;
        let written = match &item {
            Outbound::Inline(f) => try_write(writer, f.as_slice()),
            _ => DIRECT.with_borrow_mut(|buf| {
                buf.clear();
                item.encode(buf);
                let written = try_write(writer, buf);
                buf.clear();
                if buf.capacity() > KEEP_DIRECT_BUFFER {
                    *buf = BytesMut::new();
                }
                written
            }),
        };
        match written {
            Written::All => None,
            // The item waits as it is (a watch event keeps its shared body).
            Written::Nothing => Some(item),
            Written::Part(rest) => Some(Outbound::Encoded(rest)),
            Written::Failed => {
                // A broken socket: the task finds it when it writes (or
                // reads the end); the core writes to it no more.
                self.direct = None;
                Some(item)
            }
        }
    }
}

/// What a write that does not wait did.
enum Written {
    All,
    Nothing,
    /// The bytes the socket did not take.
    Part(Bytes),
    Failed,
}

fn try_write(writer: &Writer, bytes: &[u8]) -> Written {
    match writer.try_write(bytes) {
        Ok(n) if n == bytes.len() => Written::All,
        Ok(0) => Written::Nothing,
        Ok(n) => Written::Part(Bytes::copy_from_slice(bytes.get(n..).unwrap_or_default())),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Written::Nothing,
        Err(_) => Written::Failed,
    }
}

/// Frames queued per connection before the core starts keeping a backlog.
pub const OUTBOUND_QUEUE: usize = 256;

/// What [`ReadGate::drain_into`] did.
pub struct Drained {
    /// Frames are left in the queue (the bounds of one write were reached).
    pub more: bool,
    /// The core waited for room, or for the connection's uid to be under
    /// its bound ([`UidOutbound`]), and there is some now: tell it.
    pub room: bool,
}

thread_local! {
    /// How many times this thread's core woke a connection's task for
    /// frames queued (see [`others_woken`]).
    static WOKEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A count that moves whenever a call into the core queues frames for a
/// connection other than the caller's: the caller then lets those be
/// written before its own answer (a waiter's grant before the releaser's
/// `Done`, as DESIGN's handoff wants).
pub fn others_woken() -> u64 {
    WOKEN.with(|w| w.get())
}

/// Frames a reader may hand the core before the core has handled them.
pub const MAX_HANDED: usize = 32;

/// What woke a connection's task (see [`ReadGate::poll_signal`]).
pub enum Signal {
    /// Frames were queued for the connection.
    Queued,
    /// The core is done with the connection: it closes.
    Ended,
}

impl ReadGate {
    /// An open gate.
    pub fn new() -> Arc<ReadGate> {
        Arc::new(ReadGate::default())
    }

    /// Ready once the gate is open.
    pub fn poll_open(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_closed() {
            return Poll::Ready(());
        }
        self.task.register(cx.waker());
        if self.is_closed() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// The reader hands the core a frame.
    pub fn hand(&self) {
        self.handed.fetch_add(1, Ordering::AcqRel);
    }

    /// The core has taken a frame the reader handed it.
    pub fn taken(&self) {
        let before = self.handed.fetch_sub(1, Ordering::AcqRel);
        if before == MAX_HANDED {
            self.task.wake();
        }
    }

    fn set_closed(&self, closed: bool) {
        let was = self.closed.swap(closed, Ordering::AcqRel);
        if was && !closed {
            self.task.wake();
        }
    }

    /// Whether the gate is closed now.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.handed.load(Ordering::Acquire) >= MAX_HANDED
    }

    /// The connection's task is inside the core (`true`) or back from it:
    /// frames queued meanwhile need not wake it.
    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Release);
    }

    /// A frame was queued for the connection.
    fn queued(&self) {
        self.queued.store(true, Ordering::Release);
        if !self.busy.load(Ordering::Acquire) {
            self.task.wake();
            WOKEN.with(|w| w.set(w.get().wrapping_add(1)));
        }
    }

    /// Whether frames were queued since the last call.
    pub fn take_queued(&self) -> bool {
        self.queued.swap(false, Ordering::AcqRel)
    }

    /// The core is done with the connection.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.task.wake();
    }

    /// The core closes the connection (cut off, or the broker stops): what
    /// is queued is written briefly, not waited for.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.end();
    }

    /// Ready once the core has closed the connection (see [`ReadGate::cut`]).
    pub fn poll_cut(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_cut() {
            return Poll::Ready(());
        }
        self.task.register(cx.waker());
        if self.is_cut() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether the core closed the connection (see [`ReadGate::cut`]).
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    fn frames(&self) -> std::sync::MutexGuard<'_, Frames> {
        // Nothing panics while holding it; a poisoned queue is still whole.
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame for the connection's task, or writes it into the
    /// socket at once when nothing waits before it and the task is not
    /// inside the core (see the module's header); what the socket does not
    /// take is queued.
    pub fn push(&self, item: Outbound) -> Result<(), TrySendError<Outbound>> {
        {
            let mut frames = self.frames();
            if frames.closed {
                return Err(TrySendError::Closed(item));
            }
            if frames.items.len() >= OUTBOUND_QUEUE
                || (frames.byte_bound != 0 && frames.bytes > frames.byte_bound)
            {
                return Err(TrySendError::Full(item));
            }
            let Some(item) = frames.write_now(item, self.busy.load(Ordering::Acquire)) else {
                // The socket took it all: the task has nothing to do.
                return Ok(());
            };
            frames.queue(item);
        }
        self.queued();
        Ok(())
    }

    /// Writes `frames` (whole encoded frames) into the socket now, from any
    /// thread, if nothing waits to go out before them: the store's writer
    /// thread answers publishes so (`dispatch/publish.rs`). Unlike
    /// [`ReadGate::push`] it does not hold back while the connection's task
    /// is inside the core, nor after a write of the same entry: frames are
    /// whole, so the stream stays whole, and an answer need not wait for
    /// company. `false` when it wrote nothing (the socket is full, the
    /// connection is closing, or frames wait before these): the caller
    /// sends them the usual way. What the socket took only in part is
    /// queued for the task, and counts as written.
    pub fn write_direct(&self, frames: &[u8]) -> bool {
        {
            let mut queue = self.frames();
            if queue.closed || queue.writing || queue.held || !queue.items.is_empty() {
                return false;
            }
            let Some(writer) = queue.direct.as_ref() else {
                return false;
            };
            match try_write(writer, frames) {
                Written::All => return true,
                Written::Nothing => return false,
                Written::Failed => {
                    queue.direct = None;
                    return false;
                }
                Written::Part(rest) => queue.queue(Outbound::Encoded(rest)),
            }
        }
        self.queued();
        true
    }

    /// Lets the core write into the connection's socket itself when
    /// nothing waits to go out (see [`ReadGate::push`]).
    pub fn attach(&self, writer: Writer) {
        self.frames().direct = Some(writer);
    }

    /// The core writes into the socket no more: the task writes what is
    /// left, in order, as the connection ends.
    pub fn stop_direct(&self) {
        self.frames().direct = None;
    }

    /// The connection's task keeps `n` bytes it took from the queue in its
    /// own buffer, the socket having not taken them: they count in the
    /// uid's account again until written ([`ReadGate::wrote_buffered`]).
    /// Nothing is counted once the core is done with the connection.
    pub fn keep_buffered(&self, n: usize) {
        if n == 0 {
            return;
        }
        let frames = &mut *self.frames();
        if let Some(uid) = &frames.uid {
            frames.buffered += n;
            uid.add(n);
        }
    }

    /// `n` bytes of the task's own buffer went out: whether its uid was
    /// waited for and is under its bound now (tell the core, as for
    /// [`Drained::room`]).
    pub fn wrote_buffered(&self, n: usize) -> bool {
        let mut frames = self.frames();
        let n = n.min(frames.buffered);
        if n == 0 {
            return false;
        }
        frames.buffered -= n;
        frames
            .uid
            .as_ref()
            .is_some_and(|uid| uid.released_by_task(n))
    }

    /// The connection's task has written all it took from the queue.
    pub fn wrote_all(&self) {
        self.frames().writing = false;
    }

    /// Encodes queued frames onto `dst`, up to `max_bytes` in `dst` or
    /// `max_frames` frames.
    pub fn drain_into(&self, dst: &mut BytesMut, max_bytes: usize, max_frames: usize) -> Drained {
        let mut frames = self.frames();
        let mut taken = 0;
        let mut released = 0;
        while dst.len() < max_bytes && taken < max_frames {
            let Some(Queued { item, cost }) = frames.items.pop_front() else {
                break;
            };
            released += cost;
            item.encode(dst);
            taken += 1;
        }
        frames.bytes -= released;
        let uid_room = released > 0
            && frames
                .uid
                .as_ref()
                .is_some_and(|uid| uid.released_by_task(released));
        if frames.items.is_empty() && frames.items.capacity() > 16 {
            // Do not keep a burst's room while idle.
            frames.items = VecDeque::new();
        }
        if taken > 0 {
            // Until the task has written these, nothing is written past them.
            frames.writing = true;
        }
        let room = taken > 0 && frames.wants_room;
        if room {
            frames.wants_room = false;
        }
        Drained {
            more: !frames.items.is_empty(),
            room: room || uid_room,
        }
    }

    /// The core waits for room in the queue, holding frames back.
    fn want_room(&self) {
        let mut frames = self.frames();
        frames.wants_room = true;
        frames.held = true;
    }

    /// The core holds nothing back any more: everything it had is queued.
    fn released(&self) {
        self.frames().held = false;
    }

    /// The task stops taking frames: what is left is returned, and later
    /// pushes are refused as closed.
    pub fn close_queue(&self) -> Vec<Outbound> {
        let mut frames = self.frames();
        frames.closed = true;
        // The task's handle on the socket is then its only one.
        frames.direct = None;
        if let Some(uid) = &frames.uid {
            uid.release(frames.bytes);
        }
        frames.bytes = 0;
        std::mem::take(&mut frames.items)
            .into_iter()
            .map(|q| q.item)
            .collect()
    }

    /// Bounds the queue's bytes (see `Frames::bytes`).
    pub fn bound_bytes(&self, bytes: usize) {
        self.frames().byte_bound = bytes;
    }

    /// Counts what is queued for the connection in its uid's account too,
    /// from now on (what is queued already with it).
    pub fn account_to(&self, uid: Arc<UidOutbound>) {
        let mut frames = self.frames();
        if !frames.closed {
            uid.add(frames.bytes);
            frames.uid = Some(uid);
        }
    }

    /// The account of the connection's uid.
    fn uid_account(&self) -> Option<Arc<UidOutbound>> {
        self.frames().uid.clone()
    }

    /// The core is done with the connection: what its queue still holds
    /// counts against its uid no more, so that the core's goodbye sees the
    /// account as it will be (the task writes the rest as it closes, or
    /// drops it when the socket fails, without telling the core).
    fn leave_account(&self) {
        let mut frames = self.frames();
        if let Some(uid) = frames.uid.take() {
            uid.release(frames.bytes + frames.buffered);
        }
        frames.buffered = 0;
    }

    /// Whether the core is done with the connection.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Ready when the core ended the connection or queued frames for it.
    pub fn poll_signal(&self, cx: &mut Context<'_>) -> Poll<Signal> {
        for registered in [false, true] {
            if self.ended.load(Ordering::Acquire) {
                return Poll::Ready(Signal::Ended);
            }
            if self.queued.load(Ordering::Acquire) {
                return Poll::Ready(Signal::Queued);
            }
            if !registered {
                self.task.register(cx.waker());
            }
        }
        Poll::Pending
    }
}

/// Most (watch, resource) states kept for one slow connection.
pub(super) const MAX_COALESCED: usize = 4096;

/// A watch event held back for a slow watcher: the newest per
/// (watch, resource).
struct Coalesced {
    watch_id: u64,
    resource: Arc<str>,
    event: Arc<StateEvent>,
}

/// The core task's handle on one connection.
pub(super) struct Conn {
    pub uid: u32,
    pub pid: u32,
    /// Who the kernel says is calling, for the policy.
    pub subject: crate::policy::Subject,
    /// Requests read but not yet handled, in order: they arrived while the
    /// connection had `--max-in-flight` requests awaiting answers.
    pub deferred: VecDeque<turnstile_proto::v1::ClientFrame>,
    /// Why the connection ended, when it ended with requests still deferred:
    /// they are handled first, then the goodbye.
    pub pending_goodbye: Option<String>,
    /// The dispatcher's word: requests awaiting answers are at the bound.
    in_flight_full: bool,
    backlog: VecDeque<Outbound>,
    /// What the backlog costs (see [`Outbound::cost`]).
    backlog_bytes: usize,
    /// `--max-outbound-bytes`: past it the client is cut off; past half of
    /// it its reader pauses.
    limit: usize,
    /// The uid's account, which the backlog counts in too; past its bound
    /// the connection's requests wait as past half of `limit`.
    uid_account: Option<Arc<UidOutbound>>,
    /// The dispatcher holds this connection's requests until its uid is
    /// under its bound (it is on the dispatcher's list of them).
    pub waits_for_uid: bool,
    gate: Arc<ReadGate>,
    coalesced: VecDeque<Coalesced>,
    waker_armed: bool,
}

/// The connection is not reading and its backlog is over the limit.
pub(super) struct Overflow;

impl Drop for Conn {
    /// The core forgot the connection (its goodbye, or it was cut off):
    /// its task ends too.
    fn drop(&mut self) {
        if let Some(uid) = &self.uid_account {
            uid.release(self.backlog_bytes);
        }
        self.gate.leave_account();
        self.gate.end();
    }
}

impl Conn {
    pub fn new(
        subject: crate::policy::Subject,
        pid: u32,
        gate: Arc<ReadGate>,
        limit: usize,
    ) -> Conn {
        // Half for the queue, half for the backlog behind it.
        gate.bound_bytes(limit / 2);
        let uid_account = gate.uid_account();
        Conn {
            uid: subject.uid,
            subject,
            pid,
            deferred: VecDeque::new(),
            pending_goodbye: None,
            in_flight_full: false,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            limit,
            uid_account,
            waits_for_uid: false,
            gate,
            coalesced: VecDeque::new(),
            waker_armed: false,
        }
    }

    /// The connection's gate, for a thread that answers it directly (see
    /// [`ReadGate::write_direct`]).
    pub fn gate(&self) -> &Arc<ReadGate> {
        &self.gate
    }

    /// Puts a frame in the connection's queue, and tells its task.
    fn push(&self, item: Outbound) -> Result<(), TrySendError<Outbound>> {
        self.gate.push(item)
    }

    /// Ends the connection: its task stops reading, writes what is queued
    /// if it can at once, and closes it.
    pub fn close(&self) {
        self.gate.cut();
    }

    fn lagging(&self) -> bool {
        !self.backlog.is_empty() || !self.coalesced.is_empty()
    }

    /// Tells whether the connection's requests awaiting answers are at the
    /// bound (its reader then pauses).
    pub fn set_in_flight_full(&mut self, full: bool) {
        self.in_flight_full = full;
        self.refresh_gate();
    }

    /// The client does not read its answers: its backlog is over half its
    /// bound, or its uid's connections have more queued than theirs
    /// ([`UidOutbound`]). Its requests wait, and its reader with them.
    pub fn backed_up(&self) -> bool {
        self.backlog_bytes > self.limit / 2 || self.uid_over()
    }

    /// The connection's uid has more queued than its bound.
    pub fn uid_over(&self) -> bool {
        self.uid_account.as_ref().is_some_and(|uid| uid.over())
    }

    /// The uid's account (shared by its connections).
    pub fn uid_account(&self) -> Option<&Arc<UidOutbound>> {
        self.uid_account.as_ref()
    }

    /// Closes or opens the reader's gate by the backlog, the requests in
    /// flight and the deferred ones.
    fn refresh_gate(&self) {
        let closed = self.backed_up() || self.in_flight_full || !self.deferred.is_empty();
        self.gate.set_closed(closed);
    }

    /// The core has taken a frame this connection's reader handed it.
    pub fn taken(&self) {
        self.gate.taken();
    }

    /// Queues a frame that must arrive (a reply, a lease update). An answer
    /// to the connection's own request (`answer`) never cuts it off: its
    /// reader is paused instead, which bounds them; anything else past the
    /// whole bound does (the client has stopped reading).
    pub fn send(&mut self, item: Outbound, answer: bool) -> Result<(), Overflow> {
        if !self.lagging() {
            match self.push(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(_)) => return Ok(()),
                Err(TrySendError::Full(item)) => {
                    self.push_backlog(item);
                }
            }
        } else {
            self.push_backlog(item);
        }
        self.arm_waker();
        if !answer && self.backlog_bytes > self.limit {
            return Err(Overflow);
        }
        Ok(())
    }

    fn push_backlog(&mut self, item: Outbound) {
        let item = item.into_waiting();
        let cost = item.cost();
        self.backlog_bytes += cost;
        if let Some(uid) = &self.uid_account {
            uid.add(cost);
        }
        self.backlog.push_back(item);
        self.refresh_gate();
    }

    /// Queues a watch event, or keeps only its newest state when the client
    /// is behind. `encode` gives the event's shared body. A client so far
    /// behind that it would be owed more than [`MAX_COALESCED`] resources'
    /// states is cut off instead (it resumes from its last revision when it
    /// reconnects, or gets a resync).
    pub fn send_watch(
        &mut self,
        watch_id: u64,
        event: &Arc<StateEvent>,
        encode: impl FnOnce() -> Bytes,
    ) -> Result<(), Overflow> {
        if !self.lagging() {
            let item = Outbound::WatchEvent(Box::new(WatchCopy {
                watch_id,
                body: encode(),
            }));
            match self.push(item) {
                Ok(()) | Err(TrySendError::Closed(_)) => return Ok(()),
                Err(TrySendError::Full(_)) => {}
            }
        }
        let resource = event.state.resource.clone();
        match self
            .coalesced
            .iter_mut()
            .find(|c| c.watch_id == watch_id && c.resource == resource)
        {
            Some(c) => c.event = event.clone(),
            None => {
                if self.coalesced.len() >= MAX_COALESCED {
                    return Err(Overflow);
                }
                self.coalesced.push_back(Coalesced {
                    watch_id,
                    resource,
                    event: event.clone(),
                });
            }
        }
        self.arm_waker();
        Ok(())
    }

    /// Moves what waited into the queue while it has room: the backlog
    /// first (in order), then the coalesced watch events.
    pub fn flush(&mut self, encode_coalesced: impl Fn(&StateEvent) -> Bytes) {
        self.waker_armed = false;
        while let Some(item) = self.backlog.pop_front() {
            let cost = item.cost();
            match self.push(item) {
                Ok(()) => {
                    // Now counted in the queue (or written).
                    self.backlog_bytes -= cost;
                    if let Some(uid) = &self.uid_account {
                        uid.release(cost);
                    }
                }
                Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(item)) => {
                    self.backlog.push_front(item);
                    self.refresh_gate();
                    self.arm_waker();
                    return;
                }
            }
        }
        self.refresh_gate();
        while let Some(c) = self.coalesced.front() {
            let item = Outbound::WatchEvent(Box::new(WatchCopy {
                watch_id: c.watch_id,
                body: encode_coalesced(&c.event),
            }));
            match self.push(item) {
                Ok(()) => {
                    self.coalesced.pop_front();
                }
                Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(_)) => {
                    self.arm_waker();
                    return;
                }
            }
        }
        self.gate.released();
    }

    /// Asks to be told (with [`ToCore::Writable`]) when the queue has room:
    /// the connection's task says so when it takes frames from it.
    fn arm_waker(&mut self) {
        if self.waker_armed {
            return;
        }
        self.waker_armed = true;
        self.gate.want_room();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inline frame takes no more room than the other variants: every
    /// slot of every connection's queue is this enum's size.
    #[test]
    fn inline_frames_do_not_grow_queue_slots() {
        assert_eq!(
            std::mem::size_of::<Outbound>(),
            std::mem::size_of::<Bytes>() + 8
        );
    }

    /// What a connection's queue holds counts in its uid's account while
    /// it is queued, and leaves it when the task takes it, when the core
    /// is done with the connection, or when the gate goes: a uid must
    /// never stay over its bound for bytes that are gone.
    #[test]
    fn a_uids_account_counts_what_is_queued_and_only_that() {
        let frame = || Outbound::Encoded(Bytes::from(vec![7u8; 1000]));
        let uid = UidOutbound::new(1500, usize::MAX);
        let gate = ReadGate::new();
        gate.account_to(uid.clone());
        gate.push(frame()).unwrap();
        let one = uid.bytes();
        assert!(one >= 1000 && !uid.over(), "{one}");
        gate.push(frame()).unwrap();
        assert!(uid.over());
        // The task takes them: the core waited, and is told.
        uid.wait();
        let mut dst = BytesMut::new();
        assert!(gate.drain_into(&mut dst, 1 << 20, 256).room);
        assert_eq!(uid.bytes(), 0);
        // The core is done with it: what is queued leaves the account.
        gate.push(frame()).unwrap();
        assert_eq!(uid.bytes(), one);
        gate.leave_account();
        assert_eq!(uid.bytes(), 0);
        // A gate that goes with frames queued takes them out too.
        let other = ReadGate::new();
        other.account_to(uid.clone());
        other.push(frame()).unwrap();
        assert_eq!(uid.bytes(), one);
        drop(other);
        assert_eq!(uid.bytes(), 0);
    }

    #[test]
    fn a_uid_past_its_report_budget_waits_until_it_is_paid_off() {
        // 1 000 bytes a second: a burst of 100.
        let uid = UidOutbound::new(usize::MAX - 1, 1000);
        uid.charge_report(60);
        assert!(!uid.over());
        uid.charge_report(60);
        assert!(uid.over() && uid.spent());
        // 120 owed: paid down to 100 after 20 ms, not before.
        let start = uid.reports().at.unwrap();
        let ms = std::time::Duration::from_millis;
        assert!(!uid.renew_budget(start + ms(10)));
        assert!(uid.over());
        assert!(uid.renew_budget(start + ms(20)));
        assert!(!uid.over());
        assert!(!uid.renew_budget(start + ms(3000)));
        // A large report is owed whole: 5 000 more on the 100 still owed
        // wait 5 s.
        uid.charge_report(5000);
        let at = uid.reports().at.unwrap();
        assert!(!uid.renew_budget(at + ms(4900)));
        assert!(uid.renew_budget(at + ms(5000)));
        // No budget (root): never over for reports.
        let root = UidOutbound::new(usize::MAX, usize::MAX);
        root.charge_report(usize::MAX);
        assert!(!root.over());
    }

    #[test]
    fn bytes_a_task_holds_unwritten_stay_in_its_uids_account_until_written() {
        // The socket took part of a write: the rest, in the task's own
        // buffer, counts until it goes out, and the write that takes the
        // uid back under its bound says so (once); what is left when the
        // core is done with the connection, or the gate goes, leaves.
        let uid = UidOutbound::new(1500, usize::MAX);
        let gate = ReadGate::new();
        gate.account_to(uid.clone());
        gate.keep_buffered(2000);
        assert_eq!(uid.bytes(), 2000);
        assert!(uid.over());
        uid.wait();
        assert!(!gate.wrote_buffered(400), "still over its bound");
        assert!(gate.wrote_buffered(400), "under it now: the core is told");
        assert!(!gate.wrote_buffered(100), "told once");
        assert_eq!(uid.bytes(), 1100);
        // More written than was counted (bytes kept before the account):
        // never below zero.
        assert!(!gate.wrote_buffered(5000));
        assert_eq!(uid.bytes(), 0);
        gate.keep_buffered(700);
        gate.leave_account();
        assert_eq!(uid.bytes(), 0);
        // Once the core is done with it, nothing more is counted.
        gate.keep_buffered(700);
        assert_eq!(uid.bytes(), 0);
        let other = ReadGate::new();
        other.account_to(uid.clone());
        other.keep_buffered(300);
        assert_eq!(uid.bytes(), 300);
        drop(other);
        assert_eq!(uid.bytes(), 0);
    }

    /// A short hand-encoded frame is held inline, a longer one in its own
    /// buffer; both write the frame's bytes.
    #[test]
    fn hand_encoded_frames_are_inline_when_short() {
        for len in [0, 1, 2, 20, 21, 22, 100] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frame = hot::pong_frame(1, &payload);
            let item = Outbound::encoded(&frame);
            assert_eq!(
                matches!(item, Outbound::Inline(_)),
                frame.len() <= INLINE_FRAME,
                "{len}"
            );
            let mut dst = BytesMut::new();
            item.encode(&mut dst);
            let mut expected = BytesMut::new();
            frame.put(&mut expected);
            assert_eq!(dst, expected, "{len}");
        }
    }
}
