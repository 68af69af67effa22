//! `turnstile why RESOURCE`: why am I waiting? Who holds it, for what,
//! since when, how far it has got, who waits in what order, and an estimate
//! of the wait from the holder's progress rate.

use std::fmt::Write;

use turnstile_client::proto as v1;
use turnstile_client::{Client, ClientError, ConnectOptions};

use crate::EXIT_OK;
use crate::format::{condition, mode, now_ms, permits, progress, purpose, span, who};

pub async fn run(opts: ConnectOptions, resource: String, json: bool) -> Result<u8, ClientError> {
    let client = Client::connect(opts).await?;
    let status = client.status(std::slice::from_ref(&resource)).await?;
    let state = status
        .resources
        .into_iter()
        .find(|r| r.resource == resource);
    if json {
        crate::view::print(&state.as_ref().map(crate::view::ResourceView::from));
    } else {
        print!("{}", why_text(&resource, state.as_ref(), now_ms()));
    }
    Ok(EXIT_OK)
}

/// Remaining time of a holder, from its progress rate: `None` when unknown.
fn holder_remaining_ms(l: &v1::Lease, now: u64) -> Option<u64> {
    let p = l.progress.as_ref()?;
    if p.total == 0 || p.done == 0 || l.granted_at_ms == 0 {
        return None;
    }
    let held = now.saturating_sub(l.granted_at_ms);
    Some(held / u64::from(p.done) * u64::from(p.total.saturating_sub(p.done)))
}

/// The answer to "why am I waiting?" in one screen.
fn why_text(resource: &str, state: Option<&v1::ResourceState>, now: u64) -> String {
    let mut out = String::new();
    let Some(r) = state.filter(|r| !r.holders.is_empty() || !r.waiters.is_empty()) else {
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
        if h.stalled {
            let _ = writeln!(
                out,
                "  STUCK: it keeps its lease alive but has reported no progress for its stall time \
                 (not dead: its connection is open; not hung: it answers)."
            );
        }
        if h.detached {
            let _ = writeln!(
                out,
                "  DETACHED: its process is gone; the lease is kept for it to re-attach until its grace runs out."
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
                "  {}. {} {}{}, waiting {}{}",
                w.position,
                who(w.holder.as_ref()),
                mode(w),
                purpose(w),
                span(now.saturating_sub(w.queued_at_ms)),
                condition(w)
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
