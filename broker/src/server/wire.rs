//! Conversions between the core's domain types and the wire's generated
//! types, in one place, with the time base that turns the core's monotonic
//! milliseconds into the wall-clock times clients display.
//!
//! Unknown enum values in requests are refused here, never defaulted.

use std::time::{SystemTime, UNIX_EPOCH};

use turnstile_proto::v1;

use crate::core::queues::{Delivery, QueueError, QueueInfo};
use crate::core::{
    AcquireOutcome, AcquireRequest, CoreError, EventKind, Grant, LeaseUpdate, LeaseView,
    LostReason, Millis, Mode, Peer, QueuePosition, ResourceView, StateEvent, StatusView,
    WaitPolicy,
};
use crate::store::StoreError;

/// The broker's time base: monotonic milliseconds since start for the core
/// (a wall-clock jump changes no expiry), and the wall-clock instant that
/// corresponds to the start, for display only.
#[derive(Clone, Copy)]
pub struct Clock {
    start: tokio::time::Instant,
    wall_at_start_ms: u64,
}

impl Clock {
    /// Starts the time base now.
    pub fn start() -> Clock {
        let wall_at_start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            start: tokio::time::Instant::now(),
            wall_at_start_ms,
        }
    }

    /// Monotonic milliseconds since start.
    pub fn now(&self) -> Millis {
        self.start.elapsed().as_millis() as u64
    }

    /// The tokio instant of a core time, for sleeping until a deadline.
    pub fn instant(&self, at: Millis) -> tokio::time::Instant {
        self.start + std::time::Duration::from_millis(at)
    }

    /// Wall-clock unix milliseconds of a core time.
    pub fn wall_ms(&self, at: Millis) -> u64 {
        self.wall_at_start_ms + at
    }
}

/// The wire error for a core refusal.
pub fn error(e: &CoreError) -> v1::Error {
    use v1::ErrorCode as C;
    let code = match e {
        CoreError::InvalidName { .. } | CoreError::InvalidArgument(_) => C::InvalidArgument,
        CoreError::UnknownLease(_) | CoreError::Ended { .. } | CoreError::UnknownWatch(_) => {
            C::NotFound
        }
        CoreError::NotOwner(_) => C::PermissionDenied,
        CoreError::Busy { .. } => C::Busy,
        CoreError::WrongState(_) => C::InvalidArgument,
        CoreError::Quota { .. } => C::ResourceExhausted,
        CoreError::Queue(q) => return queue_error(q),
    };
    error_of(code, e.to_string())
}

/// The wire error for a refused queue operation.
pub fn queue_error(e: &QueueError) -> v1::Error {
    use v1::ErrorCode as C;
    let code = match e {
        QueueError::InvalidName { .. } => C::InvalidArgument,
        QueueError::QueueFull { .. }
        | QueueError::QueueBytesFull { .. }
        | QueueError::TooManyConsumers { .. } => C::ResourceExhausted,
        QueueError::UnknownDelivery(_) | QueueError::UnknownConsumer(_) => C::NotFound,
        QueueError::NotYourDelivery(_) | QueueError::NotYourConsumer(_) => C::PermissionDenied,
    };
    error_of(code, e.to_string())
}

/// The wire error for a publish the store could not make durable: a full
/// disk is RESOURCE_EXHAUSTED (the publisher may retry later), anything
/// else INTERNAL. The message names the file.
pub fn store_error(e: &StoreError) -> v1::Error {
    let code = if e.is_disk_full() {
        v1::ErrorCode::ResourceExhausted
    } else {
        v1::ErrorCode::Internal
    };
    error_of(code, format!("the message was not stored: {e}"))
}

/// A wire error from a code and a message.
pub fn error_of(code: v1::ErrorCode, message: impl Into<String>) -> v1::Error {
    v1::Error {
        code: code as i32,
        message: message.into(),
    }
}

/// A reply frame.
pub fn reply(id: u64, result: v1::reply::Result) -> v1::ServerFrame {
    v1::ServerFrame {
        body: Some(v1::server_frame::Body::Reply(v1::Reply {
            id,
            result: Some(result),
        })),
    }
}

