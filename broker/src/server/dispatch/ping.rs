//! `Ping`: answered with the same payload, touching no state.

use turnstile_proto::v1;

use super::Answer;

pub(super) fn handle(req: v1::Ping) -> Answer {
    Ok(v1::reply::Result::Pong(v1::Pong {
        payload: req.payload,
    }))
}
