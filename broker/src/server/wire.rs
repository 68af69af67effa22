//! The broker's transport edge: conversions between the core's domain
//! types and the wire's generated types, in one place, and the one place
//! that picks a wire [`ErrorCode`](v1::ErrorCode): for core refusals
//! (`From<&CoreError>`), policy refusals (`From<&Denied>`) and the
//! transport's own ([`Refusal`]).
//!
//! Unknown enum values in requests are refused here, never defaulted.

use std::borrow::Cow;
use std::time::Duration;

use turnstile_proto::v1::{self, ErrorCode};
use turnstile_proto::{FrameError, hot};

use super::clock::Clock;
use super::outbound::Outbound;
use crate::core::queues::{Delivery, QueueError, QueueInfo};
use crate::core::{
    AcquireOutcome, AcquireRequest, CoreError, EventKind, Grant, LeaseUpdate, LeaseView,
    LostReason, Millis, Mode, Peer, QueuePosition, ResourceView, ResumeToken, StateEvent,
    WaitPolicy,
};
use crate::policy::Denied;
use crate::store::StoreError;

impl From<&CoreError> for v1::Error {
    fn from(e: &CoreError) -> v1::Error {
        let code = match e {
            CoreError::InvalidName { .. }
            | CoreError::InvalidArgument(_)
            | CoreError::WrongState(_) => ErrorCode::InvalidArgument,
            CoreError::UnknownLease(_) | CoreError::Ended { .. } | CoreError::UnknownWatch(_) => {
                ErrorCode::NotFound
            }
            CoreError::NotOwner(_) => ErrorCode::PermissionDenied,
            CoreError::Busy { .. } => ErrorCode::Busy,
            CoreError::Quota { .. }
            | CoreError::UserWaiters { .. }
            | CoreError::UserLeases { .. } => ErrorCode::ResourceExhausted,
            CoreError::Queue(q) => match q {
                QueueError::QueueFull { .. }
                | QueueError::QueueBytesFull { .. }
                | QueueError::UserQuota { .. }
                | QueueError::UserStored { .. }
                | QueueError::UserQueues { .. }
                | QueueError::TooManyConsumers { .. } => ErrorCode::ResourceExhausted,
                QueueError::UnknownDelivery(_) | QueueError::UnknownConsumer(_) => {
                    ErrorCode::NotFound
                }
                QueueError::NotYourDelivery(_) => ErrorCode::PermissionDenied,
            },
            CoreError::Broken(_) => ErrorCode::Internal,
        };
        error(code, e.to_string())
    }
}

impl From<CoreError> for v1::Error {
    fn from(e: CoreError) -> v1::Error {
        v1::Error::from(&e)
    }
}

impl From<QueueError> for v1::Error {
    fn from(e: QueueError) -> v1::Error {
        v1::Error::from(&CoreError::Queue(e))
    }
}

impl From<&Denied> for v1::Error {
    fn from(denied: &Denied) -> v1::Error {
        error(ErrorCode::PermissionDenied, denied.to_string())
    }
}

