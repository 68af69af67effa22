//! `Ping`: answered with the same payload, touching no state.

use turnstile_proto::v1;

pub(super) fn handle(req: v1::Ping) -> v1::reply::Result {
    v1::reply::Result::Pong(v1::Pong {
        payload: req.payload,
    })
}
