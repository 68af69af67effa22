//! `Publish`: answered with `Published{seq}` only once the message is
//! durable.
//!
//! The core reserves a sequence number and room in the queue
//! ([`crate::core::Core::begin_publish`]); the store's writer thread commits
//! the message, in one transaction with every other write that arrives
//! meanwhile (group commit). The moment the transaction ends, the writer
//! thread itself ([`crate::store::StoreWriter::enqueue_then`]) writes each
//! `Published` straight into its connection's socket when nothing waits
//! to go out there ([`ReadGate::write_direct`]), and files the commits in
//! [`Commits`], where the core takes them at the start of its next entry
//! ([`Dispatcher::take_commits`]) and [`committed`] completes them: the
//! queue table takes the message, consumers get it, and an answer the
//! writer could not write is sent the usual way.
//!
//! Why (issue 14, one publisher with one publish in flight): the answer no
//! longer waits for the core task to be woken and to run; the queue
//! table's update follows, off the publisher's path.
//!
//! Order: the commits are filed and their answers written under one lock,
//! which every entry into the core takes before anything else. So the core
//! cannot deliver a message before its publisher's answer is out, nor
//! answer one the writer answered; and a request the client sends after
//! reading `Published` (a `PeekQueue`, a publish reusing the request id)
//! finds the publish complete. The core task never waits for the disk; an
//! entry into the core may wait for the writer thread's few writes that
//! do not block.
//!
//! A publish whose connection closes meanwhile is completed all the same:
//! the message is stored, so the queue must have it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::sync::Notify;
use turnstile_proto::v1;

use super::Dispatcher;
use crate::core::queues::{
    DEAD_LETTER_SUFFIX, HEADER_DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_SEQ, Message, StoreOp,
};
use crate::core::{Change, SessionId};
use crate::server::outbound::ReadGate;
use crate::server::wire::Refusal;
use crate::server::{Outbound, wire};
use crate::store::{StoreError, after_answers};

/// The publish was accepted and is being stored: it is answered later.
pub(super) struct Started;

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    id: u64,
    req: v1::Publish,
) -> Result<Started, v1::Error> {
    d.allow(session, crate::policy::Verb::Publish, Some(&req.queue))?;
    // Past --max-in-flight the dispatcher holds requests back (`admit`)
    // instead of handing them here: flow control, never a refusal.
    d.id_not_in_flight(session, id)?;
    let dead_letters =
        d.core.config().queues.max_attempts != 0 && !req.queue.ends_with(DEAD_LETTER_SUFFIX);
    let len = delivery_len(&req, dead_letters);
    let limit = d.config.max_frame_bytes;
    if len > limit as usize {
        return Err(Refusal::MessageTooLarge {
            len,
            limit,
            payload: req.payload.len(),
        }
        .into());
    }
    let v1::Publish {
        queue,
        payload,
        headers,
    } = req;
    // Root and the broker's own user count only against the queue's own
    // limits; anyone else against a share of it as well.
    let publisher = d
        .conns
        .get(&session)
        .map(|c| c.uid)
        .filter(|&uid| uid != 0 && uid != d.config.own_uid);
    // Headers come in key order (a BTreeMap): stored and delivered so.
    let message = d.core.queues.begin_publish_from(
        &queue,
        payload,
        headers.into_iter().collect(),
        publisher,
    )?;
    d.now_in_flight(session, id);
    let Some(store) = &d.store else {
        let commit = Commit {
            session,
            request_id: id,
            queue,
            message,
            result: Ok(()),
            answered: false,
        };
        committed(d, commit);
        return Ok(Started);
    };
    let ops = vec![StoreOp::Append {
        queue: Arc::from(queue.as_str()),
        message: message.clone(),
    }];
    let gate = d.conns.get(&session).map(|c| c.gate().clone());
    let commits = d.commits.clone();
    // Answered on the writer thread: the answers of one commit are
    // gathered, then written and filed together once all are in
    // (`after_answers`).
    store.enqueue_then(ops, move |result| {
        let commit = Commit {
            session,
            request_id: id,
            queue,
            message,
            result,
            answered: false,
        };
        let first = GATHERED.with_borrow_mut(|gathered| {
            gathered.push(Gathered {
                commits,
                gate,
                commit,
            });
            gathered.len() == 1
        });
        if first {
            after_answers(file_gathered);
        }
    });
    Ok(Started)
}

