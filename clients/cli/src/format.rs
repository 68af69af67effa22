//! The formatting the CLI's commands share: spans and durations for people,
//! a peer, a progress report, a lease's mode, and a lease or a resource's
//! state as JSON. Each command's own output lives with the command
//! (`status.rs`, `why.rs`, `ping.rs`, `run.rs`, `watch.rs`, `queue.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// A lease's mode (`SHARED`, `EXCLUSIVE`, `?`), and a uid's login name on
/// this machine: shared with the JSON views.
pub use turnstile_view::{mode, user_name};

/// "service (root, pid 12)": the account name the broker got from the OS,
/// else this machine's name for the uid, else `uid N`; a name that already ends in `[PID]` loses it, so the pid
/// shows once.
pub fn who(p: Option<&v1::Peer>) -> String {
    match p {
        Some(p) => {
            let suffix = format!("[{}]", p.pid);
            let name = p
                .client_name
                .strip_suffix(&suffix)
                .unwrap_or(&p.client_name);
            // The account name the broker got from the OS, else this
            // machine's name for the uid.
            let user = if p.user.is_empty() {
                user(p.uid)
            } else {
                p.user.clone()
            };
            format!(
                "{} ({user}, pid {})",
                if name.is_empty() { "unnamed" } else { name },
                p.pid
            )
        }
        None => "unknown".into(),
    }
}

/// A user's login name, or `uid N` when the system has none for it.
/// (`user_name` is the name alone.)
pub fn user(uid: u32) -> String {
    user_name(uid).unwrap_or_else(|| format!("uid {uid}"))
}

/// The help of every `--no-legend` (`status`, `queue ls`, `history`).
pub const NO_LEGEND: &str =
    "Only the rows: no header line, no line saying there are none, no summary (for scripts)";

/// The one wording of a *stuck* lease (alive, keeping its lease, but no
/// progress for its stall time: `Lease.stalled`), in `status`, `why`,
/// `watch`, `top` and `run`'s waiting line alike.
pub const STUCK: &str = "stuck: alive but no progress for its stall time";

/// The one wording of a *detached* lease (its process gone, its place
/// kept within its grace for a re-attach: `Lease.detached`).
pub const DETACHED: &str = "detached: its process is gone, its place kept for a re-attach";

/// What a person should know of a lease beyond holding or waiting, as a
/// bracketed mark: [`STUCK`] or [`DETACHED`]. Dead (DISCONNECTED) and hung
/// (EXPIRED) leases are gone from the state and show as events. Empty for
/// neither.
pub fn mark(l: &v1::Lease) -> String {
    if l.detached {
        format!("[{DETACHED}]")
    } else if l.stalled {
        format!("[{STUCK}]")
    } else {
        String::new()
    }
}

/// [`mark`] after two spaces, or nothing.
pub fn condition(l: &v1::Lease) -> String {
    let m = mark(l);
    if m.is_empty() { m } else { format!("  {m}") }
}

/// "2 of 3 permits held", or nothing for a resource that is no semaphore.
pub fn permits(r: &v1::ResourceState) -> String {
    if r.capacity == 0 {
        String::new()
    } else {
        format!("{} of {} permits held", r.permits_held, r.capacity)
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

/// ` "the purpose"`, or nothing when there is none.
pub fn purpose(l: &v1::Lease) -> String {
    if l.purpose.is_empty() {
        String::new()
    } else {
        format!(" \"{}\"", l.purpose)
    }
}

/// Where a waiter stands: "position 2, held by service (root, pid 12) for
/// "backup" (2/5 (40%))". The one sentence `run`'s waiting line uses.
pub fn queued_line(position: u32, holder: Option<&v1::Lease>) -> String {
    let mut line = format!("position {position}");
    if let Some(h) = holder {
        line.push_str(&format!(", held by {}", who(h.holder.as_ref())));
        if !h.purpose.is_empty() {
            line.push_str(&format!(" for \"{}\"", h.purpose));
        }
        if let Some(p) = &h.progress {
            line.push_str(&format!(" ({})", progress(p)));
        }
        if h.detached {
            line.push_str(&format!(", {DETACHED}"));
        } else if h.stalled {
            line.push_str(&format!(", {STUCK}"));
        }
    }
    line
}

/// The broker's estimate of a wait as `run`, `why` and `status` show it:
/// ", about 12 s left"; nothing when there is none (0).
pub fn estimate(ms: u64) -> String {
    if ms == 0 {
        String::new()
    } else {
        format!(", about {} left", span(ms))
    }
}

/// A table for people: as wide as the terminal allows (cells wrap), no
/// borders, a header line unless `legend` is false. Correct with
/// non-ASCII names (widths are counted in columns, not bytes).
pub fn table(header: &[&str], legend: bool) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    if legend {
        t.set_header(header.iter().copied());
    }
    t
}

/// A table's text: each line without the padding comfy-table leaves at the
/// end, and a final newline.
pub fn table_text(t: &mut comfy_table::Table) -> String {
    // Two spaces between columns, none before the first.
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_names_the_pid_once() {
        let peer = v1::Peer {
            client_name: "agent[42]".into(),
            uid: 0,
            pid: 42,
            ..Default::default()
        };
        let shown = who(Some(&peer));
        assert_eq!(shown.matches("42").count(), 1, "{shown}");
        assert!(shown.starts_with("agent ("), "{shown}");
    }

    #[test]
    fn stuck_and_detached_read_the_same_everywhere() {
        let stuck = v1::Lease {
            stalled: true,
            ..Default::default()
        };
        let gone = v1::Lease {
            detached: true,
            ..Default::default()
        };
        assert_eq!(mark(&stuck), format!("[{STUCK}]"));
        assert_eq!(condition(&gone), format!("  [{DETACHED}]"));
        assert!(queued_line(1, Some(&stuck)).ends_with(STUCK));
        assert!(queued_line(1, Some(&gone)).ends_with(DETACHED));
        assert_eq!(mark(&v1::Lease::default()), "");
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(850), "850 ms");
        assert_eq!(span(12_000), "12 s");
        assert_eq!(span(185_000), "3 min 5 s");
        assert_eq!(span(7_440_000), "2 h 4 min");
    }
}
