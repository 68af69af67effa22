//! `ts_history` (`ts_get_history`): the recorded leases of a resource (DESIGN "History"), as
//! an array of plain structs behind a handle.
//!
//! Why structs and not JSON text (as for status): an entry is one flat
//! record, which C and C# read directly, with no JSON library. Why behind a
//! handle with an accessor (`ts_history_get_entry`) rather than a bare array:
//! the library computes each entry's address with its own stride, so
//! `ts_history_get_entry` can grow at its end without breaking a program that
//! was built against an older header (it reads the fields it knows).

use std::ffi::{CString, c_char};
use std::sync::Arc;

use turnstile_client::proto as v1;

use crate::client::ts_client;
use crate::error::{Failure, guard, ts_error};
use crate::handles::{self, Entry};
use crate::lease::{mode_of, ts_mode};
use crate::runtime::block;
use crate::strings;
use crate::watch::{kind_of, ts_event_kind};

/// The answer of one `ts_get_history` call. Opaque: created by `ts_get_history`,
/// freed by `ts_history_free`.
pub struct ts_history {
    _opaque: [u8; 0],
}

/// One lease (or waiting request) that ended. Read it through
/// `ts_history_get_entry`; it only grows at its end. Every pointer belongs to
/// the `ts_history` handle: valid until `ts_history_free`.
#[repr(C)]
pub struct ts_history_entry {
    /// The lease's id (unique within one run of the broker only).
    pub lease_id: u64,
    /// The resource, UTF-8.
    pub resource: *const c_char,
    /// EXCLUSIVE or SHARED.
    pub mode: ts_mode,
    /// Permits of the resource's semaphore it held or waited for; 0 when
    /// the resource had no capacity.
    pub permits: u32,
    /// What it was for ("" if not said).
    pub purpose: *const c_char,
    /// The holder's client name, as it was then.
    pub holder_name: *const c_char,
    /// The holder's user id (from the kernel).
    pub holder_uid: u32,
    /// The holder's process id (from the kernel).
    pub holder_pid: u32,
    /// The holder's account name ("" if none).
    pub holder_user: *const c_char,
    /// When the request arrived, wall-clock ms since the Unix epoch (for a
    /// lease granted at once, the same as `granted_at_ms`).
    pub queued_at_ms: u64,
    /// When it was granted, ms since the Unix epoch; 0 = never (it left
    /// the queue).
    pub granted_at_ms: u64,
    /// When it ended, ms since the Unix epoch.
    pub ended_at_ms: u64,
    /// What ended it: `TS_EVENT_RELEASED`, `TS_EVENT_EXPIRED`,
    /// `TS_EVENT_DISCONNECTED`, `TS_EVENT_CANCELLED` (it left the queue;
    /// `timed_out` says whether its wait ran out) or `TS_EVENT_REVOKED`.
    pub ended_by: ts_event_kind,
    /// The broker's sentence about the end ("" if none).
    pub detail: *const c_char,
    /// The grant's fencing token; 0 = never granted.
    pub fencing_token: u64,
    /// It left the queue because its `max_wait_ms` ran out (`ended_by` is
    /// `TS_EVENT_CANCELLED`).
    pub timed_out: bool,
}

pub(crate) struct HistoryHandle {
    _strings: Vec<CString>,
    entries: Vec<ts_history_entry>,
}

// SAFETY: the raw pointers in `entries` point into `_strings`, owned by the
// same value and never mutated after construction: sharing them between
// threads is sharing immutable strings.
unsafe impl Send for HistoryHandle {}
// SAFETY: as for Send: read-only after construction.
unsafe impl Sync for HistoryHandle {}

impl HistoryHandle {
    fn new(h: &v1::History) -> HistoryHandle {
        let mut strings = Vec::new();
        let mut keep = |s: &str| {
            let c = strings::c_string(s);
            let p = c.as_ptr();
            strings.push(c);
            p
        };
        let entries = h
            .entries
            .iter()
            .map(|e| {
                let holder = e.holder.clone().unwrap_or_default();
                ts_history_entry {
                    lease_id: e.lease_id,
                    resource: keep(&e.resource),
                    mode: mode_of(e.mode),
                    permits: e.permits,
                    purpose: keep(&e.purpose),
                    holder_name: keep(&holder.client_name),
                    holder_uid: holder.uid,
                    holder_pid: holder.pid,
                    holder_user: keep(&holder.user),
                    queued_at_ms: e.queued_at_ms,
                    granted_at_ms: e.granted_at_ms,
                    ended_at_ms: e.ended_at_ms,
                    ended_by: kind_of(e.ended_by),
                    detail: keep(&e.detail),
                    fencing_token: e.fencing_token,
                    timed_out: e.timed_out,
                }
            })
            .collect();
        HistoryHandle {
            _strings: strings,
            entries,
        }
    }
}

