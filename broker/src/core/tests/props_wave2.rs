//! Property tests of the wave-2 rules: random sequences of semaphore and
//! plain requests, releases, departures with and without a detach grace,
//! re-attaches with right and wrong tokens, yield requests with revoke,
//! progress and the clock, over four sessions and two resources (one a
//! semaphore of 3).
//!
//! Checked after every step, from the core's answers, changes and status:
//! - no resource holds more permits than its capacity, and `permits_held`
//!   is the sum of its holders' permits; an EXCLUSIVE holder of a plain
//!   resource holds it alone;
//! - FIFO: waiters stand in request order (a re-attached one keeps its
//!   place), everyone granted in a step was ahead of every waiter left, and
//!   the head waiter never stays queued when it fits beside the holders;
//! - fencing tokens strictly increase;
//! - a re-attach succeeds only for a detached lease, with its token, from
//!   the same uid;
//! - at the end, once every session has left and the clock has run past
//!   every grace and TTL, nothing is held or waited for: no permit leaked.

use proptest::prelude::*;

use super::*;
use crate::core::{CoreError, PeerIdentity, Progress, ResourceView, ResumeToken};

const RESOURCES: [&str; 2] = ["sem", "pcm"];
const CAPACITY: u32 = 3;
const SLOTS: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        slot: usize,
        resource: usize,
        exclusive: bool,
        permits: u32,
        grace: bool,
        stall: bool,
    },
    Release {
        slot: usize,
        pick: usize,
    },
    Goodbye {
        slot: usize,
    },
    Reattach {
        slot: usize,
        pick: usize,
        right_token: bool,
    },
    Yield {
        slot: usize,
        resource: usize,
        within_ms: u32,
        revoke: bool,
    },
    Progress {
        slot: usize,
        pick: usize,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SLOTS, 0..RESOURCES.len(), prop::bool::weighted(0.3), 0..=CAPACITY, any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(slot, resource, exclusive, permits, grace, stall)| Op::Acquire {
                slot, resource, exclusive, permits, grace, stall,
            }),
        3 => (0..SLOTS, 0..8usize).prop_map(|(slot, pick)| Op::Release { slot, pick }),
        2 => (0..SLOTS).prop_map(|slot| Op::Goodbye { slot }),
        2 => (0..SLOTS, 0..8usize, prop::bool::weighted(0.8))
            .prop_map(|(slot, pick, right_token)| Op::Reattach { slot, pick, right_token }),
        1 => (0..SLOTS, 0..RESOURCES.len(), prop::sample::select(vec![0u32, 300, 2000]), any::<bool>())
            .prop_map(|(slot, resource, within_ms, revoke)| Op::Yield { slot, resource, within_ms, revoke }),
        1 => (0..SLOTS, 0..8usize).prop_map(|(slot, pick)| Op::Progress { slot, pick }),
        3 => (0..3000u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// A lease as the test knows it.
#[derive(Clone, Debug)]
struct Known {
    id: LeaseId,
    token: ResumeToken,
    uid: u32,
}

struct World {
    core: Core,
    now: Millis,
    /// Each slot's session (reopened after a goodbye) and its uid.
    sessions: [SessionId; SLOTS],
    /// Leases handed out, newest last.
    leases: Vec<Known>,
    last_fencing: u64,
    next_token: u8,
}

fn uid_of(slot: usize) -> u32 {
    // Two users: slots 0 and 1 are one, 2 and 3 the other.
    1000 + (slot / 2) as u32
}

impl World {
    fn new() -> World {
        let mut core = core_with(CoreConfig {
            capacities: vec![("sem".to_string(), CAPACITY)],
            ..CoreConfig::default()
        });
        let sessions = std::array::from_fn(|slot| open(&mut core, slot));
        World {
            core,
            now: 0,
            sessions,
            leases: Vec::new(),
            last_fencing: 0,
            next_token: 0,
        }
    }

    fn pick(&self, pick: usize) -> Option<Known> {
        (!self.leases.is_empty()).then(|| self.leases[pick % self.leases.len()].clone())
    }

    fn fencing(&mut self, token: u64) -> Result<(), TestCaseError> {
        prop_assert!(
            token > self.last_fencing,
            "token {token} after {}",
            self.last_fencing
        );
        self.last_fencing = token;
        Ok(())
    }

    /// Checks the changes of one step and the state after it.
    fn check(&mut self, changes: &[Change], granted_now: &[LeaseId]) -> Result<(), TestCaseError> {
        let mut granted: Vec<LeaseId> = granted_now.to_vec();
        for g in super::granted(changes) {
            self.fencing(g.fencing.0)?;
            granted.push(g.lease_id);
        }
        for r in self.core.status(&[]).resources {
            check_resource(&r, &granted)?;
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now;
        match *op {
            Op::Acquire {
                slot,
                resource,
                exclusive,
                permits,
                grace,
                stall,
            } => {
                self.next_token = self.next_token.wrapping_add(1);
                let token = ResumeToken([self.next_token; ResumeToken::LEN]);
                let req = AcquireRequest {
                    permits,
                    detach_grace_ms: if grace { 2000 } else { 0 },
                    stall_after_ms: if stall { 500 } else { 0 },
                    resume_token: Some(token),
                    ttl_ms: 1500,
                    ..request(
                        RESOURCES[resource],
                        if exclusive {
                            Mode::Exclusive
                        } else {
                            Mode::Shared
                        },
                    )
                };
                match self.core.acquire(self.sessions[slot], req, now) {
                    Ok((outcome, changes)) => {
                        let id = lease_of(&outcome);
                        let mut now_granted = Vec::new();
                        if let AcquireOutcome::Granted(g) = &outcome {
                            self.fencing(g.fencing.0)?;
                            now_granted.push(id);
                        }
                        self.leases.push(Known {
                            id,
                            token,
                            uid: uid_of(slot),
                        });
                        self.check(&changes, &now_granted)?;
                    }
                    Err(CoreError::InvalidArgument(_)) => {
                        prop_assert!(resource == 0 && !exclusive && permits > CAPACITY);
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("acquire refused: {e:?}"))),
                }
            }
            Op::Release { slot, pick } => {
                let Some(k) = self.pick(pick) else {
                    return Ok(());
                };
                if let Ok(changes) = self.core.release(self.sessions[slot], k.id, now) {
                    self.check(&changes, &[])?;
                }
            }
            Op::Goodbye { slot } => {
                let changes = self.core.goodbye(self.sessions[slot], now);
                self.sessions[slot] = open(&mut self.core, slot);
                self.check(&changes, &[])?;
            }
            Op::Reattach {
                slot,
                pick,
                right_token,
            } => {
                let Some(k) = self.pick(pick) else {
                    return Ok(());
                };
                let token = if right_token {
                    k.token
                } else {
                    ResumeToken([0xee; ResumeToken::LEN])
                };
                let before = self.core.status(&[]);
                let detached = before
                    .resources
                    .iter()
                    .flat_map(|r| r.holders.iter().chain(r.waiters.iter()))
                    .any(|l| l.lease_id == k.id && l.detached);
                match self.core.reattach(self.sessions[slot], k.id, &token, now) {
                    Ok((_, changes)) => {
                        prop_assert!(detached && right_token && k.uid == uid_of(slot));
                        self.check(&changes, &[])?;
                    }
                    Err(e) => {
                        prop_assert_eq!(e, CoreError::UnknownLease(k.id));
                        prop_assert!(!(detached && right_token && k.uid == uid_of(slot)));
                    }
                }
            }
            Op::Yield {
                slot,
                resource,
                within_ms,
                revoke,
            } => {
                let (_, changes) = self
                    .core
                    .request_yield(
                        self.sessions[slot],
                        RESOURCES[resource],
                        within_ms,
                        "test",
                        revoke,
                        now,
                    )
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                self.check(&changes, &[])?;
            }
            Op::Progress { slot, pick } => {
                let Some(k) = self.pick(pick) else {
                    return Ok(());
                };
                let p = Progress {
                    done: 1,
                    total: 2,
                    message: String::new(),
                };
                if let Ok(changes) = self.core.report_progress(self.sessions[slot], k.id, p, now) {
                    self.check(&changes, &[])?;
                }
            }
            Op::Advance { ms } => {
                let until = self.now + ms;
                while let Some(at) = self.core.next_deadline().filter(|at| *at <= until) {
                    self.now = at.max(self.now);
                    let changes = self.core.expire(self.now);
                    self.check(&changes, &[])?;
                }
                self.now = until;
            }
        }
        Ok(())
    }
}

fn open(core: &mut Core, slot: usize) -> SessionId {
    let who = PeerIdentity {
        uid: uid_of(slot),
        pid: slot as u32,
        ..PeerIdentity::default()
    };
    core.connect_peer(format!("slot{slot}"), who).session
}

fn check_resource(r: &ResourceView, granted: &[LeaseId]) -> Result<(), TestCaseError> {
    let held: u32 = r.holders.iter().map(|l| l.permits).sum();
    prop_assert_eq!(held, r.permits_held, "permits_held of {}", r.resource);
    if r.capacity > 0 {
        prop_assert!(
            held <= r.capacity,
            "{} holds {held} of {}",
            r.resource,
            r.capacity
        );
    } else if r.holders.iter().any(|l| l.mode == Mode::Exclusive) {
        prop_assert_eq!(
            r.holders.len(),
            1,
            "EXCLUSIVE beside others on {}",
            r.resource
        );
    }
    let ids: Vec<LeaseId> = r.waiters.iter().map(|l| l.lease_id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    prop_assert_eq!(
        &ids,
        &sorted,
        "waiters of {} out of request order",
        r.resource
    );
    if let Some(first_waiting) = ids.first() {
        for g in granted
            .iter()
            .filter(|g| r.holders.iter().any(|h| h.lease_id == **g))
        {
            prop_assert!(
                g < first_waiting,
                "{g} granted before {first_waiting} of {}",
                r.resource
            );
        }
        let head = &r.waiters[0];
        let fits = if r.capacity > 0 {
            held + head.permits <= r.capacity
        } else {
            r.holders.is_empty()
                || (head.mode == Mode::Shared && r.holders.iter().all(|h| h.mode == Mode::Shared))
        };
        prop_assert!(
            !fits,
            "the head of {} waits though it fits: {r:?}",
            r.resource
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn permits_reattach_and_revoke_keep_the_rules(ops in prop::collection::vec(op(), 1..60)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op)?;
        }
        // Everyone leaves; past every grace and TTL nothing may be left.
        for slot in 0..SLOTS {
            let changes = w.core.goodbye(w.sessions[slot], w.now);
            w.check(&changes, &[])?;
        }
        w.apply(&Op::Advance { ms: 60_000 })?;
        let left = w.core.status(&[]);
        prop_assert!(left.resources.is_empty(), "leaked: {:?}", left.resources);
    }
}
