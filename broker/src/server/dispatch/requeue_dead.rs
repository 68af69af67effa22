//! `RequeueDead`: moves the dead letters of a queue (`QUEUE.dead`) back to
//! it, with fresh delivery attempts, as far as its limits allow. Policy
//! verb `queue-admin` on the queue. Each move is a removal plus an append,
//! handed to the store ahead of the answer in one transaction; the moved
//! messages are delivered once that is stored, like any delivery.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::queues::DEAD_LETTER_SUFFIX;
use crate::core::{Change, SessionId, check_name};
use crate::policy::Verb;

pub(super) fn handle(d: &mut Dispatcher, session: SessionId, req: v1::RequeueDead) -> Answer {
    check_name("queue", &req.queue)?;
    check_name("queue", &format!("{}{DEAD_LETTER_SUFFIX}", req.queue))?;
    d.allow(session, Verb::QueueAdmin, Some(&req.queue))?;
    let (count, changes) = d.core.queues.requeue_dead(&req.queue);
    if count > 0 {
        tracing::info!(queue = %req.queue, count, session = session.0, "dead letters moved back");
    }
    Ok((
        v1::reply::Result::QueueCount(v1::QueueCount { count }),
        Change::from_queue(changes),
    ))
}
