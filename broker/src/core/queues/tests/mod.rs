//! Tests of the queue table, all in one home: each scenario a block with a
//! sentence on top, no runtime, and the table's bookkeeping re-counted
//! after every step. `through_core.rs`: the table as the core drives it
//! (goodbye, restore, refusals as core errors).

mod through_core;

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;

use super::*;

const A: SessionId = SessionId(1);
const B: SessionId = SessionId(2);
const C: SessionId = SessionId(3);

impl QueueTable {
    /// Re-counts everything the table keeps incrementally.
    #[track_caller]
    fn assert_consistent(&self) {
        let mut unacked: HashMap<&str, u64> = HashMap::new();
        let mut bytes: HashMap<&str, u64> = HashMap::new();
        let mut per_consumer: HashMap<ConsumerId, u32> = HashMap::new();
        for (id, d) in &self.deliveries {
            *unacked.entry(&d.queue).or_default() += 1;
            *bytes.entry(&d.queue).or_default() += d.message.size();
            *per_consumer.entry(d.consumer).or_default() += 1;
            let s = self
                .sessions
                .get(&d.session)
                .expect("delivery of an unknown session");
            assert!(
                s.deliveries.contains(id),
                "session does not list delivery {id}"
            );
            assert!(
                self.queues.contains_key(&d.queue),
                "delivery of a forgotten queue"
            );
            assert!(d.message.seq <= self.last_seq);
        }
        let listed: usize = self.sessions.values().map(|s| s.deliveries.len()).sum();
        assert_eq!(
            listed,
            self.deliveries.len(),
            "sessions list stale deliveries"
        );
        for (id, c) in &self.consumers {
            let n = per_consumer.get(id).copied().unwrap_or(0);
            assert_eq!(c.unacked, n, "consumer {id} unacked count");
            assert!(c.unacked <= c.prefetch, "consumer {id} over its prefetch");
            let q = self
                .queues
                .get(&c.queue)
                .expect("consumer of a forgotten queue");
            let times = q.available.iter().filter(|a| *a == id).count();
            assert_eq!(
                times,
                usize::from(c.unacked < c.prefetch),
                "consumer {id} availability"
            );
            assert!(self.sessions[&c.session].consumers.contains(id));
        }
        let session_consumers: usize = self.sessions.values().map(|s| s.consumers.len()).sum();
        assert_eq!(session_consumers, self.consumers.len());
        for (name, q) in &self.queues {
            assert_eq!(name, &q.name);
            assert!(!q.is_idle(), "idle queue {name} kept");
            assert_eq!(
                q.unacked,
                unacked.get(&**name).copied().unwrap_or(0),
                "{name} unacked"
            );
            let ready: u64 = q.ready.values().map(Message::size).sum();
            let pending: u64 = q.pending.values().map(|(size, _)| size).sum();
            let flight = bytes.get(&**name).copied().unwrap_or(0);
            assert_eq!(q.bytes, ready + pending + flight, "{name} bytes");
            // Each publisher's share: its ready, reserved and in-flight
            // messages, no more, no less.
            let mut shares: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
            let mut add = |publisher: Option<u32>, size: u64| {
                if let Some(uid) = publisher {
                    let share = shares.entry(uid).or_default();
                    share.0 += 1;
                    share.1 += size;
                }
            };
            q.ready.values().for_each(|m| add(m.publisher, m.size()));
            q.pending.values().for_each(|&(size, p)| add(p, size));
            self.deliveries
                .values()
                .filter(|d| d.queue == q.name)
                .for_each(|d| add(d.message.publisher, d.message.size()));
            let counted: BTreeMap<u32, (u64, u64)> = q
                .by_uid
                .iter()
                .map(|(&uid, u)| (uid, (u.messages, u.bytes)))
                .collect();
            assert_eq!(counted, shares, "{name} per-user shares");
            for (seq, m) in &q.ready {
                assert_eq!(*seq, m.seq);
                assert!(*seq <= self.last_seq);
            }
            let consumers = self
                .consumers
                .values()
                .filter(|c| c.queue == q.name)
                .count();
            assert_eq!(q.consumers as usize, consumers, "{name} consumers");
            assert!(q.available.iter().all(|id| self.consumers.contains_key(id)));
        }
        // Each publisher's totals: the sum of its shares, and the number
        // of queues where it has one.
        let mut totals: BTreeMap<u32, Stored> = BTreeMap::new();
        for q in self.queues.values() {
            for (&uid, usage) in &q.by_uid {
                let total = totals.entry(uid).or_default();
                total.messages += usage.messages;
                total.bytes += usage.bytes;
                total.queues += 1;
            }
        }
        let counted: BTreeMap<u32, Stored> =
            self.stored_by_uid.iter().map(|(&u, &s)| (u, s)).collect();
        assert_eq!(counted, totals, "per-user totals over every queue");
    }
}

fn table_with(config: QueueConfig) -> QueueTable {
    QueueTable::new(config, 0)
}

fn table() -> QueueTable {
    table_with(QueueConfig::default())
}

#[track_caller]
fn publish(t: &mut QueueTable, queue: &str, body: &str) -> Vec<QueueChange> {
    let m = t
        .begin_publish(queue, Bytes::copy_from_slice(body.as_bytes()), Vec::new())
        .expect("publish refused");
    let changes = t.publish_committed(queue, m);
    t.assert_consistent();
    changes
}

#[track_caller]
fn consume(
    t: &mut QueueTable,
    session: SessionId,
    queue: &str,
    prefetch: u32,
) -> (ConsumerId, Vec<QueueChange>) {
    let r = t
        .consume(session, queue, prefetch)
        .expect("consume refused");
    t.assert_consistent();
    r
}

/// The deliveries among the changes, in order.
fn delivered(changes: &[QueueChange]) -> Vec<&Delivery> {
    changes
        .iter()
        .filter_map(|c| match c {
            QueueChange::Deliver { delivery, .. } => Some(delivery),
            _ => None,
        })
        .collect()
}

