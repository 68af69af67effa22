//! Watches: who subscribed to which resources, and the bounded history of
//! state events that lets a watcher resume from a revision.
//!
//! Every state change becomes one [`StateEvent`] carrying the resource's
//! whole new state, so a watcher that falls behind can be given only the
//! newest state per resource. A watcher resuming from a revision the history
//! no longer reaches gets a fresh snapshot marked `resync`: never a silent
//! gap. Delivery and coalescing are the transport's job.
//!
//! The table keeps each session's watches (and its quota) itself; the core
//! checks that the session is open before it asks.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Map;
use super::effects::{Deadline, Deadlines};
use super::{
    Cause, Change, CoreError, EventKind, Millis, ResourceView, Revision, SessionId, StateEvent,
    WatchId, WatchStart,
};

struct WatchEntry {
    session: SessionId,
    /// `None` watches every resource.
    resources: Option<Vec<Arc<str>>>,
    last_sent: Millis,
}

/// Every watch, by resource and by session, and the history of events.
pub(crate) struct Watches {
    entries: Map<WatchId, WatchEntry>,
    by_resource: Map<Arc<str>, Vec<WatchId>>,
    by_session: Map<SessionId, Vec<WatchId>>,
    everything: Vec<WatchId>,
    history: VecDeque<Arc<StateEvent>>,
    history_len: usize,
    /// Every event with a revision above this is in `history`.
    floor: Revision,
    next_id: u64,
    max_per_session: usize,
    heartbeat_ms: u64,
    heartbeat_at: Option<Millis>,
    /// The last time a change happened while someone watched (or the first
    /// change after the last watch went).
    last_watched: Option<Millis>,
    /// The last watch went and no change has happened since.
    just_emptied: bool,
}

/// How long the history keeps recording after the last watch went: long
/// enough for a UI whose connection dropped to come back and resume
/// without a resync. With nobody watching for longer, changes cost no
/// history (no state copy per change), and a resume from before then gets
/// a resync, never a silent gap.
pub const HISTORY_LINGER_MS: Millis = 60_000;

impl Watches {
    /// No watches; `history_len` events remembered; everything up to
    /// `floor` is before the history.
    pub(crate) fn new(
        history_len: usize,
        floor: Revision,
        max_per_session: usize,
        heartbeat_ms: u64,
    ) -> Watches {
        Watches {
            entries: Map::default(),
            by_resource: Map::default(),
            by_session: Map::default(),
            everything: Vec::new(),
            history: VecDeque::with_capacity(history_len.min(4096)),
            history_len,
            floor,
            next_id: 0,
            max_per_session,
            heartbeat_ms,
            heartbeat_at: None,
            last_watched: None,
            just_emptied: false,
        }
    }

