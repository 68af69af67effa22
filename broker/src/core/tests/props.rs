//! Property tests: random command sequences over four sessions and two
//! resources, checked after every step by an observer that rebuilds the
//! lease table from nothing but the core's answers and changes, and
//! compares it with `status`.
//!
//! Checked after every step:
//! - a resource has one EXCLUSIVE holder or only SHARED ones;
//! - a grant goes to the head of its queue, to a request still waiting,
//!   when it fits beside the holders; no waiter stays queued when it could
//!   go (SHARED heads are granted together);
//! - fencing tokens strictly increase;
//! - nothing happens to a lease that left (cancel, release, time-out,
//!   expiry, goodbye), and a closed session is told nothing;
//! - refusals say exactly why (ended how, not yours, unknown, wrong state);
//! - TTLs and max waits end exactly at their deadline, not before;
//! - waiters in `status` are in request order, and each waiter whose
//!   position moved was told its new position;
//! - the watch of everything sees strictly increasing revisions, and the
//!   last event of a resource shows its state as `status` does.
//!
//! At the end the clock runs until every lease has expired: each request
//! that was ever queued must have been granted or ended by then.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::core::{CoreError, Ending, LostReason, Progress, ResourceView, Revision};

const RESOURCES: [&str; 2] = ["pcm", "spool"];
const SLOTS: usize = 4;
const DEFAULT_TTL_MS: u32 = 15_000;

#[derive(Clone, Debug)]
struct Target {
    pick: Index,
    /// Pick among live leases (else among every lease ever issued).
    live: bool,
    /// Ask as another session than the owner.
    stranger: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        slot: usize,
        resource: usize,
        shared: bool,
        no_wait: bool,
        max_wait_ms: u32,
        ttl_ms: u32,
    },
    Release(Target),
    Cancel(Target),
    KeepAlive(Target),
    Progress {
        target: Target,
        done: u32,
    },
    Goodbye {
        slot: usize,
    },
    /// Moves the clock; `stepwise` stops at every deadline on the way (as
    /// the driver does), otherwise one late `expire` catches up.
    Advance {
        ms: u64,
        stepwise: bool,
    },
}

fn target() -> impl Strategy<Value = Target> {
    (
        any::<Index>(),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(pick, live, stranger)| Target {
            pick,
            live,
            stranger,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            0..SLOTS,
            0..RESOURCES.len(),
            any::<bool>(),
            prop::bool::weighted(0.2),
            prop::sample::select(vec![0u32, 0, 150, 1000, 4000]),
            prop::sample::select(vec![0u32, 100, 500, 2000, 6000]),
        )
            .prop_map(|(slot, resource, shared, no_wait, max_wait_ms, ttl_ms)| Op::Acquire {
                slot,
                resource,
                shared,
                no_wait,
                max_wait_ms,
                ttl_ms,
            }),
        3 => target().prop_map(Op::Release),
        1 => target().prop_map(Op::Cancel),
        2 => target().prop_map(Op::KeepAlive),
        1 => (target(), 0..=5u32).prop_map(|(target, done)| Op::Progress { target, done }),
        1 => (0..SLOTS).prop_map(|slot| Op::Goodbye { slot }),
        3 => (0..2500u64, prop::bool::weighted(0.8))
            .prop_map(|(ms, stepwise)| Op::Advance { ms, stepwise }),
    ]
}

#[derive(Copy, Clone, Debug, PartialEq)]
enum Seen {
    Waiting { give_up_at: Option<Millis> },
    Held { expires_at: Millis },
    Ended(Ending),
}

#[derive(Debug)]
struct Model {
    session: SessionId,
    resource: usize,
    mode: Mode,
    ttl_ms: u32,
    token: Option<u64>,
    seen: Seen,
}

/// What one step produced, beyond the lease states.
#[derive(Default)]
struct StepLog {
    /// The last position each waiter was told this step.
    told: HashMap<LeaseId, u32>,
    queued: Vec<QueuePosition>,
    /// The last state event per resource.
    last_state: HashMap<String, ResourceView>,
}

