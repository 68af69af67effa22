//! Watches: who subscribed to which resources, and the bounded history of
//! state events that lets a watcher resume from a revision.
//!
//! Every state change becomes one [`StateEvent`] carrying the resource's
//! whole new state, so a watcher that falls behind can be given only the
//! newest state per resource. A watcher resuming from a revision the history
//! no longer reaches gets a fresh snapshot marked `resync`: never a silent
//! gap. Delivery and coalescing are the transport's job.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Map;
use super::{
    Change, Core, CoreError, Deadline, EventKind, Millis, Revision, SessionId, WatchId, check_name,
    views::ResourceView,
};

/// One state change as watchers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct StateEvent {
    /// The global revision of this change.
    pub revision: Revision,
    /// What happened.
    pub kind: EventKind,
    /// The resource's whole state after the change (empty for heartbeats).
    pub state: ResourceView,
    /// What caused it: which holder ended and why, who was granted with which
    /// token. Its `Display` is the sentence watchers get as `detail`.
    pub cause: super::Cause,
}

/// The answer to `Watch`.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchStart {
    /// The new watch.
    pub watch_id: WatchId,
    /// The revision the snapshot (or the replay) brings the watcher to.
    pub revision: Revision,
    /// Current states, unless the watch resumed from history.
    pub snapshot: Vec<ResourceView>,
    /// The requested revision was too old: the snapshot replaces the gap.
    pub resync: bool,
    /// Events after the requested revision, to deliver after the answer.
    pub replay: Vec<Arc<StateEvent>>,
}

struct WatchEntry {
    session: SessionId,
    /// `None` watches every resource.
    resources: Option<Vec<Arc<str>>>,
    last_sent: Millis,
}

pub(super) struct Watches {
    entries: Map<WatchId, WatchEntry>,
    by_resource: Map<Arc<str>, Vec<WatchId>>,
    everything: Vec<WatchId>,
    history: VecDeque<Arc<StateEvent>>,
    history_len: usize,
    /// Every event with a revision above this is in `history`.
    floor: Revision,
    next_id: u64,
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
    pub(super) fn new(history_len: usize, floor: Revision) -> Watches {
        Watches {
            entries: Map::default(),
            by_resource: Map::default(),
            everything: Vec::new(),
            history: VecDeque::with_capacity(history_len.min(4096)),
            history_len,
            floor,
            next_id: 0,
            heartbeat_at: None,
            last_watched: None,
            just_emptied: false,
        }
    }

    pub(super) fn remove(&mut self, id: WatchId) {
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
}

impl Core {
    /// Subscribes a session to the named resources (all when empty).
    /// `start_revision` 0 means "from now" (a snapshot); otherwise the events
    /// after it are replayed, or a snapshot with `resync` when the history
    /// no longer reaches back that far.
    pub fn watch(
        &mut self,
        session: SessionId,
        resources: Vec<String>,
        start_revision: u64,
        now: Millis,
    ) -> Result<WatchStart, CoreError> {
        super::check_name_count(resources.len())?;
        for r in &resources {
            check_name("resource", r)?;
        }
        let limit = self.config.max_watches_per_session;
        let id = WatchId(self.watches.next_id + 1);
        let sess = self.session_mut(session)?;
        if sess.watches.len() >= limit {
            return Err(CoreError::Quota {
                what: "watches",
                limit,
            });
        }
        sess.watches.push(id);
        let w = &mut self.watches;
        w.next_id = id.0;

        let mut names: Option<Vec<Arc<str>>> = None;
        if !resources.is_empty() {
            let mut list: Vec<Arc<str>> = resources.iter().map(|r| Arc::from(r.as_str())).collect();
            list.sort();
            list.dedup();
            names = Some(list);
        }
        let start = Revision(start_revision);
        let current = self.revision;
        let resumable = start_revision != 0 && start >= w.floor && start <= current;
        let (snapshot, replay, resync) = if resumable {
            let replay = w
                .history
                .iter()
                .filter(|e| e.revision > start && matches(&names, &e.state.resource))
                .cloned()
                .collect();
            (Vec::new(), replay, false)
        } else {
            (
                self.leases.views(&resources, self.revision),
                Vec::new(),
                start_revision != 0,
            )
        };

        match &names {
            None => w.everything.push(id),
            Some(list) => {
                for n in list {
                    w.by_resource.entry(n.clone()).or_default().push(id);
                }
            }
        }
        w.entries.insert(
            id,
            WatchEntry {
                session,
                resources: names,
                last_sent: now,
            },
        );
        if self.config.heartbeat_ms > 0 && w.heartbeat_at.is_none() {
            let at = now + self.config.heartbeat_ms;
            w.heartbeat_at = Some(at);
            self.deadlines.insert((at, Deadline::Heartbeats));
        }
        Ok(WatchStart {
            watch_id: id,
            revision: current,
            snapshot,
            resync,
            replay,
        })
    }

