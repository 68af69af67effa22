//! `turnstile why RESOURCE`: why am I waiting? Who holds it, for what,
//! since when, how far it has got, who waits in what order, and the
//! broker's estimate of each wait (`Lease.estimated_wait_ms`, the figure
//! `run`'s waiting line, `status` and `top` show too).

use std::fmt::Write;

use turnstile_client::proto as v1;
use turnstile_client::{Client, ClientError, ConnectOptions};

use crate::EXIT_OK;
use crate::format::{
    DETACHED, STUCK, condition, estimate, mode, now_ms, permits, progress, purpose, span, who,
};

pub async fn run(opts: ConnectOptions, resource: String, json: bool) -> Result<u8, ClientError> {
    let client = Client::connect(opts).await?;
    let status = client.status(std::slice::from_ref(&resource)).await?;
    // A resource nobody holds or waits for is free, whether or not the
    // broker still remembers it (docs/json.md: `null`).
    let state = status
        .resources
        .into_iter()
        .find(|r| r.resource == resource)
        .filter(|r| !r.holders.is_empty() || !r.waiters.is_empty());
    if json {
        crate::view::print(&state.as_ref().map(crate::view::ResourceView::from));
    } else {
        print!("{}", why_text(&resource, state.as_ref(), now_ms()));
    }
    Ok(EXIT_OK)
}

/// The answer to "why am I waiting?" in one screen.
fn why_text(resource: &str, state: Option<&v1::ResourceState>, now: u64) -> String {
    let mut out = String::new();
    let Some(r) = state else {
        let _ = writeln!(out, "{resource} is free: nobody holds it and nobody waits.");
        return out;
    };
    if r.holders.is_empty() {
        let _ = writeln!(out, "{resource} is not held right now.");
    }
    let held = permits(r);
    if !held.is_empty() {
        let _ = writeln!(out, "{resource} is a semaphore: {held}.");
    }
    for h in &r.holders {
        let _ = writeln!(
            out,
            "{resource} is held {} by {}{}",
            mode(h),
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
        // The mark `status`, `watch` and `top` show, and what it means.
        if h.detached {
            let _ = writeln!(
                out,
                "  [{DETACHED}]: the lease is kept until its grace runs out."
            );
        } else if h.stalled {
            let _ = writeln!(
                out,
                "  [{STUCK}]: not dead (its connection is open), not hung (it keeps its lease alive)."
            );
        }
    }
    if r.waiters.is_empty() {
        let _ = writeln!(out, "Nobody is waiting.");
    } else {
        let _ = writeln!(out, "Waiting, in the order they will be served:");
        for w in &r.waiters {
            let _ = writeln!(
                out,
                "  {}. {} {}{}, waiting {}{}{}",
                w.position,
                who(w.holder.as_ref()),
                mode(w),
                purpose(w),
                span(now.saturating_sub(w.queued_at_ms)),
                estimate(u64::from(w.estimated_wait_ms)),
                condition(w)
            );
        }
    }
    // The broker's estimate for the next in line, as `run` shows it.
    match r.waiters.first() {
        Some(next) if next.estimated_wait_ms > 0 => {
            let _ = writeln!(
                out,
                "The broker estimates the next in line waits about {} more.",
                span(u64::from(next.estimated_wait_ms))
            );
        }
        Some(_) => {
            let _ = writeln!(
                out,
                "No estimate yet: the holder reports no progress with a total, and no hold of \
                 {resource} has been seen to end."
            );
        }
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn why_on_a_free_resource_says_so() {
        assert_eq!(
            why_text("pcm", None, 0),
            "pcm is free: nobody holds it and nobody waits.\n"
        );
    }

    #[test]
    fn the_estimate_is_the_brokers() {
        let now = 100_000;
        let holder = v1::Lease {
            lease_id: 1,
            granted_at_ms: now - 5_000,
            progress: Some(v1::Progress {
                done: 1,
                total: 2,
                message: String::new(),
            }),
            ..Default::default()
        };
        let waiter = v1::Lease {
            lease_id: 2,
            position: 1,
            queued_at_ms: now - 1_000,
            estimated_wait_ms: 42_000,
            ..Default::default()
        };
        let r = v1::ResourceState {
            resource: "pcm".into(),
            holders: vec![holder],
            waiters: vec![waiter.clone()],
            ..Default::default()
        };
        let text = why_text("pcm", Some(&r), now);
        assert!(text.contains("waiting 1 s, about 42 s left"), "{text}");
        assert!(text.contains("waits about 42 s more"), "{text}");
        // Whatever the holder's progress rate says: the broker decides.
        let none = v1::ResourceState {
            waiters: vec![v1::Lease {
                estimated_wait_ms: 0,
                ..waiter
            }],
            ..r
        };
        let text = why_text("pcm", Some(&none), now);
        assert!(text.contains("No estimate yet"), "{text}");
        assert!(!text.contains("left"), "{text}");
    }
}