struct Observer {
    now: Millis,
    /// `stepwise` clock: grants never come after a waiter's max wait.
    exact_time: bool,
    sessions: [SessionId; SLOTS],
    gone: Vec<SessionId>,
    watcher: (SessionId, WatchId),
    leases: BTreeMap<LeaseId, Model>,
    holders: [Vec<LeaseId>; 2],
    queues: [Vec<LeaseId>; 2],
    last_lease: LeaseId,
    last_token: u64,
    last_revision: Revision,
}

impl Observer {
    fn new(core: &mut Core) -> Observer {
        let ui = connect(core, "ui");
        let watch = core.watch(ui, vec![], 0, 0).unwrap().watch_id;
        let sessions = std::array::from_fn(|i| connect(core, &format!("client{i}")));
        Observer {
            now: 0,
            exact_time: true,
            sessions,
            gone: Vec::new(),
            watcher: (ui, watch),
            leases: BTreeMap::new(),
            holders: Default::default(),
            queues: Default::default(),
            last_lease: LeaseId(0),
            last_token: 0,
            last_revision: core.revision(),
        }
    }

    fn compatible(&self, r: usize, mode: Mode) -> bool {
        match mode {
            Mode::Exclusive => self.holders[r].is_empty(),
            Mode::Shared => self.holders[r]
                .iter()
                .all(|h| self.leases[h].mode == Mode::Shared),
        }
    }

