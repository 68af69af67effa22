//! The history table: one line per lease or queued request that ended
//! (DESIGN "History"), per resource, newest last, bounded per resource by
//! count and by age.
//!
//! Layout: table `history`, `(resource, n)` → a private protobuf record
//! ([`Line`]), `n` counting up from 1 per resource. Lines leave only from
//! the front, so a resource's lines are always the contiguous run
//! `first..=last`: its count is `last - first + 1`, found with two
//! lookups, and the oldest line is the first. The bounds are applied to a
//! resource each time lines are added to it, and to every resource by a
//! sweep on the first write after the store opens and once an hour after
//! (so that a resource nobody uses any more ages out too); a read also
//! leaves out what is older than the age bound.
//!
//! It decides nothing about leases: the dispatch layer says what ended.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use redb::{ReadableTable, TableDefinition};

use crate::core::{Ended, EventKind, Mode};

pub(super) const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");

/// Per-resource bounds of the history. Both are `turnstiled` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryBounds {
    /// Lines kept per resource (the newest); 0 keeps none.
    pub max_entries: u64,
    /// Lines older than this (by their end) are dropped, in ms; 0 = no
    /// age bound.
    pub max_age_ms: u64,
}

impl Default for HistoryBounds {
    /// 10 000 lines or 30 days per resource.
    fn default() -> HistoryBounds {
        HistoryBounds {
            max_entries: 10_000,
            max_age_ms: 30 * 24 * 3_600_000,
        }
    }
}

/// A lease that ended, with its times made wall-clock (Unix epoch ms) by
/// the dispatch layer, to be recorded. Encoded on the store's thread.
#[derive(Clone, Debug)]
pub struct HistoryLine {
    /// The lease as it was at its end.
    pub ended: Ended,
    /// When it was asked for (its grant's time if granted at once).
    pub queued_at_ms: u64,
    /// When it was granted; 0 = never.
    pub granted_at_ms: u64,
    /// When it ended.
    pub ended_at_ms: u64,
}

/// A question to the history table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The resource.
    pub resource: String,
    /// Only lines that ended at or after this (epoch ms); 0 = all.
    pub since_ms: u64,
    /// The newest this many at most; 0 = no count limit.
    pub limit: u32,
    /// The encoded lines returned add up to at most this many bytes (the
    /// newest are kept), so that the answer fits in one frame.
    pub max_bytes: usize,
    /// Wall-clock now (epoch ms), for the age bound.
    pub now_ms: u64,
    /// The bounds in force (the age bound hides older lines).
    pub bounds: HistoryBounds,
}

/// What a [`HistoryQuery`] found, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The lines.
    pub lines: Vec<RecordedLease>,
    /// Older lines that matched were left out (limit or size).
    pub truncated: bool,
}

/// One recorded lease, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedLease {
    /// The lease's id (unique within one run of the broker).
    pub lease_id: u64,
    /// Its resource.
    pub resource: String,
    /// Its mode (`None` for a record this broker does not know).
    pub mode: Option<Mode>,
    /// Permits it held or waited for (0: not a semaphore).
    pub permits: u32,
    /// What it was for.
    pub purpose: String,
    /// Its owner's name from Hello.
    pub client_name: String,
    /// Its owner's uid.
    pub uid: u32,
    /// Its owner's pid.
    pub pid: u32,
    /// Its owner's session id then.
    pub session_id: u64,
    /// Its owner's account name.
    pub user: String,
    /// Its owner's logon session.
    pub login_session: String,
    /// When it was asked for (epoch ms).
    pub queued_at_ms: u64,
    /// When it was granted (epoch ms); 0 = never.
    pub granted_at_ms: u64,
    /// When it ended (epoch ms).
    pub ended_at_ms: u64,
    /// What ended it (`None` for a kind this broker does not know).
    pub ended_by: Option<EventKind>,
    /// The broker's sentence about the end.
    pub detail: String,
    /// The grant's fencing token; 0 = never granted.
    pub fencing_token: u64,
}

/// The on-disk record of one line (kept apart from the wire types).
#[derive(Clone, PartialEq, prost::Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    lease_id: u64,
    /// 1 exclusive, 2 shared.
    #[prost(uint32, tag = "2")]
    mode: u32,
    #[prost(uint32, tag = "3")]
    permits: u32,
    #[prost(string, tag = "4")]
    purpose: String,
    #[prost(string, tag = "5")]
    client_name: String,
    #[prost(uint32, tag = "6")]
    uid: u32,
    #[prost(uint32, tag = "7")]
    pid: u32,
    #[prost(uint64, tag = "8")]
    session_id: u64,
    #[prost(string, tag = "9")]
    user: String,
    #[prost(string, tag = "10")]
    login_session: String,
    #[prost(uint64, tag = "11")]
    queued_at_ms: u64,
    #[prost(uint64, tag = "12")]
    granted_at_ms: u64,
    #[prost(uint64, tag = "13")]
    ended_at_ms: u64,
    /// See [`kind_code`].
    #[prost(uint32, tag = "14")]
    ended_by: u32,
    #[prost(string, tag = "15")]
    detail: String,
    #[prost(uint64, tag = "16")]
    fencing_token: u64,
}

