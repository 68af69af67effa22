//! `ts_client`: one connection to the broker, and the calls that need no
//! other handle (ping, status, publish).

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use turnstile_client::{Client, ConnectOptions};
use turnstile_view::StatusView;

use crate::error::{Failure, guard, ts_error};
use crate::handles::{self, Entry};
use crate::runtime::block;
use crate::strings;

/// A connection to the broker. Opaque: created by `ts_connect`, freed by
/// `ts_client_close`.
pub struct ts_client {
    _opaque: [u8; 0],
}

/// What the broker said when the connection opened.
#[repr(C)]
pub struct ts_client_info {
    /// The broker's version, UTF-8. Owned by the client handle: valid until
    /// `ts_client_close`.
    pub broker_version: *const c_char,
    /// The protocol version in use.
    pub protocol_version: u32,
    /// The broker's id for this connection.
    pub session_id: u64,
    /// The largest frame the broker accepts, in bytes.
    pub max_frame_bytes: u32,
    /// This process's user id as the broker sees it (from the kernel).
    pub uid: u32,
    /// This process's id as the broker sees it.
    pub pid: u32,
}

pub(crate) struct ClientHandle {
    pub client: Client,
    pub options: ConnectOptions,
    /// Fires when the handle is closed: calls blocked on it return.
    pub cancel: CancellationToken,
    broker_version: CString,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Connects to the broker and says Hello.
///
/// - `socket`: the socket file (Unix) or pipe name (Windows, `\\.\pipe\NAME`
///   or `NAME`); NULL = `$TURNSTILE_SOCKET`, else the platform's default.
/// - `client_name`: shown to everyone who looks (UTF-8; NULL = "libturnstile").
/// - `retry_ms`: keep trying for this long while nothing answers (a client
///   started before its broker), backing off from 50 ms to 1 s; 0 = try once.
/// - `out`: receives the new handle (NULL on failure). Free it with
///   `ts_client_close`.
///
/// Errors: `TS_ERR_UNAVAILABLE` (nothing answers), `TS_ERR_DISCONNECTED`,
/// `TS_ERR_UNSUPPORTED_VERSION`, `TS_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// Strings are NULL or NUL-terminated; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_connect(
    socket: *const c_char,
    client_name: *const c_char,
    retry_ms: u32,
    out: *mut *mut ts_client,
) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: per this function's contract.
        let socket = unsafe { strings::optional(socket, "socket") }?;
        // SAFETY: per this function's contract.
        let name =
            unsafe { strings::optional(client_name, "client_name") }?.unwrap_or("libturnstile");
        let mut options =
            ConnectOptions::new(name).retry_for(Duration::from_millis(u64::from(retry_ms)));
        if let Some(s) = socket {
            options = options.socket(s);
        }
        let opts = options.clone();
        let client = block(
            "connect",
            &CancellationToken::new(),
            crate::TS_WAIT_FOREVER,
            async move { Client::connect(opts).await.map_err(Failure::from) },
        )?;
        let broker_version = strings::c_string(&client.hello().broker_version);
        let id = handles::insert(Entry::Client(std::sync::Arc::new(ClientHandle {
            client,
            options,
            cancel: CancellationToken::new(),
            broker_version,
        })));
        *out = id as *mut ts_client;
        Ok(())
    })
}

/// Closes the handle. Calls blocked on it in other threads return
/// `TS_ERR_CLOSED`. Leases, watches and consumers opened through it stay
/// valid (each is closed by its own function); the connection itself
/// closes when the last of them is closed.
///
/// Errors: `TS_ERR_INVALID_HANDLE` for NULL, a closed handle (a second
/// close is detected, never a double free) or another kind of handle.
///
/// # Safety
/// Any value may be passed; only handles from `ts_connect` are accepted.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_client_close(client: *mut ts_client) -> ts_error {
    guard(|| {
        let h = handles::take_client(client as usize)?;
        h.cancel.cancel();
        Ok(())
    })
}

/// What the broker said at Hello. `out->broker_version` belongs to the
/// handle (valid until `ts_client_close`).
///
/// # Safety
/// `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_client_get_info(
    client: *mut ts_client,
    out: *mut ts_client_info,
) -> ts_error {
    guard(|| {
        let h = handles::client(client as usize)?;
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(out, "out") }?;
        let hello = h.client.hello();
        let peer = hello.peer.clone().unwrap_or_default();
        *out = ts_client_info {
            broker_version: h.broker_version.as_ptr(),
            protocol_version: hello.protocol_version,
            session_id: hello.session_id,
            max_frame_bytes: hello.max_frame_bytes,
            uid: peer.uid,
            pid: peer.pid,
        };
        Ok(())
    })
}

