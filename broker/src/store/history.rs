//! The history table: one line per lease or queued request that ended
//! (DESIGN "History"), per resource, newest last, bounded per resource by
//! count and by age.
//!
//! Layout: table `lease_history`, `(resource, n)` → a **batch**: the lines
//! of that resource recorded by one transaction (at most [`BATCH_LINES`]),
//! numbered `n, n + 1, ...` per resource from 1, in a compact encoding of
//! this file's own ([`encode_line`], [`write_batch`]). One row per
//! resource per commit rather than one per line: a redb insert cost more
//! than everything else recording a line did (callgrind, see the commit
//! that made it so). A
//! batch leaves only from the front and whole, so a resource's batches
//! hold the contiguous run of lines `first..=last`, the first batch holds
//! the oldest ones, and each batch's header says how many lines it holds
//! and when its newest ended.
//!
//! Bounds: a batch is dropped when the lines after it are enough for the
//! count bound, or when its newest line is older than the age bound. So
//! the file may keep up to one batch more than the count bound and lines
//! older than the age bound in a batch with newer ones; a read never shows
//! them (it counts the newest `max_entries` lines and leaves out what is
//! older than the age bound), so what `GetHistory` answers is exact. The
//! bounds are applied to a resource each time lines are added to it, and
//! to every resource by a sweep on the first write after the store opens
//! and once an hour after (so that a resource nobody uses any more ages
//! out too). The bounds over all resources drop whole histories, taken
//! from the user whose resources take most of them ([`evict`]).
//!
//! The detail sentence of an ordinary end is kept as data (how it ended,
//! whether it was held, its TTL) and written only when read, as watchers'
//! causes are.
//!
//! It decides nothing about leases: the dispatch layer says what ended.

use std::collections::HashMap;
use std::sync::Arc;

use prost::bytes::Buf as _;
use prost::encoding::decode_varint;
use redb::{ReadableTable, TableDefinition};

use crate::core::{Cause, Ended, Ending, EventKind, LeaseId, Mode, Peer, SessionId};

pub(super) const HISTORY: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("lease_history");

/// The table of the first history layout (one row per line), from builds
/// that never shipped: dropped when the store opens.
pub(super) const OLD_HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");

/// Most lines in one batch, so that a batch stays a few pages long and
/// what the count bound keeps beyond itself stays small.
const BATCH_LINES: usize = 256;

/// Bounds of the history, per resource and over all of them. All are
/// `turnstiled` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryBounds {
    /// Lines kept per resource (the newest); 0 keeps none.
    pub max_entries: u64,
    /// Lines older than this (by their end) are dropped, in ms; 0 = no
    /// age bound.
    pub max_age_ms: u64,
    /// Resources whose history is kept: past it, whole histories are
    /// dropped, those of the user whose resources take most of it first
    /// ([`evict`]). Any user may name resources: without it, one that
    /// takes a lease on a new name in a loop would grow the file without
    /// end (a line a name).
    pub max_resources: u64,
    /// Lines kept over all resources, dropped as for `max_resources`.
    pub max_lines: u64,
}

impl Default for HistoryBounds {
    /// 10 000 lines or 30 days per resource; 10 000 resources and
    /// 1 000 000 lines in all (about 30 MB in the file).
    fn default() -> HistoryBounds {
        HistoryBounds {
            max_entries: 10_000,
            max_age_ms: 30 * 24 * 3_600_000,
            max_resources: 10_000,
            max_lines: 1_000_000,
        }
    }
}

/// The times of a lease that ended, made wall-clock (Unix epoch ms) by
/// the dispatch layer, which journals the lease with them
/// ([`HistoryJournal::record`]) as soon as it ends, on the core task.
#[derive(Clone, Copy, Debug)]
pub struct LineTimes {
    /// When it was asked for (its grant's time if granted at once).
    pub queued_at_ms: u64,
    /// When it was granted; 0 = never.
    pub granted_at_ms: u64,
    /// When it ended.
    pub ended_at_ms: u64,
}

/// A lease that ended with its times, as the tests build them.
#[cfg(test)]
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

#[cfg(test)]
impl HistoryLine {
    /// Its times, as [`HistoryJournal::record`] takes them.
    pub fn times(&self) -> LineTimes {
        LineTimes {
            queued_at_ms: self.queued_at_ms,
            granted_at_ms: self.granted_at_ms,
            ended_at_ms: self.ended_at_ms,
        }
    }
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
    /// It left the queue because its `max_wait_ms` ran out.
    pub timed_out: bool,
}

/// The first byte of every batch written: its layout. Format 2 stores
/// each line's lease id, end and fencing token as the difference from the
/// line before it in the batch, and a TTL equal to the last one as a flag
/// ([`SAME_TTL`]): ~12 bytes a line in a flood instead of ~22, and the
/// bytes are what redb's commit costs (BENCHMARKS.md, twelfth session).
const BATCH_FORMAT: u8 = 2;

/// Batches of format 1 (the same without the differences) are still read.
const BATCH_FORMAT_ABSOLUTE: u8 = 1;

// A line's flags (the first varint of each line).
/// Same holder as the line before it in the batch: its fields are left out.
const SAME_HOLDER: u64 = 1;
/// Same purpose as the line before it: left out.
const SAME_PURPOSE: u64 = 1 << 1;
/// It was granted (its grant time follows).
const GRANTED: u64 = 1 << 2;
/// Its detail is an ordinary end (ending, TTL) kept as data.
const DETAIL_ENDING: u64 = 1 << 3;
/// Its detail is kept as text.
const DETAIL_TEXT: u64 = 1 << 4;
/// With [`DETAIL_ENDING`]: it was held (else it was queued).
const WAS_HOLDER: u64 = 1 << 5;
/// The mode's code ([`mode_code`]) sits at this bit, two bits wide.
const MODE_SHIFT: u32 = 6;
/// What ended it ([`kind_code`]) sits at this bit, three bits wide.
const KIND_SHIFT: u32 = 8;
/// Format 2, with [`DETAIL_ENDING`]: the TTL is the one of the last line
/// before it in the batch with [`DETAIL_ENDING`], and is left out.
const SAME_TTL: u64 = 1 << 11;

