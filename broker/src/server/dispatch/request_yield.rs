//! `RequestYield`: asks the holders of a resource to make way, and with
//! `revoke` takes the lease of those that have not after `within_ms`.
//! Policy verb `yield` to ask, `revoke` to revoke.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{Millis, SessionId};
use crate::policy::Verb;

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    req: v1::RequestYield,
    now: Millis,
) -> Answer {
    let verb = if req.revoke {
        Verb::Revoke
    } else {
        Verb::Yield
    };
    d.allow(session, verb, Some(&req.resource))?;
    let (holders_asked, changes) = d.core.request_yield(
        session,
        &req.resource,
        req.within_ms,
        &req.reason,
        req.revoke,
        now,
    )?;
    Ok((v1::reply::Result::Done(v1::Done { holders_asked }), changes))
}
