//! The core task: it owns the [`Core`], takes every request from the
//! connection tasks, answers it, and delivers the changes the core returns.
//!
//! One file per operation, behind one exhaustive `match` with no catch-all
//! arm, so that a new message cannot be forgotten. Each operation returns
//! its answer; the changes it caused are delivered after the answer, so a
//! client always sees `AcquireReply{queued}` before any `LeaseUpdate` of
//! that lease, and `ConsumeStarted` before any `Delivery` of that consumer.
//!
//! `Publish` alone is answered later: the message goes to the store's
//! writer thread, and `Published` (or the store's error) is sent when the
//! commit comes back as [`ToCore::Committed`] (see `publish.rs`). The
//! store writes that queue operations cause (acks, requeues, dead-letter
//! moves) are enqueued, in order, without waiting: a lost one only makes a
//! restart deliver a message again. A counter reservation is waited for
//! (see [`Dispatcher::persist`]).

mod ack;
mod acquire;
mod cancel;
mod consume;
mod hello;
mod keep_alive;
mod nack;
mod ping;
mod publish;
mod release;
mod report_progress;
mod status;
mod unwatch;
mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use turnstile_proto::v1::{self, client_frame::Body};

use super::clock::Clock;
use super::outbound::Conn;
use super::wire::{self, Refusal};
use super::{Outbound, ServerConfig, ToCore};
use crate::core::queues::{DropReason, QueueChange, StoreOp};
use crate::core::{Change, Core, Millis, SessionId, StateEvent};
use crate::store::{StoreError, StoreWriter};

/// What an operation answers: a reply now, or an error now.
type Answer = Result<v1::reply::Result, v1::Error>;

/// The state the core task owns besides the core itself.
pub(super) struct Dispatcher {
    core: Core,
    /// Boxed: the table is sized for its peak, so its slots stay small.
    conns: HashMap<SessionId, Box<Conn>>,
    clock: Clock,
    config: ServerConfig,
    to_core: mpsc::Sender<ToCore>,
    /// Changes of the operation being handled, delivered after its answer.
    changes: Vec<Change>,
    /// The store's writer; `None` when the server keeps nothing on disk.
    store: Option<StoreWriter>,
    /// Request ids of each connection's publishes not yet answered: a
    /// second publish with one of them is refused, or its answer could not
    /// be told apart.
    publishing: HashMap<SessionId, HashSet<u64>>,
    /// The highest counter reservation made durable.
    reserved: u64,
    /// Refusals logged in the current second, and when it began: denials
    /// are logged at most [`DENIALS_LOGGED_PER_SECOND`] a second.
    denials: (Millis, u32),
}

/// How many policy refusals are logged per second at most (the rest are
/// counted and summed up in the next one logged).
const DENIALS_LOGGED_PER_SECOND: u32 = 10;

impl Dispatcher {
    /// The core task's state, with what the store held put back and the
    /// counters' first reservation durable. Blocks for that one commit:
    /// nothing is served before it.
    pub(super) fn start(
        config: ServerConfig,
        to_core: mpsc::Sender<ToCore>,
    ) -> Result<Dispatcher, StoreError> {
        let loaded = match &config.storage {
            Some(storage) => storage.take_loaded()?,
            None => Default::default(),
        };
        let (core, reservation) = Core::new(config.core.clone(), loaded.counters);
        let mut d = Dispatcher {
            core,
            conns: HashMap::new(),
            clock: Clock::start(),
            store: config.storage.as_ref().map(super::Storage::writer),
            config,
            to_core,
            changes: Vec::new(),
            publishing: HashMap::new(),
            reserved: 0,
            denials: (0, 0),
        };
        d.reserve(reservation.reserve_until)?;
        let restored = d.core.restore_queues(loaded.last_seq, loaded.queues);
        d.deliver(restored, 0);
        Ok(d)
    }
}