/// The file's numbers for what ended a lease (stable: never renumbered).
fn kind_code(k: EventKind) -> u64 {
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

fn kind_of(code: u64) -> Option<EventKind> {
    Some(match code {
        1 => EventKind::Released,
        2 => EventKind::Expired,
        3 => EventKind::Disconnected,
        4 => EventKind::Cancelled,
        5 => EventKind::Revoked,
        _ => return None,
    })
}

fn mode_code(m: Mode) -> u64 {
    match m {
        Mode::Exclusive => 1,
        Mode::Shared => 2,
    }
}

fn mode_of(code: u64) -> Option<Mode> {
    match code {
        1 => Some(Mode::Exclusive),
        2 => Some(Mode::Shared),
        _ => None,
    }
}

/// The file's numbers for how a lease ended (stable).
fn ending_code(e: Ending) -> u64 {
    match e {
        Ending::Released => 1,
        Ending::Cancelled => 2,
        Ending::Expired => 3,
        Ending::TimedOut => 4,
        Ending::Disconnected => 5,
        Ending::GraceExpired => 6,
        Ending::Revoked => 7,
    }
}

fn ending_of(code: u64) -> Option<Ending> {
    Some(match code {
        1 => Ending::Released,
        2 => Ending::Cancelled,
        3 => Ending::Expired,
        4 => Ending::TimedOut,
        5 => Ending::Disconnected,
        6 => Ending::GraceExpired,
        7 => Ending::Revoked,
        _ => return None,
    })
}

/// Appends `v` as a varint (the encoding prost's `decode_varint` reads
/// back). Not prost's `encode_varint`: through its `BufMut` it took ~30
/// instructions a number, a quarter of what encoding a line cost
/// (callgrind); a line is encoded on the core task.
#[inline]
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends `v - before` (wrapping) as a zigzag varint: small either way.
#[inline]
fn put_delta(buf: &mut Vec<u8>, v: u64, before: u64) {
    put_varint(buf, zigzag(v, before));
}

/// `v - before` (wrapping), zigzagged: a small number either way.
#[inline]
fn zigzag(v: u64, before: u64) -> u64 {
    let d = v.wrapping_sub(before) as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

/// The `v` that [`zigzag`] made `z` of.
#[inline]
fn unzigzag(z: u64, before: u64) -> u64 {
    let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
    before.wrapping_add(d as u64)
}

/// Reads back what [`put_delta`] wrote.
fn get_delta(value: &mut &[u8], before: u64) -> Option<u64> {
    Some(unzigzag(decode_varint(value).ok()?, before))
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// One ended lease as a [`HistoryJournal`] reads it back
/// ([`HistoryJournal::entries`]): its resource and holder as indices into
/// the journal's tables ([`Interned`]), its texts in the journal's arena.
/// The writer's thread encodes each into its resource's batch
/// ([`StagedHistory::add`]).
#[derive(Clone, Copy, Debug)]
struct Entry {
    resource: u32,
    holder: u32,
    /// The purpose, in the journal's `text`.
    purpose: Text,
    /// A detail kept as text ([`DETAIL_TEXT`]), in the journal's `text`.
    detail: Text,
    /// The line's flags as a batch stores them, without the `SAME_*` ones.
    flags: u32,
    permits: u32,
    /// With [`DETAIL_ENDING`]: how it ended ([`ending_code`]).
    ending: u32,
    /// With [`DETAIL_ENDING`]: its TTL.
    ttl_ms: u32,
    lease_id: u64,
    fencing: u64,
    ended_at_ms: u64,
    queued_at_ms: u64,
    granted_at_ms: u64,
}

/// Where a string lies in a journal's `text`: offset and length.
#[derive(Clone, Copy, Debug, Default)]
struct Text(u32, u32);

/// Values that many lines share (resources, holders), kept once per
/// journal and found by the address of their `Arc`: a lookup in a small
/// table per line instead of a copy of their strings. The table holds a
/// clone of each `Arc`, so that no address is reused for another value
/// while it is in the table.
#[derive(Debug)]
struct Interned<T: ?Sized> {
    items: Vec<Arc<T>>,
    index: HashMap<usize, u32, foldhash::fast::RandomState>,
}

impl<T: ?Sized> Default for Interned<T> {
    fn default() -> Interned<T> {
        Interned {
            items: Vec::new(),
            index: HashMap::default(),
        }
    }
}

impl<T: ?Sized> Interned<T> {
    /// Room for as many values as `other` holds.
    fn with_room_of(other: &Interned<T>) -> Interned<T> {
        Interned {
            items: Vec::with_capacity(other.items.len()),
            index: HashMap::with_capacity_and_hasher(other.items.len(), Default::default()),
        }
    }

    /// The index of `value`, added if new; `None` past `u32::MAX` values.
    #[inline]
    fn id(&mut self, value: &Arc<T>) -> Option<u32> {
        let key = Arc::as_ptr(value).cast::<()>().addr();
        if let Some(&i) = self.index.get(&key) {
            return Some(i);
        }
        let i = u32::try_from(self.items.len()).ok()?;
        self.items.push(Arc::clone(value));
        self.index.insert(key, i);
        Some(i)
    }

    fn get(&self, id: u32) -> Option<&Arc<T>> {
        self.items.get(id as usize)
    }
}

/// Leases that ended, in the order they ended: what the dispatch layer
/// gathers on the core task for a second and hands to the store's writer
/// thread, which groups them per resource ([`StagedHistory::add`]),
/// encodes them and inserts them.
///
/// Recording a lease is one line of varints appended where the last one
/// ended (its numbers, the lease id, token and end as differences from
/// the line before: ~18 bytes in the bench's flood), with two lookups of
/// an `Arc`'s address in small tables (its resource and its holder, each
/// kept once per journal) and its purpose copied, if it has one: no
/// string of the holder or resource is copied. Until the sixteenth
/// session a line was a fixed-size 80-byte [`Entry`]: fewer instructions,
/// but the core task paid for its stores to fresh memory at the next
/// locked instruction (perf, the flood: the `Ended`'s drop right after
/// took 4.6–5.0 % of the broker's samples against 1.7 % not recording,
/// 2.3–2.6 % with these lines), and a second's journal was 4–5 times the
/// size. Encoding each line whole there (its strings too, through prost),
/// ~580 instructions, was most of what recording cost the core task at
/// first (BENCHMARKS.md "Recording history"). Grouping on the core task instead
/// (a map lookup, the resource's entry and its batch's tail, for one line
/// each time) cost it a cache miss at each of the three in a flood over
/// many resources; the writer's thread groups a second's lines in one go.
/// The lease's own strings are never handed over: they are freed by the
/// thread that allocated them (a string freed on the writer's thread made
/// the core task's allocations slower).
#[derive(Debug, Default)]
pub struct HistoryJournal {
    /// The lines, each an [`Entry`] written as varints, its lease id,
    /// fencing token and end as differences from the line before
    /// (`last`), its other times as how long before its end
    /// ([`HistoryJournal::entries`] reads them back).
    lines: Vec<u8>,
    /// How many lines `lines` holds.
    count: usize,
    /// The numbers of the last line written, which the next is written
    /// against.
    last: Deltas,
    resources: Interned<str>,
    holders: Interned<Peer>,
    /// Purposes and detail sentences, one after the other, in the order
    /// of the lines.
    text: Vec<u8>,
}

/// The numbers of a journal's line that the next line stores as a
/// difference from them.
#[derive(Clone, Copy, Debug, Default)]
struct Deltas {
    lease_id: u64,
    fencing: u64,
    ended_at_ms: u64,
}

/// Most bytes one journal line takes: eight numbers of at most 5 bytes
/// (32-bit ones) and five of at most 10.
const JOURNAL_LINE_MAX: usize = 8 * 5 + 5 * 10;

/// One journal line being written, on the stack: its bytes go to the
/// journal in one copy.
struct LineBytes {
    buf: [u8; JOURNAL_LINE_MAX],
    len: usize,
}

impl LineBytes {
    fn new() -> LineBytes {
        LineBytes {
            buf: [0; JOURNAL_LINE_MAX],
            len: 0,
        }
    }

    /// Appends `v` as a varint (as [`put_varint`]).
    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    /// Appends `v - before` (wrapping) as a zigzag varint (as [`put_delta`]).
    #[inline]
    fn delta(&mut self, v: u64, before: u64) {
        self.varint(zigzag(v, before));
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        // Never full: a line's numbers fit in `JOURNAL_LINE_MAX`.
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// Reads a journal's lines back, in order ([`HistoryJournal::entries`]).
struct JournalLines<'a> {
    rest: &'a [u8],
    /// Where the next line's texts start in the journal's `text`.
    text_at: u32,
    last: Deltas,
}

impl Iterator for JournalLines<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.rest.is_empty() {
            return None;
        }
        let entry = self.line();
        debug_assert!(
            entry.is_some(),
            "a history journal line that does not read back"
        );
        entry
    }
}

impl JournalLines<'_> {
    fn line(&mut self) -> Option<Entry> {
        let small = |r: &mut Self| u32::try_from(r.varint()?).ok();
        let (resource, holder, flags) = (small(self)?, small(self)?, small(self)?);
        let permits = small(self)?;
        let (mut ending, mut ttl_ms) = (0, 0);
        if u64::from(flags) & DETAIL_ENDING != 0 {
            (ending, ttl_ms) = (small(self)?, small(self)?);
        }
        let detail_len = if u64::from(flags) & DETAIL_TEXT != 0 {
            small(self)?
        } else {
            0
        };
        let purpose_len = small(self)?;
        let lease_id = self.delta(self.last.lease_id)?;
        let fencing = self.delta(self.last.fencing)?;
        let ended_at_ms = self.delta(self.last.ended_at_ms)?;
        let queued_at_ms = ended_at_ms.wrapping_sub(self.varint()?);
        let granted_at_ms = if u64::from(flags) & GRANTED != 0 {
            ended_at_ms.wrapping_sub(self.varint()?)
        } else {
            0
        };
        self.last = Deltas {
            lease_id,
            fencing,
            ended_at_ms,
        };
        // The detail was put in the text before the purpose.
        let detail = self.text(detail_len);
        let purpose = self.text(purpose_len);
        Some(Entry {
            resource,
            holder,
            purpose,
            detail,
            flags,
            permits,
            ending,
            ttl_ms,
            lease_id,
            fencing,
            ended_at_ms,
            queued_at_ms,
            granted_at_ms,
        })
    }

    /// The next varint (as [`LineBytes::varint`] wrote it). Not prost's
    /// `decode_varint`: through its `Buf` it took as long as grouping
    /// the line did (perf, BENCHMARKS.md sixteenth session).
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.rest.split_first()?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        // More than ten bytes: not what `LineBytes` writes.
        None
    }

    /// The next difference (as [`LineBytes::delta`] wrote it) added to
    /// `before`.
    #[inline]
    fn delta(&mut self, before: u64) -> Option<u64> {
        Some(unzigzag(self.varint()?, before))
    }

    /// The next `len` bytes of the journal's text.
    fn text(&mut self, len: u32) -> Text {
        if len == 0 {
            return Text::default();
        }
        let at = self.text_at;
        self.text_at = at.saturating_add(len);
        Text(at, len)
    }
}

