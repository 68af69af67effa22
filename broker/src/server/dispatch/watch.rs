//! `Watch`: a snapshot (or the replay of missed events) now, then every
//! state change of the watched resources.

use std::sync::Arc;

use prost::Message as _;

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{Change, Millis, SessionId};
use crate::policy::Verb;
use crate::server::wire::{self, Refusal};

/// Room kept in the frame for everything around the `WatchStarted`.
const FRAME_MARGIN: usize = 64;

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    _id: u64,
    req: v1::Watch,
    now: Millis,
) -> Answer {
    if req.resources.is_empty() {
        d.allow(session, Verb::Watch, None)?;
    }
    for r in &req.resources {
        d.allow(session, Verb::Watch, Some(r))?;
    }
    let start = d
        .core
        .watch(session, req.resources, req.start_revision, now)?;
    // Replayed events follow the answer, in order, like any change.
    let changes = start
        .replay
        .iter()
        .map(|event| Change::Watch {
            session,
            watch: start.watch_id,
            event: Arc::clone(event),
        })
        .collect();
    let started = v1::WatchStarted {
        watch_id: start.watch_id.0,
        revision: start.revision.0,
        snapshot: start
            .snapshot
            .iter()
            .map(|r| wire::resource(r, &d.clock, now))
            .collect(),
        resync: start.resync,
    };
    // A snapshot that cannot go out in one frame is refused, and the watch
    // with it: a watcher needs all of it or nothing (never a silent gap).
    let len = started.encoded_len();
    let limit = d.config.max_frame_bytes;
    if len + FRAME_MARGIN > limit as usize {
        d.core.unwatch(session, start.watch_id)?;
        return Err(Refusal::SnapshotTooLarge {
            resources: started.snapshot.len(),
            len,
            limit,
        }
        .into());
    }
    Ok((v1::reply::Result::Watch(started), changes))
}
