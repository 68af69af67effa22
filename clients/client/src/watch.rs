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