/// An error reply frame.
pub fn error_reply(id: u64, error: v1::Error) -> v1::ServerFrame {
    reply(id, v1::reply::Result::Error(error))
}

/// Converts an `Acquire`, refusing enum values this version does not know.
/// The mode must be stated (`MODE_UNSPECIFIED` is refused: a lock request
/// should say what it wants); `WAIT_POLICY_UNSPECIFIED` means QUEUE.
pub fn acquire_request(a: v1::Acquire) -> Result<AcquireRequest, CoreError> {
    let mode = match v1::Mode::try_from(a.mode) {
        Ok(v1::Mode::Exclusive) => Mode::Exclusive,
        Ok(v1::Mode::Shared) => Mode::Shared,
        Ok(v1::Mode::Unspecified) | Err(_) => {
            return Err(CoreError::InvalidArgument(format!(
                "unknown mode {}; expected MODE_EXCLUSIVE (1) or MODE_SHARED (2)",
                a.mode
            )));
        }
    };
    let wait = match v1::WaitPolicy::try_from(a.wait) {
        Ok(v1::WaitPolicy::Unspecified | v1::WaitPolicy::Queue) => WaitPolicy::Queue,
        Ok(v1::WaitPolicy::NoWait) => WaitPolicy::NoWait,
        Err(_) => {
            return Err(CoreError::InvalidArgument(format!(
                "unknown wait policy {}; expected WAIT_POLICY_QUEUE (1) or WAIT_POLICY_NO_WAIT (2)",
                a.wait
            )));
        }
    };
    Ok(AcquireRequest {
        resource: a.resource,
        mode,
        ttl_ms: a.ttl_ms,
        wait,
        max_wait_ms: a.max_wait_ms,
        purpose: a.purpose,
    })
}

/// The wire form of a peer.
pub fn peer(p: &Peer) -> v1::Peer {
    v1::Peer {
        client_name: p.client_name.clone(),
        uid: p.uid,
        pid: p.pid,
        session_id: p.session.0,
    }
}

fn mode(m: Mode) -> i32 {
    match m {
        Mode::Exclusive => v1::Mode::Exclusive as i32,
        Mode::Shared => v1::Mode::Shared as i32,
    }
}

/// The wire form of a lease, with times made wall-clock and relative to `now`.
pub fn lease(l: &LeaseView, clock: &Clock, now: Millis) -> v1::Lease {
    v1::Lease {
        lease_id: l.lease_id.0,
        resource: l.resource.to_string(),
        mode: mode(l.mode),
        purpose: l.purpose.to_string(),
        holder: Some(peer(&l.holder)),
        fencing_token: l.fencing.map_or(0, |f| f.0),
        progress: l.progress.as_ref().map(|p| v1::Progress {
            done: p.done,
            total: p.total,
            message: p.message.clone(),
        }),
        granted_at_ms: l.granted_at.map_or(0, |t| clock.wall_ms(t)),
        expires_in_ms: l
            .expires_at
            .map_or(0, |t| t.saturating_sub(now).min(u64::from(u32::MAX)) as u32),
        position: l.position,
        queued_at_ms: l.queued_at.map_or(0, |t| clock.wall_ms(t)),
    }
}

/// The wire form of a resource's state.
pub fn resource(r: &ResourceView, clock: &Clock, now: Millis) -> v1::ResourceState {
    v1::ResourceState {
        resource: r.resource.to_string(),
        revision: r.revision.0,
        holders: r.holders.iter().map(|l| lease(l, clock, now)).collect(),
        waiters: r.waiters.iter().map(|l| lease(l, clock, now)).collect(),
    }
}

/// The wire form of a status snapshot (queues are added by the caller).
pub fn status(s: &StatusView, clock: &Clock, now: Millis) -> v1::Status {
    v1::Status {
        revision: s.revision.0,
        resources: s
            .resources
            .iter()
            .map(|r| resource(r, clock, now))
            .collect(),
        queues: Vec::new(),
    }
}

