//! The async Rust client for the turnstile broker.
//!
//! ```no_run
//! # async fn demo() -> Result<(), turnstile_client::ClientError> {
//! use turnstile_client::Client;
//! let client = Client::connect_default("my-agent").await?;
//! // Queue for the resource; see where we stand while we wait.
//! let lease = client
//!     .acquire("pcm")
//!     .shared()
//!     .purpose("initialise")
//!     .wait_with(|q| println!("queued at position {}", q.position))
//!     .await?;
//! // ... work under the lease ...
//! lease.release().await?;
//! # Ok(()) }
//! ```
//!
//! A [`Client`] is one connection; clone it freely (clones share it). A
//! caller writes its request to the socket itself and, while no other
//! caller is reading, reads its reply itself; a driver task reads while
//! nobody calls (see `connection.rs`). Replies are matched to requests by
//! id and pushed frames are routed to the lease, watch or consumer that
//! opened them. The enum fields of what the broker sends are
//! read typed through [`kinds`] (a mode, an event kind, an error code, a
//! lost reason), never as raw `i32`s.

#![deny(missing_docs)]

mod connection;
pub mod kinds;
mod lease;
mod queue;
mod transport;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;
pub use turnstile_proto::v1 as proto;
use turnstile_proto::v1::{self, client_frame::Body, reply};
use turnstile_proto::{ClientCodec, DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION, encode_frame};

pub use connection::Push;
pub use kinds::{ErrorCode, EventKind, LostReason, Mode, ShortName};
pub use lease::{AcquireBuilder, Lease, LeaseLost, Pending, QueueUpdate, ResumeToken};
pub use queue::{Consumer, Delivery};
pub use turnstile_proto::endpoint::{SOCKET_ENV, default_socket, socket_from_env};
pub use watch::{WatchItem, WatchStream, Watcher};

use connection::{Connection, Response};

/// Everything that can go wrong talking to the broker.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The broker could not be reached.
    #[error("cannot connect to the broker at {socket}: {message}")]
    Connect {
        /// Where it was looked for.
        socket: PathBuf,
        /// Why it failed.
        message: String,
    },
    /// The connection is gone (the broker stopped or closed it).
    #[error("connection to the broker lost: {0}")]
    Disconnected(String),
    /// The broker refused the request.
    #[error("{message} ({})", code.as_str_name())]
    Broker {
        /// The broker's error code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },
    /// The lease or the place in the queue was lost (expired, timed out).
    #[error("lease lost: {}", .0.detail)]
    Lost(LeaseLost),
    /// The broker answered something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    fn from_wire(e: v1::Error) -> ClientError {
        ClientError::Broker {
            code: kinds::error_code(&e).unwrap_or(ErrorCode::Unspecified),
            message: e.message,
        }
    }

    /// The broker's error code, when the broker refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the broker could not be reached or the connection was lost.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::Disconnected(_)
        )
    }
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    socket: PathBuf,
    client_name: String,
    retry_for: Duration,
    keep_for_children: bool,
}

impl ConnectOptions {
    /// Connect to `TURNSTILE_SOCKET`, else the default socket, as `client_name`,
    /// without retrying.
    pub fn new(client_name: impl Into<String>) -> ConnectOptions {
        ConnectOptions {
            socket: socket_from_env(),
            client_name: client_name.into(),
            retry_for: Duration::ZERO,
            keep_for_children: false,
        }
    }

    /// Connect to this socket (or pipe) instead.
    pub fn socket(mut self, socket: impl AsRef<Path>) -> ConnectOptions {
        self.socket = socket.as_ref().to_path_buf();
        self
    }

    /// Keep trying for this long while the broker is not there yet (a
    /// client that starts before its broker), with backoff from 50 ms to 1 s.
    pub fn retry_for(mut self, d: Duration) -> ConnectOptions {
        self.retry_for = d;
        self
    }

    /// Keep a second descriptor of the connection, for a child process to
    /// inherit ([`Client::socket_fd`]; Unix only, nothing on Windows). A
    /// connection is closed, and its leases end, only once every process
    /// holding it has closed it: `turnstile run` gives it to its command so
    /// that the broker cannot see its connection close, even when the CLI
    /// is SIGKILLed, before the command has exited too.
    pub fn keep_socket_for_children(mut self) -> ConnectOptions {
        self.keep_for_children = true;
        self
    }
}

struct Inner {
    conn: Arc<Connection>,
    next_id: AtomicU64,
    hello: v1::HelloReply,
    /// Read on Unix only ([`Client::socket_fd`]); always `None` on Windows.
    #[cfg_attr(windows, allow(dead_code))]
    kept: Option<transport::Kept>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle: what was sent on the way out (a dropped lease's
        // Release) is still written before the socket closes.
        self.conn.close();
    }
}

