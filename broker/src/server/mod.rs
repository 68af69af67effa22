//! The transport that drives the core: it accepts connections, reads frames,
//! hands them to the one task that owns the [`Core`](crate::core::Core), and
//! writes what comes back.
//!
//! Shape (measured in `research/actor-latency.md`, then issue 14): one task
//! per connection that reads, decodes from a buffer, calls the core
//! directly and writes everything the core queued for it in one write; one
//! core task for deadlines and for what arrives from outside a connection.
//! On tokio's current_thread runtime the core's lock is never contended,
//! and a request costs no hand-over between tasks (`core_task.rs`).
//!
//! [`run`] takes a bound listener, the configuration and a shutdown future,
//! so tests and the binary bind their own sockets. The durable store comes
//! in the configuration ([`Storage`]), opened by the caller, so that a store
//! that cannot be used stops the binary before it binds its socket.
//!
//! The core task never waits for the disk on a publish: the message is
//! handed to the store's writer thread, which writes `Published` into the
//! connection itself when the commit ends and files the outcome for the
//! core's next entry (`dispatch/publish.rs`).
//! The one write the core task does wait for is a counter reservation (at
//! startup, then once every [`crate::core::COUNTER_BLOCK`] tokens or
//! revisions), since nothing that may carry a token can leave before it.

mod accounting;
mod clock;
mod connection;
mod core_task;
mod dispatch;
mod log_limit;
mod outbound;
pub mod wire;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use turnstile_proto::v1;

use crate::core::{CoreConfig, SessionId};
use crate::platform::listener::Endpoint;
use crate::platform::peer::{PeerCredentials, peer_credentials};
pub use crate::store::Storage;
use crate::store::StoreError;
use accounting::{Counts, take_slot};
pub use outbound::Outbound;

/// Limits of the transport. Every one is a `turnstiled` flag.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections in all.
    pub max_connections: usize,
    /// Connections per uid, except root and the broker's own user.
    pub max_connections_per_uid: usize,
    /// Connections of one uid that have not said Hello yet (more of that
    /// uid's wait their turn; other uids are not concerned).
    pub max_handshakes_per_uid: usize,
    /// Time allowed to say Hello.
    pub handshake_timeout: Duration,
    /// Time allowed to finish a frame once its first byte arrived.
    pub frame_timeout: Duration,
    /// Largest frame, either way.
    pub max_frame_bytes: u32,
    /// Bytes queued for a client that does not read before it is cut off
    /// (watch events beyond the queue are coalesced and do not count).
    pub max_outbound_bytes: usize,
    /// Bytes queued for all the connections of one uid (except root and
    /// the broker's own user): past it that uid's requests wait until what
    /// is queued goes out.
    pub max_outbound_bytes_per_uid: usize,
    /// Bytes of status and history answers built for all the connections
    /// of one uid (except root and the broker's own user) per second: a
    /// uid that owes more than a tenth of a second's worth waits until it
    /// is paid off at this rate.
    pub report_bytes_per_uid_per_second: usize,
    /// Requests answered later (durable publishes) one connection may have
    /// outstanding: past it the connection is not read until answers go out.
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
    /// How much lease history the store keeps per resource.
    pub history: crate::store::HistoryBounds,
    /// The fleet (`--fleet-etcd`); `None`: this broker is alone.
    pub fleet: Option<crate::fleet::FleetConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 10_000,
            max_connections_per_uid: 256,
            max_handshakes_per_uid: 64,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            max_frame_bytes: turnstile_proto::DEFAULT_MAX_FRAME_BYTES,
            max_outbound_bytes: 8 << 20,
            max_outbound_bytes_per_uid: 64 << 20,
            report_bytes_per_uid_per_second: 16 << 20,
            max_in_flight: 128,
            own_uid: crate::platform::peer::own_uid(),
            policy: std::sync::Arc::new(crate::policy::Policy::builtin(
                crate::platform::peer::own_uid(),
            )),
            core: CoreConfig {
                own_uid: crate::platform::peer::own_uid(),
                ..CoreConfig::default()
            },
            storage: None,
            history: crate::store::HistoryBounds::default(),
            fleet: None,
        }
    }
}