impl HistoryJournal {
    /// Room for as many lines as `other` holds (the next second of a
    /// flood ends about as many leases as the last one).
    pub fn with_room_of(other: &HistoryJournal) -> HistoryJournal {
        HistoryJournal {
            lines: Vec::with_capacity(other.lines.len()),
            count: 0,
            last: Deltas::default(),
            resources: Interned::with_room_of(&other.resources),
            holders: Interned::with_room_of(&other.holders),
            text: Vec::with_capacity(other.text.len()),
        }
    }

    /// Appends the lease that `ended`, with its times.
    pub fn record(&mut self, ended: &Ended, times: LineTimes) {
        let l = &ended.lease;
        let (Some(resource), Some(holder)) =
            (self.resources.id(&l.resource), self.holders.id(&l.holder))
        else {
            // Past 4 billion resources in one journal: never.
            return;
        };
        let ending = match &ended.cause {
            Cause::Ended {
                ending,
                was_holder,
                ttl_ms,
                ..
            } => Some((*ending, *was_holder, *ttl_ms)),
            _ => None,
        };
        let mut flags = (mode_code(l.mode) << MODE_SHIFT) | (kind_code(ended.kind) << KIND_SHIFT);
        if times.granted_at_ms != 0 {
            flags |= GRANTED;
        }
        let (mut code, mut ttl_ms) = (0, 0);
        if let Some((e, was_holder, ttl)) = ending {
            flags |= DETAIL_ENDING;
            if was_holder {
                flags |= WAS_HOLDER;
            }
            code = ending_code(e) as u32;
            ttl_ms = ttl;
        }
        let detail = match (&ended.cause, ending) {
            (Cause::None, _) | (_, Some(_)) => Text::default(),
            // Rare (a revocation, a fleet loss): written now.
            (cause, None) => {
                flags |= DETAIL_TEXT;
                self.put_text(&cause.to_string())
            }
        };
        let purpose = self.put_text(&l.purpose);
        let fencing = l.fencing.map_or(0, |f| f.0);
        let mut b = LineBytes::new();
        b.varint(u64::from(resource));
        b.varint(u64::from(holder));
        b.varint(flags);
        b.varint(u64::from(l.permits));
        if flags & DETAIL_ENDING != 0 {
            b.varint(u64::from(code));
            b.varint(u64::from(ttl_ms));
        }
        if flags & DETAIL_TEXT != 0 {
            b.varint(u64::from(detail.1));
        }
        b.varint(u64::from(purpose.1));
        b.delta(l.lease_id.0, self.last.lease_id);
        b.delta(fencing, self.last.fencing);
        b.delta(times.ended_at_ms, self.last.ended_at_ms);
        b.varint(times.ended_at_ms.wrapping_sub(times.queued_at_ms));
        if flags & GRANTED != 0 {
            b.varint(times.ended_at_ms.wrapping_sub(times.granted_at_ms));
        }
        self.last = Deltas {
            lease_id: l.lease_id.0,
            fencing,
            ended_at_ms: times.ended_at_ms,
        };
        self.lines.extend_from_slice(b.bytes());
        self.count += 1;
    }

    /// Appends `line` (the tests' lines).
    #[cfg(test)]
    pub fn record_line(&mut self, line: &HistoryLine) {
        self.record(&line.ended, line.times());
    }

    /// Copies `s` into the arena (an empty one costs nothing).
    fn put_text(&mut self, s: &str) -> Text {
        if s.is_empty() {
            return Text::default();
        }
        match (u32::try_from(self.text.len()), u32::try_from(s.len())) {
            (Ok(at), Ok(len)) if at.checked_add(len).is_some() => {
                self.text.extend_from_slice(s.as_bytes());
                Text(at, len)
            }
            // Past 4 GiB of text in one journal: never (a hand-over comes
            // first); the line keeps no text rather than a wrong one.
            _ => Text::default(),
        }
    }

    /// A string of the arena ("" for one that is not there: a bug).
    fn text(&self, t: Text) -> &[u8] {
        let (at, len) = (t.0 as usize, t.1 as usize);
        self.text.get(at..at + len).unwrap_or_default()
    }

    /// Lines recorded.
    pub fn lines(&self) -> usize {
        self.count
    }

    /// The lines, in the order they were recorded.
    fn entries(&self) -> JournalLines<'_> {
        JournalLines {
            rest: &self.lines,
            text_at: 0,
            last: Deltas::default(),
        }
    }

    /// Bytes recorded: the lines and their texts.
    pub fn bytes(&self) -> usize {
        self.lines.len() + self.text.len()
    }

    /// Nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The holder and purpose of the line last encoded into a batch (as
/// encoded), which the next line of that batch leaves out when they are
/// the same (meaningless while the batch is empty). The buffers are kept
/// from batch to batch.
#[derive(Debug)]
struct Before {
    holder: Vec<u8>,
    /// The holder's index in the journal being added, when `holder` is
    /// known to be that one's ([`NO_HOLDER`]: not known): a line of the
    /// same holder is then told without encoding its fields.
    holder_id: u32,
    purpose: Vec<u8>,
    /// The numbers the next line is stored as differences from.
    numbers: Numbers,
}

impl Default for Before {
    fn default() -> Before {
        Before {
            holder: Vec::new(),
            holder_id: NO_HOLDER,
            purpose: Vec::new(),
            numbers: Numbers::default(),
        }
    }
}

/// What a format 2 line is stored relative to: the line before it in its
/// batch (all 0 before the first line).
#[derive(Clone, Copy, Debug, Default)]
struct Numbers {
    lease_id: u64,
    ended_at_ms: u64,
    fencing: u64,
    /// The TTL of the last line with [`DETAIL_ENDING`].
    ttl_ms: Option<u32>,
}

/// No holder of the journal being added (see [`Before::holder_id`]).
const NO_HOLDER: u32 = u32::MAX;

/// Encodes a holder's fields as a batch stores them.
fn encode_holder(p: &Peer, buf: &mut Vec<u8>) {
    put_str(buf, &p.client_name);
    put_varint(buf, u64::from(p.uid));
    put_varint(buf, u64::from(p.pid));
    put_varint(buf, p.session.0);
    put_str(buf, &p.user);
    put_str(buf, &p.login_session);
}

/// A batch being staged: its lines encoded, without the header
/// ([`write_batch`] puts it in front).
#[derive(Debug, Default)]
struct StagedBatch {
    body: Vec<u8>,
    lines: u64,
    newest_ms: u64,
    /// The uid of its first line's holder ([`Span::owner`]).
    first_uid: u32,
}

/// One resource's staged lines, in batches of at most [`BATCH_LINES`]; the
/// last one is still filling.
#[derive(Debug)]
struct StagedResource {
    resource: Arc<str>,
    batches: std::collections::VecDeque<StagedBatch>,
    lines: u64,
    /// The last line of the batch filling.
    before: Before,
}

/// Lines to be committed, grouped per resource in order of their first
/// line, in batches as the table keeps them: made on the store's writer
/// thread from what the dispatch layer recorded ([`HistoryJournal`]),
/// then inserted.
///
/// The count bound already applies here: a resource's oldest staged batch
/// is dropped once the lines after it are enough for it.
#[derive(Debug, Default)]
pub struct StagedHistory {
    resources: Vec<StagedResource>,
    index: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    lines: usize,
    /// A holder's fields, encoded to be compared with a batch's last.
    scratch: Vec<u8>,
}

