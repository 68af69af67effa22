//! `Ping`: answered with the same payload, touching no state.

use turnstile_proto::{hot, v1};

use crate::server::Outbound;

pub(super) fn handle(req: v1::Ping) -> v1::reply::Result {
    v1::reply::Result::Pong(v1::Pong {
        payload: req.payload,
    })
}

/// The answer to a Ping read in place: its payload goes from the read
/// buffer into the answer's frame, copied once.
pub(super) fn answer(id: u64, payload: &[u8]) -> Outbound {
    Outbound::encoded(&hot::pong_frame(id, payload))
}