/// What the transport refuses on its own account: broken or unexpected
/// frames, the handshake, quotas of connections and requests in flight,
/// and a publish the store could not keep. Each becomes one wire error.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No Hello within the handshake time-out (then close).
    #[error("no Hello within {} ms", .0.as_millis())]
    NoHello(Duration),
    /// The first frame was not Hello (then close).
    #[error("the first frame must be Hello")]
    FirstFrameNotHello,
    /// Hello asked for a version this broker does not speak (then close).
    #[error(
        "protocol version {0} is not supported; this broker speaks versions {v} to {v}",
        v = turnstile_proto::PROTOCOL_VERSION
    )]
    UnsupportedVersion(u32),
    /// A frame that cannot be read: too large, a bad prefix, not a message
    /// (then close).
    #[error(transparent)]
    BadFrame(FrameError),
    /// A frame begun and not finished in time (slowloris; then close).
    #[error(
        "a frame was begun and not finished within {} ms (--frame-timeout)",
        .0.as_millis()
    )]
    FrameUnfinished(Duration),
    /// The connection is over a connection quota (then close).
    #[error("{0}")]
    TooManyConnections(String),
    /// A request with id 0.
    #[error("request id must be non-zero")]
    ZeroRequestId,
    /// A frame without a request in it.
    #[error("the frame carries no request (empty or from a newer protocol)")]
    EmptyRequest,
    /// A second Hello.
    #[error("Hello was already said on this connection")]
    HelloAgain,
    /// An `Acquire` with a mode this version does not know.
    #[error("unknown mode {0}; expected MODE_EXCLUSIVE (1) or MODE_SHARED (2)")]
    UnknownMode(i32),
    /// An `Acquire` with a wait policy this version does not know.
    #[error("unknown wait policy {0}; expected WAIT_POLICY_QUEUE (1) or WAIT_POLICY_NO_WAIT (2)")]
    UnknownWaitPolicy(i32),
    /// A request answered later (a publish, a history read, a held
    /// `CancelConsume`) reusing the id of one still in flight.
    #[error(
        "request id {0} is already taken by a request in flight on this connection: \
         its answer could not be told apart"
    )]
    IdInFlight(u64),
    /// A message whose delivery could not fit in a frame.
    #[error(
        "the message is too large: its delivery would take {len} bytes, over the \
         {limit}-byte frame limit (payload {payload} bytes)"
    )]
    MessageTooLarge {
        /// The largest delivery frame it could make.
        len: usize,
        /// The frame limit.
        limit: u32,
        /// The payload's size.
        payload: usize,
    },
    /// A watch whose snapshot could not fit in a frame.
    #[error(
        "the watch's snapshot of {resources} resources would take {len} bytes, over the \
         {limit}-byte frame limit: watch the resources needed by name"
    )]
    SnapshotTooLarge {
        /// Resources in the snapshot.
        resources: usize,
        /// The snapshot's bytes.
        len: usize,
        /// The frame limit.
        limit: u32,
    },
    /// The store could not make a publish durable.
    #[error("the message was not stored: {0}")]
    NotStored(StoreError),
    /// The store could not make an acknowledgement durable.
    #[error("the acknowledgement was not stored (the message may be delivered again): {0}")]
    AckNotStored(StoreError),
    /// The store could not tell whether a publish is durable (its sync
    /// failed): it may be delivered after a restart.
    #[error("whether the message was stored is unknown (it may be delivered after a restart): {0}")]
    OutcomeUnknown(StoreError),
    /// A request for a connection the dispatcher does not know (a bug).
    #[error("no such connection")]
    NoConnection,
    /// The OS gave no random bytes for a resume token.
    #[error("no resume token could be drawn from the OS: {0}")]
    NoRandomness(String),
    /// The store could not read the history.
    #[error("the history could not be read: {0}")]
    HistoryUnread(StoreError),
}

impl Refusal {
    /// The refusal owed for a frame that could not be read, or `None` when
    /// there is nobody left to tell (the stream ended or broke).
    pub fn bad_frame(e: FrameError) -> Option<Refusal> {
        e.wire_code().map(|_| Refusal::BadFrame(e))
    }
}

impl From<&Refusal> for v1::Error {
    fn from(r: &Refusal) -> v1::Error {
        let code = match r {
            Refusal::NoHello(_) | Refusal::FrameUnfinished(_) => ErrorCode::TimedOut,
            Refusal::FirstFrameNotHello | Refusal::HelloAgain => ErrorCode::ProtocolViolation,
            Refusal::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            Refusal::BadFrame(e) => e.wire_code().unwrap_or(ErrorCode::ProtocolViolation),
            Refusal::TooManyConnections(_) => ErrorCode::ResourceExhausted,
            Refusal::ZeroRequestId
            | Refusal::EmptyRequest
            | Refusal::UnknownMode(_)
            | Refusal::UnknownWaitPolicy(_)
            | Refusal::IdInFlight(_) => ErrorCode::InvalidArgument,
            Refusal::MessageTooLarge { .. } | Refusal::SnapshotTooLarge { .. } => {
                ErrorCode::FrameTooLarge
            }
            // A full disk: the publisher may retry later.
            Refusal::NotStored(e) if e.is_disk_full() => ErrorCode::ResourceExhausted,
            Refusal::NotStored(_)
            | Refusal::OutcomeUnknown(_)
            | Refusal::AckNotStored(_)
            | Refusal::NoConnection
            | Refusal::HistoryUnread(_)
            | Refusal::NoRandomness(_) => ErrorCode::Internal,
        };
        error(code, r.to_string())
    }
}