/// The recorded leases of `resource`, oldest first: those that ended at or
/// after `since_ms` (wall-clock ms since the Unix epoch; 0 = as far back as
/// the broker keeps), at most the newest `limit` of them (0 = as many as
/// fit in one answer). Policy verb `status`.
///
/// On success `*out` is a handle to free with `ts_history_free`,
/// `*count_out` (may be NULL) the number of entries (read each with
/// `ts_history_get_entry`), and `*truncated_out` (may be NULL) whether older
/// matching entries were left out (by `limit`, or to fit one frame). On
/// failure `*out` is NULL.
///
/// Errors: `TS_ERR_INVALID_ARGUMENT` (a bad name; also a broker that does
/// not record history), `TS_ERR_PERMISSION_DENIED`, `TS_ERR_TIMED_OUT`,
/// `TS_ERR_DISCONNECTED`.
///
/// # Safety
/// `resource` is a NUL-terminated string; `out` writable; `count_out` and
/// `truncated_out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_get_history(
    client: *mut ts_client,
    resource: *const c_char,
    since_ms: u64,
    limit: u32,
    timeout_ms: u32,
    out: *mut *mut ts_history,
    count_out: *mut usize,
    truncated_out: *mut bool,
) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(out, "out") }?;
        *out = std::ptr::null_mut();
        let h = handles::client(client as usize)?;
        // SAFETY: per this function's contract.
        let resource = unsafe { strings::required(resource, "resource") }?.to_string();
        let c = h.client.clone();
        let history = block("history", &h.cancel, timeout_ms, async move {
            c.history(&resource, since_ms, limit)
                .await
                .map_err(Failure::from)
        })?;
        let handle = HistoryHandle::new(&history);
        // SAFETY: per this function's contract (NULL allowed).
        if let Some(n) = unsafe { count_out.as_mut() } {
            *n = handle.entries.len();
        }
        // SAFETY: per this function's contract (NULL allowed).
        if let Some(t) = unsafe { truncated_out.as_mut() } {
            *t = history.truncated;
        }
        *out = handles::insert(Entry::History(Arc::new(handle))) as *mut ts_history;
        Ok(())
    })
}

/// Entry `index` (0 = the oldest) of a history; `*entry_out` points into
/// the handle (valid until `ts_history_free`). `TS_ERR_INVALID_ARGUMENT`
/// past the last one. Read entries only through this function (it knows
/// the entries' size; they may grow in a later version).
///
/// # Safety
/// `entry_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_history_get_entry(
    history: *mut ts_history,
    index: usize,
    entry_out: *mut *const ts_history_entry,
) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(entry_out, "entry_out") }?;
        *out = std::ptr::null();
        let h = handles::history(history as usize)?;
        let entry = h.entries.get(index).ok_or_else(|| {
            Failure::invalid(format!(
                "index {index} is past the history's {} entries",
                h.entries.len()
            ))
        })?;
        *out = entry;
        Ok(())
    })
}

/// Frees a history and everything its entries point to. A second call
/// returns `TS_ERR_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn ts_history_free(history: *mut ts_history) -> ts_error {
    guard(|| {
        handles::take_history(history as usize)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn text(p: *const c_char) -> &'static str {
        unsafe { CStr::from_ptr(p) }.to_str().unwrap()
    }

    #[test]
    fn entries_read_through_the_accessor_carry_every_field() {
        let history = v1::History {
            entries: vec![v1::HistoryEntry {
                lease_id: 7,
                resource: "pcm".into(),
                mode: v1::Mode::Shared as i32,
                permits: 2,
                purpose: "initialise".into(),
                holder: Some(v1::Peer {
                    client_name: "agent".into(),
                    uid: 1000,
                    pid: 42,
                    user: "alice".into(),
                    ..Default::default()
                }),
                queued_at_ms: 1,
                granted_at_ms: 2,
                ended_at_ms: 3,
                ended_by: v1::EventKind::Revoked as i32,
                detail: "revoked by root".into(),
                fencing_token: 9,
                timed_out: true,
            }],
            truncated: true,
        };
        let id = handles::insert(Entry::History(Arc::new(HistoryHandle::new(&history))));
        let h = id as *mut ts_history;
        let mut e = std::ptr::null();
        assert_eq!(
            unsafe { ts_history_get_entry(h, 0, &mut e) },
            ts_error::TS_OK
        );
        let e = unsafe { &*e };
        assert_eq!((e.lease_id, e.permits, e.fencing_token), (7, 2, 9));
        assert!(e.timed_out);
        assert_eq!(e.mode, ts_mode::TS_MODE_SHARED);
        assert_eq!(e.ended_by, ts_event_kind::TS_EVENT_REVOKED);
        assert_eq!((e.queued_at_ms, e.granted_at_ms, e.ended_at_ms), (1, 2, 3));
        assert_eq!((e.holder_uid, e.holder_pid), (1000, 42));
        assert_eq!(
            [
                text(e.resource),
                text(e.purpose),
                text(e.holder_name),
                text(e.holder_user),
                text(e.detail)
            ],
            ["pcm", "initialise", "agent", "alice", "revoked by root"]
        );
        let mut past = std::ptr::dangling();
        assert_eq!(
            unsafe { ts_history_get_entry(h, 1, &mut past) },
            ts_error::TS_ERR_INVALID_ARGUMENT
        );
        assert!(past.is_null());
        assert_eq!(ts_history_free(h), ts_error::TS_OK);
        assert_eq!(ts_history_free(h), ts_error::TS_ERR_INVALID_HANDLE);
    }
}
