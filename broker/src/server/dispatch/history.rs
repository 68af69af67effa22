//! History (DESIGN "History"): recording every lease that ended, and
//! `GetHistory`.
//!
//! Recording happens here, at the edge, from the [`Ended`] lines the core
//! keeps in its outbox, one per end ([`crate::core::Core::each_ended`],
//! taken with every delivery of changes): each gets its wall-clock times
//! and is appended to `Dispatcher::history` ([`crate::store::HistoryJournal`])
//! as a line of a few varints, its resource and holder referenced rather
//! than copied, and the lease's strings are freed at once, on this thread. What
//! gathered goes to the store's writer thread at most every
//! [`SEND_EVERY_MS`] (or once it holds [`SEND_BYTES`]), which
//! groups the lines per resource, encodes them and hands them to redb
//! with the next group commit. The core task never waits for them, and no
//! lease end costs an fsync of its own. A crash loses at most the lines of
//! the last [`SEND_EVERY_MS`] (a second) and the commit in flight; a clean
//! stop hands everything over.
//!
//! Encoding each line whole here (its strings too) cost the core task ~580 instructions a
//! line, and grouping here cost it cache misses; handing the lease's own
//! strings over made the writer's thread free what the core task had
//! allocated, which slowed the core task's allocations (BENCHMARKS.md
//! "What recording lease history costs" and the tenth session).
//!
//! `GetHistory` (policy verb `status`) hands what is gathered to the
//! store first, then asks the writer thread to read: answered, like a
//! publish, when the read comes back ([`ToCore::HistoryRead`]), and
//! counted among the connection's requests in flight meanwhile.

use turnstile_proto::v1;

use super::Dispatcher;
use crate::core::{SessionId, check_name};
use crate::policy::Verb;
use crate::server::wire::{self, Refusal};
use crate::server::{Outbound, ToCore};
use crate::store::{HistoryJournal, HistoryQuery, LineTimes, Recorded, StoreError};

/// Lines are handed to the store at least this often (core ms) while
/// leases end. Each hand-over is a transaction of its own unless other
/// writes are due, and a transaction costs ~300 k instructions in redb
/// however little it carries (callgrind), against ~400 per line: so
/// hand-overs are kept few. A
/// `GetHistory` hands over first, so no answer misses a line.
const SEND_EVERY_MS: u64 = 1000;

/// The journal is handed to the store at once when it holds this many
/// bytes (lines and their texts): a bound on what waits here in a flood
/// of lease ends, whatever their purposes' lengths. In the bench's flood
/// a line takes ~18 bytes, so below ~900 k ends a second the time bound
/// above comes first. Until the seventeenth session the bound was a line
/// count, 262 144: ~280 MiB could wait when each line had a purpose of
/// 1 KiB, and the flood (~390 k ends a second) reached it every ~0.7 s,
/// half as many transactions again, each with a batch per resource
/// (BENCHMARKS.md, seventeenth session). A transaction's cost goes with
/// how many lines each batch gets: with 1 024 resources busy, the store's
/// thread took ~30 % of the core's CPU at 4 096 lines a hand-over and
/// ~14 % at 16 384 (when it encoded them too).
const SEND_BYTES: usize = 16 << 20;

/// What a history read counts at least against
/// `--report-bytes-per-uid-per-second`: it hands the lines gathered to
/// the store and reads in a redb transaction however little it finds (16
/// connections of one user reading in a loop halved root's publishes).
const READ_COST: usize = 64 << 10;

/// Room kept in a `History` frame for everything but the entries.
const FRAME_MARGIN: usize = 256;

/// The request was accepted; it is answered when the store has read.
pub(super) struct Started;

impl Dispatcher {
    /// Takes the leases that ended from the core and records them
    /// (nothing is kept without a store).
    pub(super) fn record_ended(&mut self) {
        let keep = self.store.is_some() && self.config.history.max_entries > 0;
        let (clock, history) = (&self.clock, &mut self.history);
        let wall = |at| clock.wall_ms(at);
        self.core.each_ended(|ended| {
            if !keep {
                return;
            }
            let granted_at = ended.lease.granted_at;
            let queued_at = ended.lease.queued_at.or(granted_at).unwrap_or(ended.at);
            history.record(
                ended,
                LineTimes {
                    queued_at_ms: wall(queued_at),
                    granted_at_ms: granted_at.map_or(0, wall),
                    ended_at_ms: wall(ended.at),
                },
            );
        });
        if self.history.bytes() >= SEND_BYTES {
            self.send_history(true);
        }
    }

    /// Hands the lines gathered to the store's writer: when `now_anyway`,
    /// else if the last hand-over is [`SEND_EVERY_MS`] old.
    pub(super) fn send_history(&mut self, now_anyway: bool) {
        if self.history.is_empty() {
            return;
        }
        let now = self.clock.now();
        if !now_anyway && now < self.history_sent_at + SEND_EVERY_MS {
            return;
        }
        self.history_sent_at = now;
        let room = HistoryJournal::with_room_of(&self.history);
        let staged = std::mem::replace(&mut self.history, room);
        if let Some(store) = &self.store {
            store.record_history(staged, self.config.history);
        }
    }
}

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    id: u64,
    req: v1::GetHistory,
) -> Result<Started, v1::Error> {
    check_name("resource", &req.resource)?;
    d.allow(session, Verb::Status, Some(&req.resource))?;
    d.id_not_in_flight(session, id)?;
    // A read costs a transaction of the store's however little it finds.
    d.charge_report(session, READ_COST);
    d.send_history(true);
    let Some(store) = &d.store else {
        // Nothing is kept without a store: an empty history, at once.
        read(d, session, id, Ok(Recorded::default()));
        return Ok(Started);
    };
    let now_ms = d.clock.wall_ms(d.clock.now());
    let query = HistoryQuery {
        resource: req.resource,
        since_ms: req.since_ms,
        limit: req.limit,
        max_bytes: (d.config.max_frame_bytes as usize).saturating_sub(FRAME_MARGIN),
        now_ms,
        bounds: d.config.history,
    };
    let answer = store.read_history(query);
    d.now_in_flight(session, id);
    d.answer_later(answer, move |result| ToCore::HistoryRead {
        session,
        request_id: id,
        result,
    });
    Ok(Started)
}

/// The store read the history: answer the requester, if still connected.
pub(super) fn read(
    d: &mut Dispatcher,
    session: SessionId,
    request_id: u64,
    result: Result<Recorded, StoreError>,
) {
    d.no_longer_in_flight(session, request_id);
    let answer = match result {
        Ok(found) => {
            let history = wire::history(&found);
            d.charge_report(session, prost::Message::encoded_len(&history));
            wire::reply(request_id, v1::reply::Result::History(history))
        }
        Err(e) => wire::error_reply(request_id, Refusal::HistoryUnread(e)),
    };
    d.send(session, Outbound::frame(answer));
}
