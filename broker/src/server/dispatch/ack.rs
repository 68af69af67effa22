//! `Ack`: the consumer handled a delivery; its message is gone and the
//! consumer's prefetch window has room for the next.
//!
//! Answered once the removal is durable (group-committed with whatever
//! else is being written), like a publish: an acknowledged message never
//! comes back after a crash. The next delivery, whose attempt is written
//! in the same commit, goes out with it.
//!
//! Acks are gathered on the core task ([`AckBatch`]) and handed to the
//! store as one submission with one waiter: when no batch of acks is
//! being committed, once the tasks ready at the end of the entry that took
//! them have run ([`ToCore::SubmitAcks`], so that a burst read over several
//! reads is one commit), else when that commit comes back
//! ([`ToCore::AcksStored`]), so that a consumer acking a stream of
//! deliveries costs one submission, one task and one message back per
//! commit rather than per ack (issue 14: per-ack oneshots, tasks and two
//! messages back were most of an ack's ~6.4 k instructions). The writes
//! keep the order the core made them in: any other store write flushes
//! the gathered acks ahead of it ([`Dispatcher::write_first`]).

use bytes::{Bytes, BytesMut};
use turnstile_proto::{hot, v1};

use super::Dispatcher;
use crate::core::queues::{Delivery, DeliveryId, QueueChange};
use crate::core::{Change, Map, SessionId, StoreOp};
use crate::server::wire::Refusal;
use crate::server::{Outbound, ToCore, wire};
use crate::store::StoreError;

/// The ack was taken and is being stored: it is answered later.
pub(super) struct Started;

/// Acks taken and not yet handed to the store, and how many handed
/// batches are still being committed.
#[derive(Default)]
pub(super) struct AckBatch {
    /// Their writes (the removals and the next deliveries' attempts), in
    /// the order the core made them.
    ops: Vec<StoreOp>,
    /// Who is answered, in the order the acks came.
    answers: Vec<(SessionId, u64)>,
    /// The deliveries whose attempts are among `ops`.
    deliveries: Vec<Change>,
    /// Batches handed to the store whose commit has not come back.
    committing: usize,
    /// A [`ToCore::SubmitAcks`] waits in the core task's inbox.
    scheduled: bool,
}

/// What comes back to the core task when a batch of acks is committed.
pub(crate) struct AcksStored {
    answers: Vec<(SessionId, u64)>,
    deliveries: Vec<Change>,
    result: Result<(), StoreError>,
}

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    id: u64,
    req: v1::Ack,
) -> Result<Started, v1::Error> {
    let changes = d.core.queues.ack(session, DeliveryId(req.delivery_id))?;
    if d.store.is_none() {
        let now = d.clock.now();
        d.deliver(Change::from_queue(changes), now);
        answer(d, session, id, &Ok(()));
        return Ok(Started);
    }
    // Writes and the deliveries they carry wait for the commit; anything
    // else (a dead-letter notice) goes now.
    let mut rest = Vec::new();
    for change in changes {
        match change {
            QueueChange::Persist(op) => d.acks.ops.push(op),
            c @ QueueChange::Deliver { .. } => d.acks.deliveries.push(Change::Queue(c)),
            c => rest.push(Change::Queue(c)),
        }
    }
    d.acks.answers.push((session, id));
    if !rest.is_empty() {
        let now = d.clock.now();
        d.deliver(rest, now);
    }
    Ok(Started)
}

impl Dispatcher {
    /// The end of an entry into the core: the acks gathered go to the
    /// store once the tasks ready now have run, unless a batch of them is
    /// being committed (they go when it is back).
    ///
    /// Not at once: a connection's task enters the core once per read, and
    /// a read takes what the socket has at that moment, so a consumer's
    /// burst of acks comes in over several entries. Submitted at the end of
    /// the first, they made two commits per burst (the first read's acks
    /// alone, then the rest once that commit was back), each a sync and a
    /// round of deliveries (issue 14, fifth session: 33 syncs for 4 096
    /// acks in windows of 256). A [`ToCore::SubmitAcks`] in the core
    /// task's inbox runs after the reading task has taken all its socket
    /// had (it reads until the socket would block before it yields).
    pub(in crate::server) fn turn_done(&mut self) {
        if self.acks.committing > 0 || self.acks.scheduled || self.acks.answers.is_empty() {
            return;
        }
        match self.to_core.try_send(ToCore::SubmitAcks) {
            Ok(()) => self.acks.scheduled = true,
            // A full inbox (or a core task gone): now, rather than never.
            Err(_) => self.submit_acks(),
        }
    }

    /// The core task's turn after an entry that gathered acks
    /// ([`Dispatcher::turn_done`]): they go to the store, unless a batch is
    /// being committed.
    pub(super) fn submit_scheduled_acks(&mut self) {
        self.acks.scheduled = false;
        if self.acks.committing == 0 {
            self.submit_acks();
        }
    }