/// (session, body, attempt) of each delivery.
fn summary(changes: &[QueueChange]) -> Vec<(SessionId, String, u32)> {
    changes
        .iter()
        .filter_map(|c| match c {
            QueueChange::Deliver { session, delivery } => Some((
                *session,
                String::from_utf8_lossy(&delivery.payload).into_owned(),
                delivery.attempt,
            )),
            _ => None,
        })
        .collect()
}

fn bodies(changes: &[QueueChange]) -> Vec<String> {
    summary(changes).into_iter().map(|(_, b, _)| b).collect()
}

fn persisted(changes: &[QueueChange]) -> Vec<StoreOp> {
    changes
        .iter()
        .filter_map(|c| match c {
            QueueChange::Persist(op) => Some(op.clone()),
            _ => None,
        })
        .collect()
}

fn ids(changes: &[QueueChange]) -> Vec<DeliveryId> {
    delivered(changes).iter().map(|d| d.delivery_id).collect()
}

#[track_caller]
fn ack(t: &mut QueueTable, session: SessionId, id: DeliveryId) -> Vec<QueueChange> {
    let changes = t.ack(session, id).expect("ack refused");
    t.assert_consistent();
    changes
}

#[track_caller]
fn nack(t: &mut QueueTable, session: SessionId, id: DeliveryId, requeue: bool) -> Vec<QueueChange> {
    let changes = t.nack(session, id, requeue).expect("nack refused");
    t.assert_consistent();
    changes
}

fn info(t: &QueueTable, queue: &str) -> Option<(u64, u64, u32)> {
    t.info()
        .into_iter()
        .find(|i| &*i.queue == queue)
        .map(|i| (i.ready, i.unacked, i.consumers))
}

fn q(name: &str) -> Arc<str> {
    Arc::from(name)
}

