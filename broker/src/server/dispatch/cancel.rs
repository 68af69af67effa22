//! `Cancel`: leaves the queue (an error if the lease was granted meanwhile).

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{LeaseId, Millis, SessionId};

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    req: v1::Cancel,
    now: Millis,
) -> Answer {
    let changes = d.core.cancel(session, LeaseId(req.lease_id), now)?;
    Ok((v1::reply::Result::Done(v1::Done::default()), changes))
}