/// A publish the store has answered.
pub(in crate::server) struct Commit {
    session: SessionId,
    request_id: u64,
    queue: String,
    message: Message,
    result: Result<(), StoreError>,
    /// The writer thread wrote the answer into the connection itself.
    answered: bool,
}

/// Publishes the store has answered and the core has not yet completed:
/// filled on the writer thread, taken at the start of every entry into
/// the core (see the module's header for the order this keeps).
#[derive(Default)]
pub(in crate::server) struct Commits {
    /// Set while `list` may hold commits: an entry that finds it clear
    /// takes no lock.
    waiting: AtomicBool,
    list: Mutex<Vec<Commit>>,
    /// Wakes the core task when commits are filed.
    filed: Notify,
}

impl Commits {
    /// Ready when commits were filed since the last wait.
    pub(in crate::server) async fn filed(&self) {
        self.filed.notified().await;
    }

    /// Answers what it can straight into the connections' sockets, and
    /// files every commit for the core, under one lock (see the module's
    /// header); then wakes the core task.
    fn file(&self, mut gathered: Vec<Gathered>) {
        ANSWERS.with_borrow_mut(|buf| {
            // Grouped and encoded before the lock, which every entry into
            // the core may wait for: under it only the writes.
            let answers = encode_answers(&gathered, buf);
            {
                // Nothing panics while holding it; a poisoned list is whole.
                let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
                self.waiting.store(true, Ordering::Release);
                write_answers(&mut gathered, &answers, buf);
                list.extend(gathered.into_iter().map(|g| g.commit));
            }
            if buf.capacity() > 64 * 1024 {
                *buf = BytesMut::new();
            }
        });
        self.filed.notify_one();
    }

    /// What was filed since the last call.
    fn take(&self) -> Vec<Commit> {
        if !self.waiting.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.store(false, Ordering::Relaxed);
        std::mem::take(&mut *list)
    }
}

/// One answered publish on its way to [`Commits`].
struct Gathered {
    commits: Arc<Commits>,
    /// The publisher's connection, when it was still open at the publish.
    gate: Option<Arc<ReadGate>>,
    commit: Commit,
}