    /// Which lease a target names and who asks.
    fn resolve(&self, t: &Target) -> (SessionId, LeaseId) {
        let live: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, m)| !matches!(m.seen, Seen::Ended(_)))
            .map(|(id, _)| *id)
            .collect();
        let pool: Vec<LeaseId> = if t.live && !live.is_empty() {
            live
        } else {
            self.leases.keys().copied().collect()
        };
        if pool.is_empty() {
            return (self.sessions[0], LeaseId(u64::MAX));
        }
        let lease = pool[t.pick.index(pool.len())];
        let owner = self.leases[&lease].session;
        let caller = match self.sessions.iter().position(|s| *s == owner) {
            Some(i) if t.stranger => self.sessions[(i + 1) % SLOTS],
            Some(_) => owner,
            None => self.sessions[t.pick.index(SLOTS)],
        };
        (caller, lease)
    }

    /// The refusal every lease verb owes `caller` on `lease`, if any.
    fn refusal(&self, caller: SessionId, lease: LeaseId) -> Option<CoreError> {
        match self.leases.get(&lease) {
            None => Some(CoreError::UnknownLease(lease)),
            Some(m) => match m.seen {
                Seen::Ended(ending) => Some(CoreError::Ended { lease, ending }),
                _ if m.session != caller => Some(CoreError::NotOwner(lease)),
                _ => None,
            },
        }
    }

    fn end(&mut self, lease: LeaseId, ending: Ending) {
        let m = self.leases.get_mut(&lease).unwrap();
        m.seen = Seen::Ended(ending);
        let r = m.resource;
        self.holders[r].retain(|l| *l != lease);
        self.queues[r].retain(|l| *l != lease);
    }

    fn take_token(&mut self, token: u64) -> Result<(), TestCaseError> {
        prop_assert!(
            token > self.last_token,
            "fencing token {token} after {}",
            self.last_token
        );
        self.last_token = token;
        Ok(())
    }

    /// Replays the changes of one step onto the model, checking each.
    fn absorb(&mut self, changes: &[Change], log: &mut StepLog) -> Result<(), TestCaseError> {
        for change in changes {
            match change {
                Change::Lease {
                    session,
                    lease,
                    update,
                } => self.absorb_update(*session, *lease, update, log)?,
                Change::Watch {
                    session,
                    watch,
                    event,
                } => {
                    prop_assert_eq!((*session, *watch), self.watcher);
                    if event.kind == EventKind::Heartbeat {
                        prop_assert!(event.revision >= self.last_revision);
                    } else {
                        prop_assert!(
                            event.revision > self.last_revision,
                            "revision {:?} after {:?}",
                            event.revision,
                            self.last_revision
                        );
                        self.last_revision = event.revision;
                        log.last_state
                            .insert(event.state.resource.to_string(), event.state.clone());
                    }
                }
                Change::ReserveCounters { .. } => {}
                // The lease model uses no queue.
                Change::Queue(_) => {}
            }
        }
        Ok(())
    }

    fn absorb_update(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        update: &LeaseUpdate,
        log: &mut StepLog,
    ) -> Result<(), TestCaseError> {
        let Some(m) = self.leases.get(&lease) else {
            return Err(TestCaseError::fail(format!("update for unknown {lease}")));
        };
        prop_assert_eq!(session, m.session, "update sent to the wrong session");
        prop_assert!(
            !self.gone.contains(&session),
            "{update:?} sent to closed session {session}"
        );
        let r = m.resource;
        match update {
            LeaseUpdate::Granted(g) => {
                let Seen::Waiting { give_up_at } = m.seen else {
                    return Err(TestCaseError::fail(format!(
                        "granted {lease} in state {:?}",
                        m.seen
                    )));
                };
                if self.exact_time
                    && let Some(at) = give_up_at
                {
                    prop_assert!(at >= self.now, "granted {lease} after its max wait");
                }
                prop_assert_eq!(
                    self.queues[r].first(),
                    Some(&lease),
                    "granted out of queue order"
                );
                prop_assert!(
                    self.compatible(r, m.mode),
                    "granted {lease} beside incompatible holders"
                );
                prop_assert_eq!(g.lease_id, lease);
                prop_assert_eq!(g.ttl_ms, m.ttl_ms);
                self.take_token(g.fencing.0)?;
                let now = self.now;
                let m = self.leases.get_mut(&lease).unwrap();
                m.token = Some(g.fencing.0);
                m.seen = Seen::Held {
                    expires_at: now + u64::from(m.ttl_ms),
                };
                self.queues[r].remove(0);
                self.holders[r].push(lease);
                log.told.remove(&lease);
            }
            LeaseUpdate::Queued(q) => {
                prop_assert!(
                    matches!(m.seen, Seen::Waiting { .. }),
                    "position sent for {lease} in state {:?}",
                    m.seen
                );
                prop_assert_eq!(q.lease_id, lease);
                log.told.insert(lease, q.position);
                log.queued.push(q.clone());
            }
            LeaseUpdate::Lost { reason, .. } => match (reason, m.seen) {
                (LostReason::Expired, Seen::Held { expires_at }) => {
                    prop_assert!(expires_at <= self.now, "{lease} expired early");
                    self.end(lease, Ending::Expired);
                }
                (LostReason::TimedOut, Seen::Waiting { give_up_at }) => {
                    prop_assert!(
                        give_up_at.is_some_and(|at| at <= self.now),
                        "{lease} timed out early"
                    );
                    self.end(lease, Ending::TimedOut);
                }
                (reason, seen) => {
                    return Err(TestCaseError::fail(format!(
                        "{lease} lost ({reason:?}) in state {seen:?}"
                    )));
                }
            },
            LeaseUpdate::YieldRequested(_) => {
                // This model never asks for a yield: nobody else may.
                return Err(TestCaseError::fail(format!(
                    "{lease} asked to yield, but nobody asked"
                )));
            }
        }
        Ok(())
    }

    fn step(&mut self, core: &mut Core, op: &Op) -> Result<(), TestCaseError> {
        let before = waiter_positions(core);
        let mut log = StepLog::default();
        self.exact_time = true;
        match op {
            Op::Acquire {
                slot,
                resource,
                shared,
                no_wait,
                max_wait_ms,
                ttl_ms,
            } => {
                let (r, session) = (*resource, self.sessions[*slot]);
                let mode = if *shared {
                    Mode::Shared
                } else {
                    Mode::Exclusive
                };
                let free = self.queues[r].is_empty() && self.compatible(r, mode);
                let req = AcquireRequest {
                    resource: RESOURCES[r].into(),
                    mode,
                    ttl_ms: *ttl_ms,
                    wait: if *no_wait {
                        WaitPolicy::NoWait
                    } else {
                        WaitPolicy::Queue
                    },
                    max_wait_ms: *max_wait_ms,
                    purpose: format!("op by {session}").into(),
                    ..AcquireRequest::default()
                };
                let ttl_ms = if *ttl_ms == 0 {
                    DEFAULT_TTL_MS
                } else {
                    *ttl_ms
                };
                match core.acquire(session, req, self.now) {
                    Ok((outcome, changes)) => {
                        let lease = lease_of(&outcome);
                        prop_assert!(lease > self.last_lease, "lease id {lease} reused");
                        self.last_lease = lease;
                        let mut model = Model {
                            session,
                            resource: r,
                            mode,
                            ttl_ms,
                            token: None,
                            seen: Seen::Waiting {
                                give_up_at: (*max_wait_ms > 0)
                                    .then(|| self.now + u64::from(*max_wait_ms)),
                            },
                        };
                        match outcome {
                            AcquireOutcome::Granted(g) => {
                                prop_assert!(free, "granted {lease} although not free");
                                prop_assert_eq!(g.ttl_ms, ttl_ms);
                                self.take_token(g.fencing.0)?;
                                model.token = Some(g.fencing.0);
                                model.seen = Seen::Held {
                                    expires_at: self.now + u64::from(ttl_ms),
                                };
                                self.holders[r].push(lease);
                            }
                            AcquireOutcome::Queued(q) => {
                                prop_assert!(!free, "queued {lease} although free");
                                prop_assert!(!*no_wait, "NO_WAIT request queued");
                                self.queues[r].push(lease);
                                prop_assert_eq!(q.position as usize, self.queues[r].len());
                                log.told.insert(lease, q.position);
                            }
                        }
                        self.leases.insert(lease, model);
                        self.absorb(&changes, &mut log)?;
                    }
                    Err(CoreError::Busy { resource, .. }) => {
                        prop_assert!(*no_wait && !free, "busy refusal");
                        prop_assert_eq!(resource, RESOURCES[r]);
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("acquire refused: {e}"))),
                }
            }
            Op::Release(t) => {
                let (caller, lease) = self.resolve(t);
                let refusal = self.refusal(caller, lease);
                match core.release(caller, lease, self.now) {
                    Ok(changes) => {
                        prop_assert_eq!(refusal, None);
                        let ending = match self.leases[&lease].seen {
                            Seen::Held { .. } => Ending::Released,
                            _ => Ending::Cancelled,
                        };
                        self.end(lease, ending);
                        self.absorb(&changes, &mut log)?;
                    }
                    Err(e) => prop_assert_eq!(Some(e), refusal),
                }
            }
            Op::Cancel(t) => {
                let (caller, lease) = self.resolve(t);
                let refusal = self.refusal(caller, lease);
                match core.cancel(caller, lease, self.now) {
                    Ok(changes) => {
                        prop_assert_eq!(refusal, None);
                        prop_assert!(
                            matches!(self.leases[&lease].seen, Seen::Waiting { .. }),
                            "cancelled a held lease"
                        );
                        self.end(lease, Ending::Cancelled);
                        self.absorb(&changes, &mut log)?;
                    }
                    Err(CoreError::WrongState(_)) => {
                        prop_assert_eq!(refusal, None);
                        prop_assert!(
                            matches!(self.leases[&lease].seen, Seen::Held { .. }),
                            "cancel refused on a waiter"
                        );
                    }
                    Err(e) => prop_assert_eq!(Some(e), refusal),
                }
            }
            Op::KeepAlive(t) => {
                let (caller, lease) = self.resolve(t);
                let refusal = self.refusal(caller, lease);
                match core.keep_alive(caller, lease, self.now) {
                    Ok(ttl) => {
                        prop_assert_eq!(refusal, None);
                        let now = self.now;
                        let m = self.leases.get_mut(&lease).unwrap();
                        prop_assert_eq!(ttl, m.ttl_ms);
                        if let Seen::Held { expires_at } = &mut m.seen {
                            *expires_at = now + u64::from(ttl);
                        }
                    }
                    Err(e) => prop_assert_eq!(Some(e), refusal),
                }
            }
            Op::Progress { target, done } => {
                let (caller, lease) = self.resolve(target);
                let refusal = self.refusal(caller, lease);
                let reported = Progress {
                    done: *done,
                    total: 5,
                    message: format!("step {done}"),
                };
                match core.report_progress(caller, lease, reported.clone(), self.now) {
                    Ok(changes) => {
                        prop_assert_eq!(refusal, None);
                        self.absorb(&changes, &mut log)?;
                        // Every waiter of the resource hears of it.
                        let r = self.leases[&lease].resource;
                        let told: Vec<LeaseId> = log.queued.iter().map(|q| q.lease_id).collect();
                        prop_assert_eq!(&told, &self.queues[r]);
                        for q in &log.queued {
                            prop_assert!(
                                q.ahead.iter().any(|a| a.lease_id == lease
                                    && a.progress.as_ref() == Some(&reported))
                            );
                        }
                    }
                    Err(CoreError::WrongState(_)) => {
                        prop_assert_eq!(refusal, None);
                        prop_assert!(
                            matches!(self.leases[&lease].seen, Seen::Waiting { .. }),
                            "progress refused from a holder"
                        );
                    }
                    Err(e) => prop_assert_eq!(Some(e), refusal),
                }
            }
            Op::Goodbye { slot } => {
                let session = self.sessions[*slot];
                let mine: Vec<LeaseId> = self
                    .leases
                    .iter()
                    .filter(|(_, m)| m.session == session && !matches!(m.seen, Seen::Ended(_)))
                    .map(|(id, _)| *id)
                    .collect();
                for lease in mine {
                    self.end(lease, Ending::Disconnected);
                }
                self.gone.push(session);
                let changes = core.goodbye(session, self.now);
                self.absorb(&changes, &mut log)?;
                self.sessions[*slot] = connect(core, &format!("client{slot}"));
            }
            Op::Advance { ms, stepwise } => {
                let target = self.now + ms;
                if *stepwise {
                    let mut rounds = 0;
                    while let Some(at) = core.next_deadline().filter(|at| *at <= target) {
                        prop_assert!(at >= self.now, "deadline {at} in the past");
                        rounds += 1;
                        prop_assert!(rounds < 10_000, "expire makes no progress");
                        self.now = at;
                        let changes = core.expire(at);
                        self.absorb(&changes, &mut log)?;
                    }
                } else {
                    self.exact_time = false;
                }
                self.now = target;
                let changes = core.expire(target);
                self.absorb(&changes, &mut log)?;
            }
        }
        self.check(core, &before, &log)
    }

    /// Compares the model with `status` after a step.
    fn check(
        &self,
        core: &mut Core,
        before: &HashMap<LeaseId, u32>,
        log: &StepLog,
    ) -> Result<(), TestCaseError> {
        // The invariants the fuzz target checks too.
        if let Err(broken) = crate::core::check::lease_table(core, None) {
            return Err(TestCaseError::fail(broken));
        }
        let status = core.status(&[]);
        prop_assert_eq!(status.revision, core.revision());
        prop_assert_eq!(status.revision, self.last_revision);
        for view in &status.resources {
            prop_assert!(RESOURCES.contains(&view.resource.as_ref()));
        }
        for (r, name) in RESOURCES.iter().enumerate() {
            let view = status
                .resources
                .iter()
                .find(|v| v.resource.as_ref() == *name);
            let Some(view) = view else {
                prop_assert!(self.holders[r].is_empty() && self.queues[r].is_empty());
                continue;
            };
            let held: Vec<LeaseId> = view.holders.iter().map(|l| l.lease_id).collect();
            let waiting: Vec<LeaseId> = view.waiters.iter().map(|l| l.lease_id).collect();
            prop_assert_eq!(&held, &self.holders[r], "holders of {}", name);
            prop_assert_eq!(&waiting, &self.queues[r], "waiters of {}", name);
            prop_assert!(
                waiting.windows(2).all(|w| w[0] < w[1]),
                "waiters out of request order"
            );
            prop_assert!(!held.is_empty() || waiting.is_empty(), "waiters, no holder");
            let exclusive = view.holders.iter().any(|l| l.mode == Mode::Exclusive);
            prop_assert!(!exclusive || held.len() == 1, "EXCLUSIVE beside others");
            if let Some(head) = view.waiters.first() {
                prop_assert!(
                    head.mode == Mode::Exclusive || exclusive,
                    "{} waits although it fits",
                    head.lease_id
                );
            }
            for l in &view.holders {
                let m = &self.leases[&l.lease_id];
                prop_assert_eq!(l.fencing.map(|f| f.0), m.token);
                let Seen::Held { expires_at } = m.seen else {
                    return Err(TestCaseError::fail("holder not held"));
                };
                prop_assert_eq!(l.expires_at, Some(expires_at));
                prop_assert!(expires_at > self.now, "{} outlived its TTL", l.lease_id);
            }
            for (i, l) in view.waiters.iter().enumerate() {
                let position = i as u32 + 1;
                prop_assert_eq!(l.position, position);
                if let Seen::Waiting {
                    give_up_at: Some(at),
                } = self.leases[&l.lease_id].seen
                {
                    prop_assert!(at > self.now, "{} outlived its max wait", l.lease_id);
                }
                match log.told.get(&l.lease_id) {
                    Some(told) => prop_assert_eq!(*told, position, "told a stale position"),
                    None => prop_assert_eq!(
                        before.get(&l.lease_id),
                        Some(&position),
                        "{} moved without being told",
                        l.lease_id
                    ),
                }
            }
        }
        for (name, state) in &log.last_state {
            let now = core.status(std::slice::from_ref(name));
            let ids =
                |v: &[crate::core::LeaseView]| v.iter().map(|l| l.lease_id).collect::<Vec<_>>();
            prop_assert_eq!(ids(&state.holders), ids(&now.resources[0].holders));
            prop_assert_eq!(ids(&state.waiters), ids(&now.resources[0].waiters));
        }
        if let Some(at) = core.next_deadline() {
            prop_assert!(at > self.now, "deadline {at} left behind at {}", self.now);
        }
        Ok(())
    }
}

fn waiter_positions(core: &Core) -> HashMap<LeaseId, u32> {
    core.status(&[])
        .resources
        .iter()
        .flat_map(|r| r.waiters.iter().map(|l| (l.lease_id, l.position)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_lease_table_keeps_its_rules(ops in prop::collection::vec(op(), 1..80)) {
        let mut core = core();
        let mut observer = Observer::new(&mut core);
        for op in &ops {
            observer.step(&mut core, op)?;
        }
        // Let every lease run out: whatever was queued gets its turn or ends.
        for _ in 0..200 {
            if core.status(&[]).resources.is_empty() {
                break;
            }
            observer.step(&mut core, &Op::Advance { ms: 20_000, stepwise: true })?;
        }
        prop_assert!(core.status(&[]).resources.is_empty(), "leases never ended");
        for (id, m) in &observer.leases {
            prop_assert!(matches!(m.seen, Seen::Ended(_)), "{} left {:?}", id, m.seen);
        }
    }
}