impl StagedHistory {
    /// Lines staged (and not dropped by the count bound).
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Bytes of the batches' bodies (for tests of what grouping saves).
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.resources
            .iter()
            .flat_map(|r| &r.batches)
            .map(|b| b.body.len())
            .sum()
    }

    /// Nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Forgets everything staged (committed, or failed to be).
    pub fn clear(&mut self) {
        self.resources.clear();
        self.index.clear();
        self.lines = 0;
    }

    /// The lines of `journal`, grouped; at most `max_entries` lines of a
    /// resource are kept beyond its oldest batch (0: none at all).
    pub fn from_journal(journal: &HistoryJournal, max_entries: u64) -> StagedHistory {
        let mut staged = StagedHistory::default();
        staged.add(journal, max_entries);
        staged
    }

    /// Stages the lines of `journal` after those staged before, each into
    /// its resource's batch filling, leaving out a holder or a purpose
    /// equal to the line before's in that batch; keeps at most
    /// `max_entries` lines of a resource beyond its oldest staged batch
    /// (0: stages nothing).
    pub fn add(&mut self, journal: &HistoryJournal, max_entries: u64) {
        if max_entries == 0 {
            return;
        }
        // Holder indices are the journal's own.
        for r in &mut self.resources {
            r.before.holder_id = NO_HOLDER;
        }
        // Where each of the journal's resources is staged: its name is
        // looked up once per journal, not once per line.
        let mut staged_at: Vec<Option<usize>> = vec![None; journal.resources.items.len()];
        for entry in journal.entries() {
            let Some(at) = staged_at.get_mut(entry.resource as usize) else {
                debug_assert!(false, "a history journal line of no resource");
                continue;
            };
            let i = match *at {
                Some(i) => i,
                None => {
                    let Some(name) = journal.resources.get(entry.resource) else {
                        continue;
                    };
                    let i = self.staged_index(name);
                    *at = Some(i);
                    i
                }
            };
            let Some(holder) = journal.holders.get(entry.holder) else {
                debug_assert!(false, "a history journal line of no holder");
                continue;
            };
            self.add_line(i, &entry, holder, journal, max_entries);
        }
    }

    /// Where `resource`'s lines are staged, added if new.
    fn staged_index(&mut self, resource: &Arc<str>) -> usize {
        if let Some(&i) = self.index.get(&**resource) {
            return i;
        }
        self.index
            .insert(Arc::clone(resource), self.resources.len());
        self.resources.push(StagedResource {
            resource: Arc::clone(resource),
            batches: std::collections::VecDeque::new(),
            lines: 0,
            before: Before::default(),
        });
        self.resources.len() - 1
    }

    fn add_line(
        &mut self,
        i: usize,
        e: &Entry,
        holder: &Peer,
        journal: &HistoryJournal,
        max_entries: u64,
    ) {
        let Some(r) = self.resources.get_mut(i) else {
            return;
        };
        if r.batches
            .back()
            .is_none_or(|b| b.lines as usize >= BATCH_LINES)
        {
            r.batches.push_back(StagedBatch {
                // A few lines' worth (the first holds the holder's strings).
                body: Vec::with_capacity(128),
                lines: 0,
                newest_ms: 0,
                first_uid: holder.uid,
            });
        }
        let Some(batch) = r.batches.back_mut() else {
            return;
        };
        let b = &mut r.before;
        let any = batch.lines > 0;
        if !any {
            b.numbers = Numbers::default();
        }
        let same_holder = any
            && (b.holder_id == e.holder || {
                self.scratch.clear();
                encode_holder(holder, &mut self.scratch);
                same(&self.scratch, &b.holder)
            });
        if !same_holder {
            b.holder.clear();
            encode_holder(holder, &mut b.holder);
        }
        b.holder_id = e.holder;
        let purpose = journal.text(e.purpose);
        let same_purpose = any && same(&b.purpose, purpose);
        if !same_purpose {
            b.purpose.clear();
            b.purpose.extend_from_slice(purpose);
        }
        let mut flags = u64::from(e.flags);
        if same_holder {
            flags |= SAME_HOLDER;
        }
        if same_purpose {
            flags |= SAME_PURPOSE;
        }
        let n = &mut b.numbers;
        if flags & DETAIL_ENDING != 0 {
            if n.ttl_ms == Some(e.ttl_ms) {
                flags |= SAME_TTL;
            }
            n.ttl_ms = Some(e.ttl_ms);
        }
        let body = &mut batch.body;
        put_varint(body, flags);
        put_delta(body, e.lease_id, n.lease_id);
        put_varint(body, u64::from(e.permits));
        if !same_purpose {
            put_varint(body, purpose.len() as u64);
            body.extend_from_slice(purpose);
        }
        if !same_holder {
            body.extend_from_slice(&b.holder);
        }
        // Times as the end and how long before it (small numbers).
        put_delta(body, e.ended_at_ms, n.ended_at_ms);
        put_varint(body, e.ended_at_ms.wrapping_sub(e.queued_at_ms));
        if flags & GRANTED != 0 {
            put_varint(body, e.ended_at_ms.wrapping_sub(e.granted_at_ms));
        }
        put_delta(body, e.fencing, n.fencing);
        if flags & DETAIL_ENDING != 0 {
            put_varint(body, u64::from(e.ending));
            if flags & SAME_TTL == 0 {
                put_varint(body, u64::from(e.ttl_ms));
            }
        }
        n.lease_id = e.lease_id;
        n.ended_at_ms = e.ended_at_ms;
        n.fencing = e.fencing;
        if flags & DETAIL_TEXT != 0 {
            let text = journal.text(e.detail);
            put_varint(body, text.len() as u64);
            body.extend_from_slice(text);
        }
        batch.lines += 1;
        batch.newest_ms = batch.newest_ms.max(e.ended_at_ms);
        r.lines += 1;
        self.lines += 1;
        // Lines that the count bound would drop right after the commit
        // are not kept until it.
        while r.batches.len() > 1
            && r.batches
                .front()
                .is_some_and(|b| r.lines - b.lines >= max_entries)
        {
            if let Some(b) = r.batches.pop_front() {
                r.lines -= b.lines;
                self.lines -= b.lines as usize;
            }
        }
    }
}

/// `a == b` without calling `memcmp` for two empty slices. The pointer of
/// an empty `Vec` or slice is dangling (1), and glibc's AVX-512 `memcmp`
/// (`__memcmp_evex_movbe`) then costs ~185 ns a call on this project's
/// machines against ~3 ns with a real pointer (a masked load of an
/// unmapped page: its fault is suppressed by a microcode assist). Compared
/// so once a line, lines without a purpose cost the writer's thread ~3
/// times what encoding them did (BENCHMARKS.md, eleventh session).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// Writes a staged batch with its header into `buf`.
fn write_batch(batch: &StagedBatch, buf: &mut Vec<u8>) {
    buf.clear();
    buf.push(BATCH_FORMAT);
    put_varint(buf, batch.lines);
    put_varint(buf, batch.newest_ms);
    buf.extend_from_slice(&batch.body);
}

/// A batch's header: how many lines it holds and when its newest ended.
/// `None` for one that does not decode.
fn header(mut value: &[u8]) -> Option<(u64, u64)> {
    if !matches!(value.first(), Some(&(BATCH_FORMAT | BATCH_FORMAT_ABSOLUTE))) {
        return None;
    }
    value.advance(1);
    let count = decode_varint(&mut value).ok()?;
    let newest = decode_varint(&mut value).ok()?;
    Some((count, newest))
}

/// A string of a batch; its length is checked against what is left, so a
/// damaged file cannot make it allocate more than the value holds.
fn get_str(value: &mut &[u8]) -> Option<String> {
    let len = usize::try_from(decode_varint(value).ok()?).ok()?;
    let bytes = value.get(..len)?;
    let s = std::str::from_utf8(bytes).ok()?.to_string();
    value.advance(len);
    Some(s)
}

fn get_u32(value: &mut &[u8]) -> Option<u32> {
    u32::try_from(decode_varint(value).ok()?).ok()
}

