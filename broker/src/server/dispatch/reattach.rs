//! `Reattach`: a new connection takes back a detached lease or queue place
//! with the owner's secret; answered as `Acquire` is.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{CoreError, LeaseId, Millis, ResumeToken, SessionId};
use crate::server::wire;

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    req: v1::Reattach,
    now: Millis,
) -> Answer {
    let lease = LeaseId(req.lease_id);
    // A token of the wrong size is a wrong token: the same NOT_FOUND.
    let token = ResumeToken::from_slice(&req.resume_token).ok_or(CoreError::UnknownLease(lease))?;
    let (outcome, changes) = d.core.reattach(session, lease, &token, now)?;
    let reply = wire::acquire_reply(&outcome, &d.clock, now);
    Ok((v1::reply::Result::Acquire(reply), changes))
}
