//! `Nack`: the consumer gives a delivery back: requeued at its place (or
//! moved to the dead-letter queue when out of attempts), or dropped.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::queues::DeliveryId;
use crate::core::{Change, SessionId};

pub(super) fn handle(d: &mut Dispatcher, session: SessionId, req: v1::Nack) -> Answer {
    let changes = d
        .core
        .queues
        .nack(session, DeliveryId(req.delivery_id), req.requeue)?;
    Ok((
        v1::reply::Result::Done(v1::Done::default()),
        Change::from_queue(changes),
    ))
}