/// Messages from connection tasks to the core task.
pub(crate) enum ToCore {
    /// A peer said a valid Hello.
    Hello {
        id: u64,
        hello: v1::Hello,
        creds: PeerCredentials,
        gate: Arc<outbound::ReadGate>,
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
    /// The store answered a history read.
    HistoryRead {
        session: SessionId,
        request_id: u64,
        result: Result<crate::store::Recorded, StoreError>,
    },
    /// Deliveries whose attempts the store now holds: send them.
    Deliveries {
        /// Its number, for the answers held behind it.
        batch: u64,
        deliveries: Vec<crate::core::Change>,
    },
    /// The store made the counter reservation up to `until` durable.
    CountersStored { until: u64 },
    /// The store answered a batch of acks.
    AcksStored(dispatch::AcksStored),
    /// The acks gathered by the entries into the core so far go to the
    /// store (see `dispatch/ack.rs`).
    SubmitAcks,
    /// The fleet task admits a global waiter or gives the fleet up.
    Fleet(crate::fleet::FleetEvent),
}

impl From<crate::fleet::FleetEvent> for ToCore {
    fn from(event: crate::fleet::FleetEvent) -> ToCore {
        ToCore::Fleet(event)
    }
}

/// Serves `listener` until `shutdown` resolves; then closes every
/// connection and returns.
pub async fn run(
    listener: impl Into<Endpoint>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut listener: Endpoint = listener.into();
    let (to_core, core_rx) = mpsc::channel::<ToCore>(4096);
    let stop = CancellationToken::new();
    // The store's contents and the counters' first reservation are in place
    // before the first connection is accepted.
    let mut dispatcher = dispatch::Dispatcher::start(config.clone(), to_core.clone())
        .map_err(std::io::Error::other)?;
    let fleet = start_fleet(&config, &mut dispatcher, &to_core, &stop)?;
    let core = core_task::SharedCore::new(dispatcher);
    let core_task = tokio::spawn(core_task::run(core.clone(), core_rx, stop.clone()));
    let counts = Arc::new(Mutex::new(Counts::default()));
    // Refused connections are logged like policy denials: ten a second,
    // then a count (a uid over its limit retrying in a loop must not flood
    // the log).
    let mut refusals = log_limit::LogLimit::default();
    let epoch = std::time::Instant::now();
    tokio::pin!(shutdown);

    loop {
        // Every connection is accepted at once: the handshake bound is per
        // uid (see `accounting.rs`), so it is applied after accept, when the
        // kernel has said who is calling.
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
        let gate = outbound::ReadGate::new();
        let mut refuse = |message: String| {
            let now = epoch.elapsed().as_millis() as u64;
            if refusals.admit(now, "refused connections") {
                tracing::warn!(
                    uid = creds.uid,
                    pid = creds.pid,
                    "refusing a connection: {message}"
                );
            }
            let _ = gate.push(Outbound::frame(wire::error_reply(
                0,
                wire::Refusal::TooManyConnections(message),
            )));
        };
        let slot = match take_slot(&counts, &config, creds.uid) {
            Ok(s) => s,
            Err(message) => {
                refuse(message);
                connection::spawn_farewell(stream, gate);
                continue;
            }
        };
        gate.account_to(slot.outbound());
        let setup = connection::ReaderSetup {
            to_core: to_core.clone(),
            core: core.clone(),
            stop: stop.clone(),
            creds,
            gate,
            max_frame_bytes: config.max_frame_bytes,
            handshake_timeout: config.handshake_timeout,
            frame_timeout: config.frame_timeout,
            slot,
        };
        connection::spawn(stream, setup);
    }

    tracing::info!("shutting down: closing every connection");
    stop.cancel();
    drop(to_core);
    let _ = tokio::time::timeout(Duration::from_secs(5), core_task).await;
    if let Some(fleet) = fleet {
        // It revokes its etcd lease: this host's keys go now.
        let _ = tokio::time::timeout(Duration::from_secs(2), fleet).await;
    }
    Ok(())
}

/// Starts the fleet task when the broker has one (`--fleet-etcd`): the
/// dispatcher hands it every resource's newest state, it answers with
/// admissions ([`ToCore::Fleet`]).
fn start_fleet(
    config: &ServerConfig,
    dispatcher: &mut dispatch::Dispatcher,
    to_core: &mpsc::Sender<ToCore>,
    stop: &CancellationToken,
) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(fleet) = &config.fleet else {
        return Ok(None);
    };
    let inbox = Arc::new(crate::fleet::Inbox::default());
    dispatcher.attach_fleet(inbox.clone());
    #[cfg(feature = "fleet")]
    {
        Ok(Some(crate::fleet::spawn(
            fleet.clone(),
            inbox,
            to_core.clone(),
            stop.clone(),
        )))
    }
    #[cfg(not(feature = "fleet"))]
    {
        let _ = (fleet, inbox, to_core, stop);
        Err(std::io::Error::other(
            "this broker was built without the `fleet` feature",
        ))
    }
}