/// Steps `value` over a batch's header to its first line: how many lines
/// it holds, and whether its numbers are differences (format 2).
fn lines_of(value: &mut &[u8]) -> Option<(u64, bool)> {
    let (count, _) = header(value)?;
    let deltas = value.first() == Some(&BATCH_FORMAT);
    value.advance(1);
    decode_varint(value).ok()?;
    decode_varint(value).ok()?;
    Some((count, deltas))
}

/// The uid of the holder of a batch's first line (which always has the
/// holder's fields); `None` if that line does not decode.
fn first_uid(mut value: &[u8]) -> Option<u32> {
    let (count, _) = lines_of(&mut value)?;
    let v = &mut value;
    let flags = decode_varint(v).ok()?;
    if count == 0 || flags & (SAME_PURPOSE | SAME_HOLDER) != 0 {
        return None;
    }
    decode_varint(v).ok()?; // lease id
    get_u32(v)?; // permits
    get_str(v)?; // purpose
    get_str(v)?; // client name
    get_u32(v)
}

/// Decodes a batch of `resource`, oldest first; `None` if it does not
/// decode (history is for reading: the caller skips it).
fn decode_batch(resource: &str, mut value: &[u8]) -> Option<Vec<RecordedLease>> {
    let (count, deltas) = lines_of(&mut value)?;
    let v = &mut value;
    // Not `with_capacity(count)`: the count is read from the file.
    let mut lines: Vec<RecordedLease> = Vec::new();
    let mut n = Numbers::default();
    // A number of the line: as stored in format 1, relative in format 2.
    let number = |v: &mut &[u8], before: u64| {
        if deltas {
            get_delta(v, before)
        } else {
            decode_varint(v).ok()
        }
    };
    for _ in 0..count {
        let flags = decode_varint(v).ok()?;
        let lease_id = number(v, n.lease_id)?;
        let permits = get_u32(v)?;
        let before = lines.last();
        let purpose = if flags & SAME_PURPOSE != 0 {
            before?.purpose.clone()
        } else {
            get_str(v)?
        };
        let (client_name, uid, pid, session_id, user, login_session) = if flags & SAME_HOLDER != 0 {
            let b = before?;
            (
                b.client_name.clone(),
                b.uid,
                b.pid,
                b.session_id,
                b.user.clone(),
                b.login_session.clone(),
            )
        } else {
            (
                get_str(v)?,
                get_u32(v)?,
                get_u32(v)?,
                decode_varint(v).ok()?,
                get_str(v)?,
                get_str(v)?,
            )
        };
        let ended_at_ms = number(v, n.ended_at_ms)?;
        let queued_at_ms = ended_at_ms.wrapping_sub(decode_varint(v).ok()?);
        let granted_at_ms = if flags & GRANTED != 0 {
            ended_at_ms.wrapping_sub(decode_varint(v).ok()?)
        } else {
            0
        };
        let fencing_token = number(v, n.fencing)?;
        n.lease_id = lease_id;
        n.ended_at_ms = ended_at_ms;
        n.fencing = fencing_token;
        let mut line = RecordedLease {
            lease_id,
            resource: resource.to_string(),
            mode: mode_of((flags >> MODE_SHIFT) & 3),
            permits,
            purpose,
            client_name,
            uid,
            pid,
            session_id,
            user,
            login_session,
            queued_at_ms,
            granted_at_ms,
            ended_at_ms,
            ended_by: kind_of((flags >> KIND_SHIFT) & 7),
            detail: String::new(),
            fencing_token,
            timed_out: false,
        };
        if flags & DETAIL_ENDING != 0 {
            let ending = ending_of(decode_varint(v).ok()?);
            let ttl_ms = if deltas && flags & SAME_TTL != 0 {
                n.ttl_ms?
            } else {
                get_u32(v)?
            };
            n.ttl_ms = Some(ttl_ms);
            if let Some(ending) = ending {
                line.detail = line.cause(ending, flags & WAS_HOLDER != 0, ttl_ms);
                line.timed_out = ending == Ending::TimedOut;
            }
        }
        if flags & DETAIL_TEXT != 0 {
            line.detail = get_str(v)?;
        }
        lines.push(line);
    }
    Some(lines)
}

impl RecordedLease {
    /// The sentence watchers were told about this end, written from the
    /// data kept (the same `Display` as theirs).
    fn cause(&self, ending: Ending, was_holder: bool, ttl_ms: u32) -> String {
        Cause::Ended {
            lease: LeaseId(self.lease_id),
            peer: Arc::new(Peer {
                session: SessionId(self.session_id),
                client_name: self.client_name.clone(),
                uid: self.uid,
                pid: self.pid,
                user: self.user.clone(),
                login_session: self.login_session.clone(),
            }),
            ending,
            was_holder,
            ttl_ms,
        }
        .to_string()
    }

    /// At most the bytes this line takes in a `History` frame: each
    /// number as its varint and each string with its length, plus a
    /// one-byte key each (every field of `HistoryEntry` and `Peer` is
    /// numbered below 16), and the prefixes of the entry and its `Peer`.
    fn wire_bound(&self) -> usize {
        use prost::encoding::encoded_len_varint as varint;
        let string = |s: &str| 1 + varint(s.len() as u64) + s.len();
        let numbers = [
            self.lease_id,
            u64::from(self.permits),
            u64::from(self.uid),
            u64::from(self.pid),
            self.session_id,
            self.queued_at_ms,
            self.granted_at_ms,
            self.ended_at_ms,
            self.fencing_token,
        ];
        let strings = [
            &self.resource,
            &self.purpose,
            &self.client_name,
            &self.user,
            &self.login_session,
            &self.detail,
        ];
        numbers.iter().map(|&n| 1 + varint(n)).sum::<usize>()
            + strings.iter().map(|s| string(s)).sum::<usize>()
            // mode and ended_by (small enums), timed_out, the entry's and
            // the holder's keys and length prefixes (at most 5 bytes each).
            + 2 * 3
            + 2 * 6
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

/// Where a resource's lines stand: `first..=last` (empty when `first >
/// last`), how many of them its first batch holds and when the newest of
/// those ended, when its newest line ended (epoch ms), and whose it is.
#[derive(Clone, Copy, Debug)]
struct Span {
    first: u64,
    last: u64,
    first_len: u64,
    first_newest_ms: u64,
    newest_ms: u64,
    /// The uid of the holder of its oldest line kept (its first batch's
    /// first): the user its history counts against in the bounds over all
    /// resources ([`evict`]). Not its newest: one request of another user's
    /// (even one that timed out waiting) would make it theirs.
    owner: u32,
}

/// The owner of an empty span, or of one whose first batch does not
/// decode.
const UNKNOWN_OWNER: u32 = u32::MAX;

impl Span {
    const EMPTY: Span = Span {
        first: 1,
        last: 0,
        first_len: 0,
        first_newest_ms: 0,
        newest_ms: 0,
        owner: UNKNOWN_OWNER,
    };

    fn is_empty(&self) -> bool {
        self.first > self.last
    }

    fn count(&self) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.last - self.first + 1
        }
    }
}

/// A resource's batch as the front of its [`Span`] sees it.
struct Front {
    n: u64,
    lines: u64,
    newest_ms: u64,
    owner: u32,
}

/// The batch of `resource` at or after `n`: its number, line count,
/// newest end and first holder. A batch that does not decode counts as one
/// line that ended at 0 (so that the bounds drop it).
fn batch_from(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    resource: &str,
    n: u64,
) -> Result<Option<Front>, redb::Error> {
    Ok(
        match table.range((resource, n)..=(resource, u64::MAX))?.next() {
            Some(e) => {
                let (k, v) = e?;
                let (count, newest) = header(v.value()).unwrap_or((1, 0));
                Some(Front {
                    n: k.value().1,
                    lines: count.max(1),
                    newest_ms: newest,
                    owner: first_uid(v.value()).unwrap_or(UNKNOWN_OWNER),
                })
            }
            None => None,
        },
    )
}

/// A resource's [`Span`], read from the table.
fn span_of(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    resource: &str,
) -> Result<Span, redb::Error> {
    let Some(front) = batch_from(table, resource, 0)? else {
        return Ok(Span::EMPTY);
    };
    let (last, newest_ms) = match table
        .range((resource, 0)..=(resource, u64::MAX))?
        .next_back()
    {
        Some(e) => {
            let (k, v) = e?;
            let (count, newest) = header(v.value()).unwrap_or((1, 0));
            (k.value().1.saturating_add(count.max(1) - 1), newest)
        }
        None => (front.n + front.lines - 1, front.newest_ms),
    };
    Ok(Span {
        first: front.n,
        last,
        first_len: front.lines,
        first_newest_ms: front.newest_ms,
        newest_ms: newest_ms.max(front.newest_ms),
        owner: front.owner,
    })
}