/// Runs the core task until every connection task and the accept loop are
/// gone or `stop` is cancelled.
pub(super) async fn core_loop(
    mut d: Dispatcher,
    mut inbox: mpsc::Receiver<ToCore>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(256);
    loop {
        let deadline = d.core.next_deadline().map(|at| d.clock.instant(at));
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            n = inbox.recv_many(&mut batch, 256) => {
                if n == 0 {
                    break;
                }
                // Deadlines already due are applied first: a KeepAlive that
                // arrives after the TTL ran out must find the lease expired.
                let now = d.clock.now();
                if d.core.next_deadline().is_some_and(|at| at <= now) {
                    let changes = d.core.expire(now);
                    d.deliver(changes, now);
                }
                for msg in batch.drain(..) {
                    d.handle(msg);
                }
            }
            _ = sleep => {
                let now = d.clock.now();
                let changes = d.core.expire(now);
                d.deliver(changes, now);
            }
        }
    }
    for conn in d.conns.values() {
        conn.cancel.cancel();
    }
}

impl Dispatcher {
    /// Asks the policy whether `session` may do `verb` on `name` (`None`:
    /// on every name at once). A refusal is PERMISSION_DENIED naming the
    /// verb and the name, and is logged (rate-limited).
    fn allow(
        &mut self,
        session: SessionId,
        verb: crate::policy::Verb,
        name: Option<&str>,
    ) -> Result<(), v1::Error> {
        let Some(conn) = self.conns.get(&session) else {
            return Err(Refusal::NoConnection.into());
        };
        let decision = match name {
            Some(n) => self.config.policy.check(&conn.subject, verb, n),
            None => self.config.policy.check_every_name(&conn.subject, verb),
        };
        let Err(denied) = decision else {
            return Ok(());
        };
        let now = self.clock.now();
        let (since, count) = &mut self.denials;
        if now >= *since + 1000 {
            if *count > DENIALS_LOGGED_PER_SECOND {
                tracing::warn!(
                    "{} more policy refusals were not logged",
                    *count - DENIALS_LOGGED_PER_SECOND
                );
            }
            *since = now;
            *count = 0;
        }
        *count += 1;
        if *count <= DENIALS_LOGGED_PER_SECOND {
            tracing::warn!(
                uid = conn.uid,
                pid = conn.pid,
                session = session.0,
                "{denied}"
            );
        }
        Err(v1::Error::from(&denied))
    }

    fn handle(&mut self, msg: ToCore) {
        match msg {
            ToCore::Hello {
                id,
                hello,
                creds,
                outbound,
                cancel,
                session,
            } => hello::handle(self, id, hello, creds, outbound, cancel, session),
            ToCore::Request { session, frame } => self.request(session, frame),
            ToCore::Fatal { session, refusal } => {
                self.send(session, Outbound::frame(wire::error_reply(0, refusal)));
            }
            ToCore::Goodbye { session, reason } => self.goodbye(session, &reason),
            ToCore::Writable { session } => {
                let (clock, now) = (self.clock, self.clock.now());
                if let Some(conn) = self.conns.get_mut(&session) {
                    conn.flush(|e| encode_event(e, true, &clock, now), &self.to_core);
                }
            }
            ToCore::Committed {
                session,
                request_id,
                queue,
                message,
                result,
            } => publish::committed(self, session, request_id, &queue, message, result),
        }
    }

    fn request(&mut self, session: SessionId, frame: v1::ClientFrame) {
        let id = frame.id;
        let now = self.clock.now();
        let answer = match frame.body {
            _ if id == 0 => Err(Refusal::ZeroRequestId.into()),
            None => Err(Refusal::EmptyRequest.into()),
            Some(body) => match body {
                Body::Hello(_) => Err(Refusal::HelloAgain.into()),
                Body::Ping(r) => ping::handle(r),
                Body::GetStatus(r) => status::handle(self, session, r, now),
                Body::Acquire(r) => acquire::handle(self, session, r, now),
                Body::KeepAlive(r) => keep_alive::handle(self, session, r, now),
                Body::Release(r) => release::handle(self, session, r, now),
                Body::Cancel(r) => cancel::handle(self, session, r, now),
                Body::ReportProgress(r) => report_progress::handle(self, session, r, now),
                Body::Watch(r) => watch::handle(self, session, id, r, now),
                Body::Unwatch(r) => unwatch::handle(self, session, r),
                Body::Publish(r) => match publish::handle(self, session, id, r) {
                    // Answered once the store has the message (`committed`).
                    Ok(publish::Started) => return,
                    Err(e) => Err(e),
                },
                Body::Consume(r) => consume::handle(self, session, r),
                Body::Ack(r) => ack::handle(self, session, r),
                Body::Nack(r) => nack::handle(self, session, r),
            },
        };
        // Persist a counter reservation before the answer can carry a token.
        let changes = std::mem::take(&mut self.changes);
        self.reserve_first(&changes);
        // What the request did to others goes out first (a waiter's grant
        // before the releaser's Done: the handoff is not delayed by it);
        // what concerns the requester follows its answer, so it always sees
        // `AcquireReply{queued}` before a `LeaseUpdate` of that lease.
        let (own, others): (Vec<Change>, Vec<Change>) =
            changes.into_iter().partition(|c| concerns(c, session));
        self.deliver(others, now);
        match answer {
            Ok(result) => self.send(session, Outbound::frame(wire::reply(id, result))),
            Err(e) => self.send(session, Outbound::frame(wire::error_reply(id, e))),
        }
        self.deliver(own, now);
    }