thread_local! {
    /// On the store's writer thread: the answers of the transaction being
    /// answered.
    static GATHERED: RefCell<Vec<Gathered>> = const { RefCell::new(Vec::new()) };
    /// Where the answers to one connection are encoded for one write.
    static ANSWERS: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Files what [`GATHERED`] holds with the [`Commits`] of its server (one
/// lock and one wake-up of the core task per commit, not per publish).
fn file_gathered() {
    let mut gathered = GATHERED.take();
    while let Some(first) = gathered.first() {
        let commits = first.commits.clone();
        let (mine, rest): (Vec<_>, Vec<_>) = gathered
            .into_iter()
            .partition(|g| Arc::ptr_eq(&g.commits, &commits));
        gathered = rest;
        commits.file(mine);
    }
}

/// The answers of one connection, encoded one after the other in commit
/// order: `buf[range]`, for the commits at `which` in `gathered`.
struct Answers {
    gate: Arc<ReadGate>,
    which: Vec<usize>,
    range: std::ops::Range<usize>,
}

/// Encodes the `Published` answers of `gathered` into `buf`, grouped by
/// connection (each connection's in commit order, for one write). A
/// failed commit is left to the core, which has the queue table to mend
/// too.
fn encode_answers(gathered: &[Gathered], buf: &mut BytesMut) -> Vec<Answers> {
    let mut order: Vec<usize> = (0..gathered.len())
        .filter(|&i| gathered[i].gate.is_some() && gathered[i].commit.result.is_ok())
        .collect();
    // Stable: commit order within a connection.
    order.sort_by_key(|&i| gathered[i].gate.as_ref().map(Arc::as_ptr));
    buf.clear();
    let mut answers: Vec<Answers> = Vec::new();
    for i in order {
        let Some(gate) = &gathered[i].gate else {
            continue;
        };
        let start = buf.len();
        turnstile_proto::encode_frame(&gathered[i].commit.answer(), buf);
        match answers.last_mut() {
            Some(last) if Arc::ptr_eq(&last.gate, gate) => {
                last.which.push(i);
                last.range.end = buf.len();
            }
            _ => answers.push(Answers {
                gate: gate.clone(),
                which: vec![i],
                range: start..buf.len(),
            }),
        }
    }
    answers
}

/// Writes each connection's answers into its socket in one write, and
/// marks those that went.
fn write_answers(gathered: &mut [Gathered], answers: &[Answers], buf: &BytesMut) {
    for a in answers {
        let written = buf
            .get(a.range.clone())
            .is_some_and(|frames| a.gate.write_direct(frames));
        for &i in &a.which {
            if let Some(g) = gathered.get_mut(i) {
                g.commit.answered = written;
            }
        }
    }
}

impl Commit {
    /// The publisher's answer to a commit that succeeded.
    fn answer(&self) -> v1::ServerFrame {
        wire::reply(
            self.request_id,
            v1::reply::Result::Publish(v1::Published {
                seq: self.message.seq,
            }),
        )
    }
}

/// The store answered: the message is ready (and delivered to a consumer
/// with room), or its reservation is released; the publisher, if still
/// connected, is told which, unless the writer thread told it already.
pub(super) fn committed(d: &mut Dispatcher, commit: Commit) {
    // Unless the writer thread wrote it already.
    let published = (!commit.answered).then(|| commit.answer());
    let Commit {
        session,
        request_id,
        queue,
        message,
        result,
        answered: _,
    } = commit;
    d.no_longer_in_flight(session, request_id);
    let seq = message.seq;
    let (answer, changes) = match result {
        Ok(()) => (
            published,
            Change::from_queue(d.core.queues.publish_committed(&queue, message)),
        ),
        Err(e) => {
            if d.store_refusals.admit(d.clock.now(), "refused publishes") {
                tracing::warn!(queue, seq, "a publish was refused: {e}");
            }
            // A failed sync may have left the message on disk after all:
            // the publisher is told the outcome is unknown, not "not
            // stored". The table lets it go either way; if it was stored,
            // a restart delivers it (at least once).
            let refusal = if e.outcome_unknown() {
                Refusal::OutcomeUnknown(e)
            } else {
                Refusal::NotStored(e)
            };
            (
                Some(wire::error_reply(request_id, refusal)),
                Change::from_queue(d.core.queues.publish_failed(&queue, seq)),
            )
        }
    };
    // A connection that closed meanwhile has no conn: the answer is dropped.
    if let Some(answer) = answer {
        d.send(session, Outbound::frame(answer));
    }
    let now = d.clock.now();
    d.deliver(changes, now);
}

impl Dispatcher {
    /// Completes the publishes the store has answered since the last
    /// entry: called first in every entry into the core.
    pub(in crate::server) fn take_commits(&mut self) {
        let commits = self.commits.take();
        if commits.is_empty() {
            return;
        }
        self.begin();
        for commit in commits {
            let session = commit.session;
            committed(self, commit);
            self.resume(session);
        }
    }

    /// Where the store's answers to publishes wait for the core.
    pub(in crate::server) fn commits(&self) -> Arc<Commits> {
        self.commits.clone()
    }
}

/// The length of the largest `Delivery` frame `req` can make (every id at
/// its longest, and the headers a move to the dead-letter queue adds when
/// the queue has one): a message whose delivery would be over the frame
/// limit is refused, since no consumer could receive it.
fn delivery_len(req: &v1::Publish, dead_letters: bool) -> usize {
    let added = if dead_letters {
        BTreeMap::from([
            (HEADER_DEAD_LETTER_QUEUE.to_string(), req.queue.clone()),
            (HEADER_DEAD_LETTER_SEQ.to_string(), u64::MAX.to_string()),
        ])
    } else {
        BTreeMap::new()
    };
    turnstile_proto::max_delivery_frame_len(req, &added)
}
