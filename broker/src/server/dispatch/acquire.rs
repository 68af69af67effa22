//! `Acquire`: granted at once, queued (an outcome, not an error), or refused.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{Millis, Mode, SessionId};
use crate::policy::Verb;
use crate::server::wire;

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    req: v1::Acquire,
    now: Millis,
) -> Answer {
    let req = wire::acquire_request(req)?;
    let verb = match req.mode {
        Mode::Exclusive => Verb::LeaseExclusive,
        Mode::Shared => Verb::LeaseShared,
    };
    d.allow(session, verb, Some(&req.resource))?;
    let (outcome, changes) = d.core.acquire(session, req, now)?;
    let reply = wire::acquire_reply(&outcome, &d.clock, now);
    Ok((v1::reply::Result::Acquire(reply), changes))
}
