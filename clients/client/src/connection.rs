//! The connection driver: one task owns the socket, writes requests (all
//! that are queued in one write), matches replies to requests by id, and
//! routes pushed frames (lease updates, watch events, deliveries) to whoever
//! opened them.
//!
//! A route is opened by the driver itself when it sees the reply that
//! creates it (an `AcquireReply`, a `WatchStarted`, a `ConsumeStarted`), so
//! a push that follows its reply immediately can never be lost.

use std::collections::HashMap;

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use turnstile_proto::v1::{self, reply, server_frame};
use turnstile_proto::{ClientCodec, encode_frame};

use crate::ClientError;

/// A pushed frame for one route.
#[derive(Debug, Clone)]
pub enum Push {
    /// A change of a lease or queued request.
    Lease(v1::LeaseUpdate),
    /// A state event of a watch.
    Watch(v1::WatchEvent),
    /// A message for a consumer.
    Delivery(v1::Delivery),
}

/// The answer to a request, and the route it opened, if any.
pub(crate) struct Response {
    pub result: reply::Result,
    pub pushes: Option<mpsc::UnboundedReceiver<Push>>,
}

pub(crate) enum Command {
    Request {
        frame: v1::ClientFrame,
        reply: Option<oneshot::Sender<Result<Response, ClientError>>>,
    },
}

/// Routes of pushed frames, keyed by the id the broker puts in them.
#[derive(Default)]
struct Routes {
    leases: HashMap<u64, mpsc::UnboundedSender<Push>>,
    watches: HashMap<u64, mpsc::UnboundedSender<Push>>,
    consumers: HashMap<u64, mpsc::UnboundedSender<Push>>,
}

impl Routes {
    /// Opens the route a reply creates.
    fn open(&mut self, result: &reply::Result) -> Option<mpsc::UnboundedReceiver<Push>> {
        let (map, key) = match result {
            reply::Result::Acquire(a) => (
                &mut self.leases,
                match &a.outcome {
                    Some(v1::acquire_reply::Outcome::Granted(g)) => g.lease_id,
                    Some(v1::acquire_reply::Outcome::Queued(q)) => q.lease_id,
                    None => return None,
                },
            ),
            reply::Result::Watch(w) => (&mut self.watches, w.watch_id),
            reply::Result::Consume(c) => (&mut self.consumers, c.consumer_id),
            _ => return None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        map.insert(key, tx);
        Some(rx)
    }

    fn route(&mut self, body: server_frame::Body) {
        let (map, key, push) = match body {
            server_frame::Body::LeaseUpdate(u) => (&mut self.leases, u.lease_id, Push::Lease(u)),
            server_frame::Body::WatchEvent(e) => (&mut self.watches, e.watch_id, Push::Watch(e)),
            server_frame::Body::Delivery(d) => {
                (&mut self.consumers, d.consumer_id, Push::Delivery(d))
            }
            server_frame::Body::Reply(_) => return,
        };
        if let Some(tx) = map.get(&key)
            && tx.send(push).is_err()
        {
            // Nobody listens any more: forget the route.
            map.remove(&key);
        }
    }
}

/// Splits a connected, greeted stream into its reader half and the shared
/// stream for the driver.
pub(crate) fn framed(
    (recv, send): crate::transport::Halves,
    max_frame: u32,
) -> (
    FramedRead<impl AsyncRead + Unpin, ClientCodec>,
    impl AsyncWrite + Unpin,
) {
    (FramedRead::new(recv, ClientCodec::new(max_frame)), send)
}

/// Runs the connection until the broker or the last client handle goes.
pub(crate) async fn drive(
    mut frames: FramedRead<impl AsyncRead + Unpin, ClientCodec>,
    mut writer: impl AsyncWrite + Unpin,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut pending: HashMap<u64, oneshot::Sender<Result<Response, ClientError>>> = HashMap::new();
    let mut routes = Routes::default();
    let mut batch = Vec::with_capacity(64);
    let mut buf = BytesMut::with_capacity(4096);
    let mut lost = ClientError::Disconnected("the client was closed".into());
    loop {
        tokio::select! {
            n = commands.recv_many(&mut batch, 64) => {
                if n == 0 {
                    break;
                }
                for Command::Request { frame, reply } in batch.drain(..) {
                    if let Some(reply) = reply {
                        pending.insert(frame.id, reply);
                    }
                    encode_frame(&frame, &mut buf);
                }
                if let Err(e) = writer.write_all(&buf).await {
                    lost = ClientError::Disconnected(format!("writing to the broker failed: {e}"));
                    break;
                }
                buf.clear();
            }
            frame = frames.next() => match frame {
                None => {
                    lost = ClientError::Disconnected("the broker closed the connection".into());
                    break;
                }
                Some(Err(e)) => {
                    lost = ClientError::Disconnected(format!("bad frame from the broker: {e}"));
                    break;
                }
                Some(Ok(v1::ServerFrame { body: Some(server_frame::Body::Reply(r)) })) => {
                    let result = match r.result {
                        Some(reply::Result::Error(e)) => Err(ClientError::from_wire(e)),
                        Some(result) => {
                            let pushes = routes.open(&result);
                            Ok(Response { result, pushes })
                        }
                        None => Err(ClientError::Protocol("a reply without a result".into())),
                    };
                    if r.id == 0 {
                        // About no request: the broker is closing on us.
                        if let Err(e) = result {
                            lost = e;
                        }
                        break;
                    }
                    if let Some(tx) = pending.remove(&r.id) {
                        let _ = tx.send(result);
                    }
                }
                Some(Ok(v1::ServerFrame { body: Some(body) })) => routes.route(body),
                Some(Ok(v1::ServerFrame { body: None })) => {}
            }
        }
    }
    for (_, tx) in pending.drain() {
        let _ = tx.send(Err(lost.clone()));
    }
    let _ = writer.shutdown().await;
}
