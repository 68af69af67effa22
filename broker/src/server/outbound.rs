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

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
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

    /// Bytes this item takes on the wire, roughly: for outbound accounting.
    pub fn wire_len(&self) -> usize {
        match self {
            Outbound::Frame(f) => prost::Message::encoded_len(f) + 4,
            Outbound::WatchEvent(w) => w.body.len() + 16,
        }
    }

    /// Appends the item's frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Outbound::Frame(f) => encode_frame(f, dst),
            Outbound::WatchEvent(w) => encode_watch_event_frame(w.watch_id, &w.body, dst),
        }
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
    backlog: VecDeque<Outbound>,
    backlog_bytes: usize,
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
    ) -> Conn {
        Conn {
            session,
            tx,
            cancel,
            uid: subject.uid,
            subject,
            pid,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            coalesced: VecDeque::new(),
            waker_armed: false,
        }
    }

    fn lagging(&self) -> bool {
        !self.backlog.is_empty() || !self.coalesced.is_empty()
    }

    /// Queues a frame that must arrive (a reply, a lease update).
    pub fn send(
        &mut self,
        item: Outbound,
        limit: usize,
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
        if self.backlog_bytes > limit {
            return Err(Overflow);
        }
        Ok(())
    }

    fn push_backlog(&mut self, item: Outbound) {
        self.backlog_bytes += item.wire_len();
        self.backlog.push_back(item);
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
            let len = item.wire_len();
            match self.tx.try_send(item) {
                Ok(()) => self.backlog_bytes -= len,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(item)) => {
                    self.backlog.push_front(item);
                    self.arm_waker(to_core);
                    return;
                }
            }
        }
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
