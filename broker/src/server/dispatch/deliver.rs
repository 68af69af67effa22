//! Delivery: every change goes to whom it concerns, in order. Store writes
//! go first; a watch event is encoded once for all its watchers (shared by
//! [`Arc`] identity); a watcher too far behind is cut off through the one
//! goodbye path.

use std::sync::Arc;

use bytes::Bytes;
use turnstile_proto::{encode_shared_watch_event, hot};

use super::Dispatcher;
use crate::core::{
    Change, DropReason, LeaseUpdate, Millis, QueueChange, QueuePosition, SessionId, StateEvent,
    StoreOp,
};
use crate::server::clock::Clock;
use crate::server::outbound::{MAX_COALESCED, Outbound};
use crate::server::wire;

impl Dispatcher {
    /// Takes the store writes out of `changes` and hands them to the store
    /// first, in one transaction (a dead-letter move is a Remove plus an
    /// Append), before any send can close a connection and cause more.
    /// When there are writes, the deliveries among the changes go with
    /// them and out only once they are stored: a delivery's attempt must be
    /// durable before it is seen, so that a message whose deliveries keep
    /// ending in a crash (the broker's too) still reaches its dead-letter
    /// queue.
    pub(super) fn write_first(&mut self, changes: &mut Vec<Change>) {
        let ops: Vec<StoreOp> = changes
            .extract_if(.., |c| matches!(c, Change::Queue(QueueChange::Persist(_))))
            .filter_map(|c| match c {
                Change::Queue(QueueChange::Persist(op)) => Some(op),
                _ => None,
            })
            .collect();
        if ops.is_empty() {
            return;
        }
        // Acks taken before these writes are stored before them.
        self.submit_acks();
        let deliveries: Vec<Change> = changes
            .extract_if(.., |c| {
                matches!(c, Change::Queue(QueueChange::Deliver { .. }))
            })
            .collect();
        self.store_then_deliver(ops, deliveries);
    }

    /// Sends every change to whom it concerns. Watch events are encoded once
    /// per event, whatever the number of watchers.
    pub(super) fn deliver(&mut self, mut changes: Vec<Change>, now: Millis) {
        // Every call on the core that may end a lease is followed by this.
        self.record_ended();
        self.write_first(&mut changes);
        // The last event encoded, and its bytes: every watcher of one event gets
        // the same `Arc`, so identity says whether the bytes fit.
        let mut encoded: Option<(Arc<StateEvent>, Bytes)> = None;
        for change in changes.drain(..) {
            match change {
                Change::Lease {
                    session,
                    lease,
                    update,
                } => {
                    // Places in the queue come already paced and coalesced
                    // by the core (`waiter_update_interval_ms`).
                    let frame = match &update {
                        LeaseUpdate::Queued(place) => queued_frame(place, &self.clock, now),
                        // The handoff's frame, encoded by hand on the stack
                        // like the hot answers (no boxed frame: issue 14).
                        LeaseUpdate::Granted(grant) => Outbound::encoded(
                            &hot::lease_granted_frame(lease.0, &wire::granted(grant)),
                        ),
                        _ => {
                            Outbound::frame(wire::lease_update(lease.0, &update, &self.clock, now))
                        }
                    };
                    self.send(session, frame);
                }
                Change::Watch {
                    session,
                    watch,
                    event,
                } => {
                    if self.fleet_takes(session, &event) {
                        continue;
                    }
                    let Some(conn) = self.conns.get_mut(&session) else {
                        continue;
                    };
                    let body = || match &encoded {
                        Some((last, bytes)) if Arc::ptr_eq(last, &event) => bytes.clone(),
                        _ => encode_event(&event, false, &self.clock, now),
                    };
                    let mut produced = None;
                    let sent = conn.send_watch(watch.0, &event, || {
                        let b = body();
                        produced = Some(b.clone());
                        b
                    });
                    if let Some(b) = produced {
                        encoded = Some((event.clone(), b));
                    }
                    if sent.is_err() {
                        tracing::warn!(
                            session = session.0,
                            uid = conn.uid,
                            pid = conn.pid,
                            "closing a watcher that stopped reading: it is owed the state of more than {} resources",
                            MAX_COALESCED
                        );
                        conn.close();
                        self.goodbye(session, "watcher too far behind");
                    }
                }
                c @ Change::ReserveCounters { .. } => self.persist(&c),
                Change::Queue(QueueChange::Deliver { session, delivery }) => {
                    // Asked for (Consume), and bounded by the consumer's
                    // prefetch window: like an answer, it never cuts the
                    // consumer off; a late reader is paused instead.
                    let frame = Outbound::frame(wire::delivery(&delivery));
                    self.send_item(session, frame, true);
                }
                // Taken out above.
                Change::Queue(QueueChange::Persist(_)) => {}
                Change::Queue(QueueChange::DeadLettered {
                    queue,
                    seq,
                    dead_queue,
                    dead_seq,
                    attempts,
                }) => {
                    tracing::info!(
                        %queue, seq, %dead_queue, dead_seq, attempts,
                        "a message used up its delivery attempts and moved to the dead-letter queue"
                    );
                }
                Change::Queue(QueueChange::Dropped { queue, seq, reason }) => {
                    let why = match reason {
                        DropReason::DeadLetterQueueFull => "its dead-letter queue is full",
                        DropReason::NoDeadLetterQueue => {
                            "its queue's name is too long for a dead-letter queue"
                        }
                    };
                    tracing::warn!(%queue, seq, "a message was dropped unacknowledged: {why}");
                }
            }
        }
        self.core.recycle_changes(changes);
    }
}

/// Whether a change is addressed to `session` (store writes are nobody's).
pub(super) fn concerns(change: &Change, session: SessionId) -> bool {
    match change {
        Change::Lease { session: s, .. } | Change::Watch { session: s, .. } => *s == session,
        Change::Queue(QueueChange::Deliver { session: s, .. }) => *s == session,
        Change::ReserveCounters { .. }
        | Change::Queue(
            QueueChange::Persist(_)
            | QueueChange::DeadLettered { .. }
            | QueueChange::Dropped { .. },
        ) => false,
    }
}

/// A `WatchEvent` without its `watch_id`, encoded once for all watchers.
pub(super) fn encode_event(e: &StateEvent, coalesced: bool, clock: &Clock, now: Millis) -> Bytes {
    encode_shared_watch_event(wire::watch_event(0, e, coalesced, clock, now))
}

/// A waiter's place in the queue as a `LeaseUpdate` frame.
pub(super) fn queued_frame(place: &QueuePosition, clock: &Clock, now: Millis) -> Outbound {
    Outbound::frame(turnstile_proto::v1::ServerFrame {
        body: Some(turnstile_proto::v1::server_frame::Body::LeaseUpdate(
            turnstile_proto::v1::LeaseUpdate {
                lease_id: place.lease_id.0,
                change: Some(turnstile_proto::v1::lease_update::Change::Queued(
                    wire::queued(place, clock, now),
                )),
            },
        )),
    })
}