    /// Subscribes an open session to the named resources (all when
    /// `resources` is empty; the names are already checked).
    /// `start_revision` 0 means "from now" (the `snapshot` of the lease
    /// table);
    /// otherwise the events after it are replayed, or a snapshot with
    /// `resync` when the history no longer reaches back that far.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn watch(
        &mut self,
        session: SessionId,
        resources: &[String],
        start_revision: u64,
        current: Revision,
        snapshot: impl FnOnce() -> Vec<ResourceView>,
        now: Millis,
        deadlines: &mut Deadlines,
    ) -> Result<WatchStart, CoreError> {
        let limit = self.max_per_session;
        let mine = self.by_session.entry(session).or_default();
        if mine.len() >= limit {
            return Err(CoreError::Quota {
                what: "watches",
                limit,
            });
        }
        let id = WatchId(self.next_id + 1);
        mine.push(id);
        self.next_id = id.0;

        let mut names: Option<Vec<Arc<str>>> = None;
        if !resources.is_empty() {
            let mut list: Vec<Arc<str>> = resources.iter().map(|r| Arc::from(r.as_str())).collect();
            list.sort();
            list.dedup();
            names = Some(list);
        }
        let start = Revision(start_revision);
        let resumable = start_revision != 0 && start >= self.floor && start <= current;
        let (snapshot, replay, resync) = if resumable {
            let replay = self
                .history
                .iter()
                .filter(|e| e.revision > start && matches(&names, &e.state.resource))
                .cloned()
                .collect();
            (Vec::new(), replay, false)
        } else {
            (snapshot(), Vec::new(), start_revision != 0)
        };

        match &names {
            None => self.everything.push(id),
            Some(list) => {
                for n in list {
                    self.by_resource.entry(n.clone()).or_default().push(id);
                }
            }
        }
        self.entries.insert(
            id,
            WatchEntry {
                session,
                resources: names,
                last_sent: now,
            },
        );
        if self.heartbeat_ms > 0 && self.heartbeat_at.is_none() {
            let at = now + self.heartbeat_ms;
            self.heartbeat_at = Some(at);
            deadlines.insert((at, Deadline::Heartbeats));
        }
        Ok(WatchStart {
            watch_id: id,
            revision: current,
            snapshot,
            resync,
            replay,
        })
    }

    /// Ends a watch of this (open) session.
    pub(crate) fn unwatch(&mut self, session: SessionId, watch: WatchId) -> Result<(), CoreError> {
        let Some(mine) = self.by_session.get_mut(&session) else {
            return Err(CoreError::UnknownWatch(watch));
        };
        if !mine.contains(&watch) {
            return Err(CoreError::UnknownWatch(watch));
        }
        mine.retain(|w| *w != watch);
        if mine.is_empty() {
            self.by_session.remove(&session);
        }
        self.remove(watch);
        Ok(())
    }

    /// The session is gone: its watches end.
    pub(crate) fn goodbye(&mut self, session: SessionId) {
        for watch in self.by_session.remove(&session).unwrap_or_default() {
            self.remove(watch);
        }
    }

    fn remove(&mut self, id: WatchId) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        self.just_emptied = self.entries.is_empty();
        match entry.resources {
            None => self.everything.retain(|w| *w != id),
            Some(names) => {
                for n in names {
                    if let Some(list) = self.by_resource.get_mut(&n) {
                        list.retain(|w| *w != id);
                        if list.is_empty() {
                            self.by_resource.remove(&n);
                        }
                    }
                }
            }
        }
    }

    fn record(&mut self, event: Arc<StateEvent>) {
        if self.history_len == 0 {
            self.floor = event.revision;
            return;
        }
        if self.history.len() == self.history_len
            && let Some(old) = self.history.pop_front()
        {
            self.floor = old.revision;
        }
        self.history.push_back(event);
    }

    /// Hands the event of a change of `name` (at `revision`) to every watch
    /// of that resource, and records it. `state` is only taken when
    /// someone watches or may soon resume.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn state_changed(
        &mut self,
        name: &Arc<str>,
        revision: Revision,
        kind: EventKind,
        cause: impl FnOnce() -> Cause,
        state: impl FnOnce(Revision) -> ResourceView,
        now: Millis,
        changes: &mut Vec<Change>,
    ) {
        if !self.entries.is_empty() || std::mem::take(&mut self.just_emptied) {
            self.last_watched = Some(now);
        }
        let recording = self
            .last_watched
            .is_some_and(|t| now < t + HISTORY_LINGER_MS);
        if !recording {
            // Nobody watches or will soon resume: keep no history. Anyone
            // resuming from before this revision is resynced.
            self.history.clear();
            self.floor = revision;
            return;
        }
        let event = Arc::new(StateEvent {
            revision,
            kind,
            state: state(revision),
            cause: cause(),
        });
        let targeted = self
            .by_resource
            .get(name)
            .map(|v| v.as_slice())
            .unwrap_or(&[]);
        for id in self.everything.iter().chain(targeted) {
            if let Some(entry) = self.entries.get_mut(id) {
                entry.last_sent = now;
                changes.push(Change::Watch {
                    session: entry.session,
                    watch: *id,
                    event: event.clone(),
                });
            }
        }
        self.record(event);
    }

    /// Sends a heartbeat (at `revision`) to every watch quiet for
    /// `heartbeat_ms`, and plans the next round.
    pub(crate) fn heartbeats(
        &mut self,
        now: Millis,
        revision: Revision,
        deadlines: &mut Deadlines,
        changes: &mut Vec<Change>,
    ) {
        let interval = self.heartbeat_ms;
        self.heartbeat_at = None;
        if interval == 0 || self.entries.is_empty() {
            return;
        }
        let beat = Arc::new(StateEvent {
            revision,
            kind: EventKind::Heartbeat,
            state: ResourceView {
                resource: Arc::from(""),
                revision,
                holders: Vec::new(),
                waiters: Vec::new(),
                capacity: 0,
                permits_held: 0,
            },
            cause: Cause::None,
        });
        let mut next = now + interval;
        for (id, entry) in self.entries.iter_mut() {
            if entry.last_sent + interval <= now {
                entry.last_sent = now;
                changes.push(Change::Watch {
                    session: entry.session,
                    watch: *id,
                    event: beat.clone(),
                });
            }
            next = next.min(entry.last_sent + interval);
        }
        self.heartbeat_at = Some(next);
        deadlines.insert((next, Deadline::Heartbeats));
    }
}

fn matches(names: &Option<Vec<Arc<str>>>, resource: &Arc<str>) -> bool {
    match names {
        None => true,
        Some(list) => list.binary_search(resource).is_ok(),
    }
}
