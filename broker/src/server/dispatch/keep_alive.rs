//! `KeepAlive`: extends a held lease's TTL from now.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{LeaseId, Millis, SessionId};

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    req: v1::KeepAlive,
    now: Millis,
) -> Answer {
    let ttl_ms = d.core.keep_alive(session, LeaseId(req.lease_id), now)?;
    Ok((
        v1::reply::Result::KeepAlive(v1::KeepAliveReply { ttl_ms }),
        Vec::new(),
    ))
}
