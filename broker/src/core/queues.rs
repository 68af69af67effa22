//! The queue table: named message queues with competing consumers,
//! at-least-once delivery and dead-lettering.
//!
//! It owns, per queue, the messages ready for delivery, the count of those
//! delivered and not yet acknowledged, the publishes reserved but not yet
//! durable, and the consumers with their prefetch windows. It does no I/O:
//! what must be written is returned as [`QueueChange::Persist`], and a
//! publish is split in two ([`QueueTable::begin_publish`], then
//! [`QueueTable::publish_committed`] or [`QueueTable::publish_failed`]) so
//! that the dispatch layer can make it durable in between.
//!
//! Invariants (checked after every step of the tests):
//! - every message is in exactly one place: reserved, ready, or in flight
//!   to one consumer;
//! - a queue is served lowest sequence number first, and a message is not
//!   delivered while a publish with a lower sequence number is still being
//!   made durable, so first deliveries follow publish order and a message
//!   handed back (nack, or its consumer's connection closed) goes back ahead
//!   of every message published after it;
//! - a consumer never has more than its prefetch unacknowledged deliveries;
//!   consumers with room are served round robin;
//! - depth and bytes (reserved, ready and in flight together) stay within
//!   [`QueueConfig`] for publishes, per queue, per publisher in each queue,
//!   and per publisher over every queue together (its messages, their
//!   bytes, and the queues it has messages in); messages loaded at startup
//!   are always accepted, even past a limit lowered since, and are counted
//!   against their publisher again;
//! - a message moved (to a dead-letter queue and back) still counts
//!   against its publisher, in the queue it is in now; a move is never
//!   refused for the publisher's total, which it does not raise (but for
//!   the dead-letter headers' few bytes);
//! - sequence numbers come from one counter for all queues: strictly
//!   increasing per queue, never reused, also after a restart (the store
//!   keeps the high-water mark).
//!
//! It does not decide who may publish or consume (that is the policy's
//! job) and does not know whether a session is still connected: the core
//! calls [`QueueTable::goodbye`] when it is not.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::Map;
pub use super::errors::QueueError;
pub use super::types::{ConsumerId, DeliveryId, QueueConfig};
use super::{CoreError, SessionId, check_name};

/// Prefetch used when `Consume` says 0.
pub const DEFAULT_PREFETCH: u32 = 16;

/// Largest prefetch honoured; a larger request is lowered to it.
pub const MAX_PREFETCH: u32 = 1024;

/// Appended to a queue's name to name its dead-letter queue. A queue whose
/// name ends with it never dead-letters: its messages are redelivered for
/// as long as they are handed back.
pub const DEAD_LETTER_SUFFIX: &str = ".dead";

/// Header added to a dead-lettered message: the queue it failed in.
pub const HEADER_DEAD_LETTER_QUEUE: &str = "turnstile-dead-letter-queue";

/// Header added to a dead-lettered message: its sequence number in the
/// queue it failed in (it gets a new one in the dead-letter queue).
pub const HEADER_DEAD_LETTER_SEQ: &str = "turnstile-dead-letter-seq";

/// A message as the queue and the store keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its place in its queue: strictly increasing in publish order.
    pub seq: u64,
    /// The body, opaque to the broker.
    pub payload: Bytes,
    /// The publisher's headers (unique keys).
    pub headers: Vec<(String, String)>,
    /// Deliveries so far (0 = never delivered).
    pub attempt: u32,
    /// The uid it counts against ([`QueueConfig::max_depth_per_uid`],
    /// [`QueueConfig::max_stored_messages_per_uid`] and the like); `None`
    /// for a privileged publisher (root, the broker's own user), whose
    /// messages count only against the queue's own limits.
    pub publisher: Option<u32>,
}

impl Message {
    /// The bytes it counts against its queue's `max_bytes`: payload plus
    /// every header key and value.
    pub fn size(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        (self.payload.len() + headers) as u64
    }
}

/// One message handed to one consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The consumer it was handed to.
    pub consumer: ConsumerId,
    /// What the consumer names in `Ack` / `Nack`.
    pub delivery_id: DeliveryId,
    /// The message's sequence number in its queue.
    pub seq: u64,
    /// The queue.
    pub queue: Arc<str>,
    /// The body.
    pub payload: Bytes,
    /// The publisher's headers.
    pub headers: Vec<(String, String)>,
    /// 1 for the first delivery, raised by one on each redelivery.
    pub attempt: u32,
}

