//! JSON text for the nested answers (status, a resource's state), in the
//! schema of `turnstile status --json`: a C caller parses it with the JSON
//! library it already has rather than walking nested structs.

use serde_json::{Value, json};
use turnstile_client::proto as v1;

fn mode(m: i32) -> &'static str {
    match v1::Mode::try_from(m) {
        Ok(v1::Mode::Shared) => "shared",
        Ok(v1::Mode::Exclusive) => "exclusive",
        _ => "unspecified",
    }
}

/// A lease (holder or waiter).
pub(crate) fn lease(l: &v1::Lease) -> Value {
    json!({
        "lease_id": l.lease_id,
        "resource": l.resource,
        "mode": mode(l.mode),
        "purpose": l.purpose,
        "holder": l.holder.as_ref().map(|p| json!({
            "client_name": p.client_name, "uid": p.uid, "pid": p.pid, "session_id": p.session_id,
            "user": p.user, "login_session": p.login_session,
        })),
        "fencing_token": l.fencing_token,
        "progress": l.progress.as_ref().map(|p| json!({
            "done": p.done, "total": p.total, "message": p.message,
        })),
        "granted_at_ms": l.granted_at_ms,
        "queued_at_ms": l.queued_at_ms,
        "expires_in_ms": l.expires_in_ms,
        "position": l.position,
        "permits": l.permits,
        "detached": l.detached,
        "stalled": l.stalled,
    })
}

/// A resource's state: holders and waiters in order.
pub(crate) fn resource(r: &v1::ResourceState) -> Value {
    json!({
        "resource": r.resource,
        "revision": r.revision,
        "holders": r.holders.iter().map(lease).collect::<Vec<_>>(),
        "waiters": r.waiters.iter().map(lease).collect::<Vec<_>>(),
        "capacity": r.capacity,
        "permits_held": r.permits_held,
    })
}

/// A whole status answer.
pub(crate) fn status(s: &v1::Status) -> Value {
    json!({
        "revision": s.revision,
        "resources": s.resources.iter().map(resource).collect::<Vec<_>>(),
        "queues": s.queues.iter().map(|q| json!({
            "queue": q.queue, "ready": q.ready, "unacked": q.unacked, "consumers": q.consumers,
        })).collect::<Vec<_>>(),
    })
}
