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
//! `Publish` is answered later: the message goes to the store's writer
//! thread, which writes `Published` itself when the commit ends and leaves
//! the rest for the core's next entry (see `publish.rs`). `Ack` is answered
//! once its removal is durable; acks are gathered and committed in
//! batches (see `ack.rs`). The other store writes that queue operations
//! cause (requeues, dead-letter moves) are enqueued, in order, without
//! waiting: a lost one only makes a restart deliver a message again. A counter reservation is waited for
//! (see `persist.rs`). Leases that ended are gathered and handed to the
//! store's writer in batches, and `GetHistory` is answered once the store
//! has read it (see `history.rs`).

mod ack;
pub(super) use ack::AcksStored;
mod acquire;
mod cancel;
mod cancel_consume;
mod consume;
mod decline_yield;
mod deliver;
mod fleet;
mod hello;
mod history;
mod keep_alive;
mod nack;
mod peek_queue;
mod persist;
mod ping;
mod publish;
mod purge_queue;
mod reattach;
mod release;
mod report_progress;
mod request_yield;
mod requeue_dead;
mod status;
mod unwatch;
mod watch;

use std::collections::HashSet;

use tokio::sync::mpsc;
use turnstile_proto::hot::{HotFrame, HotRequest};
use turnstile_proto::v1::{self, client_frame::Body};

use super::clock::Clock;
use super::log_limit::LogLimit;
use super::outbound::{Conn, UidOutbound};
use super::wire::{self, Refusal};
use super::{Outbound, ServerConfig, ToCore};
use crate::core::{Change, Core, Map, Millis, SessionId};
use crate::store::{StoreError, StoreWriter};
use deliver::{concerns, encode_event};

/// A request as it reaches the dispatcher: decoded by prost, or read in
/// place (a hot one).
enum Incoming<'a> {
    Frame(v1::ClientFrame),
    Hot(HotFrame<'a>),
}

impl Incoming<'_> {
    /// The request as a frame of its own (to be kept for later).
    fn into_frame(self) -> v1::ClientFrame {
        match self {
            Incoming::Frame(frame) => frame,
            Incoming::Hot(frame) => frame.to_message(),
        }
    }
}

/// What an operation answers: a reply now and the changes it caused
/// (delivered around the reply), or an error now.
type Answer = Result<(v1::reply::Result, Vec<Change>), v1::Error>;

/// How often (core ms) the report budgets of the uids that wait are
/// looked at: a uid that has paid off its reports is resumed at most this
/// late.
const BUDGET_CHECK_MS: Millis = 50;