/// A write the store must make. The ops returned by one call belong
/// together (a dead-letter move is a `Remove` plus an `Append`): commit
/// them in one transaction. None of them has to be durable before the
/// changes that follow it are delivered: a lost one only makes a restart
/// redeliver a message, which at-least-once allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Add a message (a publish, or a move into a dead-letter queue).
    Append {
        /// The queue.
        queue: Arc<str>,
        /// The message, with its sequence number and attempt count.
        message: Message,
    },
    /// Delete a message: acknowledged, dropped by `Nack`, moved away, or
    /// pushed out of a full dead-letter queue. Deleting one that is not
    /// there is not an error.
    Remove {
        /// The queue.
        queue: Arc<str>,
        /// The message.
        seq: u64,
    },
    /// A message came back after `attempt` deliveries. Ignored if the
    /// message is no longer stored.
    SetAttempt {
        /// The queue.
        queue: Arc<str>,
        /// The message.
        seq: u64,
        /// Deliveries so far.
        attempt: u32,
    },
    /// Raise the persisted counter high-water mark (see
    /// [`crate::core::Change::ReserveCounters`]); it never goes down.
    ReserveCounters {
        /// The new high-water mark.
        reserve_until: u64,
    },
}

/// Why a message left the broker without being acknowledged.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Its dead-letter queue was full: the oldest ready messages there are
    /// dropped to make room, and when none is ready the newcomer is.
    DeadLetterQueueFull,
    /// Its queue's name is too long to add [`DEAD_LETTER_SUFFIX`].
    NoDeadLetterQueue,
}

/// A consequence of a queue operation, for the dispatch layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueChange {
    /// Send this delivery to the session.
    Deliver {
        /// The consumer's session.
        session: SessionId,
        /// The delivery.
        delivery: Delivery,
    },
    /// Write this to the store.
    Persist(StoreOp),
    /// For the log: a message used up its attempts and was moved.
    DeadLettered {
        /// Where it failed.
        queue: Arc<str>,
        /// Its sequence number there.
        seq: u64,
        /// The dead-letter queue.
        dead_queue: Arc<str>,
        /// Its new sequence number there.
        dead_seq: u64,
        /// Deliveries it had.
        attempts: u32,
    },
    /// For the log: a message was discarded without being acknowledged.
    Dropped {
        /// Its queue.
        queue: Arc<str>,
        /// The message.
        seq: u64,
        /// Why.
        reason: DropReason,
    },
}

/// A queue's counts, for `Status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    /// The queue.
    pub queue: Arc<str>,
    /// Durable messages waiting for a consumer.
    pub ready: u64,
    /// Messages delivered and not yet acknowledged.
    pub unacked: u64,
    /// Consumers subscribed.
    pub consumers: u32,
}

/// One queue. It exists while it holds anything (a message, a reservation
/// or a consumer) and is forgotten when idle: sequence numbers come from
/// the table's counter, so nothing is lost by forgetting it.
struct Queue {
    name: Arc<str>,
    /// Durable messages waiting, by sequence number: the first is next.
    ready: BTreeMap<u64, Message>,
    /// Publishes reserved and not yet durable: sequence number to size
    /// and publisher.
    pending: BTreeMap<u64, (u64, Option<u32>)>,
    /// Deliveries in flight from this queue.
    unacked: u64,
    /// Size of everything reserved, ready and in flight.
    bytes: u64,
    /// What each unprivileged publisher has in the queue (reserved, ready
    /// and in flight), so that no uid can fill it for everyone else.
    by_uid: Map<u32, Usage>,
    consumers: u32,
    /// Consumers with room in their prefetch window, each at most once, in
    /// round-robin order.
    available: VecDeque<ConsumerId>,
}

impl Queue {
    fn new(name: Arc<str>) -> Queue {
        Queue {
            name,
            ready: BTreeMap::new(),
            pending: BTreeMap::new(),
            unacked: 0,
            bytes: 0,
            by_uid: Map::default(),
            consumers: 0,
            available: VecDeque::new(),
        }
    }

    fn depth(&self) -> u64 {
        self.ready.len() as u64 + self.pending.len() as u64 + self.unacked
    }

    fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.pending.is_empty() && self.unacked == 0 && self.consumers == 0
    }

    /// A message of `size` bytes from `publisher` enters the queue
    /// (reserved, loaded or moved in); it counts in the publisher's
    /// `totals` over every queue too.
    fn count_in(&mut self, size: u64, publisher: Option<u32>, totals: &mut Map<u32, Stored>) {
        self.bytes += size;
        if let Some(uid) = publisher {
            let usage = self.by_uid.entry(uid).or_default();
            let total = totals.entry(uid).or_default();
            if usage.messages == 0 {
                total.queues += 1;
            }
            usage.messages += 1;
            usage.bytes += size;
            total.messages += 1;
            total.bytes += size;
        }
    }

    /// A message of `size` bytes from `publisher` leaves the queue, and the
    /// publisher's `totals`.
    fn count_out(&mut self, size: u64, publisher: Option<u32>, totals: &mut Map<u32, Stored>) {
        self.bytes = self.bytes.saturating_sub(size);
        if let Some(uid) = publisher
            && let Some(usage) = self.by_uid.get_mut(&uid)
        {
            usage.messages = usage.messages.saturating_sub(1);
            usage.bytes = usage.bytes.saturating_sub(size);
            let last_here = usage.messages == 0;
            if last_here {
                self.by_uid.remove(&uid);
            }
            if let Some(total) = totals.get_mut(&uid) {
                total.messages = total.messages.saturating_sub(1);
                total.bytes = total.bytes.saturating_sub(size);
                if last_here {
                    total.queues = total.queues.saturating_sub(1);
                }
                if total.messages == 0 {
                    totals.remove(&uid);
                }
            }
        }
    }

    /// Whether a message of `size` bytes from `publisher` fits within the
    /// queue's limits and the publisher's share of them.
    fn check_room_for(
        &self,
        size: u64,
        publisher: Option<u32>,
        config: &QueueConfig,
    ) -> Result<(), QueueError> {
        self.check_room(size, config)?;
        let Some(uid) = publisher else {
            return Ok(());
        };
        let usage = self.by_uid.get(&uid).copied().unwrap_or_default();
        if usage.messages >= config.max_depth_per_uid {
            return Err(QueueError::UserQuota {
                queue: self.name.clone(),
                uid,
                what: "messages",
                limit: config.max_depth_per_uid,
            });
        }
        if usage.bytes.saturating_add(size) > config.max_bytes_per_uid {
            return Err(QueueError::UserQuota {
                queue: self.name.clone(),
                uid,
                what: "bytes",
                limit: config.max_bytes_per_uid,
            });
        }
        Ok(())
    }

    /// Whether a message of `size` bytes fits within the limits.
    fn check_room(&self, size: u64, config: &QueueConfig) -> Result<(), QueueError> {
        if self.depth() >= config.max_depth {
            return Err(QueueError::QueueFull {
                queue: self.name.clone(),
                limit: config.max_depth,
            });
        }
        if self.bytes.saturating_add(size) > config.max_bytes {
            return Err(QueueError::QueueBytesFull {
                queue: self.name.clone(),
                size,
                limit: config.max_bytes,
            });
        }
        Ok(())
    }
}

/// What one publisher has in one queue.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    messages: u64,
    bytes: u64,
}

/// What one unprivileged publisher has over every queue together: the sum
/// of its [`Usage`]s, and the number of queues where it has one. Kept
/// only for the users the limits bind, and only while they have messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stored {
    messages: u64,
    bytes: u64,
    queues: u64,
}

struct Consumer {
    session: SessionId,
    queue: Arc<str>,
    prefetch: u32,
    unacked: u32,
}

/// A delivery awaiting `Ack` or `Nack`. It belongs to the session, not the
/// consumer: a cancelled consumer's deliveries may still be acknowledged.
struct InFlight {
    session: SessionId,
    consumer: ConsumerId,
    queue: Arc<str>,
    message: Message,
}

#[derive(Default)]
struct SessionQueues {
    consumers: Vec<ConsumerId>,
    /// foldhash, like [`Map`]: one insert and one removal per delivery.
    deliveries: HashSet<DeliveryId, foldhash::fast::RandomState>,
}

/// Every queue, consumer and delivery in flight. Owned by the core.
pub struct QueueTable {
    config: QueueConfig,
    queues: Map<Arc<str>, Queue>,
    consumers: Map<ConsumerId, Consumer>,
    deliveries: Map<DeliveryId, InFlight>,
    sessions: Map<SessionId, SessionQueues>,
    /// What each unprivileged publisher has over every queue (reserved,
    /// ready and in flight), so that no uid can take the broker's memory,
    /// disk and startup time by spreading over many queues.
    stored_by_uid: Map<u32, Stored>,
    /// The last sequence number handed out, for all queues.
    last_seq: u64,
    next_consumer: u64,
    next_delivery: u64,
}

/// Whether a message delivered `attempt` times must not be delivered again
/// from `queue` (dead-letter queues never dead-letter).
fn out_of_attempts(config: &QueueConfig, queue: &str, attempt: u32) -> bool {
    config.max_attempts != 0
        && attempt >= config.max_attempts
        && !queue.ends_with(DEAD_LETTER_SUFFIX)
}

