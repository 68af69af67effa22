//! What the core task sends each connection ([`Outbound`]), what it knows
//! of each connection's outbound side ([`Conn`]), and the rule that the
//! core never waits for a client.
//!
//! Frames go into the connection's bounded queue with `try_send`. When the
//! queue is full, replies and lease updates wait in a backlog (bounded in
//! bytes: past `max_outbound_bytes` the client is cut off, it is not
//! reading) while watch events are **coalesced**: only the newest state per
//! watch and resource is kept, and it is sent marked `coalesced` when the
//! queue has room again. So a stalled watcher costs bounded memory however
//! many changes happen, and never delays anyone else.
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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use turnstile_proto::{encode_frame, encode_watch_event_frame, v1};

use super::ToCore;
use crate::core::{SessionId, StateEvent};

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
    /// in a backlog, where its bytes are all it may cost.
    Encoded(Bytes),
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

    /// What this item costs the broker while it waits in a backlog: its
    /// bytes, the frame's own struct and the slot and allocations around it.
    pub fn cost(&self) -> usize {
        /// A backlog slot plus the allocator's bookkeeping of a box.
        const OVERHEAD: usize = std::mem::size_of::<Outbound>() + 32;
        match self {
            Outbound::Frame(f) => {
                prost::Message::encoded_len(f.as_ref())
                    + std::mem::size_of::<v1::ServerFrame>()
                    + OVERHEAD
            }
            Outbound::WatchEvent(w) => w.body.len() + std::mem::size_of::<WatchCopy>() + OVERHEAD,
            Outbound::Encoded(b) => b.len() + OVERHEAD,
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
        }
    }
}

/// Whether a connection's reader may read its next frame. The core task
/// closes it while the connection's backlog is over half its bound or its
/// requests awaiting answers are at `--max-in-flight`, and opens it again
/// when neither holds; the reader waits at the gate before each frame.
///
/// The reader also stops after handing the core [`MAX_HANDED`] frames it
/// has not handled yet, so that what a client can make the broker answer
/// before the gate closes is bounded per connection.
#[derive(Debug, Default)]
pub struct ReadGate {
    closed: AtomicBool,
    handed: AtomicUsize,
    opened: Notify,
}

/// Frames a reader may hand the core before the core has handled them.
pub const MAX_HANDED: usize = 32;

impl ReadGate {
    /// An open gate.
    pub fn new() -> Arc<ReadGate> {
        Arc::new(ReadGate::default())
    }

    /// Returns once the gate is open.
    pub async fn wait_open(&self) {
        while self.is_closed() {
            // `notify_one` keeps a permit when nobody waits yet, so an
            // opening between the load and this await is not missed.
            self.opened.notified().await;
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
            self.opened.notify_one();
        }
    }

    fn set_closed(&self, closed: bool) {
        let was = self.closed.swap(closed, Ordering::AcqRel);
        if was && !closed {
            self.opened.notify_one();
        }
    }

    /// Whether the gate is closed now.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.handed.load(Ordering::Acquire) >= MAX_HANDED
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
    pub session: SessionId,
    pub tx: mpsc::Sender<Outbound>,
    pub cancel: CancellationToken,
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
    gate: Arc<ReadGate>,
    coalesced: VecDeque<Coalesced>,
    waker_armed: bool,
}

/// The connection is not reading and its backlog is over the limit.
pub(super) struct Overflow;

impl Conn {
    pub fn new(
        session: SessionId,
        tx: mpsc::Sender<Outbound>,
        cancel: CancellationToken,
        subject: crate::policy::Subject,
        pid: u32,
        gate: Arc<ReadGate>,
        limit: usize,
    ) -> Conn {
        Conn {
            session,
            tx,
            cancel,
            uid: subject.uid,
            subject,
            pid,
            deferred: VecDeque::new(),
            pending_goodbye: None,
            in_flight_full: false,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            limit,
            gate,
            coalesced: VecDeque::new(),
            waker_armed: false,
        }
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

    /// Closes or opens the reader's gate by the backlog, the requests in
    /// flight and the deferred ones.
    fn refresh_gate(&self) {
        let closed =
            self.backlog_bytes > self.limit / 2 || self.in_flight_full || !self.deferred.is_empty();
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
    pub fn send(
        &mut self,
        item: Outbound,
        answer: bool,
        to_core: &mpsc::Sender<ToCore>,
    ) -> Result<(), Overflow> {
        if !self.lagging() {
            match self.tx.try_send(item) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(item)) => {
                    self.push_backlog(item);
                }
            }
        } else {
            self.push_backlog(item);
        }
        self.arm_waker(to_core);
        if !answer && self.backlog_bytes > self.limit {
            return Err(Overflow);
        }
        Ok(())
    }

    fn push_backlog(&mut self, item: Outbound) {
        let item = item.into_waiting();
        self.backlog_bytes += item.cost();
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
        to_core: &mpsc::Sender<ToCore>,
    ) -> Result<(), Overflow> {
        if !self.lagging() {
            let item = Outbound::WatchEvent(Box::new(WatchCopy {
                watch_id,
                body: encode(),
            }));
            match self.tx.try_send(item) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {}
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
        self.arm_waker(to_core);
        Ok(())
    }

    /// Moves what waited into the queue while it has room: the backlog
    /// first (in order), then the coalesced watch events.
    pub fn flush(
        &mut self,
        encode_coalesced: impl Fn(&StateEvent) -> Bytes,
        to_core: &mpsc::Sender<ToCore>,
    ) {
        self.waker_armed = false;
        while let Some(item) = self.backlog.pop_front() {
            let cost = item.cost();
            match self.tx.try_send(item) {
                Ok(()) => self.backlog_bytes -= cost,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(item)) => {
                    self.backlog.push_front(item);
                    self.refresh_gate();
                    self.arm_waker(to_core);
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
            match self.tx.try_send(item) {
                Ok(()) => {
                    self.coalesced.pop_front();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.arm_waker(to_core);
                    return;
                }
            }
        }
    }

    /// Asks to be told (with [`ToCore::Writable`]) when the queue has room.
    fn arm_waker(&mut self, to_core: &mpsc::Sender<ToCore>) {
        if self.waker_armed {
            return;
        }
        self.waker_armed = true;
        let tx = self.tx.clone();
        let to_core = to_core.clone();
        let session = self.session;
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                permit = tx.reserve() => {
                    if let Ok(p) = permit {
                        drop(p);
                        let _ = to_core.send(ToCore::Writable { session }).await;
                    }
                }
            }
        });
    }
}
