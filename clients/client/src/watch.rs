//! Watches from the client's side: the snapshot the broker answered with,
//! then a stream of state events.

use tokio::sync::mpsc;
use turnstile_proto::v1::{self, client_frame::Body};

use crate::{Client, Push};

/// A live watch. Dropping it ends the watch on the broker.
pub struct WatchStream {
    client: Client,
    started: v1::WatchStarted,
    events: mpsc::UnboundedReceiver<Push>,
    last_revision: u64,
}

impl WatchStream {
    pub(crate) fn new(
        client: Client,
        started: v1::WatchStarted,
        events: mpsc::UnboundedReceiver<Push>,
    ) -> WatchStream {
        let last_revision = started.revision;
        WatchStream {
            client,
            started,
            events,
            last_revision,
        }
    }

    /// The broker's answer: the watch id, the revision and the snapshot
    /// (with `resync` when a resume could not be honoured).
    pub fn started(&self) -> &v1::WatchStarted {
        &self.started
    }

    /// The revision of the newest event received (or of the snapshot).
    pub fn last_revision(&self) -> u64 {
        self.last_revision
    }

    /// The next event; `None` when the connection is gone.
    pub async fn next(&mut self) -> Option<v1::WatchEvent> {
        loop {
            match self.events.recv().await? {
                Push::Watch(e) => {
                    self.last_revision = self.last_revision.max(e.revision);
                    return Some(e);
                }
                _ => continue,
            }
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.client.send_and_forget(Body::Unwatch(v1::Unwatch {
            watch_id: self.started.watch_id,
        }));
    }
}

/// What a [`Watcher`] yields.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchItem {
    /// The state of every watched resource: at the start, and again after a
    /// reconnect whose resume the broker could not honour (`resync`).
    Snapshot {
        /// The revision the states are at.
        revision: u64,
        /// The states.
        states: Vec<v1::ResourceState>,
        /// The broker's history no longer reached back: events in between
        /// are lost and this snapshot replaces them.
        resync: bool,
    },
    /// A state change (or a heartbeat).
    Event(v1::WatchEvent),
    /// The connection was lost; the watcher is reconnecting.
    Disconnected(String),
    /// Reconnected; missed events follow (or a resync snapshot).
    Reconnected,
}

/// A watch that survives broker restarts: on connection loss it reconnects
/// (backing off up to once a second) and resumes from the last revision it
/// saw, so the caller gets either every missed event or an explicit resync.
pub struct Watcher {
    options: crate::ConnectOptions,
    resources: Vec<String>,
    stream: Option<WatchStream>,
    revision: u64,
    queued: std::collections::VecDeque<WatchItem>,
}

impl Watcher {
    /// Connects and starts watching; the first item is the snapshot.
    pub async fn start(
        options: crate::ConnectOptions,
        resources: Vec<String>,
    ) -> Result<Watcher, crate::ClientError> {
        let mut w = Watcher {
            options,
            resources,
            stream: None,
            revision: 0,
            queued: Default::default(),
        };
        let options = w.options.clone();
        w.open(options).await?;
        Ok(w)
    }

    /// The revision of the newest state seen.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    async fn open(&mut self, options: crate::ConnectOptions) -> Result<(), crate::ClientError> {
        let client = Client::connect(options).await?;
        let stream = client.watch(&self.resources, self.revision).await?;
        let started = stream.started().clone();
        if self.revision == 0 || started.resync {
            self.queued.push_back(WatchItem::Snapshot {
                revision: started.revision,
                states: started.snapshot,
                resync: started.resync,
            });
            self.revision = started.revision;
        }
        self.stream = Some(stream);
        Ok(())
    }

    /// The next item. Never ends: a lost connection is reported as
    /// [`WatchItem::Disconnected`] and retried until the broker is back.
    pub async fn next(&mut self) -> WatchItem {
        loop {
            if let Some(item) = self.queued.pop_front() {
                return item;
            }
            match self.stream.as_mut() {
                Some(stream) => match stream.next().await {
                    Some(e) => {
                        self.revision = self.revision.max(e.revision);
                        return WatchItem::Event(e);
                    }
                    None => {
                        self.stream = None;
                        return WatchItem::Disconnected(
                            "the connection to the broker was lost".into(),
                        );
                    }
                },
                None => {
                    // Keep trying (backing off up to once a second) until the
                    // broker is back.
                    let patient = self
                        .options
                        .clone()
                        .retry_for(std::time::Duration::from_secs(3600));
                    match self.open(patient).await {
                        Ok(()) => return WatchItem::Reconnected,
                        Err(_) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
                    }
                }
            }
        }
    }
}
