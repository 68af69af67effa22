//! Arbitrary sequences of operations on the pure core
//! (`turnstile_broker::core::Core`) under a fake clock: connect, acquire
//! (with permits, a capacity, a detach grace, a stall time), release,
//! cancel, keep-alive, progress, re-attach (right and wrong tokens), yield
//! requests (with and without revoke), declines, watch, unwatch, goodbye,
//! the clock moving (with `expire`), and the message queues (publish with
//! its two-step commit, consume, ack, nack). Operations are also aimed at
//! sessions that said goodbye, at lease, watch and delivery ids never
//! handed out, and with invalid names, TTLs and prefetches.
//!
//! Asserted after every operation, beyond "no panic":
//! - `status` agrees with `revision`, which never goes down;
//! - a listed resource is in use; its holders are one EXCLUSIVE lease or
//!   SHARED ones only, each with a fencing token and position 0, and hold
//!   no more permits than its capacity; its waiters are numbered 1, 2, ...
//!   with no token; no waiter could go now (the head does not fit beside
//!   the holders);
//! - every lease id appears once, and belongs to a live session unless it
//!   is detached;
//! - a newly granted lease's token is above every token seen before, and a
//!   held lease keeps its token;
//! - after the clock moved and `expire` ran, no holder is past its expiry;
//! - no change is addressed to a session that said goodbye;
//! - each watch sees strictly increasing revisions (heartbeats repeat the
//!   current one);
//! - deliveries go to live sessions only, a consumer never has more than
//!   its prefetch unacknowledged, and each queue's `unacked` count equals
//!   the deliveries handed out and not yet acked, nacked or given back by a
//!   goodbye; depth (reserved, ready and unacked) stays within the limit.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use turnstile_broker::core::{
    AcquireRequest, Change, Core, CoreConfig, Counters, EventKind, LeaseId, Millis, Mode, Progress,
    ResumeToken, SessionId, WaitPolicy, WatchId,
};
use turnstile_broker::core::{
    ConsumerId, DEFAULT_PREFETCH, DeliveryId, MAX_PREFETCH, Message, QueueChange, QueueConfig,
};

const SLOTS: usize = 5;
const RESOURCES: [&str; 3] = ["pcm", "spool", "jobs.1"];
/// Names the core must refuse: empty, too long, a control character.
const BAD_NAMES: [&str; 3] = ["", "a\nb", "\u{7f}"];
const QUEUES: [&str; 2] = ["work", "notices"];
const TTLS: [u32; 8] = [0, 1, 99, 100, 500, 15_000, 3_600_001, u32::MAX];
const MAX_DEPTH: u64 = 6;
/// The detach grace of requests that have one.
const GRACE_MS: u32 = 2000;

#[derive(Arbitrary, Debug)]
enum Pick {
    /// One of the ids handed out so far (modulo their count).
    Issued(u8),
    /// Any id at all.
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Connect {
        slot: u8,
    },
    Acquire {
        slot: u8,
        resource: u8,
        exclusive: bool,
        no_wait: bool,
        ttl: u8,
        max_wait_ms: u16,
        /// Bits 0-1 permits, 2-3 capacity, 4 a detach grace, 5 a stall time.
        wave2: u8,
    },
    Reattach {
        slot: u8,
        lease: Pick,
        right_token: bool,
    },
    Yield {
        slot: u8,
        resource: u8,
        within_ms: u16,
        revoke: bool,
    },
    Decline {
        slot: u8,
        lease: Pick,
    },
    Release {
        slot: u8,
        lease: Pick,
    },
    Cancel {
        slot: u8,
        lease: Pick,
    },
    KeepAlive {
        slot: u8,
        lease: Pick,
    },
    Progress {
        slot: u8,
        lease: Pick,
        done: u32,
        total: u32,
    },
    Watch {
        slot: u8,
        resources: u8,
        start_revision: Pick,
    },
    Unwatch {
        slot: u8,
        watch: Pick,
    },
    Goodbye {
        slot: u8,
    },
    /// The clock moves; `expire` runs at every deadline on the way, or once
    /// at the end when not `stepwise`.
    Advance {
        ms: u16,
        stepwise: bool,
    },
    Publish {
        queue: u8,
        len: u8,
        /// Commit now; otherwise the publish stays pending until
        /// `Settle`.
        commit: bool,
    },
    Settle {
        pick: u8,
        ok: bool,
    },
    Consume {
        slot: u8,
        queue: u8,
        prefetch: u16,
    },
    Ack {
        slot: u8,
        delivery: Pick,
    },
    Nack {
        slot: u8,
        delivery: Pick,
        requeue: bool,
    },
}