/// The [`Span`] of the resources written to lately, so that appending a
/// batch costs one insert rather than two range lookups; after a sweep
/// ([`sweep`]), of every resource in the table (`complete`), so that the
/// bounds over all resources can be applied ([`evict`]) and a new
/// resource costs no lookup at all. Forgotten whenever a transaction fails
/// (it may describe what was not committed; the next sweep makes it
/// complete again), and, while not complete, when it grows past
/// [`SPANS_KEPT`] resources.
#[derive(Debug, Default)]
pub(super) struct Spans {
    spans: HashMap<Arc<str>, Span>,
    /// Every resource with lines in the table is in `spans`.
    complete: bool,
    /// The lines of the resources in `spans`.
    lines: u64,
}

/// Resources whose [`Span`] is kept while [`Spans`] is not complete.
const SPANS_KEPT: usize = 16_384;

impl Spans {
    /// Forgets everything (a transaction failed).
    pub(super) fn clear(&mut self) {
        self.spans.clear();
        self.complete = false;
        self.lines = 0;
    }

    fn get(
        &mut self,
        table: &redb::Table<(&str, u64), &[u8]>,
        resource: &Arc<str>,
    ) -> Result<Span, redb::Error> {
        if let Some(span) = self.spans.get(resource) {
            return Ok(*span);
        }
        if self.complete {
            return Ok(Span::EMPTY);
        }
        if self.spans.len() >= SPANS_KEPT {
            self.clear();
        }
        span_of(table, resource)
    }

    /// Records `resource`'s span as it now is.
    fn put(&mut self, resource: &Arc<str>, span: Span) {
        let old = if span.is_empty() {
            self.spans.remove(resource)
        } else {
            self.spans.insert(Arc::clone(resource), span)
        };
        self.lines = self.lines - old.map_or(0, |s| s.count()) + span.count();
    }
}

/// Drops a resource's oldest batches while the lines after them are
/// enough for the count bound, or their newest line is older than the age
/// bound; returns the span left.
fn trim(
    table: &mut redb::Table<(&str, u64), &[u8]>,
    resource: &str,
    mut span: Span,
    bounds: HistoryBounds,
    oldest_kept: u64,
) -> Result<Span, redb::Error> {
    while !span.is_empty()
        && (span.count().saturating_sub(span.first_len) >= bounds.max_entries
            || span.first_newest_ms < oldest_kept)
    {
        table.remove((resource, span.first))?;
        match batch_from(table, resource, span.first + 1)? {
            Some(front) if front.n <= span.last => {
                span.first = front.n;
                span.first_len = front.lines;
                span.first_newest_ms = front.newest_ms;
                span.owner = front.owner;
            }
            _ => span = Span::EMPTY,
        }
    }
    Ok(span)
}

/// Appends the staged lines, a batch of each resource (or a few, of
/// [`BATCH_LINES`] each), and applies the bounds to the resources they
/// concern.
pub(super) fn append(
    table: &mut redb::Table<(&str, u64), &[u8]>,
    staged: &StagedHistory,
    bounds: HistoryBounds,
    now_ms: u64,
    buf: &mut Vec<u8>,
    spans: &mut Spans,
) -> Result<(), redb::Error> {
    if bounds.max_entries == 0 || staged.is_empty() {
        return Ok(());
    }
    let oldest_kept = cutoff(bounds, now_ms);
    for staged in &staged.resources {
        let resource = &staged.resource;
        let mut span = spans.get(table, resource)?;
        for batch in &staged.batches {
            write_batch(batch, buf);
            let n = span.last + 1;
            table.insert((&**resource, n), buf.as_slice())?;
            if span.is_empty() {
                span = Span {
                    first: n,
                    last: n - 1,
                    first_len: batch.lines,
                    first_newest_ms: batch.newest_ms,
                    newest_ms: 0,
                    owner: batch.first_uid,
                };
            }
            span.last += batch.lines;
            span.newest_ms = span.newest_ms.max(batch.newest_ms);
        }
        let span = trim(table, resource, span, bounds, oldest_kept)?;
        spans.put(resource, span);
    }
    evict(table, bounds, spans)
}

/// What one user's resources hold, for [`evict`]: their resources, the
/// longest idle last, and their lines.
#[derive(Default)]
struct Owned {
    resources: Vec<(u64, Arc<str>)>,
    lines: u64,
}

/// Applies the bounds over all resources, once [`Spans`] knows them all:
/// past `max_resources` or `max_lines`, whole histories are dropped down
/// to nine tenths of each bound (so that the next time is a while away).
/// Each comes from the user whose resources take most of the bound passed
/// (a resource's history counts against the holder of its oldest line
/// kept, [`Span::owner`]), the one of theirs whose last lease ended
/// longest ago first: one user naming resources in a loop drops their own
/// history, not the others' (any user may name resources).
fn evict(
    table: &mut redb::Table<(&str, u64), &[u8]>,
    bounds: HistoryBounds,
    spans: &mut Spans,
) -> Result<(), redb::Error> {
    let over = |resources: u64, lines: u64, (max_resources, max_lines): (u64, u64)| {
        resources > max_resources || lines > max_lines
    };
    let bound = (bounds.max_resources, bounds.max_lines);
    if !spans.complete || !over(spans.spans.len() as u64, spans.lines, bound) {
        return Ok(());
    }
    let keep = (
        bounds.max_resources - bounds.max_resources / 10,
        bounds.max_lines - bounds.max_lines / 10,
    );
    let mut owners: HashMap<u32, Owned> = HashMap::new();
    for (r, s) in &spans.spans {
        let owned = owners.entry(s.owner).or_default();
        owned.resources.push((s.newest_ms, Arc::clone(r)));
        owned.lines += s.count();
    }
    for owned in owners.values_mut() {
        owned.resources.sort_unstable_by(|a, b| b.cmp(a));
    }
    let (mut resources, mut lines) = (0u64, 0u64);
    let mut whose: Vec<u32> = Vec::new();
    while over(spans.spans.len() as u64, spans.lines, keep) {
        // Past the resources' bound, the user with the most resources;
        // past the lines' bound only, the one with the most lines.
        let by_resources = spans.spans.len() as u64 > keep.0;
        let share = |o: &Owned| {
            if by_resources {
                o.resources.len() as u64
            } else {
                o.lines
            }
        };
        let Some((&uid, owned)) = owners
            .iter_mut()
            .filter(|(_, o)| !o.resources.is_empty())
            // Ties: the one whose longest idle resource is idle longest.
            .max_by_key(|(uid, o)| {
                let idle_since = o.resources.last().map_or(0, |r| r.0);
                (
                    share(o),
                    std::cmp::Reverse(idle_since),
                    std::cmp::Reverse(**uid),
                )
            })
        else {
            break;
        };
        let Some((_, resource)) = owned.resources.pop() else {
            break;
        };
        let r = &*resource;
        let count = spans.spans.get(r).map_or(0, Span::count);
        owned.lines = owned.lines.saturating_sub(count);
        lines += count;
        table.retain_in((r, 0)..=(r, u64::MAX), |_, _| false)?;
        spans.put(&resource, Span::EMPTY);
        resources += 1;
        if !whose.contains(&uid) {
            whose.push(uid);
        }
    }
    let whose: Vec<String> = whose
        .iter()
        .map(|&uid| {
            if uid == UNKNOWN_OWNER {
                "unknown".to_string()
            } else {
                uid.to_string()
            }
        })
        .collect();
    tracing::info!(
        "lease history: the history of {resources} resources ({lines} leases) was dropped, \
         those of the users whose resources took most of it (uid {}), longest idle first, \
         to keep at most {} resources and {} leases (--history-max-resources, \
         --history-max-lines)",
        whose.join(", "),
        bounds.max_resources,
        bounds.max_lines
    );
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
    if bounds.max_entries == 0 {
        return table.retain(|_, _| false).map_err(Into::into);
    }
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
    let oldest_kept = cutoff(bounds, now_ms);
    for r in resources {
        let span = span_of(table, &r)?;
        let span = trim(table, &r, span, bounds, oldest_kept)?;
        spans.put(&Arc::from(r), span);
    }
    // Every resource is known now.
    spans.complete = true;
    evict(table, bounds, spans)
}