/// The state the core task owns besides the core itself.
pub(super) struct Dispatcher {
    core: Core,
    /// The broker is stopping ([`Dispatcher::close_all`]): nothing more is
    /// served, and above all nothing is granted to a waiter whose
    /// connection is closing too (as connections end, their goodbyes would
    /// otherwise hand their leases on).
    stopping: bool,
    /// Boxed: the table is sized for its peak, so its slots stay small.
    conns: Map<SessionId, Box<Conn>>,
    /// Connections whose requests wait because their uid has more queued
    /// than `--max-outbound-bytes-per-uid`, per uid, with its account:
    /// resumed together when it is under again.
    uid_waiting: Map<u32, (std::sync::Arc<UidOutbound>, Vec<SessionId>)>,
    /// When the report budgets of the waiting uids were last looked at
    /// (core ms): every [`BUDGET_CHECK_MS`], not at every entry.
    budgets_checked_at: Millis,
    clock: Clock,
    config: ServerConfig,
    to_core: mpsc::Sender<ToCore>,
    /// The store's writer; `None` when the server keeps nothing on disk.
    store: Option<StoreWriter>,
    /// Request ids of each connection's requests answered later (publishes,
    /// history reads, a `CancelConsume` held behind deliveries) not yet
    /// answered: they count against `--max-in-flight`, and a second request
    /// with one of them is refused, or its answer could not be told apart.
    publishing: Map<SessionId, HashSet<u64, foldhash::fast::RandomState>>,
    /// Policy denials are logged at a bounded rate.
    denials: LogLimit,
    /// So are publishes and acks the store refused.
    pub(super) store_refusals: LogLimit,
    /// Leases that ended, encoded, not yet handed to the store (see
    /// `history.rs`).
    history: crate::store::HistoryJournal,
    /// When lines were last handed to the store.
    history_sent_at: Millis,
    /// The fleet task's session, with `--fleet-etcd`.
    fleet: Option<fleet::FleetLink>,
    /// Acks not yet handed to the store (see `ack.rs`).
    acks: ack::AckBatch,
    /// Deliveries waiting for the store, and answers held behind them
    /// (see `persist.rs`).
    awaiting_store: persist::AwaitingStore,
    /// Publishes the store has answered, for the next entry (see
    /// `publish.rs`).
    commits: std::sync::Arc<publish::Commits>,
    /// This entry into the core has held its time and applied the
    /// deadlines due ([`Dispatcher::begin`]).
    begun: bool,
}

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
            conns: Map::default(),
            uid_waiting: Map::default(),
            budgets_checked_at: 0,
            clock: Clock::start(),
            store: config.storage.as_ref().map(super::Storage::writer),
            config,
            to_core,
            publishing: Map::default(),
            denials: LogLimit::default(),
            store_refusals: LogLimit::default(),
            history: Default::default(),
            history_sent_at: 0,
            fleet: None,
            stopping: false,
            acks: Default::default(),
            awaiting_store: Default::default(),
            commits: Default::default(),
            begun: false,
        };
        d.reserve_at_start(reservation.reserve_until)?;
        let restored = d.core.restore_queues(loaded.last_seq, loaded.queues);
        d.deliver(restored, 0);
        Ok(d)
    }
}

impl Dispatcher {
    /// When the core next has deadlines to apply.
    pub(super) fn next_deadline(&mut self) -> Option<tokio::time::Instant> {
        let next = self.core.next_deadline();
        next.map(|at| self.clock.instant(at))
    }

    /// A moment no later than [`Dispatcher::next_deadline`] (see
    /// [`Core::deadline_bound`]), cheap enough to ask after every entry.
    pub(super) fn deadline_bound(&self) -> Option<tokio::time::Instant> {
        self.core.deadline_bound().map(|at| self.clock.instant(at))
    }

    /// The core's time now.
    pub(super) fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Starts the work of one entry into the core, once, before the first
    /// thing that could observe or change the core's state: holds its time
    /// (see [`Clock::hold`]) and applies the deadlines already due (a
    /// KeepAlive that arrives after the TTL ran out must find the lease
    /// expired). An entry that only answers Pings never starts it: a Ping
    /// reads no time and observes nothing a deadline changes (issue 14:
    /// the clock read and the deadline check were ~200 instructions of a
    /// Ping). [`Dispatcher::finish_entry`] ends it.
    pub(super) fn begin(&mut self) {
        if !self.begun {
            self.begun = true;
            self.clock.hold();
            self.expire(false);
        }
    }

    /// As [`Dispatcher::begin`], for the core task woken by its deadline:
    /// the deadlines due are applied whatever the clock says.
    pub(super) fn begin_woken(&mut self) {
        self.begun = true;
        self.clock.hold();
        self.expire(true);
    }

    /// Ends one entry into the core: the acks gathered go to the store and
    /// the core's time runs again. The core time it was held at, or `None`
    /// when the entry never began (it touched neither time nor state).
    pub(super) fn finish_entry(&mut self) -> Option<Millis> {
        if !std::mem::take(&mut self.begun) {
            return None;
        }
        self.turn_done();
        let now = self.clock.now();
        self.clock.release();
        Some(now)
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
        if woken || self.core.deadline_bound().is_some_and(|at| at <= now) {
            let changes = self.core.expire(now);
            self.deliver(changes, now);
        }
        self.send_history(false);
        self.renew_budgets();
    }

