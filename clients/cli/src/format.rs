//! How the CLI shows broker state to people (text) and to scripts (JSON).

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use turnstile_client::proto as v1;

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

fn mode(m: i32) -> &'static str {
    match v1::Mode::try_from(m) {
        Ok(v1::Mode::Shared) => "SHARED",
        Ok(v1::Mode::Exclusive) => "EXCLUSIVE",
        _ => "?",
    }
}

/// "service (uid 0, pid 12)".
pub fn who(p: Option<&v1::Peer>) -> String {
    match p {
        Some(p) => format!(
            "{} (uid {}, pid {})",
            if p.client_name.is_empty() {
                "unnamed"
            } else {
                &p.client_name
            },
            p.uid,
            p.pid
        ),
        None => "unknown".into(),
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

fn purpose(l: &v1::Lease) -> String {
    if l.purpose.is_empty() {
        String::new()
    } else {
        format!(" \"{}\"", l.purpose)
    }
}

/// Remaining time of a holder, from its progress rate: `None` when unknown.
pub fn holder_remaining_ms(l: &v1::Lease, now: u64) -> Option<u64> {
    let p = l.progress.as_ref()?;
    if p.total == 0 || p.done == 0 || l.granted_at_ms == 0 {
        return None;
    }
    let held = now.saturating_sub(l.granted_at_ms);
    Some(held / u64::from(p.done) * u64::from(p.total.saturating_sub(p.done)))
}

/// The `status` table.
pub fn status_text(s: &v1::Status, now: u64) -> String {
    let mut out = String::new();
    if s.resources.is_empty() {
        let _ = writeln!(
            out,
            "no resource is held or waited for (revision {})",
            s.revision
        );
    }
    for r in &s.resources {
        let _ = writeln!(out, "{}  (revision {})", r.resource, r.revision);
        if r.holders.is_empty() && r.waiters.is_empty() {
            let _ = writeln!(out, "  free");
        }
        for h in &r.holders {
            let _ = write!(
                out,
                "  held     {:9}  lease {}  token {}  {}{}  for {}",
                mode(h.mode),
                h.lease_id,
                h.fencing_token,
                who(h.holder.as_ref()),
                purpose(h),
                span(now.saturating_sub(h.granted_at_ms))
            );
            if let Some(p) = &h.progress {
                let _ = write!(out, "  progress {}", progress(p));
            }
            let _ = writeln!(out, "  expires in {}", span(u64::from(h.expires_in_ms)));
        }
        for w in &r.waiters {
            let _ = writeln!(
                out,
                "  {:>3}.     {:9}  lease {}  {}{}  waiting {}",
                w.position,
                mode(w.mode),
                w.lease_id,
                who(w.holder.as_ref()),
                purpose(w),
                span(now.saturating_sub(w.queued_at_ms))
            );
        }
    }
    for q in &s.queues {
        let _ = writeln!(
            out,
            "queue {}  ready {}  unacked {}  consumers {}",
            q.queue, q.ready, q.unacked, q.consumers
        );
    }
    out
}

/// The answer to "why am I waiting?" in one screen.
pub fn why_text(resource: &str, state: Option<&v1::ResourceState>, now: u64) -> String {
    let mut out = String::new();
    let Some(r) = state.filter(|r| !r.holders.is_empty() || !r.waiters.is_empty()) else {
        let _ = writeln!(out, "{resource} is free: nobody holds it and nobody waits.");
        return out;
    };
    if r.holders.is_empty() {
        let _ = writeln!(out, "{resource} is not held right now.");
    }
    for h in &r.holders {
        let _ = writeln!(
            out,
            "{resource} is held {} by {}{}",
            mode(h.mode),
            who(h.holder.as_ref()),
            if h.purpose.is_empty() {
                String::new()
            } else {
                format!(" for \"{}\"", h.purpose)
            }
        );
        let _ = writeln!(
            out,
            "  since {} ago; lease {}, fencing token {}; expires in {} unless kept alive",
            span(now.saturating_sub(h.granted_at_ms)),
            h.lease_id,
            h.fencing_token,
            span(u64::from(h.expires_in_ms))
        );
        match &h.progress {
            Some(p) => {
                let _ = writeln!(out, "  progress: {}", progress(p));
            }
            None => {
                let _ = writeln!(out, "  progress: not reported");
            }
        }
    }
    if r.waiters.is_empty() {
        let _ = writeln!(out, "Nobody is waiting.");
    } else {
        let _ = writeln!(out, "Waiting, in the order they will be served:");
        for w in &r.waiters {
            let _ = writeln!(
                out,
                "  {}. {} {}{}, waiting {}",
                w.position,
                who(w.holder.as_ref()),
                mode(w.mode),
                purpose(w),
                span(now.saturating_sub(w.queued_at_ms))
            );
        }
    }
    let remaining: Option<u64> = r
        .holders
        .iter()
        .map(|h| holder_remaining_ms(h, now))
        .try_fold(0u64, |acc, x| x.map(|x| acc.max(x)));
    match remaining {
        Some(ms) if !r.holders.is_empty() => {
            let _ = writeln!(
                out,
                "Estimated wait for the next in line: about {} (from the holder's progress rate).",
                span(ms)
            );
        }
        _ if !r.holders.is_empty() => {
            let _ = writeln!(
                out,
                "No estimate: the holder has not reported progress with a total."
            );
        }
        _ => {}
    }
    out
}

/// A lease as JSON.
pub fn lease_json(l: &v1::Lease) -> Value {
    json!({
        "lease_id": l.lease_id,
        "resource": l.resource,
        "mode": mode(l.mode),
        "purpose": l.purpose,
        "holder": l.holder.as_ref().map(|p| json!({
            "client_name": p.client_name, "uid": p.uid, "pid": p.pid, "session_id": p.session_id,
        })),
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
    })
}

/// A status as JSON.
pub fn status_json(s: &v1::Status) -> Value {
    json!({
        "revision": s.revision,
        "resources": s.resources.iter().map(resource_json).collect::<Vec<_>>(),
        "queues": s.queues.iter().map(|q| json!({
            "queue": q.queue, "ready": q.ready, "unacked": q.unacked, "consumers": q.consumers,
        })).collect::<Vec<_>>(),
    })
}

/// The name of an event kind without its prefix: `GRANTED`.
pub fn event_kind(k: i32) -> &'static str {
    v1::EventKind::try_from(k)
        .map(|k| k.as_str_name().trim_start_matches("EVENT_KIND_"))
        .unwrap_or("UNKNOWN")
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

    #[test]
    fn why_on_a_free_resource_says_so() {
        assert_eq!(
            why_text("pcm", None, 0),
            "pcm is free: nobody holds it and nobody waits.\n"
        );
    }

    #[test]
    fn estimate_comes_from_the_progress_rate() {
        let l = v1::Lease {
            granted_at_ms: 1_000,
            progress: Some(v1::Progress {
                done: 2,
                total: 5,
                message: String::new(),
            }),
            ..Default::default()
        };
        assert_eq!(holder_remaining_ms(&l, 5_000), Some(6_000));
    }
}
