//! What `--json` prints: one `serde` struct per thing shown, the schema
//! documented in `docs/json.md`. Wall-clock instants come twice, as epoch
//! milliseconds (`*_ms`) and as RFC 3339 UTC text (`*_at`); a value that
//! does not apply (a waiter's fencing token, a lease with no purpose) is
//! `null`, never 0 or "".
//!
//! The views of the broker's answers live in `turnstile-view`
//! (`clients/view`), shared with libturnstile; the CLI's own (a watch
//! line) and the printing live here.

use serde::Serialize;
pub use turnstile_view::{QueueView, ResourceView, StatusView, rfc3339};

use crate::format;

fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
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
