//! `CancelConsume`: one of the connection's consumers stops, the
//! connection stays. Nothing is delivered to it after the `Done`: the
//! `Done` waits for the deliveries already decided for the connection
//! that wait for their attempt to be stored (`persist::AwaitingStore`).
//! Its deliveries in flight stay the connection's to settle.

use turnstile_proto::v1;

use super::Dispatcher;
use crate::core::queues::ConsumerId;
use crate::core::{Change, SessionId};
use crate::server::wire;

/// The answer and changes now, or `None` when the answer is held behind
/// deliveries.
pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    id: u64,
    req: v1::CancelConsume,
) -> Result<Option<(v1::reply::Result, Vec<Change>)>, v1::Error> {
    // It may be answered later: its id must tell its answer apart.
    d.id_not_in_flight(session, id)?;
    let changes = d
        .core
        .queues
        .cancel_consumer(session, ConsumerId(req.consumer_id))?;
    let changes = Change::from_queue(changes);
    let done = v1::reply::Result::Done(v1::Done::default());
    let Some(batch) = d.awaiting_store.newest_for(session) else {
        return Ok(Some((done, changes)));
    };
    // In flight until answered, like a publish (`--max-in-flight`).
    d.now_in_flight(session, id);
    d.awaiting_store
        .hold(batch, session, id, wire::answer(id, done));
    if !changes.is_empty() {
        let now = d.clock.now();
        d.deliver(changes, now);
    }
    Ok(None)
}
