//! Message queues from the client's side: [`Client::publish`], and a
//! [`Consumer`] yielding [`Delivery`]s to acknowledge one by one.
//!
//! Delivery is at least once: a delivery neither acknowledged nor refused
//! before the connection closes (or the broker restarts) is delivered
//! again, with a higher [`Delivery::attempt`]. Handle messages so that a
//! second delivery does no harm.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::sync::mpsc;
use turnstile_proto::v1::{self, client_frame::Body, reply};

use crate::{Client, ClientError, Push, unexpected};

impl Client {
    /// Appends a message to `queue` and returns its sequence number once the
    /// broker has stored it durably. `headers` travel with the message
    /// (one value per key: a repeated key keeps its last value).
    ///
    /// Refusals: `INVALID_ARGUMENT` for a bad queue name,
    /// `RESOURCE_EXHAUSTED` when the queue is full (or the broker's disk
    /// is), `FRAME_TOO_LARGE` for a message no consumer could receive.
    pub async fn publish(
        &self,
        queue: &str,
        payload: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<u64, ClientError> {
        let headers: BTreeMap<String, String> = headers
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        let r = self
            .call(Body::Publish(v1::Publish {
                queue: queue.to_string(),
                payload: payload.into(),
                headers,
            }))
            .await?;
        match r.result {
            reply::Result::Publish(p) => Ok(p.seq),
            other => Err(unexpected("Published", &other)),
        }
    }

    /// Starts consuming `queue`: the broker pushes its messages, oldest
    /// first, at most `prefetch` unacknowledged at a time (0 = the broker's
    /// default, 16). Competing consumers of one queue share its messages.
    ///
    /// The subscription lasts as long as the connection: dropping the
    /// [`Consumer`] stops reading, but messages the broker already sent it
    /// stay unacknowledged until the connection (every clone of this
    /// [`Client`]) closes, and are then delivered again.
    pub async fn consume(&self, queue: &str, prefetch: u32) -> Result<Consumer, ClientError> {
        let r = self
            .call(Body::Consume(v1::Consume {
                queue: queue.to_string(),
                prefetch,
            }))
            .await?;
        match (r.result, r.pushes) {
            (reply::Result::Consume(started), Some(pushes)) => Ok(Consumer {
                client: self.clone(),
                consumer_id: started.consumer_id,
                queue: queue.to_string(),
                pushes,
            }),
            (other, _) => Err(unexpected("ConsumeStarted", &other)),
        }
    }

    /// The next ready messages of `queue` (at most `limit`; 0 = as many as
    /// fit in one frame), read without taking them: no delivery attempt is
    /// used. Policy verb `consume`.
    pub async fn peek_queue(&self, queue: &str, limit: u32) -> Result<v1::QueuePeek, ClientError> {
        let r = self
            .call(Body::PeekQueue(v1::PeekQueue {
                queue: queue.to_string(),
                limit,
            }))
            .await?;
        match r.result {
            reply::Result::QueuePeek(p) => Ok(p),
            other => Err(unexpected("QueuePeek", &other)),
        }
    }

    /// Drops every ready message of `queue`; returns how many. Policy verb
    /// `queue-admin` (by default root and the broker's own user).
    pub async fn purge_queue(&self, queue: &str) -> Result<u64, ClientError> {
        let r = self
            .call(Body::PurgeQueue(v1::PurgeQueue {
                queue: queue.to_string(),
            }))
            .await?;
        match r.result {
            reply::Result::QueueCount(c) => Ok(c.count),
            other => Err(unexpected("QueueCount", &other)),
        }
    }

    /// Moves the dead letters of `queue` (`QUEUE.dead`) back to it, with
    /// fresh delivery attempts, as far as its limits allow; returns how
    /// many moved. Policy verb `queue-admin`.
    pub async fn requeue_dead(&self, queue: &str) -> Result<u64, ClientError> {
        let r = self
            .call(Body::RequeueDead(v1::RequeueDead {
                queue: queue.to_string(),
            }))
            .await?;
        match r.result {
            reply::Result::QueueCount(c) => Ok(c.count),
            other => Err(unexpected("QueueCount", &other)),
        }
    }
}

/// A subscription to one queue: a stream of [`Delivery`]s.
///
/// ```no_run
/// # async fn demo() -> Result<(), turnstile_client::ClientError> {
/// use turnstile_client::Client;
/// let service = Client::connect_default("pcmsvc").await?;
/// let seq = service
///     .publish("pcm.notices", "package 42 is pending", &[("job", "42")])
///     .await?;
/// println!("stored as message {seq}");
///
/// let agent = Client::connect_default("pcmwin").await?;
/// let mut notices = agent.consume("pcm.notices", 0).await?;
/// while let Some(notice) = notices.next().await {
///     println!("{} (attempt {})", String::from_utf8_lossy(notice.payload()), notice.attempt());
///     notice.ack().await?;
/// }
/// # Ok(()) }
/// ```
pub struct Consumer {
    client: Client,
    consumer_id: u64,
    queue: String,
    pushes: mpsc::UnboundedReceiver<Push>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("consumer_id", &self.consumer_id)
            .field("queue", &self.queue)
            .finish()
    }
}

