//! `Release`: ends a lease (held or still queued); the next waiters are granted.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{LeaseId, Millis, SessionId};

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    req: v1::Release,
    now: Millis,
) -> Answer {
    let changes = d.core.release(session, LeaseId(req.lease_id), now)?;
    Ok((v1::reply::Result::Done(v1::Done::default()), changes))
}