struct Consumer {
    session: SessionId,
    queue: Arc<str>,
    prefetch: u32,
}

struct World {
    core: Core,
    now: Millis,
    /// The session in each slot, and whether it is still connected.
    slots: [Option<(SessionId, bool)>; SLOTS],
    live: HashSet<SessionId>,
    gone: HashSet<SessionId>,
    leases: Vec<LeaseId>,
    watches: Vec<WatchId>,
    deliveries: Vec<DeliveryId>,
    /// Token of each lease last seen held.
    held_tokens: HashMap<LeaseId, u64>,
    max_token: u64,
    revision: u64,
    /// Last revision each watch was sent.
    watch_revisions: HashMap<WatchId, u64>,
    consumers: HashMap<ConsumerId, Consumer>,
    /// Delivery → (consumer, queue), while unacknowledged.
    in_flight: HashMap<DeliveryId, (ConsumerId, Arc<str>)>,
    /// Publishes begun and not yet committed or failed.
    pending: Vec<(&'static str, Message)>,
    /// The resume token of each lease that has one.
    tokens: HashMap<LeaseId, ResumeToken>,
    next_token: u128,
}

impl World {
    fn new() -> World {
        let config = CoreConfig {
            max_leases_per_session: 8,
            max_watches_per_session: 3,
            watch_history: 16,
            heartbeat_ms: 700,
            queues: QueueConfig {
                max_depth: MAX_DEPTH,
                max_bytes: 600,
                // Below the sum over the queues, so the per-uid limits bind too.
                max_depth_per_uid: MAX_DEPTH + 2,
                max_bytes_per_uid: 900,
                max_attempts: 3,
                max_consumers_per_session: 2,
                // Below the sums too: a user's stored messages and bytes
                // over every queue, and one queue of their own.
                max_stored_messages_per_uid: 2 * MAX_DEPTH - 1,
                max_stored_bytes_per_uid: 1000,
                max_queues_per_uid: 1,
            },
            ..CoreConfig::default()
        };
        let (core, _) = Core::new(config, Counters::default());
        World {
            revision: core.revision().0,
            core,
            now: 0,
            slots: Default::default(),
            live: HashSet::new(),
            gone: HashSet::new(),
            leases: Vec::new(),
            watches: Vec::new(),
            deliveries: Vec::new(),
            held_tokens: HashMap::new(),
            max_token: 0,
            watch_revisions: HashMap::new(),
            consumers: HashMap::new(),
            in_flight: HashMap::new(),
            pending: Vec::new(),
            tokens: HashMap::new(),
            next_token: 0,
        }
    }

    /// The session in a slot, connecting one when the slot is empty. A
    /// slot whose session said goodbye keeps answering with the dead
    /// session, so that stale sessions are exercised too.
    fn session(&mut self, slot: u8) -> SessionId {
        let i = usize::from(slot) % SLOTS;
        match self.slots[i] {
            Some((s, _)) => s,
            None => self.connect(i),
        }
    }

    fn connect(&mut self, i: usize) -> SessionId {
        let peer = self.core.connect(format!("client{i}"), 1000 + i as u32, 1);
        let s = peer.session;
        self.slots[i] = Some((s, true));
        self.live.insert(s);
        s
    }

