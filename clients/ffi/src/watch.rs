//! `ts_watch`: a live view of resources' state. It has its own connection
//! (the client's socket and name) and survives broker restarts: it
//! reconnects and resumes, reporting `TS_WATCH_DISCONNECTED`,
//! `TS_WATCH_RECONNECTED` and, when events were lost, a resync snapshot.

use std::ffi::{CString, c_char, c_void};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use turnstile_client::proto as v1;
use turnstile_client::{WatchItem, Watcher};

use crate::error::{Failure, guard, ts_error};
use crate::events::{EventQueue, ts_notify_fn};
use crate::handles::{self, Entry};
use crate::runtime::{block, runtime};
use crate::strings;

/// A watch. Opaque: created by `ts_watch_open`, freed by `ts_watch_close`.
pub struct ts_watch {
    _opaque: [u8; 0],
}

/// What a watch event is.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum ts_watch_item {
    /// The state of every watched resource: first, and again after a
    /// reconnect whose resume the broker could not honour (`resync`).
    /// `state_json` is a JSON array of resource states.
    TS_WATCH_SNAPSHOT = 1,
    /// One resource changed (or a heartbeat): `kind`, `resource`,
    /// `state_json` (a JSON resource state), `holders`, `waiters`.
    TS_WATCH_CHANGE = 2,
    /// The connection was lost; the watch is reconnecting (`detail` says why).
    TS_WATCH_DISCONNECTED = 3,
    /// Reconnected; missed changes follow (or a resync snapshot).
    TS_WATCH_RECONNECTED = 4,
}

/// What changed (the protocol's `EventKind`, same numbers).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum ts_event_kind {
    /// Not a change (snapshot, disconnect, reconnect), or a kind this
    /// library does not know yet.
    TS_EVENT_NONE = 0,
    /// A lease was granted.
    TS_EVENT_GRANTED = 1,
    /// A lease was released.
    TS_EVENT_RELEASED = 2,
    /// A lease expired (not kept alive).
    TS_EVENT_EXPIRED = 3,
    /// A holder's or waiter's connection closed.
    TS_EVENT_DISCONNECTED = 4,
    /// A request joined the queue.
    TS_EVENT_QUEUED = 5,
    /// A request left the queue (cancelled, or its wait timed out).
    TS_EVENT_CANCELLED = 6,
    /// A holder reported progress.
    TS_EVENT_PROGRESS = 7,
    /// The watch fell behind and was resynchronised.
    TS_EVENT_RESYNC = 8,
    /// Nothing changed; the broker is alive.
    TS_EVENT_HEARTBEAT = 9,
    /// Someone asked the holders to make way.
    TS_EVENT_YIELD_REQUESTED = 10,
    /// A holder declined to make way.
    TS_EVENT_YIELD_DECLINED = 11,
    /// A lease was revoked after a yield request it did not honour.
    TS_EVENT_REVOKED = 12,
    /// A lease's connection closed; it is kept for a re-attach.
    TS_EVENT_DETACHED = 13,
    /// A detached lease was re-attached.
    TS_EVENT_REATTACHED = 14,
    /// A holder keeps its lease alive but reports no progress.
    TS_EVENT_STALLED = 15,
}

/// One watch event. Every pointer belongs to the watch handle: valid until
/// the next `ts_watch_next` on it, or `ts_watch_close`.
#[repr(C)]
pub struct ts_watch_event {
    /// What this is.
    pub item: ts_watch_item,
    /// For `TS_WATCH_CHANGE`, what changed; else `TS_EVENT_NONE`.
    pub kind: ts_event_kind,
    /// The broker's revision after the change (or of the snapshot).
    pub revision: u64,
    /// For `TS_WATCH_CHANGE`, the resource (UTF-8); else "".
    pub resource: *const c_char,
    /// For `TS_WATCH_CHANGE`, the number of holders and of waiters now.
    pub holders: usize,
    /// See `holders`.
    pub waiters: usize,
    /// Several changes were merged into this one (the watcher fell behind).
    pub coalesced: bool,
    /// For `TS_WATCH_SNAPSHOT`: events were lost and this replaces them.
    pub resync: bool,
    /// The broker's comment, or why the connection was lost ("" if none).
    pub detail: *const c_char,
    /// The state as JSON (schema of `turnstile status --json`); "null" for
    /// `TS_WATCH_DISCONNECTED` and `TS_WATCH_RECONNECTED`.
    pub state_json: *const c_char,
}

