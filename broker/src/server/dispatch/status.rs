//! `GetStatus`: holders and waiters of the named resources (all in use when
//! none are named), in order, and the counts of every queue in use (queues
//! are not resources: naming resources does not filter them).

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{Millis, SessionId, check_name, check_name_count};
use crate::policy::Verb;
use crate::server::wire;

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    req: v1::GetStatus,
    now: Millis,
) -> Answer {
    check_name_count(req.resources.len())?;
    for r in &req.resources {
        check_name("resource", r)?;
        d.allow(session, Verb::Status, Some(r))?;
    }
    if req.resources.is_empty() {
        d.allow(session, Verb::Status, None)?;
    }
    let view = d.core.status_at(&req.resources, now);
    let mut status = wire::status(&view, &d.clock, now);
    status.queues = d.core.queues.info().iter().map(wire::queue_info).collect();
    Ok((v1::reply::Result::Status(status), Vec::new()))
}
