//! What `--json` prints: one `serde` struct per thing shown, the schema
//! documented in `docs/json.md`. Wall-clock instants come twice, as epoch
//! milliseconds (`*_ms`) and as RFC 3339 UTC text (`*_at`); a value that
//! does not apply (a waiter's fencing token, a lease with no purpose) is
//! `null`, never 0 or "".
//!
//! The views of the broker's answers (status, a resource, a lease, a peer)
//! live in `turnstile-view` (`clients/view`), shared with libturnstile;
//! the CLI's own views (history, a watch line) and the printing live here.

use serde::Serialize;
use turnstile_client::proto as v1;
pub use turnstile_view::{PeerView, QueueView, ResourceView, StatusView, rfc3339};

use crate::format;

fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn nonzero<T: Default + PartialEq>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

/// p50, p95 and max of some spans, in ms.
#[derive(Serialize)]
pub struct SpreadView {
    /// The median.
    pub p50_ms: u64,
    /// The 95th percentile (nearest rank).
    pub p95_ms: u64,
    /// The longest.
    pub max_ms: u64,
}

impl From<crate::history::Spread> for SpreadView {
    fn from(s: crate::history::Spread) -> SpreadView {
        SpreadView {
            p50_ms: s.p50,
            p95_ms: s.p95,
            max_ms: s.max,
        }
    }
}

/// One recorded lease of `turnstile history --json`.
#[derive(Serialize)]
pub struct HistoryEntryView {
    /// The lease's id (unique within one run of the broker).
    pub lease_id: u64,
    /// The resource.
    pub resource: String,
    /// "EXCLUSIVE" or "SHARED".
    pub mode: &'static str,
    /// Permits of a counting semaphore it held or waited for; `null`
    /// otherwise.
    pub permits: Option<u32>,
    /// What it was for.
    pub purpose: Option<String>,
    /// Who held it or waited for it.
    pub holder: Option<PeerView>,
    /// When it was asked for (epoch ms).
    pub queued_at_ms: u64,
    /// The same in RFC 3339.
    pub queued_at: Option<String>,
    /// When it was granted (epoch ms); `null` if never.
    pub granted_at_ms: Option<u64>,
    /// The same in RFC 3339.
    pub granted_at: Option<String>,
    /// When it ended (epoch ms).
    pub ended_at_ms: u64,
    /// The same in RFC 3339.
    pub ended_at: Option<String>,
    /// RELEASED, EXPIRED, DISCONNECTED, CANCELLED or REVOKED.
    pub ended_by: &'static str,
    /// A CANCELLED whose `--max-wait` ran out.
    pub timed_out: bool,
    /// The broker's sentence about the end.
    pub detail: Option<String>,
    /// The grant's fencing token; `null` if never granted.
    pub fencing_token: Option<u64>,
    /// From the request to the grant (or to the end, if never granted).
    pub wait_ms: u64,
    /// From the grant to the end; `null` if never granted.
    pub hold_ms: Option<u64>,
}

impl From<&v1::HistoryEntry> for HistoryEntryView {
    fn from(e: &v1::HistoryEntry) -> HistoryEntryView {
        use turnstile_client::{ShortName, kinds};
        HistoryEntryView {
            lease_id: e.lease_id,
            resource: e.resource.clone(),
            mode: kinds::entry_mode(e).map_or("?", ShortName::short_name),
            permits: nonzero(e.permits),
            purpose: text(&e.purpose),
            holder: e.holder.as_ref().map(PeerView::from),
            queued_at_ms: e.queued_at_ms,
            queued_at: rfc3339(e.queued_at_ms),
            granted_at_ms: nonzero(e.granted_at_ms),
            granted_at: rfc3339(e.granted_at_ms),
            ended_at_ms: e.ended_at_ms,
            ended_at: rfc3339(e.ended_at_ms),
            ended_by: kinds::ended_by(e).map_or("?", ShortName::short_name),
            timed_out: crate::history::timed_out(e),
            detail: text(&e.detail),
            fencing_token: nonzero(e.fencing_token),
            wait_ms: crate::history::wait_ms(e),
            hold_ms: crate::history::hold_ms(e),
        }
    }
}

/// The summary of `turnstile history --json`.
#[derive(Serialize)]
pub struct HistorySummaryView {
    /// Entries shown.
    pub count: usize,
    /// Of which granted.
    pub granted: usize,
    /// Waits of every entry; `null` when there are none.
    pub wait: Option<SpreadView>,
    /// Holds of the granted entries; `null` when there are none.
    pub hold: Option<SpreadView>,
}

/// `turnstile history --json`.
#[derive(Serialize)]
pub struct HistoryView {
    /// The resource asked about.
    pub resource: String,
    /// The recorded leases, oldest first.
    pub entries: Vec<HistoryEntryView>,
    /// Older entries that match were left out (by `--limit`, or to fit
    /// in one answer).
    pub truncated: bool,
    /// How many, and the spread of waits and holds.
    pub summary: HistorySummaryView,
}

impl HistoryView {
    /// The view of `resource`'s history.
    pub fn new(resource: &str, h: &v1::History) -> HistoryView {
        let (wait, hold) = crate::history::spreads(h);
        HistoryView {
            resource: resource.to_string(),
            entries: h.entries.iter().map(HistoryEntryView::from).collect(),
            truncated: h.truncated,
            summary: HistorySummaryView {
                count: h.entries.len(),
                granted: h.entries.iter().filter(|e| e.granted_at_ms > 0).count(),
                wait: wait.map(SpreadView::from),
                hold: hold.map(SpreadView::from),
            },
        }
    }
}

/// One line of `turnstile watch --json`.
#[derive(Serialize)]
pub struct WatchLineView<'a> {
    /// When the CLI printed it (epoch ms).
    pub time_ms: u64,
    /// The same in RFC 3339.
    pub time: Option<String>,
    /// The broker's revision of the change.
    pub revision: u64,
    /// SNAPSHOT, GRANTED, RELEASED, QUEUED, PROGRESS, EXPIRED, ...;
    /// HEARTBEAT carries no state.
    pub kind: &'a str,
    /// Several changes were folded into this one (a slow reader).
    pub coalesced: bool,
    /// The broker's words on the change.
    pub detail: Option<String>,
    /// The resource's state after the change; `null` for a heartbeat.
    pub state: Option<ResourceView>,
}

impl<'a> WatchLineView<'a> {
    /// A line for `kind` at `revision`, now.
    pub fn new(revision: u64, kind: &'a str, detail: &str, coalesced: bool) -> Self {
        let now = format::now_ms();
        WatchLineView {
            time_ms: now,
            time: rfc3339(now),
            revision,
            kind,
            coalesced,
            detail: text(detail),
            state: None,
        }
    }
}

/// Prints a view as one line of JSON.
pub fn print(view: &impl Serialize) {
    match serde_json::to_string(view) {
        Ok(line) => println!("{line}"),
        // Plain structs of strings and numbers always serialize.
        Err(e) => eprintln!("turnstile: cannot write JSON: {e}"),
    }
}
