//! The store as a running server holds it: opened and read before the
//! socket is bound, its writer thread started, and what it held at startup
//! handed once to the server that runs on it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Loaded, LogOptions, Store, StoreError, StoreWriter};

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
        Storage::open_with_options(dir, LogOptions::default())
    }

    /// [`Storage::open`] with the log's sizes given.
    pub fn open_with_options(dir: &Path, options: LogOptions) -> Result<Storage, StoreError> {
        let mut store = Store::open_with_options(dir, options)?;
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
    pub(crate) fn take_loaded(&self) -> Result<Loaded, StoreError> {
        let mut slot = match self.inner.loaded.lock() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        slot.take().ok_or_else(|| StoreError::Locked {
            path: self.inner.path.clone(),
        })
    }

    /// Transactions committed so far (each one sync of the log).
    pub fn commits(&self) -> u64 {
        self.inner.writer.commits()
    }

    pub(crate) fn writer(&self) -> StoreWriter {
        self.inner.writer.clone()
    }
}