/// Answers a query: the newest lines that match, oldest first. Only the
/// newest `max_entries` lines of the resource count, and none older than
/// the age bound (the file may hold a batch more, see the module's
/// documentation).
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
    // Lines of the resource seen so far, newest first: past the count
    // bound the rest are as good as gone.
    let mut seen = 0u64;
    let resource = q.resource.as_str();
    'batches: for entry in table.range((resource, 0)..=(resource, u64::MAX))?.rev() {
        let (_, value) = entry?;
        // A batch that does not decode is skipped: history is for reading.
        let Some(batch) = decode_batch(resource, value.value()) else {
            continue;
        };
        for line in batch.into_iter().rev() {
            if seen >= q.bounds.max_entries {
                break 'batches;
            }
            seen += 1;
            if line.ended_at_ms < since {
                // Lines are in order of their end (one clock), give or take
                // a wall-clock step: stop at the first older one.
                break 'batches;
            }
            let cost = line.wire_bound();
            if found.lines.len() >= limit || bytes + cost > q.max_bytes {
                found.truncated = true;
                break 'batches;
            }
            bytes += cost;
            found.lines.push(line);
        }
    }
    found.lines.reverse();
    Ok(found)
}

/// How many lines a stored batch holds (for tests of what the file keeps).
#[cfg(test)]
pub(super) fn lines_in(value: &[u8]) -> u64 {
    header(value).map_or(0, |(count, _)| count)
}

#[cfg(test)]
mod tests {
    //! The bounds over all resources ([`evict`]).

    use super::*;
    use crate::store::Store;
    use crate::store::tests::history_line as line;

    #[test]
    fn a_journal_reads_back_every_line_as_recorded() {
        // Numbers written as differences must come back exact whatever
        // they are: ids and tokens going back, times out of order (a
        // wall clock stepped back), the largest values.
        use crate::core::{FencingToken, LeaseId};
        let mut journal = HistoryJournal::default();
        // Lease id, fencing, queued, granted (0 = never), ended, purpose.
        type Case = (u64, Option<u64>, u64, u64, u64, &'static str);
        let cases: [Case; 6] = [
            (7, Some(3), 1_000, 1_500, 2_000, "build"),
            (8, None, 2_100, 0, 2_050, ""),
            (u64::MAX, Some(u64::MAX), 0, u64::MAX, 5, "é"),
            (1, Some(1), u64::MAX, 3, u64::MAX, ""),
            (2, Some(2), 9, 9, 0, "x"),
            (3, None, 40, 0, 41, "last"),
        ];
        // Resources and holders are told apart by their `Arc`'s address.
        let names: [Arc<str>; 2] = [Arc::from("r0"), Arc::from("r1")];
        let holder = line("r0", 0, 0).ended.lease.holder;
        for (i, &(id, fencing, queued, granted, ended, purpose)) in cases.iter().enumerate() {
            let mut l = line("r0", id, ended);
            l.ended.lease.resource = names[i % 2].clone();
            l.ended.lease.holder = holder.clone();
            l.ended.lease.lease_id = LeaseId(id);
            l.ended.lease.fencing = fencing.map(FencingToken);
            l.ended.lease.purpose = Arc::from(purpose);
            l.ended.lease.permits = i as u32;
            if i == 4 {
                l.ended.cause = Cause::FleetLost {
                    lease: LeaseId(id),
                    peer: l.ended.lease.holder.clone(),
                    detail: Arc::from("etcd unreachable"),
                };
                l.ended.kind = EventKind::Revoked;
            }
            (l.queued_at_ms, l.granted_at_ms, l.ended_at_ms) = (queued, granted, ended);
            journal.record_line(&l);
        }
        let read: Vec<Entry> = journal.entries().collect();
        assert_eq!(read.len(), cases.len());
        assert_eq!(journal.lines(), cases.len());
        for (i, (e, &(id, fencing, queued, granted, ended, purpose))) in
            read.iter().zip(&cases).enumerate()
        {
            assert_eq!(e.resource, (i % 2) as u32, "line {i}");
            assert_eq!(e.holder, 0, "line {i}");
            assert_eq!(e.lease_id, id, "line {i}");
            assert_eq!(e.fencing, fencing.unwrap_or(0), "line {i}");
            assert_eq!(
                (e.queued_at_ms, e.granted_at_ms, e.ended_at_ms),
                (queued, granted, ended),
                "line {i}"
            );
            assert_eq!(e.permits, i as u32, "line {i}");
            assert_eq!(journal.text(e.purpose), purpose.as_bytes(), "line {i}");
            let detail: &[u8] = if i == 4 { b"etcd unreachable" } else { b"" };
            assert!(journal.text(e.detail).ends_with(detail), "line {i}");
            assert_eq!(e.flags & DETAIL_TEXT as u32 != 0, i == 4, "line {i}");
        }
    }

    #[test]
    fn a_journal_line_takes_a_few_bytes_in_a_flood() {
        // Leases granted at once and released a few ms later, one after
        // the other, no purpose: what the core task writes for each is a
        // fifth of the 80-byte entry it wrote before.
        use crate::core::FencingToken;
        let mut journal = HistoryJournal::default();
        let lines = 4096;
        for id in 0..lines {
            let ended = 1_764_000_000_000 + id / 64;
            let mut l = line(&format!("r{}", id % 1024), id, ended);
            l.ended.lease.fencing = Some(FencingToken(id + 1));
            l.ended.lease.purpose = Arc::from("");
            l.granted_at_ms = ended - 3;
            l.queued_at_ms = l.granted_at_ms;
            journal.record_line(&l);
        }
        let per_line = journal.bytes() as f64 / lines as f64;
        assert!(per_line <= 16.0, "{per_line} bytes a line");
    }

    #[test]
    fn a_journal_counts_its_purposes_and_details_in_its_bytes() {
        // The dispatch layer hands the journal over by its bytes, so that
        // what waits is bounded whatever the purposes' lengths (a line
        // count let 262 144 lines of 1 KiB purposes wait: ~280 MiB).
        let mut journal = HistoryJournal::default();
        let mut l = line("r", 1, 1_000);
        l.ended.lease.purpose = Arc::from("p".repeat(1024).as_str());
        journal.record_line(&l);
        let mut l = line("r", 2, 1_001);
        l.ended.lease.purpose = Arc::from("");
        l.ended.cause = Cause::FleetLost {
            lease: crate::core::LeaseId(2),
            peer: l.ended.lease.holder.clone(),
            detail: Arc::from("d".repeat(512).as_str()),
        };
        journal.record_line(&l);
        assert!(journal.bytes() > 1024 + 512, "{} bytes", journal.bytes());
        assert!(journal.bytes() < 1024 + 512 + 2 * JOURNAL_LINE_MAX + 100);
    }

    /// Commits `lines` lines for each of `resources`, the resources' last
    /// ends in the order given, one after the other from `at` (ms).
    fn commit(
        store: &mut Store,
        resources: &[String],
        lines: u64,
        at: u64,
        bounds: HistoryBounds,
        sweep: bool,
    ) {
        let mut journal = HistoryJournal::default();
        let mut id = at * 1000;
        for (i, r) in resources.iter().enumerate() {
            for _ in 0..lines {
                id += 1;
                journal.record_line(&line(r, id, at + i as u64));
            }
        }
        let staged = StagedHistory::from_journal(&journal, bounds.max_entries);
        store
            .commit_staged(&[], &mut vec![staged], Some((bounds, at + 1_000, sweep)))
            .unwrap();
    }

    /// The resources (of `names`) that have recorded leases, and how many.
    fn kept(store: &Store, names: &[String], bounds: HistoryBounds) -> Vec<(String, usize)> {
        names
            .iter()
            .filter_map(|r| {
                let found = store
                    .read_history(&HistoryQuery {
                        resource: r.clone(),
                        since_ms: 0,
                        limit: 0,
                        max_bytes: 1 << 20,
                        now_ms: 10_000_000,
                        bounds,
                    })
                    .unwrap();
                (!found.lines.is_empty()).then(|| (r.clone(), found.lines.len()))
            })
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i:02}")).collect()
    }

