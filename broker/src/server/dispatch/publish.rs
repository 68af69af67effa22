//! `Publish`: answered with `Published{seq}` only once the message is
//! durable.
//!
//! The core reserves a sequence number and room in the queue
//! ([`crate::core::Core::begin_publish`]); the store's writer thread commits
//! the message, in one transaction with every other write that arrives
//! meanwhile (group commit) and, the moment it ends, puts the outcome in
//! the core task's inbox as [`ToCore::Committed`] itself
//! ([`crate::store::StoreWriter::enqueue_then`]: no task in between),
//! where [`committed`] answers and delivers. The core task never waits for
//! the disk, nor the writer thread for the core task. A publish whose connection closes meanwhile is completed all the
//! same: the message is stored, so the queue must have it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use turnstile_proto::v1;

use super::Dispatcher;
use crate::core::queues::{
    DEAD_LETTER_SUFFIX, HEADER_DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_SEQ, Message, StoreOp,
};
use crate::core::{Change, SessionId};
use crate::server::wire::Refusal;
use crate::server::{Outbound, ToCore, wire};
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
    if d.publishing
        .get(&session)
        .is_some_and(|ids| ids.contains(&id))
    {
        return Err(Refusal::IdInFlight(id).into());
    }
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
    d.publishing.entry(session).or_default().insert(id);
    let Some(store) = &d.store else {
        committed(d, session, id, &queue, message, Ok(()));
        return Ok(Started);
    };
    let ops = vec![StoreOp::Append {
        queue: Arc::from(queue.as_str()),
        message: message.clone(),
    }];
    // Answered from the writer thread straight into the core task's inbox:
    // no task of its own to spawn and wake. The answers of one commit are
    // gathered and leave as one message once all are in (`after_answers`).
    let to_core = d.to_core.clone();
    let runtime = tokio::runtime::Handle::current();
    store.enqueue_then(ops, move |result| {
        let answer = ToCore::Committed {
            session,
            request_id: id,
            queue,
            message,
            result,
        };
        let first = GATHERED.with_borrow_mut(|gathered| {
            gathered.push((to_core, answer));
            gathered.len() == 1
        });
        if first {
            after_answers(move || send_gathered(&runtime));
        }
    });
    Ok(Started)
}

thread_local! {
    /// On the store's writer thread: the answers of the transaction being
    /// answered, with the inbox each goes to.
    static GATHERED: RefCell<Vec<(mpsc::Sender<ToCore>, ToCore)>> =
        const { RefCell::new(Vec::new()) };
}

/// Sends what [`GATHERED`] holds, one message per inbox (one wake-up of
/// the core task per commit). The writer thread never waits: an inbox that
/// is full (4 096 messages behind) gets its answers from a task that can
/// wait. Such answers may pass later ones: the queue table takes commits in
/// any order, and a client matches answers by id.
fn send_gathered(runtime: &tokio::runtime::Handle) {
    let mut gathered = GATHERED.take();
    while let Some((to_core, _)) = gathered.first() {
        let to_core = to_core.clone();
        let (mine, rest): (Vec<_>, Vec<_>) = gathered
            .into_iter()
            .partition(|(inbox, _)| inbox.same_channel(&to_core));
        gathered = rest;
        let mut answers: Vec<ToCore> = mine.into_iter().map(|(_, answer)| answer).collect();
        let message = match answers.len() {
            1 => answers.remove(0),
            _ => ToCore::Batch(answers),
        };
        if let Err(mpsc::error::TrySendError::Full(message)) = to_core.try_send(message) {
            runtime.spawn(async move {
                let _ = to_core.send(message).await;
            });
        }
    }
}

/// The store answered: the message is ready (and delivered to a consumer
/// with room), or its reservation is released; the publisher, if still
/// connected, is told which.
pub(super) fn committed(
    d: &mut Dispatcher,
    session: SessionId,
    request_id: u64,
    queue: &str,
    message: Message,
    result: Result<(), StoreError>,
) {
    if let Some(ids) = d.publishing.get_mut(&session) {
        ids.remove(&request_id);
        if ids.is_empty() {
            d.publishing.remove(&session);
        }
    }
    let seq = message.seq;
    let (answer, changes) = match result {
        Ok(()) => (
            wire::reply(
                request_id,
                v1::reply::Result::Publish(v1::Published { seq }),
            ),
            Change::from_queue(d.core.queues.publish_committed(queue, message)),
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
                wire::error_reply(request_id, refusal),
                Change::from_queue(d.core.queues.publish_failed(queue, seq)),
            )
        }
    };
    // A connection that closed meanwhile has no conn: the answer is dropped.
    d.send(session, Outbound::frame(answer));
    let now = d.clock.now();
    d.deliver(changes, now);
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
