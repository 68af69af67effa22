//! `Unwatch`: ends one watch of this connection.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{SessionId, WatchId};

pub(super) fn handle(d: &mut Dispatcher, session: SessionId, req: v1::Unwatch) -> Answer {
    d.core.unwatch(session, WatchId(req.watch_id))?;
    Ok((v1::reply::Result::Done(v1::Done::default()), Vec::new()))
}