#[test]
fn first_deliveries_follow_publish_order() {
    // Messages published before anyone consumes are delivered in order.
    let mut t = table();
    for body in ["m1", "m2", "m3"] {
        assert!(publish(&mut t, "jobs", body).is_empty());
    }
    let (consumer, changes) = consume(&mut t, A, "jobs", 10);
    assert_eq!(bodies(&changes), ["m1", "m2", "m3"]);
    let d = delivered(&changes);
    assert_eq!(d.iter().map(|d| d.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        d.iter()
            .all(|d| d.attempt == 1 && d.consumer == consumer && &*d.queue == "jobs")
    );

    // Published while a consumer has room: delivered at once, in order.
    let changes = publish(&mut t, "jobs", "m4");
    assert_eq!(summary(&changes), [(A, "m4".to_string(), 1)]);
    assert_eq!(info(&t, "jobs"), Some((0, 4, 1)));
}

#[test]
fn headers_are_delivered_and_counted() {
    // Headers travel with the message and count against max_bytes.
    let mut t = table_with(QueueConfig {
        max_bytes: 10,
        ..QueueConfig::default()
    });
    let headers = vec![("k".to_string(), "vv".to_string())];
    let m = t
        .begin_publish("h", Bytes::from_static(b"1234567"), headers.clone())
        .unwrap();
    assert_eq!(m.size(), 10);
    let changes = t.publish_committed("h", m);
    assert!(changes.is_empty());
    let (_, changes) = consume(&mut t, A, "h", 1);
    assert_eq!(delivered(&changes)[0].headers, headers);
    assert!(matches!(
        t.begin_publish("h", Bytes::from_static(b"x"), Vec::new()),
        Err(CoreError::Queue(QueueError::QueueBytesFull {
            size: 1,
            limit: 10,
            ..
        }))
    ));
}

#[test]
fn prefetch_bounds_unacknowledged_deliveries() {
    // A consumer with prefetch 2 holds at most two deliveries; each ack lets
    // the next message through.
    let mut t = table();
    for i in 1..=5 {
        publish(&mut t, "q", &format!("m{i}"));
    }
    let (_, changes) = consume(&mut t, A, "q", 2);
    assert_eq!(bodies(&changes), ["m1", "m2"]);
    assert_eq!(info(&t, "q"), Some((3, 2, 1)));
    assert!(publish(&mut t, "q", "m6").is_empty());

    let first = ids(&changes)[0];
    let changes = ack(&mut t, A, first);
    // The ack removes m1; m3 goes out with its attempt recorded.
    assert_eq!(
        persisted(&changes),
        [
            StoreOp::Remove {
                queue: q("q"),
                seq: 1
            },
            StoreOp::SetAttempt {
                queue: q("q"),
                seq: 3,
                attempt: 1
            }
        ]
    );
    assert_eq!(bodies(&changes), ["m3"]);
    assert_eq!(info(&t, "q"), Some((3, 2, 1)));
}

#[test]
fn prefetch_zero_means_default_and_large_is_capped() {
    // 0 asks for DEFAULT_PREFETCH; anything above MAX_PREFETCH gets MAX_PREFETCH.
    let mut t = table();
    for i in 0..(DEFAULT_PREFETCH + MAX_PREFETCH + 10) {
        publish(&mut t, "q", &i.to_string());
    }
    let (_, changes) = consume(&mut t, A, "q", 0);
    assert_eq!(delivered(&changes).len(), DEFAULT_PREFETCH as usize);
    let (_, changes) = consume(&mut t, B, "q", u32::MAX);
    assert_eq!(delivered(&changes).len(), MAX_PREFETCH as usize);
}

#[test]
fn ack_and_nack_need_a_live_delivery_of_ones_own() {
    // Unknown ids, ids of another session and ids already acknowledged are
    // refused with distinct errors; nothing changes.
    let mut t = table();
    publish(&mut t, "q", "m1");
    let (_, changes) = consume(&mut t, A, "q", 1);
    let id = ids(&changes)[0];
    assert_eq!(
        t.ack(A, DeliveryId(999)),
        Err(QueueError::UnknownDelivery(DeliveryId(999)))
    );
    assert_eq!(t.ack(B, id), Err(QueueError::NotYourDelivery(id)));
    assert_eq!(t.nack(B, id, true), Err(QueueError::NotYourDelivery(id)));
    t.assert_consistent();
    assert_eq!(info(&t, "q"), Some((0, 1, 1)));
    ack(&mut t, A, id);
    assert_eq!(t.ack(A, id), Err(QueueError::UnknownDelivery(id)));
    assert_eq!(t.nack(A, id, false), Err(QueueError::UnknownDelivery(id)));
    assert_eq!(info(&t, "q"), Some((0, 0, 1)));
}

#[test]
fn nack_with_requeue_puts_the_message_back_at_the_head() {
    // The nacked message comes back before later ones, attempt raised;
    // each attempt is persisted as the message goes out.
    let mut t = table();
    for body in ["m1", "m2", "m3"] {
        publish(&mut t, "q", body);
    }
    let (_, changes) = consume(&mut t, A, "q", 1);
    assert_eq!(
        persisted(&changes),
        [StoreOp::SetAttempt {
            queue: q("q"),
            seq: 1,
            attempt: 1
        }]
    );
    let id = ids(&changes)[0];
    let changes = nack(&mut t, A, id, true);
    assert_eq!(
        persisted(&changes),
        [StoreOp::SetAttempt {
            queue: q("q"),
            seq: 1,
            attempt: 2
        }]
    );
    assert_eq!(summary(&changes), [(A, "m1".to_string(), 2)]);
    let again = ids(&changes)[0];
    assert_ne!(again, id, "a redelivery has a new delivery id");
    let changes = ack(&mut t, A, again);
    assert_eq!(summary(&changes), [(A, "m2".to_string(), 1)]);
}

#[test]
fn nack_without_requeue_drops_the_message() {
    // The message is removed from the store and never delivered again.
    let mut t = table();
    publish(&mut t, "q", "m1");
    publish(&mut t, "q", "m2");
    let (_, changes) = consume(&mut t, A, "q", 1);
    let changes = nack(&mut t, A, ids(&changes)[0], false);
    assert_eq!(
        persisted(&changes),
        [
            StoreOp::Remove {
                queue: q("q"),
                seq: 1
            },
            StoreOp::SetAttempt {
                queue: q("q"),
                seq: 2,
                attempt: 1
            }
        ]
    );
    assert_eq!(bodies(&changes), ["m2"]);
    let changes = ack(&mut t, A, ids(&changes)[0]);
    assert!(delivered(&changes).is_empty());
    assert_eq!(info(&t, "q"), Some((0, 0, 1)));
}

#[test]
fn goodbye_returns_unacked_deliveries_to_the_head_in_order() {
    // A holds m1..m3 and disconnects; B, full with m4 and m5, then gets
    // m1, m2, m3 (attempt 2) before m6, which was published after them.
    let mut t = table();
    for i in 1..=5 {
        publish(&mut t, "q", &format!("m{i}"));
    }
    let (_, a) = consume(&mut t, A, "q", 3);
    assert_eq!(bodies(&a), ["m1", "m2", "m3"]);
    let (_, b) = consume(&mut t, B, "q", 2);
    assert_eq!(bodies(&b), ["m4", "m5"]);
    assert!(publish(&mut t, "q", "m6").is_empty());

    let changes = t.goodbye(A);
    t.assert_consistent();
    // Their attempts were persisted when they went out to A.
    assert_eq!(
        persisted(&a),
        [1, 2, 3].map(|seq| StoreOp::SetAttempt {
            queue: q("q"),
            seq,
            attempt: 1
        })
    );
    assert!(persisted(&changes).is_empty());
    assert!(delivered(&changes).is_empty(), "B has no room yet");
    assert_eq!(info(&t, "q"), Some((4, 2, 1)));

    let b_ids = ids(&b);
    let changes = ack(&mut t, B, b_ids[0]);
    assert_eq!(summary(&changes), [(B, "m1".to_string(), 2)]);
    let changes = ack(&mut t, B, b_ids[1]);
    assert_eq!(summary(&changes), [(B, "m2".to_string(), 2)]);
    assert_eq!(info(&t, "q"), Some((2, 2, 1)));

    // A second goodbye, or one of a session that never consumed, is a no-op.
    assert!(t.goodbye(A).is_empty());
    assert!(t.goodbye(C).is_empty());
    t.assert_consistent();
}

#[test]
fn goodbye_redelivers_at_once_to_consumers_with_room() {
    // The returned messages go straight to another consumer that has room.
    let mut t = table();
    let (_, _) = consume(&mut t, A, "q", 10);
    let changes = publish(&mut t, "q", "m1");
    assert_eq!(summary(&changes), [(A, "m1".to_string(), 1)]);
    let (_, changes) = consume(&mut t, B, "q", 10);
    assert!(changes.is_empty());
    let changes = t.goodbye(A);
    t.assert_consistent();
    assert_eq!(summary(&changes), [(B, "m1".to_string(), 2)]);
    assert_eq!(info(&t, "q"), Some((0, 1, 1)));
}

#[test]
fn competing_consumers_are_served_round_robin() {
    // Consumers with room take turns; a full one is skipped.
    let mut t = table();
    consume(&mut t, A, "q", 10);
    consume(&mut t, B, "q", 10);
    let mut got = Vec::new();
    for i in 1..=4 {
        got.extend(summary(&publish(&mut t, "q", &format!("m{i}"))));
    }
    let who: Vec<SessionId> = got.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(who, [A, B, A, B]);

    let mut t = table();
    consume(&mut t, A, "q", 1);
    consume(&mut t, B, "q", 10);
    let mut who = Vec::new();
    for i in 1..=3 {
        who.extend(
            summary(&publish(&mut t, "q", &format!("m{i}")))
                .into_iter()
                .map(|(s, _, _)| s),
        );
    }
    assert_eq!(who, [A, B, B]);
    assert_eq!(info(&t, "q"), Some((0, 3, 2)));
}

#[test]
fn a_message_out_of_attempts_moves_to_the_dead_letter_queue() {
    // With max_attempts 2, the second nack moves the message to q.dead,
    // where it keeps its attempt count and says where it came from.
    let mut t = table_with(QueueConfig {
        max_attempts: 2,
        ..QueueConfig::default()
    });
    publish(&mut t, "q", "poison");
    let (_, changes) = consume(&mut t, A, "q", 1);
    let changes = nack(&mut t, A, ids(&changes)[0], true);
    assert_eq!(summary(&changes), [(A, "poison".to_string(), 2)]);
    let changes = nack(&mut t, A, ids(&changes)[0], true);
    assert!(delivered(&changes).is_empty());
    let ops = persisted(&changes);
    assert_eq!(ops.len(), 2);
    assert_eq!(
        ops[0],
        StoreOp::Remove {
            queue: q("q"),
            seq: 1
        }
    );
    let StoreOp::Append { queue, message } = &ops[1] else {
        panic!("expected an append, got {:?}", ops[1]);
    };
    assert_eq!(&**queue, "q.dead");
    assert_eq!(
        message.seq, 2,
        "a new sequence number in the dead-letter queue"
    );
    assert_eq!(message.attempt, 2);
    assert_eq!(message.payload, Bytes::from_static(b"poison"));
    let headers: HashMap<_, _> = message.headers.iter().cloned().collect();
    assert_eq!(headers[HEADER_DEAD_LETTER_QUEUE], "q");
    assert_eq!(headers[HEADER_DEAD_LETTER_SEQ], "1");
    assert!(changes.contains(&QueueChange::DeadLettered {
        queue: q("q"),
        seq: 1,
        dead_queue: q("q.dead"),
        dead_seq: 2,
        attempts: 2,
    }));
    assert_eq!(info(&t, "q"), Some((0, 0, 1)));
    assert_eq!(info(&t, "q.dead"), Some((1, 0, 0)));

    // The dead-letter queue is a normal queue, but it never dead-letters.
    let (_, changes) = consume(&mut t, B, "q.dead", 1);
    assert_eq!(summary(&changes), [(B, "poison".to_string(), 3)]);
    let mut id = ids(&changes)[0];
    for attempt in 4..10 {
        let changes = nack(&mut t, B, id, true);
        assert_eq!(summary(&changes), [(B, "poison".to_string(), attempt)]);
        id = ids(&changes)[0];
    }
    ack(&mut t, B, id);
    assert_eq!(info(&t, "q.dead"), Some((0, 0, 1)));
}

#[test]
fn disconnects_count_as_failed_attempts() {
    // A message whose consumers keep dying is dead-lettered too.
    let mut t = table_with(QueueConfig {
        max_attempts: 3,
        ..QueueConfig::default()
    });
    publish(&mut t, "q", "crashes-consumers");
    for (n, session) in [(1, SessionId(10)), (2, SessionId(11))] {
        let (_, changes) = consume(&mut t, session, "q", 1);
        assert_eq!(delivered(&changes)[0].attempt, n);
        // Recorded as it goes out: a crash of the broker counts too.
        assert_eq!(
            persisted(&changes),
            [StoreOp::SetAttempt {
                queue: q("q"),
                seq: 1,
                attempt: n
            }]
        );
        let changes = t.goodbye(session);
        t.assert_consistent();
        assert!(persisted(&changes).is_empty());
    }
    let (_, changes) = consume(&mut t, SessionId(12), "q", 1);
    assert_eq!(delivered(&changes)[0].attempt, 3);
    let changes = t.goodbye(SessionId(12));
    t.assert_consistent();
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, QueueChange::DeadLettered { attempts: 3, .. }))
    );
    assert_eq!(info(&t, "q"), None, "the idle queue is forgotten");
    assert_eq!(info(&t, "q.dead"), Some((1, 0, 0)));
}

