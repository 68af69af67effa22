//! `Acquire`: granted at once, queued (an outcome, not an error), or refused.

use turnstile_proto::{hot, v1};

use super::{Answer, Dispatcher};
use crate::core::{Millis, Mode, ResumeToken, SessionId};
use crate::policy::Verb;
use crate::server::wire;

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    req: hot::AcquireRef<'_>,
    now: Millis,
) -> Answer {
    let mut req = wire::acquire_request(req)?;
    if req.detach_grace_ms > 0 {
        req.resume_token = Some(new_resume_token()?);
    }
    let verb = match req.mode {
        Mode::Exclusive => Verb::LeaseExclusive,
        Mode::Shared => Verb::LeaseShared,
    };
    d.allow(session, verb, Some(&req.resource))?;
    let (outcome, changes) = d.core.acquire(session, req, now)?;
    let reply = wire::acquire_reply(&outcome, &d.clock, now);
    Ok((v1::reply::Result::Acquire(reply), changes))
}

/// A fresh secret for re-attaching: 128 bits from the OS's generator.
pub(super) fn new_resume_token() -> Result<ResumeToken, wire::Refusal> {
    let mut bytes = [0u8; ResumeToken::LEN];
    getrandom::fill(&mut bytes).map_err(|e| wire::Refusal::NoRandomness(e.to_string()))?;
    Ok(ResumeToken(bytes))
}
