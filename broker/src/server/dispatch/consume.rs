//! `Consume`: subscribes the connection to a queue. `ConsumeStarted` is
//! answered first; the ready messages follow as `Delivery` frames, at most
//! `prefetch` unacknowledged at a time, until the connection closes.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::SessionId;
use crate::policy::Verb;

pub(super) fn handle(d: &mut Dispatcher, session: SessionId, req: v1::Consume) -> Answer {
    d.allow(session, Verb::Consume, Some(&req.queue))?;
    let (consumer, changes) = d.core.consume(session, &req.queue, req.prefetch)?;
    let started = v1::ConsumeStarted {
        consumer_id: consumer.0,
    };
    Ok((v1::reply::Result::Consume(started), changes))
}