#[test]
fn messages_loaded_out_of_attempts_are_dead_lettered() {
    // After a restart with a lower max_attempts, an exhausted message is
    // moved instead of delivered.
    let mut t = table_with(QueueConfig {
        max_attempts: 2,
        ..QueueConfig::default()
    });
    let msg = |seq, attempt| Message {
        seq,
        payload: Bytes::from_static(b"x"),
        headers: Vec::new(),
        attempt,
        publisher: None,
    };
    let changes = t.load("q", vec![msg(3, 5), msg(4, 1)]);
    t.assert_consistent();
    assert!(changes.iter().any(|c| matches!(
        c,
        QueueChange::DeadLettered {
            seq: 3,
            dead_seq: 5,
            ..
        }
    )));
    assert_eq!(info(&t, "q"), Some((1, 0, 0)));
    assert_eq!(info(&t, "q.dead"), Some((1, 0, 0)));
    let (_, changes) = consume(&mut t, A, "q", 5);
    let d = delivered(&changes);
    assert_eq!((d[0].seq, d[0].attempt), (4, 2));
}

#[test]
fn a_full_dead_letter_queue_drops_its_oldest() {
    // q.dead holds at most max_depth messages; the oldest ready one makes
    // room for the newcomer.
    let mut t = table_with(QueueConfig {
        max_attempts: 1,
        max_depth: 2,
        ..QueueConfig::default()
    });
    let (_, _) = consume(&mut t, A, "q", 1);
    let mut dropped = Vec::new();
    for i in 1..=3 {
        let changes = publish(&mut t, "q", &format!("m{i}"));
        let changes = nack(&mut t, A, ids(&changes)[0], true);
        dropped.extend(changes.iter().filter_map(|c| match c {
            QueueChange::Dropped { queue, seq, reason } => Some((queue.clone(), *seq, *reason)),
            _ => None,
        }));
    }
    // Sequence numbers: m1=1 -> dead 2, m2=3 -> dead 4, m3=5 -> dead 6.
    assert_eq!(dropped, [(q("q.dead"), 2, DropReason::DeadLetterQueueFull)]);
    assert_eq!(info(&t, "q.dead"), Some((2, 0, 0)));

    // When nothing there is ready to drop, the newcomer is dropped.
    let (_, changes) = consume(&mut t, B, "q.dead", 10);
    assert_eq!(delivered(&changes).len(), 2);
    let changes = publish(&mut t, "q", "m4");
    let changes = nack(&mut t, A, ids(&changes)[0], true);
    assert_eq!(
        persisted(&changes),
        [StoreOp::Remove {
            queue: q("q"),
            seq: 7
        }]
    );
    assert!(changes.contains(&QueueChange::Dropped {
        queue: q("q"),
        seq: 7,
        reason: DropReason::DeadLetterQueueFull
    }));
    assert_eq!(info(&t, "q.dead"), Some((0, 2, 1)));
}

