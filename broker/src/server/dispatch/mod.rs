//! The dispatcher: the state the core task owns (the [`Core`], the
//! connections, the clock) and the one exhaustive `match` that sends each
//! request to its operation. The loop that feeds it is `core_task.rs`;
//! fan-out is `deliver.rs`, counter persistence `persist.rs`.
//!
//! One file per operation, behind one exhaustive `match` with no catch-all
//! arm, so that a new message cannot be forgotten. Each operation returns
//! its answer and the changes it caused; the changes are delivered around
//! the answer (what concerns others first, then the answer, then what
//! concerns the requester), so a
//! client always sees `AcquireReply{queued}` before any `LeaseUpdate` of
//! that lease, and `ConsumeStarted` before any `Delivery` of that consumer.
//!
//! `Publish` alone is answered later: the message goes to the store's
//! writer thread, and `Published` (or the store's error) is sent when the
//! commit comes back as [`ToCore::Committed`] (see `publish.rs`). The
//! store writes that queue operations cause (acks, requeues, dead-letter
//! moves) are enqueued, in order, without waiting: a lost one only makes a
//! restart deliver a message again. A counter reservation is waited for
//! (see `persist.rs`).

mod ack;
mod acquire;
mod cancel;
mod consume;
mod deliver;
mod hello;
mod keep_alive;
mod nack;
mod persist;
mod ping;
mod publish;
mod release;
mod report_progress;
mod status;
mod unwatch;
mod watch;

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc;
use turnstile_proto::v1::{self, client_frame::Body};

use super::clock::Clock;
use super::outbound::Conn;
use super::wire::{self, Refusal};
use super::{Outbound, ServerConfig, ToCore};
use crate::core::{Change, Core, Millis, SessionId};
use crate::store::{StoreError, StoreWriter};
use deliver::{concerns, encode_event};

/// What an operation answers: a reply now and the changes it caused
/// (delivered around the reply), or an error now.
type Answer = Result<(v1::reply::Result, Vec<Change>), v1::Error>;

/// The state the core task owns besides the core itself.
pub(super) struct Dispatcher {
    core: Core,
    /// Boxed: the table is sized for its peak, so its slots stay small.
    conns: HashMap<SessionId, Box<Conn>>,
    clock: Clock,
    config: ServerConfig,
    to_core: mpsc::Sender<ToCore>,
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

impl Dispatcher {
    /// When the core next has deadlines to apply.
    pub(super) fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.core.next_deadline().map(|at| self.clock.instant(at))
    }

    /// The core's time now.
    pub(super) fn now(&self) -> Millis {
        self.clock.now()
    }

    /// The broker did not run for `stopped` (the process was stopped, or
    /// the core task blocked): core time stands still for it, so no lease
    /// expires for a KeepAlive its holder sent on time and the broker did
    /// not read. `seen` is the latest core time anything was done at.
    pub(super) fn broker_stopped(&mut self, stopped: std::time::Duration, seen: Millis) {
        let before = self.clock.now();
        self.clock.skip(stopped, seen);
        tracing::warn!(
            "the broker did not run for {} ms (stopped, or its core task blocked): lease \
             deadlines move {} ms later, since holders could not be heard meanwhile",
            stopped.as_millis(),
            before - self.clock.now()
        );
    }

    /// Applies the deadlines due now (`woken`: the core task slept until
    /// the next one; otherwise only if one is already due).
    pub(super) fn expire(&mut self, woken: bool) {
        let now = self.clock.now();
        if woken || self.core.next_deadline().is_some_and(|at| at <= now) {
            let changes = self.core.expire(now);
            self.deliver(changes, now);
        }
    }

    /// Ends every connection (the broker is stopping).
    pub(super) fn close_all(&self) {
        for conn in self.conns.values() {
            conn.cancel.cancel();
        }
    }

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

    pub(super) fn handle(&mut self, msg: ToCore) {
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
        let answer: Answer = match frame.body {
            _ if id == 0 => Err(Refusal::ZeroRequestId.into()),
            None => Err(Refusal::EmptyRequest.into()),
            Some(body) => match body {
                Body::Hello(_) => Err(Refusal::HelloAgain.into()),
                Body::Ping(r) => Ok((ping::handle(r), Vec::new())),
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
        let (answer, changes) = match answer {
            Ok((result, changes)) => (Ok(result), changes),
            Err(e) => (Err(e), Vec::new()),
        };
        // Persist a counter reservation before the answer can carry a token.
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

    /// The one goodbye path of the dispatcher (STYLE 4): the connection is
    /// forgotten, its publishes in flight lose their answer, and the core's
    /// goodbye ends its leases, watches and consumers.
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
}
