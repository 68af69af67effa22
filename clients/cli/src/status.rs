//! `turnstile status [RESOURCE...]`: holders and waiters of resources (all
//! in use when none is named) and the queues, as a table or as JSON.

use std::fmt::Write;

use serde_json::{Value, json};
use turnstile_client::proto as v1;
use turnstile_client::{Client, ClientError, ConnectOptions};

use crate::EXIT_OK;
use crate::format::{
    condition, mode, now_ms, permits, progress, purpose, resource_json, span, who,
};

pub async fn run(
    opts: ConnectOptions,
    resources: Vec<String>,
    json: bool,
) -> Result<u8, ClientError> {
    let client = Client::connect(opts).await?;
    let status = client.status(&resources).await?;
    if json {
        println!("{}", status_json(&status));
    } else {
        print!("{}", status_text(&status, now_ms()));
    }
    Ok(EXIT_OK)
}

/// The `status` table.
fn status_text(s: &v1::Status, now: u64) -> String {
    let mut out = String::new();
    if s.resources.is_empty() {
        let _ = writeln!(
            out,
            "no resource is held or waited for (revision {})",
            s.revision
        );
    }
    for r in &s.resources {
        let held = permits(r);
        if held.is_empty() {
            let _ = writeln!(out, "{}  (revision {})", r.resource, r.revision);
        } else {
            let _ = writeln!(out, "{}  (revision {}, {held})", r.resource, r.revision);
        }
        if r.holders.is_empty() && r.waiters.is_empty() {
            let _ = writeln!(out, "  free");
        }
        for h in &r.holders {
            let _ = write!(
                out,
                "  held     {:9}  lease {}  token {}  {}{}  for {}",
                mode(h),
                h.lease_id,
                h.fencing_token,
                who(h.holder.as_ref()),
                purpose(h),
                span(now.saturating_sub(h.granted_at_ms))
            );
            if let Some(p) = &h.progress {
                let _ = write!(out, "  progress {}", progress(p));
            }
            if h.detached {
                let _ = writeln!(out, "{}", condition(h));
            } else {
                let _ = writeln!(
                    out,
                    "  expires in {}{}",
                    span(u64::from(h.expires_in_ms)),
                    condition(h)
                );
            }
        }
        for w in &r.waiters {
            let _ = writeln!(
                out,
                "  {:>3}.     {:9}  lease {}  {}{}  waiting {}{}",
                w.position,
                mode(w),
                w.lease_id,
                who(w.holder.as_ref()),
                purpose(w),
                span(now.saturating_sub(w.queued_at_ms)),
                condition(w)
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

/// A status as JSON.
fn status_json(s: &v1::Status) -> Value {
    json!({
        "revision": s.revision,
        "resources": s.resources.iter().map(resource_json).collect::<Vec<_>>(),
        "queues": s.queues.iter().map(|q| json!({
            "queue": q.queue, "ready": q.ready, "unacked": q.unacked, "consumers": q.consumers,
        })).collect::<Vec<_>>(),
    })
}
