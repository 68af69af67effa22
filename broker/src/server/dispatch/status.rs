//! `GetStatus`: holders and waiters of the named resources (all in use when
//! none are named), in order, and the counts of every queue in use (queues
//! are not resources: naming resources does not filter them).
//!
//! The answer fits in one frame (`--max-frame-bytes`), whatever a user
//! holds: the queues come first, in at most half of it, then the
//! resources in name order while they fit, and `truncated` says that some
//! were left out. Only what is kept is made (the names are sorted first),
//! so a status of a hundred thousand resources costs the core task one
//! frame's work, not the whole table's.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{Millis, SessionId, check_name, check_name_count};
use crate::policy::Verb;
use crate::server::wire;

/// Room kept in a `Status` frame for everything but the lists (the frame's
/// header, the reply's id, the revision, the flag).
const FRAME_MARGIN: usize = 256;

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    req: v1::GetStatus,
    now: Millis,
) -> Answer {
    check_name_count(req.resources.len())?;
    for r in &req.resources {
        check_name("resource", r)?;
        d.allow(session, Verb::Status, Some(r))?;
    }
    if req.resources.is_empty() {
        d.allow(session, Verb::Status, None)?;
    }
    let budget = (d.config.max_frame_bytes as usize).saturating_sub(FRAME_MARGIN);
    let mut room = Room::new(budget / 2);
    let (queues, queues_truncated) = room.take(d.core.queues.info().iter().map(wire::queue_info));
    room.grow(budget - budget / 2);
    let (revision, views) = d.core.status_in_order(&req.resources, now);
    let (resources, truncated) = room.take(views.map(|r| wire::resource(&r, &d.clock, now)));
    let status = v1::Status {
        revision: revision.0,
        resources,
        queues,
        truncated,
        queues_truncated,
    };
    d.charge_report(session, budget.saturating_sub(room.left));
    Ok((v1::reply::Result::Status(status), Vec::new()))
}

/// What is left of a frame's bytes, for repeated message fields.
struct Room {
    left: usize,
}

impl Room {
    fn new(bytes: usize) -> Room {
        Room { left: bytes }
    }

    /// Adds `bytes` to what is left.
    fn grow(&mut self, bytes: usize) {
        self.left += bytes;
    }

    /// The items, in order, while each fits (as a repeated field's entry:
    /// its key and length too); the first that does not ends the list.
    /// Whether some were left out.
    fn take<M: prost::Message>(&mut self, items: impl Iterator<Item = M>) -> (Vec<M>, bool) {
        let mut kept = Vec::new();
        for item in items {
            let len = item.encoded_len();
            // A field key (one byte for the tags used here) and the length.
            let entry = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
            if entry > self.left {
                return (kept, true);
            }
            self.left -= entry;
            kept.push(item);
        }
        (kept, false)
    }
}