impl From<Refusal> for v1::Error {
    fn from(r: Refusal) -> v1::Error {
        v1::Error::from(&r)
    }
}

fn error(code: ErrorCode, message: String) -> v1::Error {
    v1::Error {
        code: code as i32,
        message,
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

/// The answer to a request, ready for the connection's queue: the hot
/// ones (`Pong`, an empty `Done`, `AcquireReply { granted }`) encoded by hand
/// straight away (no `ServerFrame` built, boxed, encoded by prost and
/// dropped: issue 14), the rest as a frame.
pub fn answer(id: u64, result: v1::reply::Result) -> Outbound {
    use v1::acquire_reply::Outcome;
    use v1::reply::Result as R;
    match &result {
        R::Pong(p) => Outbound::encoded(&hot::pong_frame(id, &p.payload)),
        R::Done(v1::Done { holders_asked: 0 }) => Outbound::encoded(&hot::done_frame(id)),
        R::Acquire(v1::AcquireReply {
            outcome: Some(Outcome::Granted(g)),
        }) => Outbound::encoded(&hot::granted_frame(id, g)),
        _ => Outbound::frame(reply(id, result)),
    }
}

/// An error reply frame.
pub fn error_reply(id: u64, error: impl Into<v1::Error>) -> v1::ServerFrame {
    reply(id, v1::reply::Result::Error(error.into()))
}

/// Converts an `Acquire`, refusing enum values this version does not know.
/// The mode must be stated (`MODE_UNSPECIFIED` is refused: a lock request
/// should say what it wants); `WAIT_POLICY_UNSPECIFIED` means QUEUE.
pub fn acquire_request(a: hot::AcquireRef<'_>) -> Result<AcquireRequest<'_>, Refusal> {
    let mode = match v1::Mode::try_from(a.mode) {
        Ok(v1::Mode::Exclusive) => Mode::Exclusive,
        Ok(v1::Mode::Shared) => Mode::Shared,
        Ok(v1::Mode::Unspecified) | Err(_) => return Err(Refusal::UnknownMode(a.mode)),
    };
    let wait = match v1::WaitPolicy::try_from(a.wait) {
        Ok(v1::WaitPolicy::Unspecified | v1::WaitPolicy::Queue) => WaitPolicy::Queue,
        Ok(v1::WaitPolicy::NoWait) => WaitPolicy::NoWait,
        Err(_) => return Err(Refusal::UnknownWaitPolicy(a.wait)),
    };
    Ok(AcquireRequest {
        resource: Cow::Borrowed(a.resource),
        mode,
        ttl_ms: a.ttl_ms,
        wait,
        max_wait_ms: a.max_wait_ms,
        purpose: Cow::Borrowed(a.purpose),
        permits: a.permits,
        capacity: a.capacity,
        detach_grace_ms: a.detach_grace_ms,
        stall_after_ms: a.stall_after_ms,
        // Drawn by the caller from the OS when there is a grace.
        resume_token: None,
    })
}

/// The wire form of a peer.
pub fn peer(p: &Peer) -> v1::Peer {
    v1::Peer {
        client_name: p.client_name.clone(),
        uid: p.uid,
        pid: p.pid,
        session_id: p.session.0,
        user: p.user.clone(),
        login_session: p.login_session.clone(),
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
        permits: l.permits,
        detached: l.detached,
        stalled: l.stalled,
        estimated_wait_ms: estimate(l.estimated_wait_ms),
    }
}

/// The broker's estimate of a wait on the wire, in `Queued` and `Lease`
/// alike: 0 = none, else at least 1 ms and at most `u32::MAX`.
fn estimate(ms: Option<u64>) -> u32 {
    ms.map_or(0, |w| w.clamp(1, u64::from(u32::MAX)) as u32)
}

/// The wire form of a resource's state.
pub fn resource(r: &ResourceView, clock: &Clock, now: Millis) -> v1::ResourceState {
    v1::ResourceState {
        resource: r.resource.to_string(),
        revision: r.revision.0,
        holders: r.holders.iter().map(|l| lease(l, clock, now)).collect(),
        waiters: r.waiters.iter().map(|l| lease(l, clock, now)).collect(),
        capacity: r.capacity,
        permits_held: r.permits_held,
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
            // Not `to_string`: through `fmt`, ~280 instructions (issue 14).
            queue: String::from(&*d.queue),
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
        resume_token: resume_token(g.resume_token.as_ref()),
    }
}

/// The wire form of a queue position.
pub fn queued(q: &QueuePosition, clock: &Clock, now: Millis) -> v1::Queued {
    v1::Queued {
        lease_id: q.lease_id.0,
        position: q.position,
        ahead: q.ahead.iter().map(|l| lease(l, clock, now)).collect(),
        estimated_wait_ms: estimate(q.estimated_wait_ms),
        resume_token: resume_token(q.resume_token.as_ref()),
    }
}

/// The owner's secret on the wire: its bytes, or empty without a grace.
fn resume_token(t: Option<&ResumeToken>) -> bytes::Bytes {
    t.map_or_else(bytes::Bytes::new, |t| bytes::Bytes::copy_from_slice(&t.0))
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
                LostReason::Revoked => v1::LostReason::Revoked,
            } as i32,
            detail: detail.clone(),
        }),
        LeaseUpdate::YieldRequested(y) => Change::YieldRequested(v1::YieldRequested {
            requester: Some(peer(&y.requester)),
            reason: y.reason.to_string(),
            within_ms: y.within_ms,
            revoke: y.revoke,
        }),
    };
    v1::ServerFrame {
        body: Some(v1::server_frame::Body::LeaseUpdate(v1::LeaseUpdate {
            lease_id,
            change: Some(change),
        })),
    }
}

