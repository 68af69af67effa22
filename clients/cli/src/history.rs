//! `turnstile history RESOURCE [--since DUR] [--limit N]`: the leases of a
//! resource that ended, as the broker recorded them (who, what for, when
//! it queued, was granted and ended, how long it waited and held, how it
//! ended), and a summary: how many, waits and holds p50/p95/max. Answers
//! "why did my job wait twenty minutes yesterday?".

use std::time::{Duration, UNIX_EPOCH};

use turnstile_client::proto as v1;
use turnstile_client::{Client, ClientError, ConnectOptions, EventKind, ShortName, kinds};

use crate::EXIT_OK;
use crate::format::{now_ms, span, table, table_text, who};
use crate::view::{self, HistoryView};

/// `turnstile history`'s arguments.
#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// The resource
    resource: String,
    /// Only leases that ended within this long before now (`2h`, `1d`, `30m`)
    #[arg(long, value_name = "DURATION", value_parser = crate::run::parse_duration)]
    since: Option<Duration>,
    /// At most this many leases: the newest [default: as many as fit in one answer]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
    #[arg(long, help = crate::format::NO_LEGEND)]
    no_legend: bool,
}

pub async fn run(opts: ConnectOptions, args: HistoryArgs, json: bool) -> Result<u8, ClientError> {
    let now = now_ms();
    let since_ms = args.since.map_or(0, |d| {
        now.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .max(1)
    });
    let client = Client::connect(opts).await?;
    let history = client
        .history(&args.resource, since_ms, args.limit.unwrap_or(0))
        .await?;
    if json {
        view::print(&HistoryView::new(&args.resource, &history));
    } else {
        print!(
            "{}",
            history_text(&args.resource, &history, !args.no_legend)
        );
        if args.no_legend && history.truncated {
            // Rows only on stdout; a script still hears that some are missing.
            eprint!("{TRUNCATED}");
        }
    }
    Ok(EXIT_OK)
}

/// Said below the table (on stderr with --no-legend) when older entries
/// were left out.
const TRUNCATED: &str = "older entries left out: see them with --since or a larger --limit\n";

/// How a recorded lease ended, in a word: `released`, `expired`,
/// `disconnected`, `cancelled`, `timed out` (a CANCELLED whose wait ran
/// out), `revoked`.
pub fn ending(e: &v1::HistoryEntry) -> &'static str {
    match kinds::ended_by(e) {
        Some(EventKind::Released) => "released",
        Some(EventKind::Expired) => "expired",
        Some(EventKind::Disconnected) => "disconnected",
        Some(EventKind::Cancelled) if timed_out(e) => "timed out",
        Some(EventKind::Cancelled) => "cancelled",
        Some(EventKind::Revoked) => "revoked",
        Some(other) => other.short_name(),
        None => "?",
    }
}

/// A CANCELLED entry whose `max_wait` ran out (`HistoryEntry.timed_out`).
pub fn timed_out(e: &v1::HistoryEntry) -> bool {
    e.ended_by == v1::EventKind::Cancelled as i32 && e.timed_out
}

/// How long it waited: from its request to its grant, or to its end when
/// it was never granted.
pub fn wait_ms(e: &v1::HistoryEntry) -> u64 {
    let until = if e.granted_at_ms > 0 {
        e.granted_at_ms
    } else {
        e.ended_at_ms
    };
    until.saturating_sub(e.queued_at_ms)
}

/// How long it held the resource; `None` when it was never granted.
pub fn hold_ms(e: &v1::HistoryEntry) -> Option<u64> {
    (e.granted_at_ms > 0).then(|| e.ended_at_ms.saturating_sub(e.granted_at_ms))
}

/// p50, p95 and max of some spans (nearest rank); `None` for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    /// The median.
    pub p50: u64,
    /// The 95th percentile.
    pub p95: u64,
    /// The longest.
    pub max: u64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none.
    pub fn of(mut values: Vec<u64>) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let rank = |p: usize| values[(values.len() * p).div_ceil(100).max(1) - 1];
        Some(Spread {
            p50: rank(50),
            p95: rank(95),
            max: values[values.len() - 1],
        })
    }
}

/// Waits of every entry, and holds of the granted ones.
pub fn spreads(h: &v1::History) -> (Option<Spread>, Option<Spread>) {
    let waits = h.entries.iter().map(wait_ms).collect();
    let holds = h.entries.iter().filter_map(hold_ms).collect();
    (Spread::of(waits), Spread::of(holds))
}

/// "2026-11-30 08:41:05" (UTC) for epoch ms.
fn instant(ms: u64) -> String {
    let t = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string();
    t.trim_end_matches('Z').replacen('T', " ", 1)
}

/// An instant after `base` on the same day as `HH:MM:SS`, else in full.
fn instant_after(ms: u64, base: u64) -> String {
    let (full, base) = (instant(ms), instant(base));
    match (full.split_once(' '), base.split_once(' ')) {
        (Some((day, time)), Some((base_day, _))) if day == base_day => time.to_string(),
        _ => full,
    }
}

/// "EXCLUSIVE", "SHARED", "SHARED ×2" (permits of a semaphore).
fn mode_text(e: &v1::HistoryEntry) -> String {
    let mode = match kinds::entry_mode(e) {
        Some(m) => m.short_name(),
        None => "?",
    };
    if e.permits > 1 {
        format!("{mode} ×{}", e.permits)
    } else {
        mode.to_string()
    }
}