#[test]
fn a_queue_whose_name_is_too_long_for_a_dead_letter_queue_drops() {
    // `<name>.dead` would break the naming rule: the message is dropped.
    let mut t = table_with(QueueConfig {
        max_attempts: 1,
        ..QueueConfig::default()
    });
    let name = "n".repeat(MAX_NAME);
    let (_, _) = consume(&mut t, A, &name, 1);
    let changes = publish(&mut t, &name, "m");
    let changes = nack(&mut t, A, ids(&changes)[0], true);
    assert!(changes.iter().any(|c| matches!(
        c,
        QueueChange::Dropped {
            reason: DropReason::NoDeadLetterQueue,
            ..
        }
    )));
    assert_eq!(info(&t, &name), Some((0, 0, 1)));
}

const MAX_NAME: usize = crate::core::MAX_NAME_BYTES;

#[test]
fn depth_and_bytes_limits_count_uncommitted_publishes() {
    // Reservations count: two publishes in flight fill a queue of depth 2,
    // and a failed one frees its room.
    let mut t = table_with(QueueConfig {
        max_depth: 2,
        max_bytes: 100,
        ..QueueConfig::default()
    });
    let m1 = t
        .begin_publish("q", Bytes::from_static(b"a"), Vec::new())
        .unwrap();
    let m2 = t
        .begin_publish("q", Bytes::from_static(b"b"), Vec::new())
        .unwrap();
    t.assert_consistent();
    assert_eq!(
        t.begin_publish("q", Bytes::from_static(b"c"), Vec::new()),
        Err(CoreError::Queue(QueueError::QueueFull {
            queue: q("q"),
            limit: 2
        }))
    );
    assert!(t.publish_failed("q", m2.seq).is_empty());
    t.assert_consistent();
    let m3 = t
        .begin_publish("q", Bytes::from_static(b"c"), Vec::new())
        .unwrap();
    t.publish_committed("q", m1);
    t.publish_committed("q", m3);
    t.assert_consistent();

    // Delivered and unacknowledged messages count too; an ack frees room.
    let (_, changes) = consume(&mut t, A, "q", 10);
    assert!(t.begin_publish("q", Bytes::new(), Vec::new()).is_err());
    ack(&mut t, A, ids(&changes)[0]);
    assert!(t.begin_publish("q", Bytes::new(), Vec::new()).is_ok());

    // Bytes: 60 reserved + 50 would pass 100.
    let mut t = table_with(QueueConfig {
        max_bytes: 100,
        ..QueueConfig::default()
    });
    let big = t
        .begin_publish("q", Bytes::from(vec![0u8; 60]), Vec::new())
        .unwrap();
    assert_eq!(
        t.begin_publish("q", Bytes::from(vec![0u8; 50]), Vec::new()),
        Err(CoreError::Queue(QueueError::QueueBytesFull {
            queue: q("q"),
            size: 50,
            limit: 100
        }))
    );
    assert!(
        t.begin_publish("q", Bytes::from(vec![0u8; 40]), Vec::new())
            .is_ok()
    );
    t.publish_failed("q", big.seq);
    assert!(
        t.begin_publish("q", Bytes::from(vec![0u8; 50]), Vec::new())
            .is_ok()
    );
    t.assert_consistent();

    // Limits are per queue.
    assert!(
        t.begin_publish("other", Bytes::from(vec![0u8; 100]), Vec::new())
            .is_ok()
    );
    // A message larger than a whole queue never fits.
    assert!(matches!(
        t.begin_publish("empty", Bytes::from(vec![0u8; 101]), Vec::new()),
        Err(CoreError::Queue(QueueError::QueueBytesFull { .. }))
    ));
    assert_eq!(
        info(&t, "empty"),
        None,
        "a refused publish creates no queue"
    );
}

#[test]
fn a_message_waits_for_lower_publishes_to_be_durable() {
    // m2 commits before m1: it is not delivered ahead of m1; a failed m1
    // releases it.
    let mut t = table();
    consume(&mut t, A, "q", 10);
    let m1 = t
        .begin_publish("q", Bytes::from_static(b"m1"), Vec::new())
        .unwrap();
    let m2 = t
        .begin_publish("q", Bytes::from_static(b"m2"), Vec::new())
        .unwrap();
    let m3 = t
        .begin_publish("q", Bytes::from_static(b"m3"), Vec::new())
        .unwrap();
    assert!(t.publish_committed("q", m2).is_empty());
    t.assert_consistent();
    assert_eq!(info(&t, "q"), Some((1, 0, 1)));
    assert_eq!(bodies(&t.publish_committed("q", m1)), ["m1", "m2"]);
    t.assert_consistent();
    let m4 = t
        .begin_publish("q", Bytes::from_static(b"m4"), Vec::new())
        .unwrap();
    assert!(t.publish_committed("q", m4).is_empty());
    assert_eq!(bodies(&t.publish_failed("q", m3.seq)), ["m4"]);
    t.assert_consistent();
}

#[test]
fn a_queue_loaded_only_with_dead_letters_is_not_kept() {
    // Every loaded message is out of attempts: all move to q.dead, and q,
    // now idle, is forgotten rather than listed empty.
    let mut t = table_with(QueueConfig {
        max_attempts: 2,
        ..QueueConfig::default()
    });
    let poison = Message {
        seq: 7,
        payload: Bytes::from_static(b"poison"),
        headers: Vec::new(),
        attempt: 2,
        publisher: None,
    };
    t.load("q", vec![poison]);
    t.assert_consistent();
    assert_eq!(info(&t, "q"), None);
    assert_eq!(info(&t, "q.dead"), Some((1, 0, 0)));
}