/// The file's numbers for what ended a lease (stable: never renumbered).
fn kind_code(k: EventKind) -> u32 {
    match k {
        EventKind::Released => 1,
        EventKind::Expired => 2,
        EventKind::Disconnected => 3,
        EventKind::Cancelled => 4,
        EventKind::Revoked => 5,
        // Not an end; never recorded.
        _ => 0,
    }
}

fn kind_of(code: u32) -> Option<EventKind> {
    Some(match code {
        1 => EventKind::Released,
        2 => EventKind::Expired,
        3 => EventKind::Disconnected,
        4 => EventKind::Cancelled,
        5 => EventKind::Revoked,
        _ => return None,
    })
}

impl Line {
    fn of(h: &HistoryLine) -> Line {
        let l = &h.ended.lease;
        Line {
            lease_id: l.lease_id.0,
            mode: match l.mode {
                Mode::Exclusive => 1,
                Mode::Shared => 2,
            },
            permits: l.permits,
            purpose: l.purpose.to_string(),
            client_name: l.holder.client_name.clone(),
            uid: l.holder.uid,
            pid: l.holder.pid,
            session_id: l.holder.session.0,
            user: l.holder.user.clone(),
            login_session: l.holder.login_session.clone(),
            queued_at_ms: h.queued_at_ms,
            granted_at_ms: h.granted_at_ms,
            ended_at_ms: h.ended_at_ms,
            ended_by: kind_code(h.ended.kind),
            detail: h.ended.cause.to_string(),
            fencing_token: l.fencing.map_or(0, |f| f.0),
        }
    }

    fn read(self, resource: &str) -> RecordedLease {
        RecordedLease {
            lease_id: self.lease_id,
            resource: resource.to_string(),
            mode: match self.mode {
                1 => Some(Mode::Exclusive),
                2 => Some(Mode::Shared),
                _ => None,
            },
            permits: self.permits,
            purpose: self.purpose,
            client_name: self.client_name,
            uid: self.uid,
            pid: self.pid,
            session_id: self.session_id,
            user: self.user,
            login_session: self.login_session,
            queued_at_ms: self.queued_at_ms,
            granted_at_ms: self.granted_at_ms,
            ended_at_ms: self.ended_at_ms,
            ended_by: kind_of(self.ended_by),
            detail: self.detail,
            fencing_token: self.fencing_token,
        }
    }
}

/// The oldest end a line may have and still be kept; 0 = no age bound.
fn cutoff(bounds: HistoryBounds, now_ms: u64) -> u64 {
    if bounds.max_age_ms == 0 {
        0
    } else {
        now_ms.saturating_sub(bounds.max_age_ms)
    }
}

/// The first and last `n` of a resource's lines.
fn ends(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    resource: &str,
) -> Result<Option<(u64, u64)>, redb::Error> {
    let mut range = table.range((resource, 0)..=(resource, u64::MAX))?;
    let first = match range.next() {
        Some(e) => e?.0.value().1,
        None => return Ok(None),
    };
    let last = match range.next_back() {
        Some(e) => e?.0.value().1,
        None => first,
    };
    Ok(Some((first, last)))
}

/// Where a resource's lines stand: `first..=last` (empty when `first >
/// last`), and when the first one ended (epoch ms).
#[derive(Clone, Copy, Debug)]
struct Span {
    first: u64,
    last: u64,
    first_ended_ms: u64,
}

/// The [`Span`] of the resources written to lately, so that appending a
/// line costs one insert rather than two range lookups and a decode.
/// Forgotten whenever a transaction fails (it may describe what was not
/// committed) and when it grows past [`SPANS_KEPT`] resources.
#[derive(Debug, Default)]
pub(super) struct Spans(HashMap<Arc<str>, Span>);

/// Resources whose [`Span`] is kept.
const SPANS_KEPT: usize = 16_384;

impl Spans {
    /// Forgets everything (a transaction failed).
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    fn get(
        &mut self,
        table: &redb::Table<(&str, u64), &[u8]>,
        resource: &Arc<str>,
    ) -> Result<Span, redb::Error> {
        if let Some(span) = self.0.get(resource) {
            return Ok(*span);
        }
        if self.0.len() >= SPANS_KEPT {
            self.0.clear();
        }
        let span = match ends(table, resource)? {
            None => Span {
                first: 1,
                last: 0,
                first_ended_ms: 0,
            },
            Some((first, last)) => Span {
                first,
                last,
                first_ended_ms: ended_ms(table, resource, first)?,
            },
        };
        self.0.insert(resource.clone(), span);
        Ok(span)
    }
}

/// When line `n` of `resource` ended; 0 for one that is missing or does
/// not decode (so that the age bound drops it).
fn ended_ms(
    table: &redb::Table<(&str, u64), &[u8]>,
    resource: &str,
    n: u64,
) -> Result<u64, redb::Error> {
    Ok(match table.get((resource, n))? {
        Some(v) => Line::decode(v.value()).map_or(0, |l| l.ended_at_ms),
        None => 0,
    })
}