    /// Hands the gathered acks to the store now, as one submission with
    /// one waiter. Called before any other store write, so that the store
    /// sees writes in the order the core made them.
    pub(super) fn submit_acks(&mut self) {
        if self.acks.answers.is_empty() {
            return;
        }
        let Some(store) = &self.store else {
            return;
        };
        let ops = take_sized(&mut self.acks.ops);
        let answers = take_sized(&mut self.acks.answers);
        let deliveries = take_sized(&mut self.acks.deliveries);
        self.acks.committing += 1;
        let commit = store.enqueue(ops);
        self.answer_later(commit, move |result| {
            ToCore::AcksStored(AcksStored {
                answers,
                deliveries,
                result,
            })
        });
    }

    /// The store answered a batch of acks: their deliveries go out, then
    /// each ack is answered; acks gathered meanwhile go to the store.
    pub(super) fn acks_stored(&mut self, stored: AcksStored) {
        let AcksStored {
            answers,
            deliveries,
            result,
        } = stored;
        self.acks.committing = self.acks.committing.saturating_sub(1);
        if let Err(e) = &result
            && self
                .store_refusals
                .admit(self.clock.now(), "unstored acknowledgements")
        {
            tracing::warn!(
                acks = answers.len(),
                "acknowledgements were not stored: {e}"
            );
        }
        // Each connection's deliveries, then its answers, go as one encoded
        // item each rather than a boxed frame per delivery and per answer
        // (issue 14: ~1 k instructions per answer).
        let mut others = Vec::new();
        let mut out = Encoder::default();
        for change in deliveries {
            match change {
                Change::Queue(QueueChange::Deliver { session, delivery }) => {
                    out.push_delivery(session, &delivery);
                }
                other => others.push(other),
            }
        }
        for (session, bytes) in out.take() {
            self.send(session, Outbound::Encoded(bytes));
        }
        if !others.is_empty() {
            let now = self.clock.now();
            self.deliver(others, now);
        }
        for &(session, request_id) in &answers {
            out.push_answer(session, request_id, &result);
        }
        for (session, bytes) in out.take() {
            self.send(session, Outbound::Encoded(bytes));
            // It goes on with what it sent meanwhile.
            self.resume(session);
        }
        // Acks that came while this batch was committed are all in: the
        // readers ran meanwhile.
        if self.acks.committing == 0 {
            self.submit_acks();
        }
    }
}

/// Takes `v`'s items, leaving room for as many: the next batch is likely
/// as large (growing a vector of 512 writes by doubling was ~190
/// instructions an ack, issue 14).
fn take_sized<T>(v: &mut Vec<T>) -> Vec<T> {
    let room = v.len();
    std::mem::replace(v, Vec::with_capacity(room))
}

/// Answers one ack now (without a store).
fn answer(
    d: &mut Dispatcher,
    session: SessionId,
    request_id: u64,
    result: &Result<(), StoreError>,
) {
    d.send(session, Outbound::frame(answer_frame(request_id, result)));
}

/// An ack's answer: Done, or why the acknowledgement may be lost.
fn answer_frame(request_id: u64, result: &Result<(), StoreError>) -> v1::ServerFrame {
    match result {
        Ok(()) => wire::reply(request_id, v1::reply::Result::Done(v1::Done::default())),
        Err(e) => wire::error_reply(request_id, Refusal::AckNotStored(e.clone())),
    }
}

/// Frames encoded per connection. A batch of acks usually concerns one
/// connection but may concern thousands: each finds its buffer through a
/// map, not a search.
#[derive(Default)]
struct Encoder {
    buffers: Map<SessionId, BytesMut>,
    /// The sessions in the order they were first pushed to.
    order: Vec<SessionId>,
}

impl Encoder {
    /// `session`'s buffer, made if it has none yet.
    fn buffer(&mut self, session: SessionId) -> &mut BytesMut {
        let Encoder { buffers, order } = self;
        buffers.entry(session).or_insert_with(|| {
            order.push(session);
            BytesMut::new()
        })
    }

    /// A delivery's frame, written by hand (`turnstile_proto::hot`): no
    /// `ServerFrame` built, no `String` made of the queue's name (issue
    /// 14: ~1.2 k instructions per delivery through prost).
    fn push_delivery(&mut self, session: SessionId, d: &Delivery) {
        let frame = hot::DeliveryFrame {
            consumer_id: d.consumer.0,
            delivery_id: d.delivery_id.0,
            seq: d.seq,
            queue: &d.queue,
            payload: &d.payload,
            headers: &d.headers,
            attempt: d.attempt,
        };
        frame.put(self.buffer(session));
    }

    /// An ack's answer.
    fn push_answer(
        &mut self,
        session: SessionId,
        request_id: u64,
        result: &Result<(), StoreError>,
    ) {
        let buffer = self.buffer(session);
        match result {
            Ok(()) => hot::done_frame(request_id).put(buffer),
            Err(_) => turnstile_proto::encode_frame(&answer_frame(request_id, result), buffer),
        }
    }

    /// Each session's frames, in the order the sessions came.
    fn take(&mut self) -> impl Iterator<Item = (SessionId, Bytes)> + use<> {
        let mut buffers = std::mem::take(&mut self.buffers);
        std::mem::take(&mut self.order)
            .into_iter()
            .filter_map(move |s| buffers.remove(&s).map(|b| (s, b.freeze())))
    }
}