#[test]
fn sequence_numbers_only_increase() {
    // Sequence numbers continue above the store's high-water mark and
    // above every loaded message, across queues.
    let mut t = QueueTable::new(QueueConfig::default(), 100);
    let m = t.begin_publish("a", Bytes::new(), Vec::new()).unwrap();
    assert_eq!(m.seq, 101);
    let loaded = vec![
        Message {
            seq: 150,
            payload: Bytes::new(),
            headers: Vec::new(),
            attempt: 0,
            publisher: None,
        },
        Message {
            seq: 170,
            payload: Bytes::new(),
            headers: Vec::new(),
            attempt: 1,
            publisher: None,
        },
    ];
    t.load("b", loaded);
    t.assert_consistent();
    assert_eq!(
        t.begin_publish("a", Bytes::new(), Vec::new()).unwrap().seq,
        171
    );
    assert_eq!(
        t.begin_publish("b", Bytes::new(), Vec::new()).unwrap().seq,
        172
    );
    let (_, changes) = consume(&mut t, A, "b", 10);
    let d = delivered(&changes);
    assert_eq!(
        d.iter().map(|d| (d.seq, d.attempt)).collect::<Vec<_>>(),
        [(150, 1), (170, 2)]
    );
}

#[test]
fn names_and_consumer_quota_are_checked() {
    // Bad names are InvalidName; a session has at most
    // max_consumers_per_session consumers.
    let mut t = table_with(QueueConfig {
        max_consumers_per_session: 2,
        ..QueueConfig::default()
    });
    assert!(matches!(
        t.begin_publish("", Bytes::new(), Vec::new()),
        Err(CoreError::InvalidName { what: "queue", .. })
    ));
    assert!(matches!(
        t.consume(A, "a\nb", 1),
        Err(CoreError::InvalidName { what: "queue", .. })
    ));
    assert!(matches!(
        t.consume(A, &"x".repeat(MAX_NAME + 1), 1),
        Err(CoreError::InvalidName { what: "queue", .. })
    ));
    consume(&mut t, A, "q", 1);
    consume(&mut t, A, "q", 1);
    assert_eq!(
        t.consume(A, "r", 1),
        Err(CoreError::Queue(QueueError::TooManyConsumers { limit: 2 }))
    );
    consume(&mut t, B, "r", 1);
    assert!(t.info().iter().all(|i| &*i.queue != "a\nb"));
}

#[test]
fn info_lists_queues_by_name_and_forgets_idle_ones() {
    // info counts ready, unacked and consumers per queue, sorted by name.
    let mut t = table();
    publish(&mut t, "zeta", "1");
    publish(&mut t, "alpha", "1");
    publish(&mut t, "alpha", "2");
    let (_, changes) = consume(&mut t, A, "alpha", 1);
    consume(&mut t, B, "mid", 1);
    let infos = t.info();
    let names: Vec<&str> = infos.iter().map(|i| &*i.queue).collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    assert_eq!(info(&t, "alpha"), Some((1, 1, 1)));
    assert_eq!(info(&t, "mid"), Some((0, 0, 1)));
    assert_eq!(info(&t, "zeta"), Some((1, 0, 0)));
    t.goodbye(B);
    let changes = ack(&mut t, A, ids(&changes)[0]);
    ack(&mut t, A, ids(&changes)[0]);
    t.goodbye(A);
    t.assert_consistent();
    let names: Vec<Arc<str>> = t.info().into_iter().map(|i| i.queue).collect();
    assert_eq!(names, [q("zeta")]);
}

/// One step of a random workload.
#[derive(Clone, Debug)]
enum Op {
    /// To queue 0 or 1, from no uid (privileged) or uid 1 or 2.
    Publish(u8, u8),
    Commit,
    Fail,
    Consume(u8, u8, u32),
    Ack(u8),
    Nack(u8, bool),
    Goodbye(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2u8, 0..3u8).prop_map(|(q, u)| Op::Publish(q, u)),
        Just(Op::Commit),
        Just(Op::Fail),
        (0..3u8, 0..2u8, 0..4u32).prop_map(|(s, q, p)| Op::Consume(s, q, p)),
        any::<u8>().prop_map(Op::Ack),
        (any::<u8>(), any::<bool>()).prop_map(|(d, r)| Op::Nack(d, r)),
        (0..3u8).prop_map(Op::Goodbye),
    ]
}