/// The queue named `queue` in `queues`, created empty if it does not
/// exist (a function of the map alone, so that the table's other fields
/// stay free to borrow beside it).
fn queue_in<'a>(queues: &'a mut Map<Arc<str>, Queue>, queue: &str) -> &'a mut Queue {
    let key = match queues.get_key_value(queue) {
        Some((name, _)) => name.clone(),
        None => Arc::from(queue),
    };
    queues
        .entry(key)
        .or_insert_with_key(|name| Queue::new(name.clone()))
}

impl QueueTable {
    /// An empty table whose sequence numbers continue above `last_seq`
    /// (the store's high-water mark, [`crate::store::Loaded::last_seq`]).
    pub fn new(config: QueueConfig, last_seq: u64) -> QueueTable {
        QueueTable {
            config,
            queues: Map::default(),
            consumers: Map::default(),
            deliveries: Map::default(),
            sessions: Map::default(),
            stored_by_uid: Map::default(),
            last_seq,
            next_consumer: 1,
            next_delivery: 1,
        }
    }

    /// Adds the durable messages of one queue at startup, whatever the
    /// limits say (nothing durable is dropped on the way up). Messages
    /// loaded with `attempt >= max_attempts` are dead-lettered when they
    /// reach the head.
    pub fn load(&mut self, queue: &str, messages: Vec<Message>) -> Vec<QueueChange> {
        let mut changes = Vec::new();
        if messages.is_empty() {
            return changes;
        }
        let highest = messages.iter().map(|m| m.seq).max().unwrap_or(0);
        self.last_seq = self.last_seq.max(highest);
        let totals = &mut self.stored_by_uid;
        let q = queue_in(&mut self.queues, queue);
        for message in messages {
            q.count_in(message.size(), message.publisher, totals);
            if let Some(old) = q.ready.insert(message.seq, message) {
                q.count_out(old.size(), old.publisher, totals);
            }
        }
        let name = q.name.clone();
        self.pump(&name, &mut changes);
        // Every message may have moved to the dead-letter queue.
        self.tidy(&name);
        changes
    }

    /// Reserves room and a sequence number for a publish. Persist the
    /// returned message (`StoreOp::Append`), then call
    /// [`QueueTable::publish_committed`] or [`QueueTable::publish_failed`]:
    /// until then it counts against the limits, and no later message of the
    /// queue is delivered. `publisher` is the uid the message counts
    /// against ([`QueueConfig::max_depth_per_uid`] in this queue,
    /// [`QueueConfig::max_stored_messages_per_uid`] and the like over every
    /// queue), `None` for a privileged one.
    pub fn begin_publish_from(
        &mut self,
        queue: &str,
        payload: Bytes,
        headers: Vec<(String, String)>,
        publisher: Option<u32>,
    ) -> Result<Message, CoreError> {
        check_name("queue", queue)?;
        let mut message = Message {
            seq: 0,
            payload,
            headers,
            attempt: 0,
            publisher,
        };
        let size = message.size();
        let has_share = match self.queues.get(queue) {
            Some(q) => {
                q.check_room_for(size, publisher, &self.config)?;
                publisher.is_some_and(|uid| q.by_uid.contains_key(&uid))
            }
            None => {
                Queue::new(Arc::from(queue)).check_room_for(size, publisher, &self.config)?;
                false
            }
        };
        if let Some(uid) = publisher {
            self.check_user_total(uid, size, has_share)?;
        }
        self.last_seq += 1;
        message.seq = self.last_seq;
        let q = queue_in(&mut self.queues, queue);
        q.pending.insert(message.seq, (size, publisher));
        q.count_in(size, publisher, &mut self.stored_by_uid);
        Ok(message)
    }

    /// [`QueueTable::begin_publish_from`] a privileged publisher.
    #[cfg(any(test, fuzzing))]
    pub fn begin_publish(
        &mut self,
        queue: &str,
        payload: Bytes,
        headers: Vec<(String, String)>,
    ) -> Result<Message, CoreError> {
        self.begin_publish_from(queue, payload, headers, None)
    }

    /// The publish is durable: the message becomes ready and goes to a
    /// waiting consumer, if any. Answer `Published` only now.
    ///
    /// A message that was never reserved is accepted all the same: the
    /// store holds it, so the table must too.
    pub fn publish_committed(&mut self, queue: &str, message: Message) -> Vec<QueueChange> {
        let mut changes = Vec::new();
        self.last_seq = self.last_seq.max(message.seq);
        let totals = &mut self.stored_by_uid;
        let q = queue_in(&mut self.queues, queue);
        if let Some((reserved, publisher)) = q.pending.remove(&message.seq) {
            q.count_out(reserved, publisher, totals);
        }
        q.count_in(message.size(), message.publisher, totals);
        if let Some(old) = q.ready.insert(message.seq, message) {
            q.count_out(old.size(), old.publisher, totals);
        }
        let name = q.name.clone();
        self.pump(&name, &mut changes);
        changes
    }