    fn pick<T: Copy>(list: &[T], pick: &Pick, raw: impl Fn(u64) -> T) -> T {
        match *pick {
            Pick::Issued(i) if !list.is_empty() => list[usize::from(i) % list.len()],
            Pick::Issued(i) => raw(u64::from(i)),
            Pick::Raw(v) => raw(v),
        }
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now;
        let mut moved_clock = false;
        let changes: Vec<Change> = match op {
            Op::Connect { slot } => {
                // A slot whose session left gets a new one; a live one is
                // kept (every session must say goodbye in the end).
                let i = usize::from(*slot) % SLOTS;
                if !matches!(self.slots[i], Some((_, true))) {
                    self.connect(i);
                }
                Vec::new()
            }
            Op::Acquire {
                slot,
                resource,
                exclusive,
                no_wait,
                ttl,
                max_wait_ms,
                wave2,
            } => {
                let s = self.session(*slot);
                self.next_token = self.next_token.wrapping_add(1);
                let token = ResumeToken(self.next_token.to_le_bytes());
                let r = usize::from(*resource);
                let name = if r % 8 == 7 {
                    BAD_NAMES[r / 8 % BAD_NAMES.len()].to_string()
                } else if r % 8 == 6 {
                    "x".repeat(256)
                } else {
                    RESOURCES[r % RESOURCES.len()].to_string()
                };
                let req = AcquireRequest {
                    resource: name.clone().into(),
                    mode: if *exclusive {
                        Mode::Exclusive
                    } else {
                        Mode::Shared
                    },
                    ttl_ms: TTLS[usize::from(*ttl) % TTLS.len()],
                    wait: if *no_wait {
                        WaitPolicy::NoWait
                    } else {
                        WaitPolicy::Queue
                    },
                    max_wait_ms: u32::from(*max_wait_ms),
                    purpose: "fuzz".into(),
                    permits: u32::from(wave2 & 3),
                    capacity: u32::from((wave2 >> 2) & 3),
                    detach_grace_ms: if wave2 & 16 != 0 { GRACE_MS } else { 0 },
                    stall_after_ms: if wave2 & 32 != 0 { 300 } else { 0 },
                    resume_token: Some(token),
                };
                match self.core.acquire(s, req, now) {
                    Ok((outcome, changes)) => {
                        assert!(
                            turnstile_broker::core::check_name("resource", &name).is_ok(),
                            "acquire accepted the invalid name {name:?}"
                        );
                        let id = match outcome {
                            turnstile_broker::core::AcquireOutcome::Granted(g) => g.lease_id,
                            turnstile_broker::core::AcquireOutcome::Queued(q) => q.lease_id,
                        };
                        self.leases.push(id);
                        self.tokens.insert(id, token);
                        changes
                    }
                    Err(_) => Vec::new(),
                }
            }
            Op::Reattach {
                slot,
                lease,
                right_token,
            } => {
                let s = self.session(*slot);
                let l = Self::pick(&self.leases, lease, LeaseId);
                let token = match self.tokens.get(&l) {
                    Some(t) if *right_token => *t,
                    _ => ResumeToken([0xee; ResumeToken::LEN]),
                };
                match self.core.reattach(s, l, &token, now) {
                    Ok((_, changes)) => {
                        assert!(self.live.contains(&s), "a closed session re-attached");
                        changes
                    }
                    Err(_) => Vec::new(),
                }
            }
            Op::Yield {
                slot,
                resource,
                within_ms,
                revoke,
            } => {
                let s = self.session(*slot);
                let name = RESOURCES[usize::from(*resource) % RESOURCES.len()];
                self.core
                    .request_yield(s, name, u32::from(*within_ms), "fuzz", *revoke, now)
                    .map(|(_, changes)| changes)
                    .unwrap_or_default()
            }
            Op::Decline { slot, lease } => {
                let s = self.session(*slot);
                let l = Self::pick(&self.leases, lease, LeaseId);
                self.core.decline_yield(s, l, "no", now).unwrap_or_default()
            }
            Op::Release { slot, lease } => {
                let s = self.session(*slot);
                let l = Self::pick(&self.leases, lease, LeaseId);
                self.core.release(s, l, now).unwrap_or_default()
            }
            Op::Cancel { slot, lease } => {
                let s = self.session(*slot);
                let l = Self::pick(&self.leases, lease, LeaseId);
                self.core.cancel(s, l, now).unwrap_or_default()
            }
            Op::KeepAlive { slot, lease } => {
                let s = self.session(*slot);
                let l = Self::pick(&self.leases, lease, LeaseId);
                let _ = self.core.keep_alive(s, l, now);
                Vec::new()
            }
            Op::Progress {
                slot,
                lease,
                done,
                total,
            } => {
                let s = self.session(*slot);
                let l = Self::pick(&self.leases, lease, LeaseId);
                let p = Progress {
                    done: *done,
                    total: *total,
                    message: "step".into(),
                };
                self.core.report_progress(s, l, p, now).unwrap_or_default()
            }
            Op::Watch {
                slot,
                resources,
                start_revision,
            } => {
                let s = self.session(*slot);
                let names: Vec<String> = (0..4)
                    .filter(|b| resources & (1 << b) != 0)
                    .map(|b| match b {
                        3 => BAD_NAMES[usize::from(*resources >> 4) % BAD_NAMES.len()].into(),
                        b => RESOURCES[b].into(),
                    })
                    .collect();
                let revisions: Vec<u64> = vec![self.revision.saturating_sub(3), self.revision];
                let start = Self::pick(&revisions, start_revision, |v| v);
                match self.core.watch(s, names, start, now) {
                    Ok(w) => {
                        assert!(self.live.contains(&s), "a closed session got a watch");
                        // Replayed events come first, in order, after the
                        // start and up to the current revision.
                        let mut prev = start;
                        for e in &w.replay {
                            assert!(e.revision.0 > prev, "replay out of order");
                            assert!(e.revision <= w.revision, "replay from the future");
                            prev = e.revision.0;
                        }
                        let last = w.revision.0;
                        self.watch_revisions.insert(w.watch_id, last);
                        self.watches.push(w.watch_id);
                    }
                    Err(_) => {}
                }
                Vec::new()
            }
            Op::Unwatch { slot, watch } => {
                let s = self.session(*slot);
                let w = Self::pick(&self.watches, watch, WatchId);
                if self.core.unwatch(s, w).is_ok() {
                    self.watch_revisions.remove(&w);
                }
                Vec::new()
            }
            Op::Goodbye { slot } => {
                let i = usize::from(*slot) % SLOTS;
                match self.slots[i] {
                    Some((s, true)) => {
                        self.slots[i] = Some((s, false));
                        self.live.remove(&s);
                        self.gone.insert(s);
                        self.consumers.retain(|_, c| c.session != s);
                        let consumers = &self.consumers;
                        self.in_flight.retain(|_, (c, _)| consumers.contains_key(c));
                        self.core.goodbye(s, now)
                    }
                    Some((s, false)) => {
                        // Twice: nothing more may happen.
                        let c = self.core.goodbye(s, now);
                        assert!(c.is_empty(), "a second goodbye changed something: {c:?}");
                        c
                    }
                    None => Vec::new(),
                }
            }
            Op::Advance { ms, stepwise } => {
                let target = now + u64::from(*ms);
                if *stepwise {
                    while let Some(at) = self.core.next_deadline() {
                        if at > target {
                            break;
                        }
                        let at = at.max(self.now);
                        self.now = at;
                        let step = self.core.expire(at);
                        self.check_changes(&step);
                    }
                }
                self.now = target;
                moved_clock = true;
                self.core.expire(target)
            }
            Op::Publish { queue, len, commit } => {
                let q = QUEUES[usize::from(*queue) % QUEUES.len()];
                let payload = Bytes::from(vec![b'm'; usize::from(*len)]);
                match self.core.queues_mut().begin_publish(q, payload, Vec::new()) {
                    Ok(m) if *commit => {
                        Change::from_queue(self.core.queues_mut().publish_committed(q, m))
                    }
                    Ok(m) => {
                        self.pending.push((q, m));
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                }
            }
            Op::Settle { pick, ok } => {
                if self.pending.is_empty() {
                    Vec::new()
                } else {
                    let (q, m) = self.pending.remove(usize::from(*pick) % self.pending.len());
                    if *ok {
                        Change::from_queue(self.core.queues_mut().publish_committed(q, m))
                    } else {
                        Change::from_queue(self.core.queues_mut().publish_failed(q, m.seq))
                    }
                }
            }
            Op::Consume {
                slot,
                queue,
                prefetch,
            } => {
                let s = self.session(*slot);
                let q = QUEUES[usize::from(*queue) % QUEUES.len()];
                let prefetch = u32::from(*prefetch);
                match self.core.consume(s, q, prefetch) {
                    Ok((consumer, changes)) => {
                        assert!(self.live.contains(&s), "a closed session got a consumer");
                        let effective = match prefetch {
                            0 => DEFAULT_PREFETCH,
                            p => p.min(MAX_PREFETCH),
                        };
                        self.consumers.insert(
                            consumer,
                            Consumer {
                                session: s,
                                queue: Arc::from(q),
                                prefetch: effective,
                            },
                        );
                        changes
                    }
                    Err(_) => Vec::new(),
                }
            }
            Op::Ack { slot, delivery } => {
                let s = self.session(*slot);
                let d = Self::pick(&self.deliveries, delivery, DeliveryId);
                match self.core.queues_mut().ack(s, d) {
                    Ok(changes) => {
                        self.settled(s, d);
                        Change::from_queue(changes)
                    }
                    Err(_) => Vec::new(),
                }
            }
            Op::Nack {
                slot,
                delivery,
                requeue,
            } => {
                let s = self.session(*slot);
                let d = Self::pick(&self.deliveries, delivery, DeliveryId);
                match self.core.queues_mut().nack(s, d, *requeue) {
                    Ok(changes) => {
                        self.settled(s, d);
                        Change::from_queue(changes)
                    }
                    Err(_) => Vec::new(),
                }
            }
        };
        self.check_changes(&changes);
        self.check_state(moved_clock);
    }

    /// An ack or nack succeeded: the delivery must have been this
    /// session's and still in flight.
    fn settled(&mut self, session: SessionId, delivery: DeliveryId) {
        let (consumer, _) = self
            .in_flight
            .remove(&delivery)
            .unwrap_or_else(|| panic!("delivery {delivery} settled but was not in flight"));
        assert_eq!(
            self.consumers.get(&consumer).map(|c| c.session),
            Some(session),
            "delivery {delivery} settled by a session that does not own it"
        );
    }

    fn check_changes(&mut self, changes: &[Change]) {
        for c in changes {
            match c {
                Change::Lease { session, .. } => {
                    assert!(
                        !self.gone.contains(session),
                        "a lease change went to closed session {session}: {c:?}"
                    );
                }
                Change::Watch {
                    session,
                    watch,
                    event,
                } => {
                    assert!(
                        !self.gone.contains(session),
                        "a watch event went to closed session {session}"
                    );
                    let last = self
                        .watch_revisions
                        .get_mut(watch)
                        .unwrap_or_else(|| panic!("event for unknown watch {watch}"));
                    if event.kind == EventKind::Heartbeat {
                        assert!(event.revision.0 >= *last, "heartbeat went back in time");
                    } else {
                        assert!(
                            event.revision.0 > *last,
                            "watch {watch}: revision {} after {}",
                            event.revision,
                            last
                        );
                    }
                    *last = event.revision.0;
                }
                Change::ReserveCounters { .. } => {}
                Change::Queue(QueueChange::Deliver { session, delivery }) => {
                    assert!(
                        self.live.contains(session),
                        "a delivery went to closed session {session}"
                    );
                    let consumer = self
                        .consumers
                        .get(&delivery.consumer)
                        .unwrap_or_else(|| panic!("delivery to unknown consumer"));
                    assert_eq!(consumer.session, *session, "delivery to the wrong session");
                    assert_eq!(
                        consumer.queue, delivery.queue,
                        "delivery from the wrong queue"
                    );
                    let fresh = self
                        .in_flight
                        .insert(
                            delivery.delivery_id,
                            (delivery.consumer, delivery.queue.clone()),
                        )
                        .is_none();
                    assert!(fresh, "delivery id {} reused", delivery.delivery_id);
                    self.deliveries.push(delivery.delivery_id);
                    let unacked = self
                        .in_flight
                        .values()
                        .filter(|(c, _)| *c == delivery.consumer)
                        .count();
                    assert!(
                        unacked as u64 <= u64::from(consumer.prefetch),
                        "consumer has {unacked} unacked, prefetch {}",
                        consumer.prefetch
                    );
                }
                Change::Queue(_) => {}
            }
        }
    }

    fn check_state(&mut self, moved_clock: bool) {
        let status = self.core.status(&[]);
        assert_eq!(status.revision, self.core.revision());
        assert!(status.revision.0 >= self.revision, "revision went down");
        self.revision = status.revision.0;

        // The invariants the property tests check too (core::check).
        let expired_by = moved_clock.then_some(self.now);
        if let Err(broken) = turnstile_broker::core::check::lease_table(&self.core, expired_by) {
            panic!("{broken}");
        }
        let mut now_held = HashMap::new();
        for r in &status.resources {
            for h in &r.holders {
                let token = h.fencing.expect("a holder has a fencing token").0;
                now_held.insert(h.lease_id, token);
            }
            for l in r.holders.iter().chain(&r.waiters) {
                assert!(
                    l.detached || self.live.contains(&l.holder.session),
                    "lease {} of a session this model counts closed: {}",
                    l.lease_id,
                    l.holder.session
                );
            }
        }

        // Grants of one step may come in any order of lease id: each must
        // be above every token seen before the step.
        let before = self.max_token;
        for (lease, token) in &now_held {
            match self.held_tokens.get(lease) {
                Some(old) => assert_eq!(old, token, "lease {lease} changed token"),
                None => assert!(
                    *token > before,
                    "lease {lease} granted token {token}, not above {before}"
                ),
            }
            self.max_token = self.max_token.max(*token);
        }
        self.held_tokens = now_held;

        let pending_per_queue = |q: &str| self.pending.iter().filter(|(p, _)| *p == q).count();
        for info in self.core.queues().info() {
            let unacked = self
                .in_flight
                .values()
                .filter(|(_, q)| *q == info.queue)
                .count() as u64;
            assert_eq!(info.unacked, unacked, "{}: unacked count", info.queue);
            if !info.queue.ends_with(".dead") {
                let depth = info.ready + info.unacked + pending_per_queue(&info.queue) as u64;
                assert!(depth <= MAX_DEPTH, "{}: depth {depth}", info.queue);
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut world = World::new();
    for op in ops.iter().take(400) {
        world.apply(op);
    }
    // Run the clock out: every lease ends, nothing is left held.
    for i in 0..SLOTS {
        if let Some((s, true)) = world.slots[i] {
            world.slots[i] = Some((s, false));
            world.live.remove(&s);
            world.gone.insert(s);
            world.consumers.retain(|_, c| c.session != s);
            let consumers = &world.consumers;
            world
                .in_flight
                .retain(|_, (c, _)| consumers.contains_key(c));
            let changes = world.core.goodbye(s, world.now);
            world.check_changes(&changes);
        }
    }
    // Detached leases outlive their sessions for their grace: run it out.
    world.apply(&Op::Advance {
        ms: u16::MAX,
        stepwise: true,
    });
    world.check_state(false);
    assert!(
        world.core.status(&[]).resources.is_empty(),
        "leases left after every session said goodbye"
    );
});
