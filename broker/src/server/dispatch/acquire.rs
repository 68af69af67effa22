//! `Acquire`: granted at once, queued (an outcome, not an error), or refused.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{Millis, SessionId};
use crate::server::wire;

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    req: v1::Acquire,
    now: Millis,
) -> Answer {
    let req = wire::acquire_request(req).map_err(|e| wire::error(&e))?;
    let (outcome, changes) = d
        .core
        .acquire(session, req, now)
        .map_err(|e| wire::error(&e))?;
    d.changes = changes;
    Ok(v1::reply::Result::Acquire(wire::acquire_reply(
        &outcome, &d.clock, now,
    )))
}