    /// The publish could not be made durable: its reservation is released
    /// (which may let later messages of the queue be delivered).
    pub fn publish_failed(&mut self, queue: &str, seq: u64) -> Vec<QueueChange> {
        let mut changes = Vec::new();
        let Some(q) = self.queues.get_mut(queue) else {
            return changes;
        };
        if let Some((size, publisher)) = q.pending.remove(&seq) {
            q.count_out(size, publisher, &mut self.stored_by_uid);
        }
        let name = q.name.clone();
        self.pump(&name, &mut changes);
        self.tidy(&name);
        changes
    }

    /// Subscribes `session` to `queue`: ready messages are pushed to it
    /// at once, at most `prefetch` unacknowledged at a time (0 =
    /// [`DEFAULT_PREFETCH`]; above [`MAX_PREFETCH`] is lowered to it).
    pub fn consume(
        &mut self,
        session: SessionId,
        queue: &str,
        prefetch: u32,
    ) -> Result<(ConsumerId, Vec<QueueChange>), CoreError> {
        check_name("queue", queue)?;
        let limit = self.config.max_consumers_per_session;
        let held = self.sessions.get(&session).map_or(0, |s| s.consumers.len());
        if held >= limit {
            return Err(QueueError::TooManyConsumers { limit }.into());
        }
        let prefetch = match prefetch {
            0 => DEFAULT_PREFETCH,
            n => n.min(MAX_PREFETCH),
        };
        let id = ConsumerId(self.next_consumer);
        self.next_consumer += 1;
        let q = self.queue_mut(queue);
        q.consumers += 1;
        q.available.push_back(id);
        let name = q.name.clone();
        self.consumers.insert(
            id,
            Consumer {
                session,
                queue: name.clone(),
                prefetch,
                unacked: 0,
            },
        );
        self.sessions.entry(session).or_default().consumers.push(id);
        let mut changes = Vec::new();
        self.pump(&name, &mut changes);
        Ok((id, changes))
    }

    /// The consumer processed the delivery: the message is gone.
    pub fn ack(
        &mut self,
        session: SessionId,
        delivery: DeliveryId,
    ) -> Result<Vec<QueueChange>, QueueError> {
        let InFlight { queue, message, .. } = self.take_delivery(session, delivery)?;
        // Usually its removal, the next delivery's attempt and that delivery.
        let mut changes = Vec::with_capacity(3);
        self.forget(&queue, &message, &mut changes);
        self.pump(&queue, &mut changes);
        self.tidy(&queue);
        Ok(changes)
    }

    /// The consumer gives the delivery back: with `requeue` the message
    /// returns to its place in the queue (or, out of attempts, moves to the
    /// dead-letter queue); without, it is dropped.
    pub fn nack(
        &mut self,
        session: SessionId,
        delivery: DeliveryId,
        requeue: bool,
    ) -> Result<Vec<QueueChange>, QueueError> {
        let InFlight { queue, message, .. } = self.take_delivery(session, delivery)?;
        let mut changes = Vec::new();
        if requeue {
            self.hand_back(&queue, message, &mut changes);
        } else {
            self.forget(&queue, &message, &mut changes);
        }
        self.pump(&queue, &mut changes);
        self.tidy(&queue);
        Ok(changes)
    }

    /// The session is gone: its consumers end, and its deliveries in flight
    /// go back to their queues in sequence order, attempt kept raised, and
    /// are delivered to other consumers.
    ///
    /// Its publishes still being made durable are not its concern any more:
    /// the dispatch layer completes them as usual.
    pub fn goodbye(&mut self, session: SessionId) -> Vec<QueueChange> {
        let mut changes = Vec::new();
        let Some(gone) = self.sessions.remove(&session) else {
            return changes;
        };
        let mut touched = BTreeSet::new();
        for consumer in gone.consumers {
            if let Some(queue) = self.remove_consumer(consumer) {
                touched.insert(queue);
            }
        }
        let mut back: Vec<InFlight> = gone
            .deliveries
            .iter()
            .filter_map(|id| self.deliveries.remove(id))
            .collect();
        back.sort_by(|a, b| (&a.queue, a.message.seq).cmp(&(&b.queue, b.message.seq)));
        for InFlight { queue, message, .. } in back {
            if let Some(q) = self.queues.get_mut(&queue) {
                q.unacked = q.unacked.saturating_sub(1);
            }
            self.hand_back(&queue, message, &mut changes);
            touched.insert(queue);
        }
        for queue in &touched {
            self.pump(queue, &mut changes);
        }
        for queue in &touched {
            self.tidy(queue);
        }
        changes
    }