    fn goodbye(&mut self, session: SessionId, reason: &str) {
        let Some(conn) = self.conns.remove(&session) else {
            return;
        };
        tracing::debug!(
            session = session.0,
            uid = conn.uid,
            pid = conn.pid,
            "goodbye: {reason}"
        );
        // Its publishes still in flight are completed all the same, their
        // answers dropped (see `publish::committed`).
        self.publishing.remove(&session);
        let now = self.clock.now();
        let changes = self.core.goodbye(session, now);
        self.deliver(changes, now);
    }

    /// Queues an item for a session; a client too far behind is cut off
    /// through the goodbye path.
    fn send(&mut self, session: SessionId, item: Outbound) {
        let limit = self.config.max_outbound_bytes;
        let Some(conn) = self.conns.get_mut(&session) else {
            return;
        };
        if conn.send(item, limit, &self.to_core).is_err() {
            tracing::warn!(
                session = session.0,
                uid = conn.uid,
                pid = conn.pid,
                "closing a connection that does not read: more than {limit} bytes queued (--max-outbound-bytes)"
            );
            conn.cancel.cancel();
            self.goodbye(session, "outbound limit exceeded");
        }
    }

    fn reserve_first(&mut self, changes: &[Change]) {
        for c in changes {
            if let Change::ReserveCounters { .. } = c {
                self.persist(c);
            }
        }
    }

