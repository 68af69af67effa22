//! `Ack`: the consumer handled a delivery; its message is gone and the
//! consumer's prefetch window has room for the next.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::queues::DeliveryId;
use crate::core::{Change, SessionId};

pub(super) fn handle(d: &mut Dispatcher, session: SessionId, req: v1::Ack) -> Answer {
    let changes = d.core.queues.ack(session, DeliveryId(req.delivery_id))?;
    Ok((
        v1::reply::Result::Done(v1::Done {}),
        Change::from_queue(changes),
    ))
}