    /// Stops one of `session`'s consumers: nothing more is delivered to
    /// it. Its deliveries in flight stay the session's to ack or nack (and
    /// go back to the queue at its goodbye).
    pub fn cancel_consumer(
        &mut self,
        session: SessionId,
        consumer: ConsumerId,
    ) -> Result<Vec<QueueChange>, QueueError> {
        let Some(mine) = self.sessions.get_mut(&session) else {
            return Err(QueueError::UnknownConsumer(consumer));
        };
        if !mine.consumers.contains(&consumer) {
            return Err(QueueError::UnknownConsumer(consumer));
        }
        mine.consumers.retain(|c| *c != consumer);
        if let Some(queue) = self.remove_consumer(consumer) {
            self.tidy(&queue);
        }
        Ok(Vec::new())
    }

    /// The first `limit` ready messages of `queue`, next to be delivered
    /// first, without taking them (no attempt is used), and whether more
    /// follow.
    pub fn peek(&self, queue: &str, limit: usize) -> (Vec<&Message>, bool) {
        let Some(q) = self.queues.get(queue) else {
            return (Vec::new(), false);
        };
        let shown: Vec<&Message> = q.ready.values().take(limit).collect();
        let more = q.ready.len() > shown.len();
        (shown, more)
    }

    /// Drops every ready message of `queue` (deliveries in flight are left
    /// to their consumers); returns how many, and their removals.
    pub fn purge(&mut self, queue: &str) -> (u64, Vec<QueueChange>) {
        let mut changes = Vec::new();
        let Some(q) = self.queues.get_mut(queue) else {
            return (0, changes);
        };
        let dropped = std::mem::take(&mut q.ready);
        let name = q.name.clone();
        let count = dropped.len() as u64;
        for message in dropped.into_values() {
            self.forget(&name, &message, &mut changes);
        }
        self.tidy(&name);
        (count, changes)
    }

    /// Moves the ready messages of `queue.dead` back to the end of `queue`,
    /// oldest first, as far as `queue`'s limits allow: each gets a new
    /// sequence number and fresh delivery attempts, without the dead-letter
    /// headers. Returns how many moved, and the store writes (the removal
    /// and the append of each, to commit together).
    pub fn requeue_dead(&mut self, queue: &str) -> (u64, Vec<QueueChange>) {
        let mut changes = Vec::new();
        let dead_name = format!("{queue}{DEAD_LETTER_SUFFIX}");
        let Some(dead) = self.queues.get(dead_name.as_str()).map(|q| q.name.clone()) else {
            return (0, changes);
        };
        let mut count = 0;
        let target = self.queue_mut(queue).name.clone();
        while let Some((size, publisher)) = self
            .queues
            .get(&dead)
            .and_then(|dq| dq.ready.first_key_value())
            .map(|(_, m)| (m.size(), m.publisher))
        {
            let Some(q) = self.queues.get(&target) else {
                break;
            };
            if q.check_room_for(size, publisher, &self.config).is_err() {
                break;
            }
            let Some(dq) = self.queues.get_mut(&dead) else {
                break;
            };
            let Some((_, message)) = dq.ready.pop_first() else {
                break;
            };
            self.forget(&dead, &message, &mut changes);
            let mut headers = message.headers;
            headers.retain(|(k, _)| k != HEADER_DEAD_LETTER_QUEUE && k != HEADER_DEAD_LETTER_SEQ);
            self.last_seq += 1;
            let moved = Message {
                seq: self.last_seq,
                payload: message.payload,
                headers,
                attempt: 0,
                publisher: message.publisher,
            };
            let q = queue_in(&mut self.queues, &target);
            q.count_in(moved.size(), moved.publisher, &mut self.stored_by_uid);
            changes.push(QueueChange::Persist(StoreOp::Append {
                queue: target.clone(),
                message: moved.clone(),
            }));
            q.ready.insert(moved.seq, moved);
            count += 1;
        }
        self.pump(&target, &mut changes);
        self.tidy(&dead);
        self.tidy(&target);
        (count, changes)
    }

    /// Every queue that holds anything or has a consumer, by name.
    pub fn info(&self) -> Vec<QueueInfo> {
        let mut infos: Vec<QueueInfo> = self
            .queues
            .values()
            .map(|q| QueueInfo {
                queue: q.name.clone(),
                ready: q.ready.len() as u64,
                unacked: q.unacked,
                consumers: q.consumers,
            })
            .collect();
        infos.sort_by(|a, b| a.queue.cmp(&b.queue));
        infos
    }

