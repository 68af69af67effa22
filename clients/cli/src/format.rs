//! The formatting the CLI's commands share: spans and durations for people,
//! a peer, a progress report, a lease's mode, and a lease or a resource's
//! state as JSON. Each command's own output lives with the command
//! (`status.rs`, `why.rs`, `ping.rs`, `run.rs`, `watch.rs`, `queue.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use turnstile_client::proto as v1;
use turnstile_client::{Mode, ShortName, kinds};

/// Wall-clock unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A short duration for people: `45 µs`, `1.2 ms`.
pub fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

/// A span for people: `850 ms`, `12 s`, `3 min 5 s`, `2 h 4 min`.
pub fn span(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{} s", ms / 1000),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{} h {} min", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// A lease's mode: `SHARED`, `EXCLUSIVE`, or `?` for one this CLI does not
/// know.
pub fn mode(l: &v1::Lease) -> &'static str {
    match kinds::mode(l) {
        Some(m @ (Mode::Shared | Mode::Exclusive)) => m.short_name(),
        Some(Mode::Unspecified) | None => "?",
    }
}

/// "service (root, pid 12)": the account name the broker got from the OS,
/// else the bare uid ("service (uid 1001, pid 12)").
pub fn who(p: Option<&v1::Peer>) -> String {
    match p {
        Some(p) => {
            let name = if p.client_name.is_empty() {
                "unnamed"
            } else {
                &p.client_name
            };
            if p.user.is_empty() {
                format!("{name} (uid {}, pid {})", p.uid, p.pid)
            } else {
                format!("{name} ({}, pid {})", p.user, p.pid)
            }
        }
        None => "unknown".into(),
    }
}

/// What a person should know of a lease beyond holding or waiting: a
/// holder that is *stuck* (alive, keeping its lease, but no progress for
/// its stall time) or *detached* (its process gone, its place kept for a
/// re-attach). Dead (DISCONNECTED) and hung (EXPIRED) leases are gone from
/// the state and show as events. Empty for neither.
pub fn condition(l: &v1::Lease) -> &'static str {
    if l.detached {
        "  [detached: its process is gone; kept for it to re-attach]"
    } else if l.stalled {
        "  [stuck: alive but no progress]"
    } else {
        ""
    }
}

/// "2 of 3 permits held", or nothing for a resource that is no semaphore.
pub fn permits(r: &v1::ResourceState) -> String {
    if r.capacity == 0 {
        String::new()
    } else {
        format!("{} of {} permits held", r.permits_held, r.capacity)
    }
}

/// "2/5 (40%) copying files".
pub fn progress(p: &v1::Progress) -> String {
    let mut s = if p.total > 0 {
        format!(
            "{}/{} ({}%)",
            p.done,
            p.total,
            u64::from(p.done) * 100 / u64::from(p.total)
        )
    } else {
        format!("{} done", p.done)
    };
    if !p.message.is_empty() {
        s.push(' ');
        s.push_str(&p.message);
    }
    s
}

/// ` "the purpose"`, or nothing when there is none.
pub fn purpose(l: &v1::Lease) -> String {
    if l.purpose.is_empty() {
        String::new()
    } else {
        format!(" \"{}\"", l.purpose)
    }
}

/// A lease as JSON.
pub fn lease_json(l: &v1::Lease) -> Value {
    json!({
        "lease_id": l.lease_id,
        "resource": l.resource,
        "mode": mode(l),
        "purpose": l.purpose,
        "holder": l.holder.as_ref().map(|p| json!({
            "client_name": p.client_name, "uid": p.uid, "pid": p.pid, "session_id": p.session_id,
            "user": p.user, "login_session": p.login_session,
        })),
        "permits": l.permits,
        "detached": l.detached,
        "stalled": l.stalled,
        "fencing_token": l.fencing_token,
        "progress": l.progress.as_ref().map(|p| json!({
            "done": p.done, "total": p.total, "message": p.message,
        })),
        "granted_at_ms": l.granted_at_ms,
        "queued_at_ms": l.queued_at_ms,
        "expires_in_ms": l.expires_in_ms,
        "position": l.position,
    })
}

/// A resource's state as JSON.
pub fn resource_json(r: &v1::ResourceState) -> Value {
    json!({
        "resource": r.resource,
        "revision": r.revision,
        "holders": r.holders.iter().map(lease_json).collect::<Vec<_>>(),
        "waiters": r.waiters.iter().map(lease_json).collect::<Vec<_>>(),
        "capacity": r.capacity,
        "permits_held": r.permits_held,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(850), "850 ms");
        assert_eq!(span(12_000), "12 s");
        assert_eq!(span(185_000), "3 min 5 s");
        assert_eq!(span(7_440_000), "2 h 4 min");
    }
}
