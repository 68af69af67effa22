//! `turnstile watch`: one line per state change, or one JSON object per
//! line; it reconnects after a broker restart and resumes from the last
//! revision it saw (the broker says when it had to resync).

use std::time::Duration;

use turnstile_client::proto as v1;
use turnstile_client::{Client, ClientError, ConnectOptions};

use crate::format::{event_kind, now_ms, resource_json, span, who};

pub async fn watch(
    opts: ConnectOptions,
    resources: Vec<String>,
    json: bool,
) -> Result<u8, ClientError> {
    let mut revision = 0u64;
    let mut first = true;
    loop {
        let attempt = if first {
            opts.clone()
        } else {
            opts.clone().retry_for(Duration::from_secs(3600))
        };
        let client = match Client::connect(attempt).await {
            Ok(c) => c,
            Err(e) if first => return Err(e),
            Err(e) => {
                eprintln!("turnstile: {e}; still trying");
                continue;
            }
        };
        let mut stream = match client.watch(&resources, revision).await {
            Ok(s) => s,
            Err(e) if e.is_unavailable() && !first => continue,
            Err(e) => return Err(e),
        };
        let started = stream.started().clone();
        if !first {
            eprintln!(
                "turnstile: reconnected; {}",
                if started.resync {
                    format!(
                        "history did not reach back to revision {revision}: fresh state follows"
                    )
                } else {
                    format!("resumed after revision {revision}")
                }
            );
        }
        if first || started.resync {
            for r in &started.snapshot {
                print_state(started.revision, "SNAPSHOT", r, "", false, json);
            }
        }
        first = false;
        revision = started.revision.max(revision);
        while let Some(e) = stream.next().await {
            revision = revision.max(e.revision);
            let kind = event_kind(e.kind);
            match &e.state {
                Some(state) => print_state(e.revision, kind, state, &e.detail, e.coalesced, json),
                None => print_heartbeat(e.revision, kind, json),
            }
        }
        eprintln!("turnstile: connection to the broker lost; reconnecting");
    }
}

fn print_heartbeat(revision: u64, kind: &str, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({ "time_ms": now_ms(), "revision": revision, "kind": kind })
        );
    }
}

fn print_state(
    revision: u64,
    kind: &str,
    r: &v1::ResourceState,
    detail: &str,
    coalesced: bool,
    json: bool,
) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "time_ms": now_ms(),
                "revision": revision,
                "kind": kind,
                "coalesced": coalesced,
                "detail": detail,
                "state": resource_json(r),
            })
        );
        return;
    }
    let now = now_ms();
    let holders = if r.holders.is_empty() {
        "free".to_string()
    } else {
        r.holders
            .iter()
            .map(|h| {
                let mut s = who(h.holder.as_ref());
                if !h.purpose.is_empty() {
                    s.push_str(&format!(" \"{}\"", h.purpose));
                }
                s
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let waiters = if r.waiters.is_empty() {
        String::new()
    } else {
        format!(
            "; waiting: {}",
            r.waiters
                .iter()
                .map(|w| format!(
                    "{}. {} ({})",
                    w.position,
                    who(w.holder.as_ref()),
                    span(now.saturating_sub(w.queued_at_ms))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let time = chrono_like(now);
    println!(
        "{time}  rev {revision:<6} {kind:<12} {}  {holders}{waiters}{}{}",
        r.resource,
        if detail.is_empty() {
            String::new()
        } else {
            format!("  ({detail})")
        },
        if coalesced { "  [coalesced]" } else { "" },
    );
}

/// HH:MM:SS.mmm in UTC, without a date library.
fn chrono_like(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}