    /// The queue, created empty if it does not exist.
    fn queue_mut(&mut self, queue: &str) -> &mut Queue {
        queue_in(&mut self.queues, queue)
    }

    /// Whether unprivileged `uid` may store one more message of `size`
    /// bytes over every queue; `has_share`: it already has messages in the
    /// queue this one goes to (which then is not one more queue).
    fn check_user_total(&self, uid: u32, size: u64, has_share: bool) -> Result<(), QueueError> {
        let stored = self.stored_by_uid.get(&uid).copied().unwrap_or_default();
        let config = &self.config;
        if stored.messages >= config.max_stored_messages_per_uid {
            return Err(QueueError::UserStored {
                uid,
                what: "messages",
                limit: config.max_stored_messages_per_uid,
                flag: "--max-stored-messages-per-uid",
            });
        }
        if stored.bytes.saturating_add(size) > config.max_stored_bytes_per_uid {
            return Err(QueueError::UserStored {
                uid,
                what: "bytes",
                limit: config.max_stored_bytes_per_uid,
                flag: "--max-stored-bytes-per-uid",
            });
        }
        if !has_share && stored.queues >= config.max_queues_per_uid {
            return Err(QueueError::UserQueues {
                uid,
                limit: config.max_queues_per_uid,
            });
        }
        Ok(())
    }

    /// Removes a delivery in flight, checking it is the session's, and
    /// frees its consumer's prefetch slot.
    fn take_delivery(
        &mut self,
        session: SessionId,
        delivery: DeliveryId,
    ) -> Result<InFlight, QueueError> {
        match self.deliveries.get(&delivery) {
            None => return Err(QueueError::UnknownDelivery(delivery)),
            Some(d) if d.session != session => return Err(QueueError::NotYourDelivery(delivery)),
            Some(_) => {}
        }
        let flight = self
            .deliveries
            .remove(&delivery)
            .ok_or(QueueError::UnknownDelivery(delivery))?;
        if let Some(s) = self.sessions.get_mut(&session) {
            s.deliveries.remove(&delivery);
        }
        let q = self.queues.get_mut(&flight.queue);
        if let Some(q) = q {
            q.unacked = q.unacked.saturating_sub(1);
            if let Some(c) = self.consumers.get_mut(&flight.consumer) {
                if c.unacked == c.prefetch {
                    q.available.push_back(flight.consumer);
                }
                c.unacked = c.unacked.saturating_sub(1);
            }
        }
        Ok(flight)
    }

    /// Removes a consumer everywhere but from its session's list; returns
    /// its queue.
    fn remove_consumer(&mut self, consumer: ConsumerId) -> Option<Arc<str>> {
        let c = self.consumers.remove(&consumer)?;
        if let Some(q) = self.queues.get_mut(&c.queue) {
            q.consumers = q.consumers.saturating_sub(1);
            q.available.retain(|id| *id != consumer);
        }
        Some(c.queue)
    }

    /// A message taken out of the queue leaves it for good.
    fn forget(&mut self, queue: &Arc<str>, message: &Message, changes: &mut Vec<QueueChange>) {
        if let Some(q) = self.queues.get_mut(queue) {
            q.count_out(message.size(), message.publisher, &mut self.stored_by_uid);
        }
        changes.push(QueueChange::Persist(StoreOp::Remove {
            queue: queue.clone(),
            seq: message.seq,
        }));
    }

    /// A delivered message comes back: to its place in the queue, or to
    /// the dead-letter queue when it is out of attempts. Does not pump.
    fn hand_back(&mut self, queue: &Arc<str>, message: Message, changes: &mut Vec<QueueChange>) {
        if out_of_attempts(&self.config, queue, message.attempt) {
            self.dead_letter(queue, message, changes);
            return;
        }
        // Its attempt was stored when it was delivered.
        let q = self.queue_mut(queue);
        q.ready.insert(message.seq, message);
    }

