//! `Ack`: the consumer handled a delivery; its message is gone and the
//! consumer's prefetch window has room for the next.
//!
//! Answered once the removal is durable (group-committed with whatever
//! else is being written), like a publish: an acknowledged message never
//! comes back after a crash. The next delivery, whose attempt is written
//! in the same commit, goes out with it.

use turnstile_proto::v1;

use super::Dispatcher;
use crate::core::queues::{DeliveryId, QueueChange};
use crate::core::{Change, SessionId, StoreOp};
use crate::server::wire::Refusal;
use crate::server::{Outbound, ToCore, wire};

/// The ack was taken and is being stored: it is answered later.
pub(super) struct Started;

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    id: u64,
    req: v1::Ack,
) -> Result<Started, v1::Error> {
    let changes = d.core.queues.ack(session, DeliveryId(req.delivery_id))?;
    let (writes, rest): (Vec<QueueChange>, Vec<QueueChange>) = changes
        .into_iter()
        .partition(|c| matches!(c, QueueChange::Persist(_)));
    let ops: Vec<StoreOp> = writes
        .into_iter()
        .filter_map(|c| match c {
            QueueChange::Persist(op) => Some(op),
            _ => None,
        })
        .collect();
    let mut rest = Change::from_queue(rest);
    let Some(store) = d.store.clone() else {
        let now = d.clock.now();
        d.deliver(rest, now);
        acked(d, session, id, Ok(()));
        return Ok(Started);
    };
    // The next deliveries carry attempts that are among the writes: they
    // go out with the answer, once the commit is back.
    let deliveries: Vec<Change> = rest
        .extract_if(.., |c| {
            matches!(c, Change::Queue(QueueChange::Deliver { .. }))
        })
        .collect();
    let now = d.clock.now();
    d.deliver(rest, now);
    let commit = store.enqueue(ops);
    let to_core = d.to_core.clone();
    tokio::spawn(async move {
        let result = commit.await;
        // Fails only when the core task has stopped: nobody to answer.
        if !deliveries.is_empty() {
            let _ = to_core.send(ToCore::Deliveries { deliveries }).await;
        }
        let _ = to_core
            .send(ToCore::Acked {
                session,
                request_id: id,
                result,
            })
            .await;
    });
    Ok(Started)
}

/// The store answered an ack: Done, or why the acknowledgement may be lost.
pub(super) fn acked(
    d: &mut Dispatcher,
    session: SessionId,
    request_id: u64,
    result: Result<(), crate::store::StoreError>,
) {
    let frame = match result {
        Ok(()) => wire::reply(request_id, v1::reply::Result::Done(v1::Done {})),
        Err(e) => {
            if d.store_refusals
                .admit(d.clock.now(), "unstored acknowledgements")
            {
                tracing::warn!(
                    session = session.0,
                    "an acknowledgement was not stored: {e}"
                );
            }
            wire::error_reply(request_id, Refusal::AckNotStored(e))
        }
    };
    d.send(session, Outbound::frame(frame));
}
