//! `PurgeQueue`: drops a queue's ready messages (deliveries in flight are
//! left to their consumers). Policy verb `queue-admin`: it changes the
//! queue for every consumer, more than `consume` allows. The removals go
//! to the store ahead of the answer (`write_first`), in one transaction.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{Change, SessionId, check_name};
use crate::policy::Verb;

pub(super) fn handle(d: &mut Dispatcher, session: SessionId, req: v1::PurgeQueue) -> Answer {
    check_name("queue", &req.queue)?;
    d.allow(session, Verb::QueueAdmin, Some(&req.queue))?;
    let (count, changes) = d.core.queues.purge(&req.queue);
    if count > 0 {
        tracing::info!(queue = %req.queue, count, session = session.0, "queue purged");
    }
    Ok((
        v1::reply::Result::QueueCount(v1::QueueCount { count }),
        Change::from_queue(changes),
    ))
}