    /// Moves a message, already out of `queue`'s ready set and unacked
    /// count, to `queue.dead`, making room there by dropping its oldest
    /// ready messages. Pumps the dead-letter queue.
    fn dead_letter(&mut self, queue: &Arc<str>, message: Message, changes: &mut Vec<QueueChange>) {
        self.forget(queue, &message, changes);
        let dead_name = format!("{queue}{DEAD_LETTER_SUFFIX}");
        if check_name("queue", &dead_name).is_err() {
            changes.push(QueueChange::Dropped {
                queue: queue.clone(),
                seq: message.seq,
                reason: DropReason::NoDeadLetterQueue,
            });
            return;
        }
        let old_seq = message.seq;
        let attempts = message.attempt;
        let mut headers = message.headers;
        headers.retain(|(k, _)| k != HEADER_DEAD_LETTER_QUEUE && k != HEADER_DEAD_LETTER_SEQ);
        headers.push((HEADER_DEAD_LETTER_QUEUE.to_string(), queue.to_string()));
        headers.push((HEADER_DEAD_LETTER_SEQ.to_string(), old_seq.to_string()));
        self.last_seq += 1;
        let moved = Message {
            seq: self.last_seq,
            payload: message.payload,
            headers,
            attempt: attempts,
            publisher: message.publisher,
        };
        let size = moved.size();
        let config = self.config.clone();
        let totals = &mut self.stored_by_uid;
        let dq = queue_in(&mut self.queues, &dead_name);
        let dead = dq.name.clone();
        while dq.check_room(size, &config).is_err() {
            let Some((_, oldest)) = dq.ready.pop_first() else {
                break;
            };
            dq.count_out(oldest.size(), oldest.publisher, totals);
            changes.push(QueueChange::Persist(StoreOp::Remove {
                queue: dead.clone(),
                seq: oldest.seq,
            }));
            changes.push(QueueChange::Dropped {
                queue: dead.clone(),
                seq: oldest.seq,
                reason: DropReason::DeadLetterQueueFull,
            });
        }
        if dq.check_room(size, &config).is_err() {
            changes.push(QueueChange::Dropped {
                queue: queue.clone(),
                seq: old_seq,
                reason: DropReason::DeadLetterQueueFull,
            });
            self.tidy(&dead);
            return;
        }
        dq.count_in(size, moved.publisher, totals);
        let dead_seq = moved.seq;
        changes.push(QueueChange::Persist(StoreOp::Append {
            queue: dead.clone(),
            message: moved.clone(),
        }));
        dq.ready.insert(dead_seq, moved);
        changes.push(QueueChange::DeadLettered {
            queue: queue.clone(),
            seq: old_seq,
            dead_queue: dead.clone(),
            dead_seq,
            attempts,
        });
        self.pump(&dead, changes);
    }

    /// Delivers the queue's ready messages, lowest sequence number first,
    /// round robin to consumers with room, until one or the other runs out.
    /// Stops at a message while a lower publish is still being made durable.
    fn pump(&mut self, queue: &str, changes: &mut Vec<QueueChange>) {
        loop {
            let Some(q) = self.queues.get_mut(queue) else {
                return;
            };
            let Some((&seq, head)) = q.ready.first_key_value() else {
                return;
            };
            if q.pending.first_key_value().is_some_and(|(&p, _)| p < seq) {
                return;
            }
            if out_of_attempts(&self.config, queue, head.attempt) {
                // Loaded at startup already out of attempts.
                let Some((_, message)) = q.ready.pop_first() else {
                    return;
                };
                let name = q.name.clone();
                self.dead_letter(&name, message, changes);
                continue;
            }
            let Some(consumer_id) = q.available.pop_front() else {
                return;
            };
            let Some(consumer) = self.consumers.get_mut(&consumer_id) else {
                // Not reachable: a consumer leaves `available` when removed.
                continue;
            };
            let Some((_, mut message)) = q.ready.pop_first() else {
                return;
            };
            message.attempt = message.attempt.saturating_add(1);
            // Recorded as it goes out, so that a message whose deliveries
            // keep ending in a crash (of the consumer or of the broker)
            // still reaches its dead-letter queue after `max_attempts`.
            changes.push(QueueChange::Persist(StoreOp::SetAttempt {
                queue: q.name.clone(),
                seq: message.seq,
                attempt: message.attempt,
            }));
            consumer.unacked += 1;
            if consumer.unacked < consumer.prefetch {
                q.available.push_back(consumer_id);
            }
            q.unacked += 1;
            let delivery_id = DeliveryId(self.next_delivery);
            self.next_delivery += 1;
            let session = consumer.session;
            changes.push(QueueChange::Deliver {
                session,
                delivery: Delivery {
                    consumer: consumer_id,
                    delivery_id,
                    seq: message.seq,
                    queue: q.name.clone(),
                    payload: message.payload.clone(),
                    headers: message.headers.clone(),
                    attempt: message.attempt,
                },
            });
            self.deliveries.insert(
                delivery_id,
                InFlight {
                    session,
                    consumer: consumer_id,
                    queue: q.name.clone(),
                    message,
                },
            );
            self.sessions
                .entry(session)
                .or_default()
                .deliveries
                .insert(delivery_id);
        }
    }

    /// Forgets the queue if it holds nothing and nobody consumes it.
    fn tidy(&mut self, queue: &str) {
        if self.queues.get(queue).is_some_and(Queue::is_idle) {
            self.queues.remove(queue);
        }
    }
}
