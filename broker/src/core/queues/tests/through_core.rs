//! The queue table as the core drives it: one goodbye path for leases and
//! deliveries alike, startup from what the store held, and refusals as
//! `CoreError::Queue`. The table's own rules (order, prefetch, dead
//! letters) are tested beside it, in `mod.rs`.

use bytes::Bytes;

use crate::core::tests::{acquire_ex, connect, core, core_with, expect_granted};
use crate::core::{
    Change, Core, CoreConfig, CoreError, Delivery, DeliveryId, Message, QueueChange, QueueConfig,
    QueueError, SessionId, StoreOp,
};

/// Publishes and commits at once; returns the sequence number.
#[track_caller]
fn publish(core: &mut Core, queue: &str, body: &str) -> u64 {
    let m = core
        .queues
        .begin_publish(queue, Bytes::copy_from_slice(body.as_bytes()), Vec::new())
        .expect("publish refused");
    let seq = m.seq;
    core.queues.publish_committed(queue, m);
    seq
}

/// The deliveries among `changes`, with their sessions, in order.
fn deliveries(changes: &[Change]) -> Vec<(SessionId, &Delivery)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Queue(QueueChange::Deliver { session, delivery }) => Some((*session, delivery)),
            _ => None,
        })
        .collect()
}

/// The store writes among `changes`, in order.
fn writes(changes: &[Change]) -> Vec<&StoreOp> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Queue(QueueChange::Persist(op)) => Some(op),
            _ => None,
        })
        .collect()
}

fn stored(seq: u64, body: &str, attempt: u32) -> Message {
    Message {
        seq,
        payload: Bytes::copy_from_slice(body.as_bytes()),
        headers: Vec::new(),
        attempt,
        publisher: None,
    }
}

#[test]
fn goodbye_hands_unacknowledged_deliveries_to_another_consumer() {
    // The agent dies holding two deliveries and a lease: the one goodbye
    // path ends the lease and gives both messages, in order and with
    // attempt 2, to the other consumer.
    let mut core = core();
    let agent = connect(&mut core, "agent");
    let other = connect(&mut core, "other");
    publish(&mut core, "notices", "a");
    publish(&mut core, "notices", "b");
    let (_, changes) = core.consume(agent, "notices", 0).unwrap();
    assert_eq!(deliveries(&changes).len(), 2);
    expect_granted(&acquire_ex(&mut core, agent, "pcm", 0));
    let (_, changes) = core.consume(other, "notices", 0).unwrap();
    assert!(deliveries(&changes).is_empty(), "nothing ready for it yet");

    let changes = core.goodbye(agent, 10);
    let handed: Vec<_> = deliveries(&changes)
        .into_iter()
        .map(|(s, d)| (s, d.payload.clone(), d.attempt))
        .collect();
    assert_eq!(
        handed,
        [
            (other, Bytes::from_static(b"a"), 2),
            (other, Bytes::from_static(b"b"), 2),
        ]
    );
    assert!(
        core.status(&[]).resources.is_empty(),
        "the lease ended with its session"
    );
    let info = core.queues.info();
    assert_eq!(
        (info[0].ready, info[0].unacked, info[0].consumers),
        (0, 2, 1)
    );
}

#[test]
fn a_restored_core_continues_sequence_numbers_and_delivers_what_was_stored() {
    // What the store held comes back ready, in order; new publishes get
    // sequence numbers above the store's high-water mark.
    let mut core = core();
    let changes = core.restore_queues(
        40,
        vec![(
            "notices".to_string(),
            vec![stored(12, "old", 1), stored(30, "older than new", 0)],
        )],
    );
    assert!(changes.is_empty(), "nothing to write: {changes:?}");
    assert_eq!(publish(&mut core, "notices", "new"), 41);
    let agent = connect(&mut core, "agent");
    let (_, changes) = core.consume(agent, "notices", 0).unwrap();
    let got: Vec<_> = deliveries(&changes)
        .into_iter()
        .map(|(_, d)| (d.seq, d.attempt))
        .collect();
    assert_eq!(got, [(12, 2), (30, 1), (41, 1)]);
}

#[test]
fn a_stored_message_out_of_attempts_is_dead_lettered_at_startup() {
    // Loaded with as many attempts as allowed, the message moves to the
    // dead-letter queue at once, and the move is one Remove plus one Append.
    let mut core = core_with(CoreConfig {
        queues: QueueConfig {
            max_attempts: 3,
            ..QueueConfig::default()
        },
        ..CoreConfig::default()
    });
    let changes = core.restore_queues(5, vec![("jobs".to_string(), vec![stored(5, "poison", 3)])]);
    let ops = writes(&changes);
    match ops[..] {
        [
            StoreOp::Remove { seq: 5, .. },
            StoreOp::Append { queue, message },
        ] => {
            assert_eq!((&**queue, message.seq), ("jobs.dead", 6));
        }
        _ => panic!("expected a Remove and an Append: {ops:?}"),
    }
    let info = core.queues.info();
    assert_eq!(info.len(), 1);
    assert_eq!((&*info[0].queue, info[0].ready), ("jobs.dead", 1));
}

#[test]
fn queue_refusals_are_core_errors() {
    // Bad names, a full queue, a foreign or unknown delivery, and a consumer
    // for a closed session are refused, each with its reason.
    let mut core = core_with(CoreConfig {
        queues: QueueConfig {
            max_depth: 1,
            ..QueueConfig::default()
        },
        ..CoreConfig::default()
    });
    assert!(matches!(
        core.queues.begin_publish("", Bytes::new(), Vec::new()),
        Err(CoreError::InvalidName { what: "queue", .. })
    ));
    publish(&mut core, "q", "one");
    assert!(matches!(
        core.queues.begin_publish("q", Bytes::new(), Vec::new()),
        Err(CoreError::Queue(QueueError::QueueFull { limit: 1, .. }))
    ));
    let a = connect(&mut core, "a");
    let b = connect(&mut core, "b");
    let (_, changes) = core.consume(a, "q", 0).unwrap();
    let id = deliveries(&changes)[0].1.delivery_id;
    assert_eq!(
        core.queues.ack(b, id).unwrap_err(),
        QueueError::NotYourDelivery(id)
    );
    assert_eq!(
        core.queues.nack(b, DeliveryId(999), true).unwrap_err(),
        QueueError::UnknownDelivery(DeliveryId(999))
    );
    core.goodbye(b, 0);
    assert!(matches!(
        core.consume(b, "q", 0),
        Err(CoreError::WrongState(_))
    ));
    assert!(core.queues.ack(a, id).is_ok());
}
