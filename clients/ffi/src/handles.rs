//! The handle table: what the caller holds is never a pointer to Rust
//! memory but a number (shown to C as an opaque pointer) that this table
//! maps to the object. So a NULL, stale, forged or closed handle, a handle
//! of the wrong kind, or a second close, is found in the table (or not) and
//! answered with `TS_ERR_INVALID_HANDLE`: never a crash.
//!
//! Numbers are never reused within a process (a 64-bit counter; on a
//! 32-bit target it would wrap after 2^28 handles).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::client::ClientHandle;
use crate::consumer::ConsumerHandle;
use crate::error::{Failure, ts_error};
use crate::history::HistoryHandle;
use crate::holder::LeaseHandle;
use crate::watch::WatchHandle;

/// One live object.
#[derive(Clone)]
pub(crate) enum Entry {
    Client(Arc<ClientHandle>),
    Lease(Arc<LeaseHandle>),
    Watch(Arc<WatchHandle>),
    Consumer(Arc<ConsumerHandle>),
    History(Arc<HistoryHandle>),
}

impl Entry {
    fn kind(&self) -> &'static str {
        match self {
            Entry::Client(_) => "ts_client",
            Entry::Lease(_) => "ts_lease",
            Entry::Watch(_) => "ts_watch",
            Entry::Consumer(_) => "ts_consumer",
            Entry::History(_) => "ts_history",
        }
    }
}

fn table() -> &'static Mutex<HashMap<u64, Entry>> {
    static TABLE: OnceLock<Mutex<HashMap<u64, Entry>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

fn locked() -> std::sync::MutexGuard<'static, HashMap<u64, Entry>> {
    // The table holds no invariant a panic could break half-way.
    table().lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers an object; the number to hand out as its handle.
pub(crate) fn insert(entry: Entry) -> usize {
    // Aligned like a pointer (some tools assume it); never 0.
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed) << 4;
    locked().insert(id, entry);
    id as usize
}

fn missing(kind: &str, handle: usize) -> Failure {
    let what = if handle == 0 {
        format!("the {kind} handle is NULL")
    } else {
        format!("{handle:#x} is not a live {kind} handle (closed already, or never one)")
    };
    Failure::new(ts_error::TS_ERR_INVALID_HANDLE, what)
}

fn wrong_kind(kind: &str, entry: &Entry) -> Failure {
    Failure::new(
        ts_error::TS_ERR_INVALID_HANDLE,
        format!(
            "a {} handle was passed where a {kind} is expected",
            entry.kind()
        ),
    )
}

macro_rules! accessors {
    ($get:ident, $take:ident, $variant:ident, $ty:ty, $kind:literal) => {
        /// The live object behind a handle of this kind.
        pub(crate) fn $get(handle: usize) -> Result<Arc<$ty>, Failure> {
            match locked().get(&(handle as u64)) {
                Some(Entry::$variant(h)) => Ok(Arc::clone(h)),
                Some(other) => Err(wrong_kind($kind, other)),
                None => Err(missing($kind, handle)),
            }
        }

        /// Removes a handle of this kind from the table (its close).
        pub(crate) fn $take(handle: usize) -> Result<Arc<$ty>, Failure> {
            let mut t = locked();
            match t.get(&(handle as u64)) {
                Some(Entry::$variant(_)) => match t.remove(&(handle as u64)) {
                    Some(Entry::$variant(h)) => Ok(h),
                    _ => Err(missing($kind, handle)),
                },
                Some(other) => Err(wrong_kind($kind, other)),
                None => Err(missing($kind, handle)),
            }
        }
    };
}

accessors!(client, take_client, Client, ClientHandle, "ts_client");
accessors!(lease, take_lease, Lease, LeaseHandle, "ts_lease");
accessors!(watch, take_watch, Watch, WatchHandle, "ts_watch");
accessors!(
    consumer,
    take_consumer,
    Consumer,
    ConsumerHandle,
    "ts_consumer"
);
accessors!(history, take_history, History, HistoryHandle, "ts_history");

/// How many handles are live (for tests: nothing leaks in the table).
pub(crate) fn live() -> usize {
    locked().len()
}