    /// Ends a watch of this session.
    pub fn unwatch(&mut self, session: SessionId, watch: WatchId) -> Result<(), CoreError> {
        let sess = self.session_mut(session)?;
        if !sess.watches.contains(&watch) {
            return Err(CoreError::UnknownWatch(watch));
        }
        sess.watches.retain(|w| *w != watch);
        self.watches.remove(watch);
        Ok(())
    }

    /// Records a change of `name`'s state under a new revision and hands the
    /// event to every watch of that resource.
    pub(super) fn state_changed(
        &mut self,
        name: &Arc<str>,
        kind: EventKind,
        cause: super::Cause,
        now: Millis,
        changes: &mut Vec<Change>,
    ) {
        let revision = self.bump_revision(changes);
        if let Some(res) = self.leases.resources.get_mut(name) {
            res.revision = revision;
        }
        let w = &mut self.watches;
        if !w.entries.is_empty() || std::mem::take(&mut w.just_emptied) {
            w.last_watched = Some(now);
        }
        let recording = w.last_watched.is_some_and(|t| now < t + HISTORY_LINGER_MS);
        if !recording {
            // Nobody watches or will soon resume: keep no history. Anyone
            // resuming from before this revision is resynced.
            w.history.clear();
            w.floor = revision;
            return;
        }
        let event = Arc::new(StateEvent {
            revision,
            kind,
            state: self.leases.view_by_name(name, revision),
            cause,
        });
        let w = &mut self.watches;
        let targeted = w.by_resource.get(name).map(|v| v.as_slice()).unwrap_or(&[]);
        for id in w.everything.iter().chain(targeted) {
            if let Some(entry) = w.entries.get_mut(id) {
                entry.last_sent = now;
                changes.push(Change::Watch {
                    session: entry.session,
                    watch: *id,
                    event: event.clone(),
                });
            }
        }
        w.record(event);
    }

    /// Sends a heartbeat to every watch quiet for `heartbeat_ms`, and plans
    /// the next round.
    pub(super) fn heartbeats(&mut self, now: Millis, changes: &mut Vec<Change>) {
        let interval = self.config.heartbeat_ms;
        let w = &mut self.watches;
        w.heartbeat_at = None;
        if interval == 0 || w.entries.is_empty() {
            return;
        }
        let beat = Arc::new(StateEvent {
            revision: self.revision,
            kind: EventKind::Heartbeat,
            state: ResourceView {
                resource: Arc::from(""),
                revision: self.revision,
                holders: Vec::new(),
                waiters: Vec::new(),
            },
            cause: super::Cause::None,
        });
        let mut next = now + interval;
        for (id, entry) in w.entries.iter_mut() {
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
        w.heartbeat_at = Some(next);
        self.deadlines.insert((next, Deadline::Heartbeats));
    }
}

fn matches(names: &Option<Vec<Arc<str>>>, resource: &Arc<str>) -> bool {
    match names {
        None => true,
        Some(list) => list.binary_search(resource).is_ok(),
    }
}