impl Consumer {
    /// The broker's id for this consumer.
    pub fn id(&self) -> u64 {
        self.consumer_id
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Stops this consumer without closing the connection: once this
    /// returns, the broker delivers nothing more to it. Deliveries already
    /// received (and still to come out of [`Consumer::next`]) stay to be
    /// acknowledged or refused as usual.
    pub async fn cancel(&self) -> Result<(), ClientError> {
        self.client
            .call(Body::CancelConsume(v1::CancelConsume {
                consumer_id: self.consumer_id,
            }))
            .await
            .map(|_| ())
    }

    /// The next message; `None` once the connection is gone (its
    /// unacknowledged deliveries are then delivered again, to whoever
    /// consumes the queue).
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            match self.pushes.recv().await? {
                Push::Delivery(inner) => {
                    return Some(Delivery {
                        client: self.client.clone(),
                        inner,
                        settled: false,
                    });
                }
                _ => continue,
            }
        }
    }
}

/// One message handed to this consumer. Settle it with [`Delivery::ack`]
/// once handled, or [`Delivery::nack`] to give it back; one dropped without
/// either is given back (requeued), so that its place in the prefetch
/// window is not lost.
pub struct Delivery {
    client: Client,
    inner: v1::Delivery,
    settled: bool,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("queue", &self.inner.queue)
            .field("seq", &self.inner.seq)
            .field("attempt", &self.inner.attempt)
            .field("delivery_id", &self.inner.delivery_id)
            .field("payload_len", &self.inner.payload.len())
            .finish()
    }
}

impl Delivery {
    /// The message body, as published.
    pub fn payload(&self) -> &Bytes {
        &self.inner.payload
    }

    /// The publisher's headers, by key. A message moved to a dead-letter
    /// queue also carries `turnstile-dead-letter-queue` and
    /// `turnstile-dead-letter-seq`.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.inner.headers
    }

    /// 1 for the first delivery of the message, 2 and up for redeliveries.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The message's sequence number in its queue (what `publish` returned).
    pub fn seq(&self) -> u64 {
        self.inner.seq
    }

    /// The queue it comes from.
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }

    /// This delivery's id (a redelivery gets a new one).
    pub fn delivery_id(&self) -> u64 {
        self.inner.delivery_id
    }

    /// The delivery as it came off the wire.
    pub fn as_proto(&self) -> &v1::Delivery {
        &self.inner
    }

    /// The message was handled: the broker forgets it.
    pub async fn ack(mut self) -> Result<(), ClientError> {
        self.settled = true;
        let body = Body::Ack(v1::Ack {
            delivery_id: self.inner.delivery_id,
        });
        done(self.client.call(body).await?.result, "Done")
    }

    /// Gives the message back: with `requeue` it is delivered again (to
    /// this consumer or another; after the broker's attempt limit it moves
    /// to the dead-letter queue `QUEUE.dead`), without it is dropped.
    pub async fn nack(mut self, requeue: bool) -> Result<(), ClientError> {
        self.settled = true;
        let body = Body::Nack(v1::Nack {
            delivery_id: self.inner.delivery_id,
            requeue,
        });
        done(self.client.call(body).await?.result, "Done")
    }

    /// Neither acknowledges nor gives the message back: the delivery keeps
    /// its place in the prefetch window until the connection closes, and
    /// the message is then delivered again (for a consumer that only looks,
    /// like `turnstile queue consume --no-ack`).
    pub fn leave_unacked(mut self) {
        self.settled = true;
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if !self.settled {
            self.client.send_and_forget(Body::Nack(v1::Nack {
                delivery_id: self.inner.delivery_id,
                requeue: true,
            }));
        }
    }
}

fn done(result: reply::Result, wanted: &str) -> Result<(), ClientError> {
    match result {
        reply::Result::Done(_) => Ok(()),
        other => Err(unexpected(wanted, &other)),
    }
}
