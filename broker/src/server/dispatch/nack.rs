//! `Nack`: the consumer gives a delivery back: requeued at its place (or
//! moved to the dead-letter queue when out of attempts), or dropped.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::SessionId;
use crate::core::queues::DeliveryId;

pub(super) fn handle(d: &mut Dispatcher, session: SessionId, req: v1::Nack) -> Answer {
    d.changes = d
        .core
        .nack(session, DeliveryId(req.delivery_id), req.requeue)?;
    Ok(v1::reply::Result::Done(v1::Done {}))
}