/// One connection to the broker. Cheap to clone; the connection closes when
/// the last clone (and every lease, watch and consumer) is dropped.
///
/// Calls from any number of tasks may be in flight at once. A call that
/// waits for its reply may be the one reading the connection for everyone
/// (its own reply comes without a hop through another task): await it, or
/// race it in `select!`, but do not keep its future unfinished and
/// unpolled, which would hold up the other calls' replies and the pushed
/// events until it is polled again or dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to the default socket (or `TURNSTILE_SOCKET`) as `client_name`.
    pub async fn connect_default(client_name: &str) -> Result<Client, ClientError> {
        Client::connect(ConnectOptions::new(client_name)).await
    }

    /// Connects and says Hello.
    pub async fn connect(options: ConnectOptions) -> Result<Client, ClientError> {
        let deadline = tokio::time::Instant::now() + options.retry_for;
        let mut backoff = Duration::from_millis(50);
        let (stream, kept) = loop {
            match transport::dial(&options.socket, options.keep_for_children).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() + backoff <= deadline => {
                    tracing::debug!("broker not reachable yet ({e}); retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(ClientError::Connect {
                        socket: options.socket.clone(),
                        message: e.to_string(),
                    });
                }
            }
        };
        let (recv, mut writer) = stream;
        let mut frames = FramedRead::new(recv, ClientCodec::new(DEFAULT_MAX_FRAME_BYTES));
        let hello = hello(&mut frames, &mut writer, &options).await?;
        // What the broker takes (0 from a broker that does not say: the
        // protocol's default).
        let max_frame = match hello.max_frame_bytes {
            0 => DEFAULT_MAX_FRAME_BYTES,
            n => n,
        } as usize;
        // Frames as large as the broker says it sends (a broker run with a
        // larger --max-frame-bytes), never below the protocol's default.
        frames
            .decoder_mut()
            .set_max_frame_bytes(hello.max_frame_bytes.max(DEFAULT_MAX_FRAME_BYTES));
        Ok(Client {
            inner: Arc::new(Inner {
                conn: Connection::start(frames, writer, max_frame),
                next_id: AtomicU64::new(1),
                hello,
                kept,
            }),
        })
    }

    /// What the broker said in its `HelloReply`: its version, limits, and
    /// who it sees (uid and pid from the kernel).
    pub fn hello(&self) -> &v1::HelloReply {
        &self.inner.hello
    }

    /// The second descriptor of the connection kept by
    /// [`ConnectOptions::keep_socket_for_children`] (close-on-exec: a child
    /// inherits it only if told to), alive as long as this client.
    #[cfg(unix)]
    pub fn socket_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.inner.kept.as_ref().map(|fd| fd.as_fd())
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn call(&self, body: Body) -> Result<Response, ClientError> {
        let frame = v1::ClientFrame {
            id: self.next_id(),
            body: Some(body),
        };
        self.inner.conn.call(&frame).await
    }

    /// Sends a request without waiting for its answer (used on drop paths).
    fn send_and_forget(&self, body: Body) {
        let frame = v1::ClientFrame {
            id: self.next_id(),
            body: Some(body),
        };
        self.inner.conn.send_and_forget(&frame);
    }

    /// Round trip with a payload; answers the echoed payload.
    pub async fn ping(&self, payload: impl Into<Bytes>) -> Result<Bytes, ClientError> {
        let r = self
            .call(Body::Ping(v1::Ping {
                payload: payload.into(),
            }))
            .await?;
        match r.result {
            reply::Result::Pong(p) => Ok(p.payload),
            other => Err(unexpected("Pong", &other)),
        }
    }

    /// The state of the named resources (all in use when empty) and queues.
    pub async fn status(&self, resources: &[String]) -> Result<v1::Status, ClientError> {
        let r = self
            .call(Body::GetStatus(v1::GetStatus {
                resources: resources.to_vec(),
            }))
            .await?;
        match r.result {
            reply::Result::Status(s) => Ok(s),
            other => Err(unexpected("Status", &other)),
        }
    }

    /// The recorded leases of `resource` (DESIGN "History"), newest last:
    /// those that ended at or after `since_ms` (wall-clock Unix epoch ms;
    /// 0 = as far back as the broker keeps), at most the newest `limit` of
    /// them (0 = as many as fit in one frame). Policy verb `status`.
    pub async fn history(
        &self,
        resource: &str,
        since_ms: u64,
        limit: u32,
    ) -> Result<v1::History, ClientError> {
        let r = self
            .call(Body::GetHistory(v1::GetHistory {
                resource: resource.to_string(),
                since_ms,
                limit,
            }))
            .await?;
        match r.result {
            reply::Result::History(h) => Ok(h),
            other => Err(unexpected("History", &other)),
        }
    }

    /// Takes back a detached lease or queue place (one acquired with
    /// [`AcquireBuilder::detach_grace`] whose connection closed) from this
    /// connection, with the token its owner kept. Same uid only; a wrong
    /// token, another uid or a lease that ended are all `NOT_FOUND`.
    pub async fn reattach(&self, token: &ResumeToken) -> Result<Pending, ClientError> {
        let r = self
            .call(Body::Reattach(v1::Reattach {
                lease_id: token.lease_id,
                resume_token: token.secret.clone(),
            }))
            .await?;
        Pending::from_reply(self.clone(), token.resource.clone(), r)
    }

    /// Asks the holders of `resource` to make way (policy verb `yield`;
    /// with [`YieldRequest::revoke`], `revoke`).
    pub fn request_yield(&self, resource: &str) -> YieldRequest {
        YieldRequest {
            client: self.clone(),
            req: v1::RequestYield {
                resource: resource.to_string(),
                ..v1::RequestYield::default()
            },
        }
    }

    /// Starts building a lease request on `resource` (EXCLUSIVE, queued,
    /// the broker's default TTL, unless told otherwise).
    pub fn acquire(&self, resource: &str) -> AcquireBuilder {
        AcquireBuilder::new(self.clone(), resource)
    }

    /// Watches the named resources (all when empty) from `start_revision`
    /// (0 = now, with a snapshot).
    pub async fn watch(
        &self,
        resources: &[String],
        start_revision: u64,
    ) -> Result<WatchStream, ClientError> {
        let r = self
            .call(Body::Watch(v1::Watch {
                resources: resources.to_vec(),
                start_revision,
            }))
            .await?;
        match (r.result, r.pushes) {
            (reply::Result::Watch(started), Some(events)) => {
                Ok(WatchStream::new(self.clone(), started, events))
            }
            (other, _) => Err(unexpected("WatchStarted", &other)),
        }
    }
}

