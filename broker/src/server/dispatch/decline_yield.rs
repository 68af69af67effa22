//! `DeclineYield`: a holder says it will not make way; watchers are told why.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{LeaseId, Millis, SessionId};

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    req: v1::DeclineYield,
    now: Millis,
) -> Answer {
    let changes = d
        .core
        .decline_yield(session, LeaseId(req.lease_id), &req.reason, now)?;
    Ok((v1::reply::Result::Done(v1::Done::default()), changes))
}
