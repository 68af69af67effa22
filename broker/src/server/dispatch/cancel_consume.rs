//! `CancelConsume`: one of the connection's consumers stops, the
//! connection stays. Nothing is delivered to it after the `Done`; its
//! deliveries in flight stay the connection's to settle.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::queues::ConsumerId;
use crate::core::{Change, SessionId};

pub(super) fn handle(d: &mut Dispatcher, session: SessionId, req: v1::CancelConsume) -> Answer {
    let changes = d
        .core
        .queues
        .cancel_consumer(session, ConsumerId(req.consumer_id))?;
    Ok((
        v1::reply::Result::Done(v1::Done::default()),
        Change::from_queue(changes),
    ))
}