    /// Ends every connection (the broker is stopping), after handing the
    /// history still held to the store.
    pub(super) fn close_all(&mut self) {
        self.stopping = true;
        // Acks taken are stored, though nobody will be answered.
        self.submit_acks();
        self.send_history(true);
        for conn in self.conns.values() {
            conn.close();
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
        if self.denials.admit(self.clock.now(), "policy refusals") {
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
        self.begin();
        if self.stopping {
            return;
        }
        match msg {
            ToCore::Hello {
                id,
                hello,
                creds,
                gate,
                session,
            } => hello::handle(self, id, hello, creds, gate, session),
            ToCore::Request { session, frame } => self.admit(session, Incoming::Frame(frame)),
            ToCore::Fatal { session, refusal } => {
                self.send(session, Outbound::frame(wire::error_reply(0, refusal)));
            }
            ToCore::Goodbye { session, reason } => {
                let uid = self.conns.get(&session).map(|c| c.uid);
                match self.conns.get_mut(&session) {
                    // Requests it sent before it went are handled first:
                    // now, unless they wait for answers in flight.
                    Some(conn) if !conn.deferred.is_empty() => {
                        conn.pending_goodbye = Some(reason);
                        self.resume(session);
                    }
                    _ => self.goodbye(session, &reason),
                }
                // What it had queued is let go: its uid may be under now.
                if let Some(uid) = uid
                    && !self.uid_waiting.is_empty()
                {
                    self.resume_uid(uid);
                }
            }
            ToCore::CountersStored { until } => self.counters_stored(until),
            ToCore::Deliveries { batch, deliveries } => {
                self.deliveries_stored(batch, deliveries);
            }
            ToCore::AcksStored(stored) => self.acks_stored(stored),
            ToCore::SubmitAcks => self.submit_scheduled_acks(),
            ToCore::Writable { session } => {
                let (clock, now) = (self.clock, self.clock.now());
                if let Some(conn) = self.conns.get_mut(&session) {
                    conn.flush(|e| encode_event(e, true, &clock, now));
                    let uid = conn.uid;
                    if !conn.deferred.is_empty() {
                        // What it sent while it was not reading its answers.
                        self.resume(session);
                    }
                    if !self.uid_waiting.is_empty() {
                        self.resume_uid(uid);
                    }
                }
            }
            ToCore::HistoryRead {
                session,
                request_id,
                result,
            } => {
                history::read(self, session, request_id, result);
                self.resume(session);
            }
            ToCore::Fleet(event) => self.fleet_event(event),
        }
    }

    /// Handles a hot request read in place from the connection's buffer
    /// (`turnstile_proto::hot`): as [`ToCore::Request`], without the
    /// frame's allocations.
    pub(super) fn handle_hot(&mut self, session: SessionId, frame: HotFrame<'_>) {
        if self.stopping {
            return;
        }
        // A Ping reads no time and observes nothing a deadline changes: it
        // does not start the entry (`Dispatcher::begin`).
        if !matches!(frame.request, HotRequest::Ping { .. }) || frame.id == 0 {
            self.begin();
        }
        self.admit(session, Incoming::Hot(frame));
    }

    /// Refuses a request that may be answered later (a publish, a history
    /// read, a `CancelConsume`) whose id is one still in flight on its
    /// connection: the two answers could not be told apart.
    pub(super) fn id_not_in_flight(&self, session: SessionId, id: u64) -> Result<(), v1::Error> {
        if self
            .publishing
            .get(&session)
            .is_some_and(|ids| ids.contains(&id))
        {
            return Err(Refusal::IdInFlight(id).into());
        }
        Ok(())
    }

    /// A request is to be answered later: in flight until then (it counts
    /// against `--max-in-flight`).
    pub(super) fn now_in_flight(&mut self, session: SessionId, id: u64) {
        self.publishing.entry(session).or_default().insert(id);
    }

    /// A request answered later (a publish, a history read, a held
    /// `CancelConsume`) is answered: no longer in flight.
    pub(super) fn no_longer_in_flight(&mut self, session: SessionId, id: u64) {
        if let Some(ids) = self.publishing.get_mut(&session) {
            ids.remove(&id);
            if ids.is_empty() {
                self.publishing.remove(&session);
            }
        }
    }

    /// Requests `session` has sent that await their answer (durable
    /// publishes, history reads, a held `CancelConsume`).
    fn in_flight(&self, session: SessionId) -> usize {
        if self.publishing.is_empty() {
            return 0;
        }
        self.publishing.get(&session).map_or(0, |ids| ids.len())
    }

    /// Handles a request now, or keeps it (in order) while its connection
    /// has `--max-in-flight` requests awaiting answers, or does not read
    /// the answers it has (its backlog is over half its bound): DESIGN
    /// "Flow control" stops reading rather than refusing. The reader's
    /// gate is closed meanwhile, so what is kept is at most what the
    /// reader had already handed over, and a client that asks for large
    /// answers and reads none holds at most `--max-outbound-bytes` of them.
    fn admit(&mut self, session: SessionId, frame: Incoming<'_>) {
        let full = self.in_flight(session) >= self.config.max_in_flight;
        if let Some(conn) = self.conns.get_mut(&session) {
            conn.taken();
            if full || conn.backed_up() || !conn.deferred.is_empty() {
                conn.deferred.push_back(frame.into_frame());
                conn.set_in_flight_full(full);
                self.wait_for_uid(session);
                return;
            }
            // A Ping read in place is answered here, in this one lookup of
            // its connection: it changes nothing and ends no lease, and the
            // gate needs no refresh after it (its requests in flight are as
            // they were; a backlog that grows refreshes it in `Conn::send`).
            if let Incoming::Hot(HotFrame {
                id,
                request: HotRequest::Ping { payload },
            }) = &frame
                && *id != 0
            {
                if conn.send(ping::answer(*id, payload), true).is_err() {
                    self.cut_off(session);
                }
                return;
            }
        }
        match frame {
            Incoming::Frame(frame) => {
                self.request(session, frame);
                self.refresh_in_flight(session);
            }
            // Acquire, Release and Ack start no request in flight (only
            // publishes and history reads do), so the gate stays as it
            // was: one lookup of the connection fewer (issue 14).
            Incoming::Hot(frame) => self.request_hot(session, frame),
        }
    }

    /// Puts `session` on its uid's list of connections whose requests wait
    /// for the uid to be under `--max-outbound-bytes-per-uid`, if that is
    /// what they wait for; the task of a connection of that uid that takes
    /// it under says so (`Writable`), and [`Dispatcher::resume_uid`]
    /// resumes them all.
    fn wait_for_uid(&mut self, session: SessionId) {
        let Some(conn) = self.conns.get_mut(&session) else {
            return;
        };
        if conn.waits_for_uid || !conn.uid_over() {
            return;
        }
        let Some(account) = conn.uid_account().cloned() else {
            return;
        };
        conn.waits_for_uid = true;
        let uid = conn.uid;
        account.wait();
        if self.uid_waiting.is_empty() {
            if account.spent() {
                tracing::debug!(
                    uid,
                    "a user's connections wait: their status and history answers are past \
                     --report-bytes-per-uid-per-second"
                );
            } else {
                tracing::debug!(
                    uid,
                    bytes = account.bytes(),
                    "a user's connections wait for it to read (--max-outbound-bytes-per-uid)"
                );
            }
        }
        self.uid_waiting
            .entry(uid)
            .or_insert_with(|| (account, Vec::new()))
            .1
            .push(session);
    }

    /// Counts a report built for `session` (a status or history answer,
    /// `bytes` long) against its uid's budget.
    pub(super) fn charge_report(&self, session: SessionId, bytes: usize) {
        if let Some(account) = self.conns.get(&session).and_then(|c| c.uid_account()) {
            account.charge_report(bytes);
        }
    }

    /// Resumes the uids that waited for their reports to be paid off
    /// (`--report-bytes-per-uid-per-second`): looked at on the core task's
    /// entries (it turns at least every 100 ms), at most every
    /// [`BUDGET_CHECK_MS`].
    fn renew_budgets(&mut self) {
        if self.uid_waiting.is_empty() {
            return;
        }
        let at = self.clock.now();
        if at < self.budgets_checked_at.saturating_add(BUDGET_CHECK_MS) {
            return;
        }
        self.budgets_checked_at = at;
        let now = std::time::Instant::now();
        let renewed: Vec<u32> = self
            .uid_waiting
            .iter()
            .filter(|(_, (account, _))| account.renew_budget(now))
            .map(|(uid, _)| *uid)
            .collect();
        for uid in renewed {
            self.resume_uid(uid);
        }
    }

    /// Resumes the connections of `uid` that wait for it to be under its
    /// bound, once it is.
    fn resume_uid(&mut self, uid: u32) {
        let Some((account, _)) = self.uid_waiting.get(&uid) else {
            return;
        };
        if account.over() {
            // Told again by the next task that takes it under.
            account.wait();
            return;
        }
        let Some((_, sessions)) = self.uid_waiting.remove(&uid) else {
            return;
        };
        for session in sessions {
            if let Some(conn) = self.conns.get_mut(&session) {
                conn.waits_for_uid = false;
                self.resume(session);
            }
        }
    }

    /// Handles what `session` sent while it was at `--max-in-flight` or not
    /// reading, as far as answers have gone out; then a goodbye that waited
    /// for them (a client that is gone reads nothing: its requests are
    /// handled without waiting for its backlog).
    fn resume(&mut self, session: SessionId) {
        loop {
            let full = self.in_flight(session) >= self.config.max_in_flight;
            let Some(conn) = self.conns.get_mut(&session) else {
                return;
            };
            if full {
                conn.set_in_flight_full(true);
                return;
            }
            if conn.backed_up() && conn.pending_goodbye.is_none() {
                // `Writable` resumes it once the backlog has drained (its
                // own, or its uid's: see `wait_for_uid`).
                self.wait_for_uid(session);
                return;
            }
            let Some(frame) = conn.deferred.pop_front() else {
                conn.set_in_flight_full(false);
                if let Some(reason) = conn.pending_goodbye.take() {
                    let uid = conn.uid;
                    self.goodbye(session, &reason);
                    // What it had queued is let go: its uid may be under
                    // now (as after any goodbye: `ToCore::Goodbye`).
                    self.resume_uid(uid);
                }
                return;
            };
            self.request(session, frame);
        }
    }

    /// Tells the connection whether its requests in flight are at the bound.
    fn refresh_in_flight(&mut self, session: SessionId) {
        let full = self.in_flight(session) >= self.config.max_in_flight;
        if let Some(conn) = self.conns.get_mut(&session) {
            conn.set_in_flight_full(full);
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
                Body::Acquire(r) => acquire::handle(self, session, (&r).into(), now),
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
                Body::Ack(r) => match ack::handle(self, session, id, r) {
                    // Answered once the store has the removal (`acked`).
                    Ok(ack::Started) => return,
                    Err(e) => Err(e),
                },
                Body::Nack(r) => nack::handle(self, session, r),
                Body::Reattach(r) => reattach::handle(self, session, r, now),
                Body::RequestYield(r) => request_yield::handle(self, session, r, now),
                Body::DeclineYield(r) => decline_yield::handle(self, session, r, now),
                Body::GetHistory(r) => match history::handle(self, session, id, r) {
                    // Answered once the store has read it (`history::read`).
                    Ok(history::Started) => return,
                    Err(e) => Err(e),
                },
                Body::CancelConsume(r) => match cancel_consume::handle(self, session, id, r) {
                    // Answered after the deliveries it must not overtake.
                    Ok(None) => return,
                    Ok(Some(answer)) => Ok(answer),
                    Err(e) => Err(e),
                },
                Body::PeekQueue(r) => peek_queue::handle(self, session, r),
                Body::PurgeQueue(r) => purge_queue::handle(self, session, r),
                Body::RequeueDead(r) => requeue_dead::handle(self, session, r),
            },
        };
        let answer = answer.map(|(result, changes)| (wire::answer(id, result), changes));
        self.answered(session, id, answer, now);
    }

    /// As [`Dispatcher::request`], for a request read in place.
    fn request_hot(&mut self, session: SessionId, frame: HotFrame<'_>) {
        let id = frame.id;
        let now = self.clock.now();
        let answer = match frame.request {
            _ if id == 0 => Err(Refusal::ZeroRequestId.into()),
            HotRequest::Ping { payload } => Ok((ping::answer(id, payload), Vec::new())),
            HotRequest::Acquire(r) => acquire::handle(self, session, r, now)
                .map(|(result, changes)| (wire::answer(id, result), changes)),
            HotRequest::Release { lease_id } => {
                release::handle(self, session, v1::Release { lease_id }, now)
                    .map(|(result, changes)| (wire::answer(id, result), changes))
            }
            HotRequest::Ack { delivery_id } => {
                match ack::handle(self, session, id, v1::Ack { delivery_id }) {
                    // Answered once the store has the removal.
                    Ok(ack::Started) => return,
                    Err(e) => Err(e),
                }
            }
        };
        self.answered(session, id, answer, now);
    }

    /// Sends a request's answer (already made into a frame) and delivers
    /// the changes it caused around it.
    fn answered(
        &mut self,
        session: SessionId,
        id: u64,
        answer: Result<(Outbound, Vec<Change>), v1::Error>,
        now: Millis,
    ) {
        let (answer, changes) = match answer {
            Ok((answer, changes)) => (answer, changes),
            Err(e) => (Outbound::frame(wire::error_reply(id, e)), Vec::new()),
        };
        // What the request did to others goes out first (a waiter's grant
        // before the releaser's Done: the handoff is not delayed by it);
        // what concerns the requester follows its answer, so it always sees
        // `AcquireReply{queued}` before a `LeaseUpdate` of that lease.
        //
        // Most requests change nothing for anyone (a Ping, a grant on a
        // free resource, a release nobody waits behind): their answer goes
        // without sorting and delivering empty lists (~550 instructions a
        // request, issue 14); the leases that ended are recorded all the
        // same.
        let mut own = Vec::new();
        if changes.is_empty() {
            self.record_ended();
            self.core.recycle_changes(changes);
        } else {
            // The others' changes stay in the core's list (handed back to
            // it by `deliver`); the requester's are taken out, in order.
            let mut others = changes;
            self.write_first(&mut others);
            own = others.extract_if(.., |c| concerns(c, session)).collect();
            self.deliver(others, now);
        }
        self.send_item(session, answer, true);
        if !own.is_empty() {
            self.deliver(own, now);
        }
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

    /// Waits for `answer` (the store's) in a task of its own, so that the
    /// core task never waits for the disk, then hands what `then` makes of
    /// it back to the core task.
    fn answer_later<T: Send + 'static>(
        &self,
        answer: impl std::future::Future<Output = T> + Send + 'static,
        then: impl FnOnce(T) -> ToCore + Send + 'static,
    ) {
        let to_core = self.to_core.clone();
        tokio::spawn(async move {
            let message = then(answer.await);
            // Fails only when the core task has stopped: nobody to answer.
            let _ = to_core.send(message).await;
        });
    }

    /// Queues an item for a session; a client too far behind is cut off
    /// through the goodbye path.
    fn send(&mut self, session: SessionId, item: Outbound) {
        self.send_item(session, item, false);
    }

    /// Queues an item; `answer`: the answer to the session's own request,
    /// which never cuts it off (its reader pauses instead).
    fn send_item(&mut self, session: SessionId, item: Outbound, answer: bool) {
        let Some(conn) = self.conns.get_mut(&session) else {
            return;
        };
        if conn.send(item, answer).is_err() {
            self.cut_off(session);
        }
    }

    /// Closes a connection that does not read (its backlog is past
    /// `--max-outbound-bytes`) through the goodbye path.
    fn cut_off(&mut self, session: SessionId) {
        let limit = self.config.max_outbound_bytes;
        let Some(conn) = self.conns.get(&session) else {
            return;
        };
        tracing::warn!(
            session = session.0,
            uid = conn.uid,
            pid = conn.pid,
            "closing a connection that does not read: more than {limit} bytes queued (--max-outbound-bytes)"
        );
        conn.close();
        self.goodbye(session, "outbound limit exceeded");
    }
}