/// The table of entries (oldest first) and the summary below it.
pub fn history_text(resource: &str, h: &v1::History, legend: bool) -> String {
    if h.entries.is_empty() {
        return if legend {
            format!("no recorded lease of {resource} matches\n")
        } else {
            String::new()
        };
    }
    let mut t = table(
        &[
            "LEASE",
            "WHO",
            "PURPOSE",
            "MODE",
            "QUEUED (UTC)",
            "GRANTED",
            "ENDED",
            "WAIT",
            "HOLD",
            "HOW IT ENDED",
        ],
        legend,
    );
    for e in &h.entries {
        t.add_row(vec![
            e.lease_id.to_string(),
            who(e.holder.as_ref()),
            e.purpose.clone(),
            mode_text(e),
            instant(e.queued_at_ms),
            if e.granted_at_ms > 0 {
                instant_after(e.granted_at_ms, e.queued_at_ms)
            } else {
                "never".to_string()
            },
            instant_after(e.ended_at_ms, e.queued_at_ms),
            span(wait_ms(e)),
            hold_ms(e).map_or_else(|| "-".to_string(), span),
            ending(e).to_string(),
        ]);
    }
    let mut out = table_text(&mut t);
    if !legend {
        return out;
    }
    out.push('\n');
    out.push_str(&summary(h));
    if h.truncated {
        out.push_str(TRUNCATED);
    }
    out
}

/// "12 leases (10 granted); wait p50 1 s, p95 20 min 3 s, max 21 min 0 s;
/// hold p50 ..."
fn summary(h: &v1::History) -> String {
    let granted = h.entries.iter().filter(|e| e.granted_at_ms > 0).count();
    let (waits, holds) = spreads(h);
    let n = h.entries.len();
    let mut out = format!(
        "{n} lease{} ({granted} granted, {} never granted)\n",
        if n == 1 { "" } else { "s" },
        n - granted
    );
    let line = |what: &str, s: Option<Spread>| match s {
        Some(s) => format!(
            "{what}  p50 {}  p95 {}  max {}\n",
            span(s.p50),
            span(s.p95),
            span(s.max)
        ),
        None => format!("{what}  none\n"),
    };
    out.push_str(&line("wait", waits));
    out.push_str(&line("hold", holds));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        lease_id: u64,
        queued: u64,
        granted: u64,
        ended: u64,
        kind: EventKind,
    ) -> v1::HistoryEntry {
        v1::HistoryEntry {
            lease_id,
            resource: "pcm".into(),
            mode: v1::Mode::Exclusive as i32,
            purpose: format!("job {lease_id}"),
            holder: Some(v1::Peer {
                client_name: "pcmsvc".into(),
                uid: 0,
                pid: 4242,
                user: "root".into(),
                ..Default::default()
            }),
            queued_at_ms: queued,
            granted_at_ms: granted,
            ended_at_ms: ended,
            ended_by: kind as i32,
            fencing_token: if granted > 0 { lease_id + 40 } else { 0 },
            ..Default::default()
        }
    }

    /// Yesterday's history of `pcm`, as a snapshot (tests/snapshots).
    #[test]
    fn history_table_and_summary() {
        let t0 = 1_764_489_600_000; // 2025-11-30 08:00:00 UTC
        let mut agent = entry(3, t0 + 60_000, 0, t0 + 1_260_000, EventKind::Cancelled);
        agent.mode = v1::Mode::Shared as i32;
        agent.holder = Some(v1::Peer {
            client_name: "pcm-agent".into(),
            uid: 1000,
            pid: 777,
            user: "alice".into(),
            ..Default::default()
        });
        agent.purpose = "initialise".into();
        agent.detail =
            "lease 3 of pcm-agent (alice, pid 777) gave up waiting (max_wait reached)".into();
        agent.timed_out = true;
        let h = v1::History {
            entries: vec![
                entry(1, t0, t0, t0 + 1_200_000, EventKind::Released),
                agent,
                entry(
                    2,
                    t0 + 30_000,
                    t0 + 1_200_000,
                    t0 + 1_260_500,
                    EventKind::Expired,
                ),
                entry(
                    4,
                    t0 + 86_400_000,
                    t0 + 86_400_000,
                    t0 + 86_401_000,
                    EventKind::Disconnected,
                ),
            ],
            truncated: true,
        };
        let text = history_text("pcm", &h, true);
        crate::snapshot::check("turnstile-history.txt", &text);
        // --no-legend: the rows alone, for scripts.
        let rows = history_text("pcm", &h, false);
        assert_eq!(rows.lines().count(), h.entries.len(), "{rows}");
        assert!(rows.starts_with("1  pcmsvc (root, pid 4242)"), "{rows}");
        let none = v1::History::default();
        assert_eq!(history_text("pcm", &none, false), "");
        assert!(history_text("pcm", &none, true).starts_with("no recorded lease"));
        let (waits, holds) = spreads(&h);
        assert_eq!(waits.unwrap().max, 1_200_000);
        assert_eq!(holds.unwrap().p50, 60_500);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Spread::of((1..=100).collect()).unwrap();
        assert_eq!((s.p50, s.p95, s.max), (50, 95, 100));
        let s = Spread::of(vec![7]).unwrap();
        assert_eq!((s.p50, s.p95, s.max), (7, 7, 7));
        assert_eq!(Spread::of(Vec::new()), None);
    }

    #[test]
    fn a_wait_that_ran_out_is_timed_out() {
        let mut e = entry(1, 0, 0, 5, EventKind::Cancelled);
        assert_eq!(ending(&e), "cancelled");
        // The broker's flag says so, not its sentence.
        e.detail = "lease 1 of x gave up waiting (max_wait reached)".into();
        assert_eq!(ending(&e), "cancelled");
        e.timed_out = true;
        assert_eq!(ending(&e), "timed out");
        assert_eq!(wait_ms(&e), 5);
        assert_eq!(hold_ms(&e), None);
    }
}