/// The wire form of the history the store read.
pub fn history(found: &crate::store::Recorded) -> v1::History {
    v1::History {
        entries: found
            .lines
            .iter()
            .map(|l| v1::HistoryEntry {
                lease_id: l.lease_id,
                resource: l.resource.clone(),
                mode: l.mode.map_or(0, mode),
                permits: l.permits,
                purpose: l.purpose.clone(),
                holder: Some(v1::Peer {
                    client_name: l.client_name.clone(),
                    uid: l.uid,
                    pid: l.pid,
                    session_id: l.session_id,
                    user: l.user.clone(),
                    login_session: l.login_session.clone(),
                }),
                queued_at_ms: l.queued_at_ms,
                granted_at_ms: l.granted_at_ms,
                ended_at_ms: l.ended_at_ms,
                ended_by: l.ended_by.map_or(0, |k| event_kind(k) as i32),
                detail: l.detail.clone(),
                fencing_token: l.fencing_token,
                timed_out: l.timed_out,
            })
            .collect(),
        truncated: found.truncated,
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
        EventKind::YieldRequested => v1::EventKind::YieldRequested,
        EventKind::YieldDeclined => v1::EventKind::YieldDeclined,
        EventKind::Revoked => v1::EventKind::Revoked,
        EventKind::Detached => v1::EventKind::Detached,
        EventKind::Reattached => v1::EventKind::Reattached,
        EventKind::Stalled => v1::EventKind::Stalled,
    }
}

/// A state event as one watch gets it (`watch_id` 0 for the body shared
/// by every watcher, see [`turnstile_proto::encode_shared_watch_event`]).
pub fn watch_event(
    watch_id: u64,
    e: &StateEvent,
    coalesced: bool,
    clock: &Clock,
    now: Millis,
) -> v1::WatchEvent {
    let state = (e.kind != EventKind::Heartbeat).then(|| resource(&e.state, clock, now));
    v1::WatchEvent {
        watch_id,
        revision: e.revision.0,
        kind: event_kind(e.kind) as i32,
        state,
        coalesced,
        detail: e.cause.to_string(),
    }
}