    /// Makes a counter reservation durable before anything after it is
    /// sent, so that no fencing token or revision is handed out twice
    /// across a restart. The core task waits for this one commit: it
    /// happens once every [`crate::core::COUNTER_BLOCK`] tokens or
    /// revisions, and every frame after it must wait for it anyway.
    /// (Without a store the counters only live as long as the broker.)
    fn persist(&mut self, change: &Change) {
        let Change::ReserveCounters { reserve_until } = *change else {
            return;
        };
        if reserve_until <= self.reserved {
            return;
        }
        let mut tries = 0;
        while let Err(e) = self.reserve(reserve_until) {
            tries += 1;
            if tries == 3 {
                tracing::error!(
                    reserve_until,
                    "the counter reservation could not be stored: {e}; fencing tokens and revisions \
                     handed out from now on may be handed out again after a restart"
                );
                self.reserved = reserve_until;
                return;
            }
            tracing::warn!(
                reserve_until,
                "the counter reservation could not be stored, retrying: {e}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Commits a counter reservation and waits for it.
    fn reserve(&mut self, reserve_until: u64) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            let op = StoreOp::ReserveCounters { reserve_until };
            futures::executor::block_on(store.enqueue(vec![op]))?;
        }
        tracing::debug!(reserve_until, "counter reservation stored");
        self.reserved = reserve_until;
        Ok(())
    }

    /// Hands writes to the store without waiting: they are committed in the
    /// order enqueued, and a failure is only logged (the message concerned
    /// is delivered again after a restart, which at-least-once allows).
    fn store_detached(&self, ops: Vec<StoreOp>) {
        let Some(store) = &self.store else {
            return;
        };
        let commit = store.enqueue(ops);
        tokio::spawn(async move {
            if let Err(e) = commit.await {
                tracing::warn!(
                    "a queue update was not stored ({e}); an acknowledged message may be delivered again after a restart"
                );
            }
        });
    }

    /// Sends every change to whom it concerns. Watch events are encoded once
    /// per event, whatever the number of watchers.
    fn deliver(&mut self, mut changes: Vec<Change>, now: Millis) {
        // The writes of one core call go to the store first, in one
        // transaction (a dead-letter move is a Remove plus an Append), and
        // before any send below can close a connection and cause more.
        let ops: Vec<StoreOp> = changes
            .extract_if(.., |c| matches!(c, Change::Queue(QueueChange::Persist(_))))
            .filter_map(|c| match c {
                Change::Queue(QueueChange::Persist(op)) => Some(op),
                _ => None,
            })
            .collect();
        if !ops.is_empty() {
            self.store_detached(ops);
        }
        let mut encoded: Option<(*const StateEvent, Bytes)> = None;
        let clock = self.clock;
        for change in changes {
            match change {
                Change::Lease {
                    session,
                    lease,
                    update,
                } => {
                    let frame = wire::lease_update(lease.0, &update, &clock, now);
                    self.send(session, Outbound::frame(frame));
                }
                Change::Watch {
                    session,
                    watch,
                    event,
                } => {
                    let Some(conn) = self.conns.get_mut(&session) else {
                        continue;
                    };
                    let body = || match &encoded {
                        Some((ptr, bytes)) if *ptr == Arc::as_ptr(&event) => bytes.clone(),
                        _ => encode_event(&event, false, &clock, now),
                    };
                    let mut produced = None;
                    let sent = conn.send_watch(
                        watch.0,
                        &event,
                        || {
                            let b = body();
                            produced = Some(b.clone());
                            b
                        },
                        &self.to_core,
                    );
                    if let Some(b) = produced {
                        encoded = Some((Arc::as_ptr(&event), b));
                    }
                    if sent.is_err() {
                        tracing::warn!(
                            session = session.0,
                            uid = conn.uid,
                            pid = conn.pid,
                            "closing a watcher that stopped reading: it is owed the state of more than {} resources",
                            super::outbound::MAX_COALESCED
                        );
                        conn.cancel.cancel();
                        self.goodbye(session, "watcher too far behind");
                    }
                }
                c @ Change::ReserveCounters { .. } => self.persist(&c),
                Change::Queue(QueueChange::Deliver { session, delivery }) => {
                    self.send(session, Outbound::frame(wire::delivery(&delivery)));
                }
                // Taken out above.
                Change::Queue(QueueChange::Persist(_)) => {}
                Change::Queue(QueueChange::DeadLettered {
                    queue,
                    seq,
                    dead_queue,
                    dead_seq,
                    attempts,
                }) => {
                    tracing::info!(
                        %queue, seq, %dead_queue, dead_seq, attempts,
                        "a message used up its delivery attempts and moved to the dead-letter queue"
                    );
                }
                Change::Queue(QueueChange::Dropped { queue, seq, reason }) => {
                    let why = match reason {
                        DropReason::DeadLetterQueueFull => "its dead-letter queue is full",
                        DropReason::NoDeadLetterQueue => {
                            "its queue's name is too long for a dead-letter queue"
                        }
                    };
                    tracing::warn!(%queue, seq, "a message was dropped unacknowledged: {why}");
                }
            }
        }
    }
}

/// Whether a change is addressed to `session` (store writes are nobody's).
fn concerns(change: &Change, session: SessionId) -> bool {
    match change {
        Change::Lease { session: s, .. } | Change::Watch { session: s, .. } => *s == session,
        Change::Queue(QueueChange::Deliver { session: s, .. }) => *s == session,
        Change::ReserveCounters { .. }
        | Change::Queue(
            QueueChange::Persist(_)
            | QueueChange::DeadLettered { .. }
            | QueueChange::Dropped { .. },
        ) => false,
    }
}

/// A `WatchEvent` without its `watch_id`, encoded once for all watchers.
fn encode_event(e: &StateEvent, coalesced: bool, clock: &Clock, now: Millis) -> Bytes {
    turnstile_proto::encode_shared_watch_event(wire::watch_event(0, e, coalesced, clock, now))
}