/// A request that the holders of a resource make way, being built.
#[must_use = "a yield request does nothing until sent"]
pub struct YieldRequest {
    client: Client,
    req: v1::RequestYield,
}

impl YieldRequest {
    /// How long the holders have (default: at once).
    pub fn within(mut self, d: Duration) -> Self {
        self.req.within_ms = d.as_millis().min(u128::from(u32::MAX)) as u32;
        self
    }

    /// Why, for the holders and watchers.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.req.reason = reason.into();
        self
    }

    /// Take the lease of a holder still holding after [`Self::within`].
    pub fn revoke(mut self) -> Self {
        self.req.revoke = true;
        self
    }

    /// Sends it; done once every holder has been asked. Answers how many
    /// were (0: nobody held the resource).
    pub async fn send(self) -> Result<u32, ClientError> {
        let r = self.client.call(Body::RequestYield(self.req)).await?;
        match r.result {
            reply::Result::Done(d) => Ok(d.holders_asked),
            other => Err(unexpected("Done", &other)),
        }
    }
}

async fn hello(
    frames: &mut FramedRead<impl tokio::io::AsyncRead + Unpin, ClientCodec>,
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    options: &ConnectOptions,
) -> Result<v1::HelloReply, ClientError> {
    let mut buf = bytes::BytesMut::new();
    encode_frame(
        &v1::ClientFrame {
            id: 1,
            body: Some(Body::Hello(v1::Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: options.client_name.clone(),
            })),
        },
        &mut buf,
    );
    // Every broker takes a frame of the protocol's default size; a larger
    // Hello (a client name of megabytes) would only be dropped unanswered.
    let max = DEFAULT_MAX_FRAME_BYTES as usize;
    if buf.len() > max {
        return Err(connection::too_large(buf.len(), max));
    }
    let lost = |e: String| ClientError::Disconnected(e);
    writer
        .write_all(&buf)
        .await
        .map_err(|e| lost(format!("sending Hello failed: {e}")))?;
    match frames.next().await {
        Some(Ok(v1::ServerFrame {
            body: Some(v1::server_frame::Body::Reply(v1::Reply { result, .. })),
        })) => match result {
            Some(reply::Result::Hello(h)) => Ok(h),
            Some(reply::Result::Error(e)) => Err(ClientError::from_wire(e)),
            other => Err(ClientError::Protocol(format!(
                "expected HelloReply, got {other:?}"
            ))),
        },
        Some(Ok(other)) => Err(ClientError::Protocol(format!(
            "expected HelloReply, got {other:?}"
        ))),
        Some(Err(e)) => Err(lost(format!("bad frame from the broker: {e}"))),
        None => Err(lost("the broker closed the connection during Hello".into())),
    }
}

fn unexpected(wanted: &str, got: &reply::Result) -> ClientError {
    ClientError::Protocol(format!("expected {wanted}, got {got:?}"))
}
