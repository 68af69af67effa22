//! The transport that drives the core: it accepts connections, reads frames,
//! hands them to the one task that owns the [`Core`](crate::core::Core), and
//! writes what comes back.
//!
//! Shape (measured in `research/actor-latency.md`): a reader task per
//! connection decoding from a buffer, one core task owning all state, and a
//! writer task per connection that drains its whole queue into one write.
//! On tokio's current_thread runtime there are no locks on the hot path.
//!
//! [`run`] takes a bound listener, the configuration and a shutdown future,
//! so tests and the binary bind their own sockets. The durable store comes
//! in the configuration ([`Storage`]), opened by the caller, so that a store
//! that cannot be used stops the binary before it binds its socket.
//!
//! The core task never waits for the disk on a publish: the message is
//! handed to the store's writer thread, a small task waits for the commit,
//! and the outcome comes back to the core task as `ToCore::Committed`.
//! The one write the core task does wait for is a counter reservation (at
//! startup, then once every [`crate::core::COUNTER_BLOCK`] tokens or
//! revisions), since nothing that may carry a token can leave before it.

mod clock;
mod connection;
mod dispatch;
mod outbound;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::traits::tokio::Listener as _;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use turnstile_proto::v1;

use crate::core::queues::Message;
use crate::core::{CoreConfig, SessionId};
use crate::platform::peer::{PeerCredentials, peer_credentials};
use crate::store::{Loaded, Store, StoreError, StoreWriter};
pub use connection::Outbound;

/// Limits of the transport. Every one is a `turnstiled` flag.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections in all.
    pub max_connections: usize,
    /// Connections per uid, except root and the broker's own user.
    pub max_connections_per_uid: usize,
    /// Connections that have not said Hello yet.
    pub max_handshakes: usize,
    /// Time allowed to say Hello.
    pub handshake_timeout: Duration,
    /// Time allowed to finish a frame once its first byte arrived.
    pub frame_timeout: Duration,
    /// Largest frame, either way.
    pub max_frame_bytes: u32,
    /// Bytes queued for a client that does not read before it is cut off
    /// (watch events beyond the queue are coalesced and do not count).
    pub max_outbound_bytes: usize,
    /// Requests answered later (durable publishes) one connection may have
    /// outstanding.
    pub max_in_flight: usize,
    /// The broker's own uid (trusted like root).
    pub own_uid: u32,
    /// Who may do what.
    pub policy: std::sync::Arc<crate::policy::Policy>,
    /// The core's limits and defaults, the queues' among them.
    pub core: CoreConfig,
    /// The durable store. `None` keeps queues and counters in memory only:
    /// nothing survives the process (for tests of the transport).
    pub storage: Option<Storage>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 10_000,
            max_connections_per_uid: 256,
            max_handshakes: 64,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            max_frame_bytes: turnstile_proto::DEFAULT_MAX_FRAME_BYTES,
            max_outbound_bytes: 8 << 20,
            max_in_flight: 128,
            own_uid: crate::platform::peer::own_uid(),
            policy: std::sync::Arc::new(crate::policy::Policy::builtin(
                crate::platform::peer::own_uid(),
            )),
            core: CoreConfig::default(),
            storage: None,
        }
    }
}

/// The durable store a server runs on: opened and read before serving,
/// its writer thread started. Clones share it. What it held at startup is
/// handed to the one server that runs on it.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<StorageInner>,
}

struct StorageInner {
    path: PathBuf,
    writer: StoreWriter,
    queues: usize,
    messages: usize,
    loaded: Mutex<Option<Loaded>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.inner.path)
            .field("queues", &self.inner.queues)
            .field("messages", &self.inner.messages)
            .finish()
    }
}

