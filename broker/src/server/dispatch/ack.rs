//! `Ack`: message queues (being integrated).

use turnstile_proto::v1::{self, ErrorCode};

use super::{Answer, Dispatcher};
use crate::core::SessionId;
use crate::server::wire;

pub(super) fn handle(_d: &mut Dispatcher, _session: SessionId, _req: v1::Ack) -> Answer {
    Err(wire::error_of(
        ErrorCode::Internal,
        "message queues are not available in this build yet",
    ))
}