/// Appends `lines` (in order) and applies the bounds to the resources
/// they concern.
pub(super) fn append(
    table: &mut redb::Table<(&str, u64), &[u8]>,
    lines: &[HistoryLine],
    bounds: HistoryBounds,
    now_ms: u64,
    buf: &mut Vec<u8>,
    spans: &mut Spans,
) -> Result<(), redb::Error> {
    if bounds.max_entries == 0 {
        return Ok(());
    }
    let mut touched: Vec<Arc<str>> = Vec::new();
    for line in lines {
        let resource = &line.ended.lease.resource;
        let mut span = spans.get(table, resource)?;
        span.last += 1;
        if span.first > span.last - 1 {
            // It had none: this one is the first.
            span.first = span.last;
            span.first_ended_ms = line.ended_at_ms;
        }
        buf.clear();
        // Encoding into a Vec cannot run out of room.
        let _ = Line::of(line).encode(buf);
        table.insert((&**resource, span.last), buf.as_slice())?;
        spans.0.insert(resource.clone(), span);
        if !touched.contains(resource) {
            touched.push(resource.clone());
        }
    }
    let oldest_kept = cutoff(bounds, now_ms);
    for resource in touched {
        let Some(mut span) = spans.0.get(&resource).copied() else {
            continue;
        };
        let before = span.first;
        while span.first <= span.last
            && (span.last - span.first + 1 > bounds.max_entries
                || span.first_ended_ms < oldest_kept)
        {
            table.remove((&*resource, span.first))?;
            span.first += 1;
            if span.first <= span.last && span.last - span.first < bounds.max_entries {
                // Within the count: the age bound needs the next one's end.
                span.first_ended_ms = ended_ms(table, &resource, span.first)?;
            }
        }
        if span.first != before {
            spans.0.insert(resource, span);
        }
    }
    Ok(())
}

/// Drops a resource's oldest lines while there are more than the count
/// bound or they are older than the age bound.
fn bound(
    table: &mut redb::Table<(&str, u64), &[u8]>,
    resource: &str,
    bounds: HistoryBounds,
    now_ms: u64,
) -> Result<(), redb::Error> {
    let Some((mut first, last)) = ends(table, resource)? else {
        return Ok(());
    };
    let oldest_kept = cutoff(bounds, now_ms);
    while first <= last {
        let over = last - first + 1 > bounds.max_entries;
        let old = !over && oldest_kept > 0 && ended_ms(table, resource, first)? < oldest_kept;
        if !over && !old {
            break;
        }
        table.remove((resource, first))?;
        first += 1;
    }
    Ok(())
}

/// Applies the bounds to every resource.
pub(super) fn sweep(
    table: &mut redb::Table<(&str, u64), &[u8]>,
    bounds: HistoryBounds,
    now_ms: u64,
    spans: &mut Spans,
) -> Result<(), redb::Error> {
    // It moves the first lines of resources: their spans are read afresh.
    spans.clear();
    let mut resources: Vec<String> = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let next = match &from {
            None => table.first()?.map(|(k, _)| k.value().0.to_string()),
            Some(r) => table.range((r.as_str(), u64::MAX)..)?.find_map(|e| {
                e.ok()
                    .map(|(k, _)| k.value().0.to_string())
                    .filter(|n| n != r)
            }),
        };
        let Some(name) = next else { break };
        resources.push(name.clone());
        from = Some(name);
    }
    for r in resources {
        if bounds.max_entries == 0 {
            let Some((first, last)) = ends(table, &r)? else {
                continue;
            };
            for n in first..=last {
                table.remove((r.as_str(), n))?;
            }
        } else {
            bound(table, &r, bounds, now_ms)?;
        }
    }
    Ok(())
}

/// Answers a query: the newest lines that match, oldest first.
pub(super) fn read(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    q: &HistoryQuery,
) -> Result<Recorded, redb::Error> {
    let since = q.since_ms.max(cutoff(q.bounds, q.now_ms));
    let limit = if q.limit == 0 {
        usize::MAX
    } else {
        q.limit as usize
    };
    let mut found = Recorded::default();
    let mut bytes = 0usize;
    let resource = q.resource.as_str();
    for entry in table.range((resource, 0)..=(resource, u64::MAX))?.rev() {
        let (_, value) = entry?;
        // A line that does not decode is skipped: history is for reading.
        let Ok(line) = Line::decode(value.value()) else {
            continue;
        };
        if line.ended_at_ms < since {
            // Lines are in order of their end (one clock), give or take
            // a wall-clock step: stop at the first older one.
            break;
        }
        // The wire entry repeats the resource name beside the record.
        let cost = value.value().len() + resource.len() + 16;
        if found.lines.len() >= limit || bytes + cost > q.max_bytes {
            found.truncated = true;
            break;
        }
        bytes += cost;
        found.lines.push(line.read(resource));
    }
    found.lines.reverse();
    Ok(found)
}