impl Storage {
    /// Opens (or creates) the store in `dir`, reads everything in it and
    /// starts its writer thread. A store that cannot be opened or read is
    /// an error naming the file: never a silent fresh start.
    pub fn open(dir: &Path) -> Result<Storage, StoreError> {
        let store = Store::open(dir)?;
        let loaded = store.load()?;
        let path = store.path().to_path_buf();
        let writer = StoreWriter::spawn(store).map_err(|e| StoreError::Write {
            path: path.clone(),
            detail: format!("cannot start the store's writer thread: {e}"),
        })?;
        Ok(Storage {
            inner: Arc::new(StorageInner {
                path,
                writer,
                queues: loaded.queues.len(),
                messages: loaded.queues.iter().map(|(_, m)| m.len()).sum(),
                loaded: Mutex::new(Some(loaded)),
            }),
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Queues and messages found at startup.
    pub fn found(&self) -> (usize, usize) {
        (self.inner.queues, self.inner.messages)
    }

    /// What the store held at startup, for the one server that runs on it:
    /// taken, so that the messages are not kept twice. A second server on
    /// the same storage is refused like a second broker on the same file:
    /// what it would read is stale (counters included).
    fn take_loaded(&self) -> Result<Loaded, StoreError> {
        let mut slot = match self.inner.loaded.lock() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        slot.take().ok_or_else(|| StoreError::Locked {
            path: self.inner.path.clone(),
        })
    }

    fn writer(&self) -> StoreWriter {
        self.inner.writer.clone()
    }
}

/// Frames queued per connection before the core starts keeping a backlog.
const OUTBOUND_QUEUE: usize = 256;

/// Messages from connection tasks to the core task.
pub(crate) enum ToCore {
    /// A peer said a valid Hello.
    Hello {
        id: u64,
        hello: v1::Hello,
        creds: PeerCredentials,
        outbound: mpsc::Sender<Outbound>,
        cancel: CancellationToken,
        session: oneshot::Sender<SessionId>,
    },
    /// A frame after Hello.
    Request {
        session: SessionId,
        frame: v1::ClientFrame,
    },
    /// A broken frame: answer with this error (id 0), then close.
    Fatal {
        session: SessionId,
        refusal: wire::Refusal,
    },
    /// The connection is gone.
    Goodbye { session: SessionId, reason: String },
    /// A connection's outbound queue has room again.
    Writable { session: SessionId },
    /// The store answered a publish: complete it, whether or not its
    /// connection is still open.
    Committed {
        session: SessionId,
        request_id: u64,
        queue: String,
        message: Message,
        result: Result<(), StoreError>,
    },
}

/// Counts of open connections, per uid and in all. A slot is released when
/// its connection's reader ends.
#[derive(Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// One connection's place in the counts; dropping it gives the place back.
pub struct ConnectionSlot {
    counts: Arc<Mutex<Counts>>,
    uid: u32,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.counts.lock() {
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.per_uid.get_mut(&self.uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.per_uid.remove(&self.uid);
                }
            }
        }
    }
}

fn take_slot(
    counts: &Arc<Mutex<Counts>>,
    config: &ServerConfig,
    uid: u32,
) -> Result<ConnectionSlot, String> {
    let mut c = counts
        .lock()
        .map_err(|_| "internal error: connection counts poisoned".to_string())?;
    if c.total >= config.max_connections {
        return Err(format!(
            "the broker has {} connections, its limit (--max-connections)",
            c.total
        ));
    }
    let privileged = uid == 0 || uid == config.own_uid;
    let mine = c.per_uid.get(&uid).copied().unwrap_or(0);
    if !privileged && mine >= config.max_connections_per_uid {
        return Err(format!(
            "uid {uid} already has {mine} connections, the per-user limit (--max-connections-per-uid)"
        ));
    }
    c.total += 1;
    *c.per_uid.entry(uid).or_insert(0) += 1;
    Ok(ConnectionSlot {
        counts: counts.clone(),
        uid,
    })
}

/// Serves `listener` until `shutdown` resolves; then closes every
/// connection and returns.
pub async fn run(
    listener: Listener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (to_core, core_rx) = mpsc::channel::<ToCore>(4096);
    let stop = CancellationToken::new();
    // The store's contents and the counters' first reservation are in place
    // before the first connection is accepted.
    let dispatcher = dispatch::Dispatcher::start(config.clone(), to_core.clone())
        .map_err(std::io::Error::other)?;
    let core_task = tokio::spawn(dispatch::core_loop(dispatcher, core_rx, stop.clone()));
    let counts = Arc::new(Mutex::new(Counts::default()));
    let handshakes = Arc::new(Semaphore::new(config.max_handshakes));
    tokio::pin!(shutdown);

    loop {
        // At most `max_handshakes` connections may be between accept and
        // Hello: past that, new ones wait in the kernel's listen backlog
        // (a burst of honest clients is slowed, not refused).
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = handshakes.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: log, breathe, go on.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let creds = match peer_credentials(&stream) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("dropping a connection whose peer credentials cannot be read: {e}");
                continue;
            }
        };
        let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let refuse = |message: String| {
            tracing::warn!(
                uid = creds.uid,
                pid = creds.pid,
                "refusing a connection: {message}"
            );
            let _ = out_tx.try_send(Outbound::frame(wire::error_reply(
                0,
                wire::Refusal::TooManyConnections(message),
            )));
        };
        let slot = match take_slot(&counts, &config, creds.uid) {
            Ok(s) => s,
            Err(message) => {
                refuse(message);
                drop(out_tx);
                connection::spawn_farewell(stream, out_rx);
                continue;
            }
        };
        let setup = connection::ReaderSetup {
            to_core: to_core.clone(),
            outbound: out_tx,
            cancel: stop.child_token(),
            creds,
            max_frame_bytes: config.max_frame_bytes,
            handshake_timeout: config.handshake_timeout,
            frame_timeout: config.frame_timeout,
            handshake_permit: permit,
            slot,
        };
        connection::spawn(stream, setup, out_rx);
    }

    tracing::info!("shutting down: closing every connection");
    stop.cancel();
    drop(to_core);
    let _ = tokio::time::timeout(Duration::from_secs(5), core_task).await;
    Ok(())
}