pub(crate) struct WatchHandle {
    queue: Arc<EventQueue<WatchItem>>,
    task: Mutex<Option<JoinHandle<()>>>,
    current: Mutex<[CString; 3]>,
}

pub(crate) fn kind_of(k: i32) -> ts_event_kind {
    use ts_event_kind::*;
    match v1::EventKind::try_from(k) {
        Ok(v1::EventKind::Granted) => TS_EVENT_GRANTED,
        Ok(v1::EventKind::Released) => TS_EVENT_RELEASED,
        Ok(v1::EventKind::Expired) => TS_EVENT_EXPIRED,
        Ok(v1::EventKind::Disconnected) => TS_EVENT_DISCONNECTED,
        Ok(v1::EventKind::Queued) => TS_EVENT_QUEUED,
        Ok(v1::EventKind::Cancelled) => TS_EVENT_CANCELLED,
        Ok(v1::EventKind::Progress) => TS_EVENT_PROGRESS,
        Ok(v1::EventKind::Resync) => TS_EVENT_RESYNC,
        Ok(v1::EventKind::Heartbeat) => TS_EVENT_HEARTBEAT,
        Ok(v1::EventKind::YieldRequested) => TS_EVENT_YIELD_REQUESTED,
        Ok(v1::EventKind::YieldDeclined) => TS_EVENT_YIELD_DECLINED,
        Ok(v1::EventKind::Revoked) => TS_EVENT_REVOKED,
        Ok(v1::EventKind::Detached) => TS_EVENT_DETACHED,
        Ok(v1::EventKind::Reattached) => TS_EVENT_REATTACHED,
        Ok(v1::EventKind::Stalled) => TS_EVENT_STALLED,
        Ok(v1::EventKind::Unspecified) | Err(_) => TS_EVENT_NONE,
    }
}

/// Starts watching `count` resources named in `resources` (every resource
/// when `count` is 0) on a connection of its own to the client's broker.
/// The first event is a `TS_WATCH_SNAPSHOT`. Events wait in the handle
/// until taken with `ts_watch_next`; for an event loop, `ts_watch_fd`
/// gives a descriptor to poll (Unix), and `notify` (may be NULL) is called
/// with `user_data` on the library's callback thread each time an event
/// becomes available after none was (keep it short: post a message, write
/// to an event fd; then drain with `ts_watch_next(w, 0, ...)` until
/// `TS_ERR_TIMED_OUT`). `user_data` must stay valid until `ts_watch_close`.
///
/// # Safety
/// `resources` is NULL (with `count` 0) or holds `count` strings; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_watch_open(
    client: *mut crate::client::ts_client,
    resources: *const *const c_char,
    count: usize,
    notify: ts_notify_fn,
    user_data: *mut c_void,
    out: *mut *mut ts_watch,
) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(out, "out") }?;
        *out = std::ptr::null_mut();
        let h = handles::client(client as usize)?;
        // SAFETY: per this function's contract.
        let names = unsafe { strings::list(resources, count, "resources") }?;
        let options = h.options.clone();
        let mut watcher = block("watch", &h.cancel, crate::TS_WAIT_FOREVER, async move {
            Watcher::start(options, names).await.map_err(Failure::from)
        })?;
        let queue = Arc::new(EventQueue::new(notify, user_data)?);
        let sink = Arc::clone(&queue);
        let task = runtime()?.spawn(async move {
            loop {
                sink.push(watcher.next().await);
            }
        });
        let id = handles::insert(Entry::Watch(Arc::new(WatchHandle {
            queue,
            task: Mutex::new(Some(task)),
            current: Mutex::new(Default::default()),
        })));
        *out = id as *mut ts_watch;
        Ok(())
    })
}