/// The wire form of a queue's counts.
pub fn queue_info(q: &QueueInfo) -> v1::QueueInfo {
    v1::QueueInfo {
        queue: q.queue.to_string(),
        ready: q.ready,
        unacked: q.unacked,
        consumers: q.consumers,
    }
}

/// The pushed frame carrying one message to one consumer.
pub fn delivery(d: &Delivery) -> v1::ServerFrame {
    v1::ServerFrame {
        body: Some(v1::server_frame::Body::Delivery(v1::Delivery {
            consumer_id: d.consumer.0,
            delivery_id: d.delivery_id.0,
            seq: d.seq,
            queue: d.queue.to_string(),
            payload: d.payload.clone(),
            headers: d.headers.iter().cloned().collect(),
            attempt: d.attempt,
        })),
    }
}

/// The wire form of a grant.
pub fn granted(g: &Grant) -> v1::Granted {
    v1::Granted {
        lease_id: g.lease_id.0,
        fencing_token: g.fencing.0,
        ttl_ms: g.ttl_ms,
    }
}

/// The wire form of a queue position.
pub fn queued(q: &QueuePosition, clock: &Clock, now: Millis) -> v1::Queued {
    v1::Queued {
        lease_id: q.lease_id.0,
        position: q.position,
        ahead: q.ahead.iter().map(|l| lease(l, clock, now)).collect(),
        estimated_wait_ms: q
            .estimated_wait_ms
            .map_or(0, |w| w.clamp(1, u64::from(u32::MAX)) as u32),
    }
}

/// The wire form of an acquire outcome.
pub fn acquire_reply(o: &AcquireOutcome, clock: &Clock, now: Millis) -> v1::AcquireReply {
    use v1::acquire_reply::Outcome;
    v1::AcquireReply {
        outcome: Some(match o {
            AcquireOutcome::Granted(g) => Outcome::Granted(granted(g)),
            AcquireOutcome::Queued(q) => Outcome::Queued(queued(q, clock, now)),
        }),
    }
}

/// The pushed frame telling a lease's owner what became of it.
pub fn lease_update(lease_id: u64, u: &LeaseUpdate, clock: &Clock, now: Millis) -> v1::ServerFrame {
    use v1::lease_update::Change;
    let change = match u {
        LeaseUpdate::Granted(g) => Change::Granted(granted(g)),
        LeaseUpdate::Queued(q) => Change::Queued(queued(q, clock, now)),
        LeaseUpdate::Lost { reason, detail } => Change::Lost(v1::Lost {
            reason: match reason {
                LostReason::Expired => v1::LostReason::Expired,
                LostReason::TimedOut => v1::LostReason::TimedOut,
            } as i32,
            detail: detail.clone(),
        }),
    };
    v1::ServerFrame {
        body: Some(v1::server_frame::Body::LeaseUpdate(v1::LeaseUpdate {
            lease_id,
            change: Some(change),
        })),
    }
}

/// The wire kind of a state event.
pub fn event_kind(k: EventKind) -> v1::EventKind {
    match k {
        EventKind::Granted => v1::EventKind::Granted,
        EventKind::Released => v1::EventKind::Released,
        EventKind::Expired => v1::EventKind::Expired,
        EventKind::Disconnected => v1::EventKind::Disconnected,
        EventKind::Queued => v1::EventKind::Queued,
        EventKind::Cancelled => v1::EventKind::Cancelled,
        EventKind::Progress => v1::EventKind::Progress,
        EventKind::Resync => v1::EventKind::Resync,
        EventKind::Heartbeat => v1::EventKind::Heartbeat,
    }
}

/// The pushed frame carrying a state event to one watch.
pub fn watch_event(
    watch_id: u64,
    e: &StateEvent,
    coalesced: bool,
    clock: &Clock,
    now: Millis,
) -> v1::ServerFrame {
    let state = (e.kind != EventKind::Heartbeat).then(|| resource(&e.state, clock, now));
    v1::ServerFrame {
        body: Some(v1::server_frame::Body::WatchEvent(v1::WatchEvent {
            watch_id,
            revision: e.revision.0,
            kind: event_kind(e.kind) as i32,
            state,
            coalesced,
            detail: e.cause.to_string(),
        })),
    }
}