proptest! {
    /// Whatever happens, the bookkeeping holds, no message is delivered
    /// twice at once, and every durable message is accounted for: ready,
    /// in flight, acknowledged, dropped by a nack, or dead-lettered.
    #[test]
    fn random_workloads_keep_every_message_accounted_for(ops in proptest::collection::vec(op(), 1..120)) {
        let mut t = table_with(QueueConfig { max_attempts: 3, max_depth: 6, max_depth_per_uid: 2, max_stored_messages_per_uid: 3, max_queues_per_uid: 1, ..QueueConfig::default() });
        let queues = ["q0", "q1"];
        let mut reserved: Vec<(&str, Message)> = Vec::new();
        let mut in_flight: HashMap<DeliveryId, (SessionId, u64)> = HashMap::new();
        let mut stored: HashSet<(Arc<str>, u64)> = HashSet::new();
        let apply = |changes: Vec<QueueChange>, in_flight: &mut HashMap<DeliveryId, (SessionId, u64)>, stored: &mut HashSet<(Arc<str>, u64)>| {
            for c in changes {
                match c {
                    QueueChange::Deliver { session, delivery } => {
                        assert!(stored.contains(&(delivery.queue.clone(), delivery.seq)), "delivered a message not stored");
                        assert!(!in_flight.values().any(|(_, s)| *s == delivery.seq), "delivered twice at once");
                        in_flight.insert(delivery.delivery_id, (session, delivery.seq));
                    }
                    QueueChange::Persist(StoreOp::Append { queue, message }) => {
                        assert!(stored.insert((queue, message.seq)));
                    }
                    QueueChange::Persist(StoreOp::Remove { queue, seq }) => {
                        assert!(stored.remove(&(queue, seq)), "removed a message not stored");
                    }
                    QueueChange::Persist(StoreOp::SetAttempt { queue, seq, .. }) => {
                        assert!(stored.contains(&(queue, seq)));
                    }
                    _ => {}
                }
            }
        };
        for op in ops {
            match op {
                Op::Publish(qi, uid) => {
                    let name = queues[qi as usize];
                    let publisher = (uid > 0).then_some(u32::from(uid));
                    let payload = Bytes::from_static(b"x");
                    if let Ok(m) = t.begin_publish_from(name, payload, Vec::new(), publisher) {
                        reserved.push((name, m));
                    }
                }
                Op::Commit => {
                    if let Some((name, m)) = reserved.pop() {
                        stored.insert((q(name), m.seq));
                        let changes = t.publish_committed(name, m);
                        apply(changes, &mut in_flight, &mut stored);
                    }
                }
                Op::Fail => {
                    if !reserved.is_empty() {
                        let (name, m) = reserved.remove(0);
                        let changes = t.publish_failed(name, m.seq);
                        apply(changes, &mut in_flight, &mut stored);
                    }
                }
                Op::Consume(s, qi, p) => {
                    if let Ok((_, changes)) = t.consume(SessionId(s.into()), queues[qi as usize], p) {
                        apply(changes, &mut in_flight, &mut stored);
                    }
                }
                Op::Ack(i) | Op::Nack(i, _) if in_flight.is_empty() => { let _ = i; }
                Op::Ack(i) => {
                    let mut keys: Vec<DeliveryId> = in_flight.keys().copied().collect();
                    keys.sort();
                    let id = keys[i as usize % keys.len()];
                    let (session, _) = in_flight.remove(&id).unwrap();
                    let changes = t.ack(session, id).unwrap();
                    apply(changes, &mut in_flight, &mut stored);
                }
                Op::Nack(i, requeue) => {
                    let mut keys: Vec<DeliveryId> = in_flight.keys().copied().collect();
                    keys.sort();
                    let id = keys[i as usize % keys.len()];
                    let (session, _) = in_flight.remove(&id).unwrap();
                    let changes = t.nack(session, id, requeue).unwrap();
                    apply(changes, &mut in_flight, &mut stored);
                }
                Op::Goodbye(s) => {
                    let session = SessionId(s.into());
                    in_flight.retain(|_, (owner, _)| *owner != session);
                    let changes = t.goodbye(session);
                    apply(changes, &mut in_flight, &mut stored);
                }
            }
            t.assert_consistent();
            let held: usize = t.info().iter().map(|i| (i.ready + i.unacked) as usize).sum();
            prop_assert_eq!(held, stored.len(), "the table and the store disagree");
            prop_assert_eq!(t.deliveries.len(), in_flight.len());
        }
    }
}

#[test]
fn one_user_cannot_fill_a_queue_for_everyone() {
    // uid 1000 may hold 3 messages of the queue; root's and another uid's
    // publishes still go in, and consuming frees the share again.
    let mut t = table_with(QueueConfig {
        max_depth_per_uid: 3,
        max_bytes_per_uid: 1000,
        ..QueueConfig::default()
    });
    let from = |t: &mut QueueTable, uid: Option<u32>| {
        t.begin_publish_from("jobs", Bytes::from_static(b"x"), Vec::new(), uid)
            .map(|m| t.publish_committed("jobs", m))
    };
    for _ in 0..3 {
        from(&mut t, Some(1000)).unwrap();
    }
    assert_eq!(
        from(&mut t, Some(1000)).map(|_| ()),
        Err(CoreError::Queue(QueueError::UserQuota {
            queue: "jobs".into(),
            uid: 1000,
            what: "messages",
            limit: 3,
        }))
    );
    from(&mut t, Some(1001)).unwrap();
    from(&mut t, None).unwrap();
    t.assert_consistent();
    // Consumed and acknowledged: the share is free again.
    let (_, changes) = t.consume(SessionId(1), "jobs", 16).unwrap();
    let first = changes
        .iter()
        .find_map(|c| match c {
            QueueChange::Deliver { delivery, .. } => Some(delivery.delivery_id),
            _ => None,
        })
        .unwrap();
    t.ack(SessionId(1), first).unwrap();
    t.assert_consistent();
    from(&mut t, Some(1000)).unwrap();
    t.assert_consistent();
}

#[test]
fn a_users_share_is_counted_in_bytes_too() {
    let mut t = table_with(QueueConfig {
        max_bytes_per_uid: 10,
        ..QueueConfig::default()
    });
    t.begin_publish_from("q", Bytes::from(vec![0u8; 8]), Vec::new(), Some(7))
        .unwrap();
    let refused = t.begin_publish_from("q", Bytes::from(vec![0u8; 3]), Vec::new(), Some(7));
    assert!(matches!(
        refused,
        Err(CoreError::Queue(QueueError::UserQuota {
            what: "bytes",
            ..
        }))
    ));
    // The sentence names the flag that sets the share.
    let said = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(said.contains("--max-queue-bytes-per-uid"), "{said}");
    t.assert_consistent();
}

/// Publishes `body` to `queue` from `uid` and commits it.
fn publish_from(
    t: &mut QueueTable,
    queue: &str,
    body: &str,
    uid: Option<u32>,
) -> Result<u64, CoreError> {
    let m = t.begin_publish_from(
        queue,
        Bytes::copy_from_slice(body.as_bytes()),
        Vec::new(),
        uid,
    )?;
    let seq = m.seq;
    t.publish_committed(queue, m);
    t.assert_consistent();
    Ok(seq)
}

#[track_caller]
fn refused_stored(r: Result<u64, CoreError>, what: &str) {
    match r {
        Err(CoreError::Queue(QueueError::UserStored {
            uid: 1000, what: w, ..
        })) if w == what => {}
        other => panic!("expected a refusal for {what} over all queues, got {other:?}"),
    }
}

