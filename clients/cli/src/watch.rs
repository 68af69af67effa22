//! `turnstile watch`: one line per state change, or one JSON object per
//! line; it reconnects after a broker restart and resumes from the last
//! revision it saw (the broker says when it had to resync).

use std::collections::HashMap;

use turnstile_client::proto as v1;
use turnstile_client::{ClientError, ConnectOptions, ShortName, WatchItem, Watcher, kinds};

use crate::format::{now_ms, progress, span, who};
use crate::view::{self, ResourceView, WatchLineView};

pub async fn watch(
    opts: ConnectOptions,
    resources: Vec<String>,
    json: bool,
) -> Result<u8, ClientError> {
    let mut watcher = Watcher::start(opts, resources).await?;
    let mut lines = Lines::default();
    loop {
        match watcher.next().await {
            WatchItem::Snapshot {
                revision,
                states,
                resync,
            } => {
                if resync {
                    eprintln!(
                        "turnstile: the broker restarted or its history no longer reaches back: its whole state follows"
                    );
                    lines.holders.clear();
                }
                for r in &states {
                    lines.print_state(revision, "SNAPSHOT", r, "", false, json);
                }
            }
            WatchItem::Event(e) => {
                let kind = event_kind(&e);
                match &e.state {
                    Some(state) => {
                        lines.print_state(e.revision, kind, state, &e.detail, e.coalesced, json)
                    }
                    None => print_heartbeat(e.revision, kind, json),
                }
            }
            WatchItem::Disconnected(why) => eprintln!("turnstile: {why}; reconnecting"),
            WatchItem::Reconnected => eprintln!("turnstile: reconnected"),
        }
    }
}

/// The name of an event's kind without its prefix: `GRANTED`; `UNKNOWN`
/// for one this CLI does not know.
fn event_kind(e: &v1::WatchEvent) -> &'static str {
    kinds::event_kind(e).map_or("UNKNOWN", ShortName::short_name)
}

fn print_heartbeat(revision: u64, kind: &str, json: bool) {
    if json {
        view::print(&WatchLineView::new(revision, kind, "", false));
    }
}

/// What was printed last of each resource, so that a line names its
/// holders only when they changed (a PROGRESS line shows the progress).
#[derive(Default)]
struct Lines {
    holders: HashMap<String, String>,
}

impl Lines {
    fn print_state(
        &mut self,
        revision: u64,
        kind: &str,
        r: &v1::ResourceState,
        detail: &str,
        coalesced: bool,
        json: bool,
    ) {
        if json {
            let mut line = WatchLineView::new(revision, kind, detail, coalesced);
            line.state = Some(ResourceView::from(r));
            view::print(&line);
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
                    let mark = crate::format::mark(h);
                    if !mark.is_empty() {
                        s.push(' ');
                        s.push_str(&mark);
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let holders = if self.holders.get(&r.resource) == Some(&holders) {
            // The same holders as the last line: their progress, if any.
            let reports: Vec<String> = r
                .holders
                .iter()
                .filter_map(|h| h.progress.as_ref().map(progress))
                .collect();
            if reports.is_empty() {
                "same holders".to_string()
            } else {
                format!("progress {}", reports.join(", "))
            }
        } else {
            self.holders.insert(r.resource.clone(), holders.clone());
            holders
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
        println!(
            // Ten digits: revisions jump by 2^20 at each broker restart.
            "{}  rev {revision:<10} {kind:<12} {}  {holders}{waiters}{}{}",
            clock(now),
            r.resource,
            // The broker's detail of a grant, release, queueing or
            // progress names the holder again: shown for the other kinds.
            if detail.is_empty() || matches!(kind, "GRANTED" | "RELEASED" | "QUEUED" | "PROGRESS") {
                String::new()
            } else {
                format!("  ({detail})")
            },
            if coalesced { "  [coalesced]" } else { "" },
        );
    }
}

/// HH:MM:SS.mmm (UTC) without a date library.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}
