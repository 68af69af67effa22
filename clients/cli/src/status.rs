//! `turnstile status [RESOURCE...]`: holders and waiters of resources (all
//! in use when none is named) and the queues, as a table or as JSON.

use turnstile_client::proto as v1;
use turnstile_client::{Client, ClientError, ConnectOptions};

use crate::EXIT_OK;
use crate::format::{condition, mode, now_ms, permits, progress, span, table, table_text, who};
use crate::view::{self, StatusView};

pub async fn run(
    opts: ConnectOptions,
    resources: Vec<String>,
    legend: bool,
    json: bool,
) -> Result<u8, ClientError> {
    let client = Client::connect(opts).await?;
    let status = client.status(&resources).await?;
    if json {
        view::print(&StatusView::from(&status));
    } else {
        print!("{}", status_text(&status, now_ms(), legend));
        if !legend {
            // Rows only on stdout; a script still hears that some are missing.
            eprint!("{}", left_out(&status));
        }
    }
    Ok(EXIT_OK)
}

/// Said below the tables (on stderr with --no-legend) when the broker left
/// resources or queues out to fit its answer in one frame.
pub(crate) fn left_out(s: &v1::Status) -> String {
    let mut out = String::new();
    if s.truncated {
        out.push_str(
            "more resources are in use than fit in one answer of the broker \
             (--max-frame-bytes): name them to see them\n",
        );
    }
    if s.queues_truncated {
        out.push_str(QUEUES_LEFT_OUT);
    }
    out
}

/// Said when the broker left queues out to fit its answer in one frame.
pub(crate) const QUEUES_LEFT_OUT: &str =
    "more queues exist than fit in one answer of the broker (--max-frame-bytes)\n";

/// The `status` tables: leases, then queues.
fn status_text(s: &v1::Status, now: u64, legend: bool) -> String {
    let mut out = String::new();
    if s.resources.is_empty() {
        // With --no-legend only rows, and there are none.
        if legend {
            out.push_str(&format!(
                "no resource is held or waited for (revision {})\n",
                s.revision
            ));
        }
    } else {
        let mut t = table(
            &[
                "RESOURCE",
                "STATE",
                "MODE",
                "LEASE",
                "TOKEN",
                "WHO",
                "PURPOSE",
                "FOR",
                "PROGRESS",
                "EXPIRES",
                "EST. WAIT",
            ],
            legend,
        );
        for r in &s.resources {
            // A counting semaphore says how many of its permits are held.
            let held = permits(r);
            let name = if held.is_empty() {
                r.resource.clone()
            } else {
                format!("{} ({held})", r.resource)
            };
            if r.holders.is_empty() && r.waiters.is_empty() {
                t.add_row(vec![name.clone(), "free".into()]);
            }
            for h in &r.holders {
                t.add_row(vec![
                    name.clone(),
                    format!("held{}", condition(h)),
                    mode(h).into(),
                    h.lease_id.to_string(),
                    h.fencing_token.to_string(),
                    who(h.holder.as_ref()),
                    h.purpose.clone(),
                    span(now.saturating_sub(h.granted_at_ms)),
                    h.progress.as_ref().map(progress).unwrap_or_default(),
                    span(u64::from(h.expires_in_ms)),
                ]);
            }
            for w in &r.waiters {
                t.add_row(vec![
                    name.clone(),
                    format!("waiting {}{}", w.position, condition(w)),
                    mode(w).into(),
                    w.lease_id.to_string(),
                    String::new(),
                    who(w.holder.as_ref()),
                    w.purpose.clone(),
                    span(now.saturating_sub(w.queued_at_ms)),
                    String::new(),
                    String::new(),
                    // The broker's estimate, as `run` and `why` show it.
                    if w.estimated_wait_ms > 0 {
                        format!("about {}", span(u64::from(w.estimated_wait_ms)))
                    } else {
                        String::new()
                    },
                ]);
            }
        }
        out.push_str(&table_text(&mut t));
    }
    if !s.queues.is_empty() {
        out.push('\n');
        out.push_str(&crate::queue::queues_table(&s.queues, legend));
    }
    if legend && (s.truncated || s.queues_truncated) {
        out.push('\n');
        out.push_str(&left_out(s));
    }
    out
}