#[test]
fn one_user_is_bounded_over_all_queues_together() {
    // uid 1000 may have 4 messages over every queue, each queue allowing
    // it 10: spreading over queues does not get it past 4.
    let mut t = table_with(QueueConfig {
        max_depth_per_uid: 10,
        max_stored_messages_per_uid: 4,
        max_attempts: 1,
        ..QueueConfig::default()
    });
    for queue in ["a", "a", "b", "c"] {
        publish_from(&mut t, queue, "x", Some(1000)).unwrap();
    }
    refused_stored(publish_from(&mut t, "d", "x", Some(1000)), "messages");
    refused_stored(publish_from(&mut t, "a", "x", Some(1000)), "messages");
    // The refusal names the flag.
    let e = publish_from(&mut t, "d", "x", Some(1000)).unwrap_err();
    assert!(
        e.to_string().contains("--max-stored-messages-per-uid"),
        "{e}"
    );
    // Another user, root and the broker's own user are not concerned.
    publish_from(&mut t, "d", "x", Some(1001)).unwrap();
    publish_from(&mut t, "d", "x", None).unwrap();

    // An acknowledged message frees a place.
    let (_, changes) = consume(&mut t, A, "c", 1);
    let id = ids(&changes)[0];
    ack(&mut t, A, id);
    publish_from(&mut t, "d", "x", Some(1000)).unwrap();
    refused_stored(publish_from(&mut t, "e", "x", Some(1000)), "messages");

    // A reservation counts until it fails.
    t.goodbye(A);
    let (_, changes) = consume(&mut t, A, "d", 16);
    for id in ids(&changes) {
        ack(&mut t, A, id);
    }
    let m = t
        .begin_publish_from("e", Bytes::from_static(b"x"), Vec::new(), Some(1000))
        .unwrap();
    refused_stored(publish_from(&mut t, "e", "y", Some(1000)), "messages");
    t.publish_failed("e", m.seq);
    t.assert_consistent();
    publish_from(&mut t, "e", "x", Some(1000)).unwrap();

    // A dead-lettered message still counts against its publisher, in
    // QUEUE.dead; it is freed when consumed there.
    let (_, changes) = consume(&mut t, B, "a", 1);
    let id = ids(&changes)[0];
    let changes = nack(&mut t, B, id, true);
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, QueueChange::DeadLettered { .. })),
        "{changes:?}"
    );
    refused_stored(publish_from(&mut t, "f", "x", Some(1000)), "messages");
    t.goodbye(B);
    let (_, changes) = consume(&mut t, B, "a.dead", 1);
    ack(&mut t, B, ids(&changes)[0]);
    publish_from(&mut t, "f", "x", Some(1000)).unwrap();

    // A purge frees what it drops; a nack without requeue what it drops.
    t.goodbye(B);
    let (dropped, _) = t.purge("b");
    assert_eq!(dropped, 1);
    t.assert_consistent();
    publish_from(&mut t, "g", "x", Some(1000)).unwrap();
    let (_, changes) = consume(&mut t, C, "g", 1);
    nack(&mut t, C, ids(&changes)[0], false);
    publish_from(&mut t, "h", "x", Some(1000)).unwrap();
    refused_stored(publish_from(&mut t, "i", "x", Some(1000)), "messages");
}

#[test]
fn one_users_bytes_are_bounded_over_all_queues_together() {
    let mut t = table_with(QueueConfig {
        max_bytes_per_uid: 8,
        max_stored_bytes_per_uid: 12,
        ..QueueConfig::default()
    });
    publish_from(&mut t, "a", "12345678", Some(1000)).unwrap();
    publish_from(&mut t, "b", "1234", Some(1000)).unwrap();
    refused_stored(publish_from(&mut t, "c", "1", Some(1000)), "bytes");
    let e = publish_from(&mut t, "c", "1", Some(1000)).unwrap_err();
    assert!(e.to_string().contains("--max-stored-bytes-per-uid"), "{e}");
    publish_from(&mut t, "c", "1", Some(1001)).unwrap();
}

#[test]
fn one_user_may_have_messages_in_so_many_queues() {
    // uid 1000 may have messages in 2 queues: more in those is fine, a
    // third is refused until one of the two is emptied of its messages.
    let mut t = table_with(QueueConfig {
        max_queues_per_uid: 2,
        ..QueueConfig::default()
    });
    publish_from(&mut t, "a", "x", Some(1000)).unwrap();
    publish_from(&mut t, "b", "x", Some(1000)).unwrap();
    publish_from(&mut t, "b", "y", Some(1000)).unwrap();
    let refused = publish_from(&mut t, "c", "x", Some(1000));
    assert_eq!(
        refused,
        Err(CoreError::Queue(QueueError::UserQueues {
            uid: 1000,
            limit: 2
        }))
    );
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("--max-queues-per-uid")
    );
    // Someone else's messages in "c" do not make it one of uid 1000's.
    publish_from(&mut t, "c", "x", Some(1001)).unwrap();
    publish_from(&mut t, "c", "x", None).unwrap();
    assert!(publish_from(&mut t, "c", "x", Some(1000)).is_err());
    // "a" emptied of uid 1000's message: "c" may be its second queue.
    let (_, changes) = consume(&mut t, A, "a", 1);
    ack(&mut t, A, ids(&changes)[0]);
    publish_from(&mut t, "c", "x", Some(1000)).unwrap();
    assert!(publish_from(&mut t, "a", "x", Some(1000)).is_err());
}

#[test]
fn a_users_totals_are_counted_again_from_what_the_store_held() {
    // After a restart the loaded messages count against their publisher
    // as before: the bound is not reset by restarting the broker.
    let mut t = table_with(QueueConfig {
        max_stored_messages_per_uid: 3,
        max_queues_per_uid: 3,
        ..QueueConfig::default()
    });
    let stored = |seq: u64, publisher: Option<u32>| Message {
        seq,
        payload: Bytes::from_static(b"x"),
        headers: Vec::new(),
        attempt: 0,
        publisher,
    };
    t.load("a", vec![stored(1, Some(1000)), stored(2, None)]);
    t.load("b", vec![stored(3, Some(1000)), stored(4, Some(1001))]);
    t.load("c", vec![stored(5, Some(1000))]);
    t.assert_consistent();
    refused_stored(publish_from(&mut t, "a", "x", Some(1000)), "messages");
    publish_from(&mut t, "a", "x", Some(1001)).unwrap();
    // Loading is never refused, even past a limit lowered since.
    t.load("d", vec![stored(6, Some(1000)), stored(7, Some(1000))]);
    t.assert_consistent();
    assert_eq!(t.stored_by_uid[&1000].messages, 5);
    assert_eq!(t.stored_by_uid[&1000].queues, 4);
}