    /// A line of `resource` held by `uid`.
    fn line_of(uid: u32, resource: &str, id: u64, at: u64) -> HistoryLine {
        let mut l = line(resource, id, at);
        let mut holder = (*l.ended.lease.holder).clone();
        holder.uid = uid;
        l.ended.lease.holder = Arc::new(holder);
        l
    }

    #[test]
    fn the_owner_of_a_batch_is_the_holder_of_its_first_line() {
        // Holders change and repeat; the first line always has its holder.
        let mut journal = HistoryJournal::default();
        for (i, uid) in [1000, 1000, 65534, 0, 42].into_iter().enumerate() {
            journal.record_line(&line_of(uid, "pcm", i as u64 + 1, 1_000 + i as u64));
        }
        let staged = StagedHistory::from_journal(&journal, 100);
        let batch = &staged.resources[0].batches[0];
        let mut buf = Vec::new();
        write_batch(batch, &mut buf);
        let decoded = decode_batch("pcm", &buf).unwrap();
        assert_eq!(first_uid(&buf), Some(decoded[0].uid));
        assert_eq!((first_uid(&buf), batch.first_uid), (Some(1000), 1000));
        assert_eq!(first_uid(&buf[..buf.len().min(6)]), None, "cut short");
    }

    #[test]
    fn a_user_naming_resources_in_a_loop_drops_their_own_history_first() {
        // Root's and alice's resources ended longest ago: by age alone they
        // would go first. Nobody's resources take most of the bound, so
        // the oldest of nobody's go instead, whichever bound is passed.
        // Nobody's one later wait on root's resource does not make it
        // nobody's (it counts against its oldest line's holder).
        let resources = HistoryBounds {
            max_entries: 1_000,
            max_age_ms: 0,
            max_resources: 10,
            max_lines: 1_000_000,
        };
        let lines = HistoryBounds {
            max_resources: 10_000,
            max_lines: 200,
            ..resources
        };
        for (what, per_resource, bounds) in [("resources", 1u64, resources), ("lines", 30, lines)] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(dir.path()).unwrap();
            let mut journal = HistoryJournal::default();
            let mut id = 0;
            let mut add = |journal: &mut HistoryJournal, uid, r: &str, at| {
                for _ in 0..per_resource {
                    id += 1;
                    journal.record_line(&line_of(uid, r, id, at));
                }
            };
            add(&mut journal, 0, "backup", 100);
            add(&mut journal, 1000, "pcm", 200);
            journal.record_line(&line_of(65534, "backup", 1_000_000, 900));
            let flood = names(12);
            for (i, r) in flood.iter().enumerate() {
                add(&mut journal, 65534, r, 1_000 + i as u64);
            }
            let staged = StagedHistory::from_journal(&journal, bounds.max_entries);
            store
                .commit_staged(&[], &mut vec![staged], Some((bounds, 5_000, true)))
                .unwrap();
            let mut all = flood.clone();
            all.extend(["backup".to_string(), "pcm".to_string()]);
            let left: Vec<String> = kept(&store, &all, bounds)
                .into_iter()
                .map(|(r, _)| r)
                .collect();
            assert!(
                left.contains(&"backup".to_string()) && left.contains(&"pcm".to_string()),
                "past max {what}: {left:?}"
            );
            // Nobody's newest are the ones kept.
            let gone: Vec<&String> = flood.iter().filter(|r| !left.contains(r)).collect();
            assert!(!gone.is_empty(), "past max {what}: {left:?}");
            assert!(
                gone.iter()
                    .all(|g| left.iter().all(|k| !flood.contains(k) || k > *g)),
                "past max {what}: the longest idle of nobody's go first: {left:?}"
            );
        }
    }

    #[test]
    fn a_batch_of_the_first_format_still_reads() {
        // Format 1 (numbers stored whole, every TTL written) is what the
        // builds before format 2 wrote: their files read back the same.
        let flags = (mode_code(Mode::Exclusive) << MODE_SHIFT)
            | (kind_code(EventKind::Released) << KIND_SHIFT)
            | GRANTED
            | DETAIL_ENDING
            | WAS_HOLDER;
        let mut v = vec![BATCH_FORMAT_ABSOLUTE];
        put_varint(&mut v, 2);
        put_varint(&mut v, 1_700_000_000_100);
        for (i, (id, ended, fencing)) in [(77, 1_700_000_000_000u64, 5), (12, 1_700_000_000_100, 3)]
            .into_iter()
            .enumerate()
        {
            let same = if i == 0 {
                0
            } else {
                SAME_HOLDER | SAME_PURPOSE
            };
            put_varint(&mut v, flags | same);
            put_varint(&mut v, id);
            put_varint(&mut v, 0);
            if i == 0 {
                put_str(&mut v, "nightly");
                put_str(&mut v, "svc");
                put_varint(&mut v, 1000);
                put_varint(&mut v, 42);
                put_varint(&mut v, 9);
                put_str(&mut v, "alice");
                put_str(&mut v, "");
            }
            put_varint(&mut v, ended);
            put_varint(&mut v, 30);
            put_varint(&mut v, 10);
            put_varint(&mut v, fencing);
            put_varint(&mut v, ending_code(Ending::Released));
            put_varint(&mut v, 30_000);
        }
        let lines = decode_batch("old", &v).expect("a format 1 batch decodes");
        let numbers: Vec<_> = lines
            .iter()
            .map(|l| (l.lease_id, l.ended_at_ms, l.fencing_token))
            .collect();
        assert_eq!(
            numbers,
            [(77, 1_700_000_000_000, 5), (12, 1_700_000_000_100, 3)]
        );
        for l in &lines {
            let waited = l.ended_at_ms - l.queued_at_ms;
            let held = l.ended_at_ms - l.granted_at_ms;
            let who = (l.client_name.as_str(), l.user.as_str(), l.uid, l.session_id);
            assert_eq!((waited, held, l.purpose.as_str()), (30, 10, "nightly"));
            assert_eq!(who, ("svc", "alice", 1000, 9));
            assert!(l.detail.contains("released"), "{l:#?}");
        }
        assert_eq!(header(&v), Some((2, 1_700_000_000_100)));
        assert_eq!(first_uid(&v), Some(1000));
    }

    #[test]
    fn past_max_resources_the_longest_idle_resources_lose_their_history() {
        // Once the sweep at the first write knows every resource, a
        // resource past the bound drops the history of the resources whose
        // last lease ended longest ago, down to nine tenths of it.
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let bounds = HistoryBounds {
            max_entries: 100,
            max_age_ms: 0,
            max_resources: 10,
            max_lines: 1_000_000,
        };
        let all = names(14);
        commit(&mut store, &all[..12], 2, 1_000, bounds, true);
        let left: Vec<String> = kept(&store, &all, bounds)
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(left, all[3..12].to_vec(), "r00-r02 went, nine are left");
        commit(&mut store, &all[12..13], 2, 2_000, bounds, false);
        assert_eq!(kept(&store, &all, bounds).len(), 10, "at the bound: kept");
        commit(&mut store, &all[13..14], 2, 3_000, bounds, false);
        let left: Vec<String> = kept(&store, &all, bounds)
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(left, all[5..14].to_vec(), "past it again: r03 and r04 went");
        // Reopened, the bound holds from the first write's sweep on.
        drop(store);
        let mut store = Store::open(dir.path()).unwrap();
        let more = names(20);
        commit(&mut store, &more[14..20], 1, 4_000, bounds, true);
        assert_eq!(kept(&store, &more, bounds).len(), 9);
    }

    #[test]
    fn past_max_lines_the_longest_idle_resources_lose_their_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let bounds = HistoryBounds {
            max_entries: 1_000,
            max_age_ms: 0,
            max_resources: 10_000,
            max_lines: 1_000,
        };
        let all = names(5);
        commit(&mut store, &all, 300, 1_000, bounds, true);
        // 1 500 lines: r00 and r01 go (900 left, nine tenths of the bound).
        assert_eq!(
            kept(&store, &all, bounds),
            vec![
                ("r02".to_string(), 300),
                ("r03".to_string(), 300),
                ("r04".to_string(), 300)
            ]
        );
    }
}