/// One round trip: sends `len` bytes from `payload` (NULL when `len` is 0)
/// and waits for the broker to echo them, at most `timeout_ms`
/// (`TS_WAIT_FOREVER`: no limit).
///
/// # Safety
/// `payload` is NULL or readable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_ping(
    client: *mut ts_client,
    payload: *const u8,
    len: usize,
    timeout_ms: u32,
) -> ts_error {
    guard(|| {
        let h = handles::client(client as usize)?;
        // SAFETY: per this function's contract.
        let payload = unsafe { bytes_arg(payload, len, "payload") }?;
        let c = h.client.clone();
        let sent = payload.clone();
        let echo = block("ping", &h.cancel, timeout_ms, async move {
            c.ping(sent).await.map_err(Failure::from)
        })?;
        if echo != payload {
            return Err(Failure::new(
                ts_error::TS_ERR_PROTOCOL,
                "the broker echoed another payload than the one sent",
            ));
        }
        Ok(())
    })
}

thread_local! {
    static STATUS_JSON: RefCell<CString> = RefCell::new(CString::default());
}

/// The state of the named resources (`count` names in `resources`; all
/// resources in use when `count` is 0) and of every queue, as one JSON
/// object in the schema of `turnstile status --json` (docs/json.md; built
/// by the same code as the CLI's):
/// `{"revision":N,"resources":[{"resource","revision","holders":[LEASE],
/// "waiters":[LEASE],"capacity","permits_held"}],"queues":[{"queue",
/// "ready","unacked","consumers"}]}`, a LEASE with its holder, progress,
/// times, `"permits"`, `"detached"` and `"stalled"`; a value that does not
/// apply is `null`.
///
/// `*json_out` points into storage of the calling thread: valid until this
/// thread's next `ts_status` call. Do not free it.
///
/// # Safety
/// `resources` is NULL (with `count` 0) or holds `count` strings;
/// `json_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_status(
    client: *mut ts_client,
    resources: *const *const c_char,
    count: usize,
    timeout_ms: u32,
    json_out: *mut *const c_char,
) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let json_out = unsafe { strings::out(json_out, "json_out") }?;
        *json_out = std::ptr::null();
        let h = handles::client(client as usize)?;
        // SAFETY: per this function's contract.
        let names = unsafe { strings::list(resources, count, "resources") }?;
        let c = h.client.clone();
        let status = block("status", &h.cancel, timeout_ms, async move {
            c.status(&names).await.map_err(Failure::from)
        })?;
        let text = strings::c_string(&crate::strings::json(&StatusView::from(&status)));
        *json_out = STATUS_JSON.with(|s| {
            *s.borrow_mut() = text;
            s.borrow().as_ptr()
        });
        Ok(())
    })
}

/// `ts_request_yield` flag: take the lease of a holder still holding after
/// `within_ms` (`TS_LOST_REVOKED` for it; policy verb `revoke`, by default
/// root and the broker's own user only).
pub const TS_YIELD_REVOKE: u32 = 1;

/// Asks every holder of `resource` to make way (policy verb `yield`): each
/// gets its `on_yield` callback with who asks, `reason` (NULL = "") and
/// `within_ms` (0 = at once); watchers see `TS_EVENT_YIELD_REQUESTED`.
/// A holder makes way by releasing, or declines (`ts_lease_decline_yield`).
/// With `TS_YIELD_REVOKE` in `flags`, a holder still holding after
/// `within_ms` loses the lease and the next in line is granted. Returns
/// once every holder has been asked (not when they have made way: watch
/// the resource for that). `ts_request_yield_asked` also says how many
/// were.
///
/// Errors: `TS_ERR_PERMISSION_DENIED`, `TS_ERR_INVALID_ARGUMENT` (a bad
/// name, unknown flags), `TS_ERR_TIMED_OUT`, `TS_ERR_DISCONNECTED`.
///
/// # Safety
/// `resource` is a NUL-terminated string, `reason` NULL or one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_request_yield(
    client: *mut ts_client,
    resource: *const c_char,
    within_ms: u32,
    reason: *const c_char,
    flags: u32,
    timeout_ms: u32,
) -> ts_error {
    // SAFETY: per this function's contract, which is that one's.
    unsafe {
        ts_request_yield_asked(
            client,
            resource,
            within_ms,
            reason,
            flags,
            timeout_ms,
            std::ptr::null_mut(),
        )
    }
}