/// Takes the next event, waiting up to `timeout_ms` (0: do not wait;
/// `TS_WAIT_FOREVER`: until one comes). `TS_ERR_TIMED_OUT` when none came;
/// `TS_ERR_CLOSED` when another thread closed the watch meanwhile.
/// The strings in `*out` stay valid until the next call on this watch.
/// One thread at a time should take events from a given watch.
///
/// # Safety
/// `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_watch_next(
    watch: *mut ts_watch,
    timeout_ms: u32,
    out: *mut ts_watch_event,
) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(out, "out") }?;
        let h = handles::watch(watch as usize)?;
        let item = h.queue.pop(timeout_ms)?;
        let (
            item_kind,
            kind,
            revision,
            resource,
            holders,
            waiters,
            coalesced,
            resync,
            detail,
            json,
        ) = match item {
            WatchItem::Snapshot {
                revision,
                states,
                resync,
            } => {
                let json =
                    serde_json::Value::Array(states.iter().map(crate::json::resource).collect());
                (
                    ts_watch_item::TS_WATCH_SNAPSHOT,
                    ts_event_kind::TS_EVENT_NONE,
                    revision,
                    String::new(),
                    0,
                    0,
                    false,
                    resync,
                    String::new(),
                    json.to_string(),
                )
            }
            WatchItem::Event(e) => {
                let state = e.state.clone().unwrap_or_default();
                (
                    ts_watch_item::TS_WATCH_CHANGE,
                    kind_of(e.kind),
                    e.revision,
                    state.resource.clone(),
                    state.holders.len(),
                    state.waiters.len(),
                    e.coalesced,
                    false,
                    e.detail,
                    crate::json::resource(&state).to_string(),
                )
            }
            WatchItem::Disconnected(why) => (
                ts_watch_item::TS_WATCH_DISCONNECTED,
                ts_event_kind::TS_EVENT_NONE,
                0,
                String::new(),
                0,
                0,
                false,
                false,
                why,
                "null".into(),
            ),
            WatchItem::Reconnected => (
                ts_watch_item::TS_WATCH_RECONNECTED,
                ts_event_kind::TS_EVENT_NONE,
                0,
                String::new(),
                0,
                0,
                false,
                false,
                String::new(),
                "null".into(),
            ),
        };
        let mut cur = h.current.lock().unwrap_or_else(|p| p.into_inner());
        *cur = [
            strings::c_string(&resource),
            strings::c_string(&detail),
            strings::c_string(&json),
        ];
        *out = ts_watch_event {
            item: item_kind,
            kind,
            revision,
            resource: cur[0].as_ptr(),
            holders,
            waiters,
            coalesced,
            resync,
            detail: cur[1].as_ptr(),
            state_json: cur[2].as_ptr(),
        };
        Ok(())
    })
}

/// A descriptor that is readable exactly while `ts_watch_next` would not
/// block (Unix; -1 and `TS_ERR_INVALID_ARGUMENT` on Windows: use the
/// notify callback). Owned by the watch: do not read it, write it or close
/// it; valid until `ts_watch_close`.
///
/// # Safety
/// `fd_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_watch_fd(watch: *mut ts_watch, fd_out: *mut i32) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(fd_out, "fd_out") }?;
        *out = -1;
        let h = handles::watch(watch as usize)?;
        fd_of(h.queue.fd(), out)
    })
}

pub(crate) fn fd_of(fd: i64, out: &mut i32) -> Result<(), Failure> {
    match i32::try_from(fd) {
        Ok(fd) if fd >= 0 => {
            *out = fd;
            Ok(())
        }
        _ => Err(Failure::invalid(
            "no descriptor on this platform: use the notify callback",
        )),
    }
}

/// Ends the watch and frees the handle. A thread blocked in
/// `ts_watch_next` on it returns `TS_ERR_CLOSED`; no notify callback runs
/// after this returns. A second close returns `TS_ERR_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn ts_watch_close(watch: *mut ts_watch) -> ts_error {
    guard(|| {
        let h = handles::take_watch(watch as usize)?;
        h.queue.gate.close();
        h.queue
            .end(ts_error::TS_ERR_CLOSED, "the watch was closed".into(), true);
        if let Some(t) = h.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // Dropping the task drops the watcher: Unwatch, then its
            // connection closes.
            t.abort();
        }
        Ok(())
    })
}