/// As `ts_request_yield`; `*asked_out` (may be NULL) receives how many
/// holders the broker asked, counted when it asked them (0: nobody held
/// `resource`).
///
/// # Safety
/// As `ts_request_yield`; `asked_out` NULL or writable.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ts_request_yield_asked(
    client: *mut ts_client,
    resource: *const c_char,
    within_ms: u32,
    reason: *const c_char,
    flags: u32,
    timeout_ms: u32,
    asked_out: *mut u32,
) -> ts_error {
    guard(|| {
        let h = handles::client(client as usize)?;
        // SAFETY: per this function's contract.
        let resource = unsafe { strings::required(resource, "resource") }?.to_string();
        // SAFETY: per this function's contract.
        let reason = unsafe { strings::optional(reason, "reason") }?
            .unwrap_or("")
            .to_string();
        if flags & !TS_YIELD_REVOKE != 0 {
            return Err(Failure::invalid(format!(
                "unknown flags {:#x}",
                flags & !TS_YIELD_REVOKE
            )));
        }
        let c = h.client.clone();
        let asked = block("yield request", &h.cancel, timeout_ms, async move {
            let mut req = c
                .request_yield(&resource)
                .within(Duration::from_millis(u64::from(within_ms)))
                .reason(reason);
            if flags & TS_YIELD_REVOKE != 0 {
                req = req.revoke();
            }
            req.send().await.map_err(Failure::from)
        })?;
        // SAFETY: per this function's contract (NULL allowed).
        if let Some(out) = unsafe { asked_out.as_mut() } {
            *out = asked;
        }
        Ok(())
    })
}

/// Appends a message to `queue` and waits until the broker has stored it
/// durably; `*seq_out` (may be NULL) receives its sequence number.
/// `header_names[i]` / `header_values[i]`, `i < header_count`, travel with
/// it (both arrays NULL when `header_count` is 0). Everything is copied.
///
/// Errors: `TS_ERR_INVALID_ARGUMENT` (bad queue name),
/// `TS_ERR_RESOURCE_EXHAUSTED` (queue full), `TS_ERR_FRAME_TOO_LARGE`,
/// `TS_ERR_PERMISSION_DENIED`.
///
/// # Safety
/// Pointers as described; `payload` readable for `len` bytes.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ts_publish(
    client: *mut ts_client,
    queue: *const c_char,
    payload: *const u8,
    len: usize,
    header_names: *const *const c_char,
    header_values: *const *const c_char,
    header_count: usize,
    timeout_ms: u32,
    seq_out: *mut u64,
) -> ts_error {
    guard(|| {
        let h = handles::client(client as usize)?;
        // SAFETY: per this function's contract.
        let queue = unsafe { strings::required(queue, "queue") }?.to_string();
        // SAFETY: per this function's contract.
        let payload = unsafe { bytes_arg(payload, len, "payload") }?;
        // SAFETY: per this function's contract.
        let names = unsafe { strings::list(header_names, header_count, "header_names") }?;
        // SAFETY: per this function's contract.
        let values = unsafe { strings::list(header_values, header_count, "header_values") }?;
        let c = h.client.clone();
        let seq = block("publish", &h.cancel, timeout_ms, async move {
            let headers: Vec<(&str, &str)> = names
                .iter()
                .zip(&values)
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            c.publish(&queue, payload, &headers)
                .await
                .map_err(Failure::from)
        })?;
        // SAFETY: per this function's contract (NULL allowed).
        if let Some(out) = unsafe { seq_out.as_mut() } {
            *out = seq;
        }
        Ok(())
    })
}

/// A byte-buffer argument, copied.
///
/// # Safety
/// `p` is NULL or readable for `len` bytes.
pub(crate) unsafe fn bytes_arg(p: *const u8, len: usize, name: &str) -> Result<Bytes, Failure> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    if p.is_null() {
        return Err(Failure::invalid(format!(
            "{name} is NULL but its length is {len}"
        )));
    }
    // SAFETY: readable for `len` bytes, per the contract.
    Ok(Bytes::copy_from_slice(unsafe {
        std::slice::from_raw_parts(p, len)
    }))
}
