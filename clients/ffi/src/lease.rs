//! `ts_lease`: acquiring (blocking, with queue callbacks on the calling
//! thread), and a granted lease that keeps itself alive on the library's
//! I/O thread until released or lost.

use std::ffi::{CString, c_char, c_void};
use std::sync::{Arc, Mutex};

use tokio::sync::RwLock;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use turnstile_client::proto as v1;
use turnstile_client::{AcquireBuilder, Lease, QueueUpdate};

use crate::error::{Failure, guard, ts_error};
use crate::handles::{self, Entry};
use crate::runtime::{Gate, UserData, block, deadline_of, runtime};
use crate::strings;

/// A granted lease. Opaque: created by `ts_acquire`, freed by
/// `ts_lease_release`.
pub struct ts_lease {
    _opaque: [u8; 0],
}

/// `ts_acquire_options.flags`: a SHARED lease (held together with other
/// SHARED holders); without it, EXCLUSIVE.
pub const TS_ACQUIRE_SHARED: u32 = 1;
/// `ts_acquire_options.flags`: fail with `TS_ERR_BUSY` instead of queueing.
pub const TS_ACQUIRE_NO_WAIT: u32 = 2;

/// A lease's mode, as the broker reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum ts_mode {
    /// Not reported.
    TS_MODE_UNSPECIFIED = 0,
    /// One holder at a time.
    TS_MODE_EXCLUSIVE = 1,
    /// Any number of SHARED holders together.
    TS_MODE_SHARED = 2,
}

/// Why a lease was lost.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum ts_lost_reason {
    /// The connection to the broker was lost (the broker ended the lease
    /// when it saw the connection close).
    TS_LOST_CONNECTION = 0,
    /// Not kept alive within its TTL (this process was stalled too long).
    TS_LOST_EXPIRED = 1,
    /// Waited longer than `max_wait_ms`.
    TS_LOST_TIMED_OUT = 2,
    /// Taken away by the broker.
    TS_LOST_REVOKED = 3,
}

impl ts_lost_reason {
    fn of(r: Option<v1::LostReason>) -> ts_lost_reason {
        match r {
            Some(v1::LostReason::Expired) => ts_lost_reason::TS_LOST_EXPIRED,
            Some(v1::LostReason::TimedOut) => ts_lost_reason::TS_LOST_TIMED_OUT,
            Some(v1::LostReason::Revoked) => ts_lost_reason::TS_LOST_REVOKED,
            Some(v1::LostReason::Unspecified) | None => ts_lost_reason::TS_LOST_CONNECTION,
        }
    }
}

/// One lease as the broker shows it (a holder or a waiter ahead of you).
/// Every pointer is valid only during the callback that received it.
#[repr(C)]
pub struct ts_lease_info {
    /// Its id.
    pub lease_id: u64,
    /// The resource, UTF-8.
    pub resource: *const c_char,
    /// EXCLUSIVE or SHARED.
    pub mode: ts_mode,
    /// What it is for ("" if not said).
    pub purpose: *const c_char,
    /// The holder's client name (what it said at Hello).
    pub holder_name: *const c_char,
    /// The holder's user id (from the kernel).
    pub holder_uid: u32,
    /// The holder's process id (from the kernel).
    pub holder_pid: u32,
    /// The fencing token (0 for a waiter).
    pub fencing_token: u64,
    /// Whether the holder reported progress (the three fields below).
    pub has_progress: bool,
    /// Units done.
    pub progress_done: u32,
    /// Units in all (0 = unknown).
    pub progress_total: u32,
    /// The holder's stage ("" if none).
    pub progress_message: *const c_char,
    /// When it was granted, ms since the Unix epoch (0 for a waiter).
    pub granted_at_ms: u64,
    /// When it joined the queue, ms since the Unix epoch.
    pub queued_at_ms: u64,
    /// Time left before it expires unless kept alive, ms.
    pub expires_in_ms: u32,
    /// For a waiter, its place in the queue (1 = next); 0 for a holder.
    pub position: u32,
}

/// Where a queued request stands. Valid only during the callback.
#[repr(C)]
pub struct ts_queue_update {
    /// The request's lease id (the granted lease keeps it).
    pub lease_id: u64,
    /// The place in the queue: 1 = next in line.
    pub position: u32,
    /// The broker's estimate of the wait, ms, from the holders' reported
    /// progress; 0 = no estimate.
    pub estimated_wait_ms: u32,
    /// How many leases are ahead: the holders, then the waiters before it.
    pub ahead_count: usize,
    /// Those leases, `ahead_count` of them.
    pub ahead: *const ts_lease_info,
}

/// Called on the thread inside `ts_acquire` each time the queue position
/// (or what is ahead, or the holder's progress) changes, and once when the
/// request is first queued. Return 0 to keep waiting, anything else to
/// leave the queue (`ts_acquire` then returns `TS_ERR_CANCELLED`). It may
/// call any function of this library.
pub type ts_queue_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, update: *const ts_queue_update) -> i32>;

/// Called once, on the library's callback thread, when a granted lease is
/// lost (expired, revoked, or the connection dropped). `detail` is valid
/// during the call. Never called after `ts_lease_release` returned. It may
/// call any function of this library, `ts_lease_release` of this lease too.
pub type ts_lost_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        lease_id: u64,
        reason: ts_lost_reason,
        detail: *const c_char,
    ),
>;

/// How to acquire. Initialise with `ts_acquire_options_init` (which sets
/// `size` and the defaults), then set what you need. Fields are only ever
/// added at the end; `size` tells the library which ones you know.
#[repr(C)]
pub struct ts_acquire_options {
    /// `sizeof(ts_acquire_options)` as the caller was compiled.
    pub size: u32,
    /// `TS_ACQUIRE_SHARED`, `TS_ACQUIRE_NO_WAIT`, or 0 (EXCLUSIVE, queued).
    pub flags: u32,
    /// Time to live, ms; the library keeps the lease alive at a third of it.
    /// 0 = the broker's default (15 s).
    pub ttl_ms: u32,
    /// Leave the queue after this long, at the broker (then
    /// `TS_ERR_TIMED_OUT`); 0 = no limit there.
    pub max_wait_ms: u32,
    /// What the lease is for, shown to everyone (UTF-8, copied); NULL = "".
    pub purpose: *const c_char,
    /// Queue updates (see `ts_queue_fn`); NULL = none.
    pub on_queue: ts_queue_fn,
    /// Passed to `on_queue` untouched.
    pub on_queue_data: *mut c_void,
    /// Lease loss (see `ts_lost_fn`); NULL = none (poll `ts_lease_check`).
    pub on_lost: ts_lost_fn,
    /// Passed to `on_lost` untouched; must stay valid until the lease is released.
    pub on_lost_data: *mut c_void,
}

/// What a granted lease is.
#[repr(C)]
pub struct ts_lease_details {
    /// The lease id.
    pub lease_id: u64,
    /// The fencing token: strictly increasing per resource, never reused.
    /// Pass it to what the lease protects so it can refuse stale holders.
    pub fencing_token: u64,
    /// The TTL in force, ms.
    pub ttl_ms: u32,
    /// The resource, UTF-8; owned by the handle (valid until released).
    pub resource: *const c_char,
}

/// The oldest options layout this library accepts (today's).
const OPTIONS_V1: usize = std::mem::size_of::<ts_acquire_options>();

/// Sets `size` and the defaults: EXCLUSIVE, queued, the broker's TTL, no
/// callbacks.
///
/// # Safety
/// `options` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_acquire_options_init(options: *mut ts_acquire_options) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let o = unsafe { strings::out(options, "options") }?;
        *o = ts_acquire_options {
            size: OPTIONS_V1 as u32,
            flags: 0,
            ttl_ms: 0,
            max_wait_ms: 0,
            purpose: std::ptr::null(),
            on_queue: None,
            on_queue_data: std::ptr::null_mut(),
            on_lost: None,
            on_lost_data: std::ptr::null_mut(),
        };
        Ok(())
    })
}

pub(crate) struct LeaseHandle {
    lease: Arc<RwLock<Option<Lease>>>,
    details: (u64, u64, u32),
    resource: CString,
    lost_watch: Mutex<Option<JoinHandle<()>>>,
    gate: Arc<Gate>,
    cancel: CancellationToken,
}

/// What the I/O thread tells the thread waiting in `ts_acquire`.
enum Msg {
    Queued(v1::Queued),
    Done(Result<Lease, Failure>),
}

/// Why a wait in the queue stopped short.
enum Stop {
    GaveUp,
    Deadline,
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn wait_for_grant(
    builder: AcquireBuilder,
    tx: &std::sync::mpsc::Sender<Msg>,
    give_up: &CancellationToken,
    deadline: Option<Instant>,
) -> Result<Lease, Result<Stop, Failure>> {
    let mut start = Box::pin(builder.start());
    let first = tokio::select! {
        r = &mut start => Ok(r),
        _ = give_up.cancelled() => Err(Stop::GaveUp),
        _ = until(deadline) => Err(Stop::Deadline),
    };
    let started = match first {
        Ok(r) => r,
        Err(stop) => {
            // The request may be in the queue already: when its answer
            // comes, leave the queue rather than hold a place nobody waits on.
            tokio::spawn(async move {
                if let Ok(p) = start.await {
                    let _ = p.cancel().await;
                }
            });
            return Err(Ok(stop));
        }
    };
    let mut pending = started.map_err(|e| Err(Failure::from(e)))?;
    loop {
        match pending.state() {
            QueueUpdate::Granted(_) => {
                // Already granted: `wait_with` turns it into the lease at once.
                return pending.wait_with(|_| {}).await.map_err(|e| Err(e.into()));
            }
            QueueUpdate::Queued(q) => {
                let _ = tx.send(Msg::Queued(q.clone()));
            }
        }
        let stop = tokio::select! {
            r = pending.next_update() => match r {
                Ok(_) => continue,
                Err(e) => return Err(Err(e.into())),
            },
            _ = give_up.cancelled() => Stop::GaveUp,
            _ = until(deadline) => Stop::Deadline,
        };
        // Leave the queue, and wait for the broker to confirm; if it was
        // granted meanwhile, `cancel` releases it.
        let _ = pending.cancel().await;
        return Err(Ok(stop));
    }
}

/// The strings and structs of one `ts_queue_update`, alive while the
/// callback runs.
struct QueueView {
    _strings: Vec<CString>,
    _infos: Vec<ts_lease_info>,
    update: ts_queue_update,
}

impl QueueView {
    fn new(q: &v1::Queued) -> QueueView {
        let mut strings = Vec::new();
        let mut keep = |s: &str| {
            let c = strings::c_string(s);
            let p = c.as_ptr();
            strings.push(c);
            p
        };
        let infos: Vec<ts_lease_info> = q
            .ahead
            .iter()
            .map(|l| {
                let holder = l.holder.clone().unwrap_or_default();
                let progress = l.progress.clone();
                ts_lease_info {
                    lease_id: l.lease_id,
                    resource: keep(&l.resource),
                    mode: match v1::Mode::try_from(l.mode) {
                        Ok(v1::Mode::Exclusive) => ts_mode::TS_MODE_EXCLUSIVE,
                        Ok(v1::Mode::Shared) => ts_mode::TS_MODE_SHARED,
                        _ => ts_mode::TS_MODE_UNSPECIFIED,
                    },
                    purpose: keep(&l.purpose),
                    holder_name: keep(&holder.client_name),
                    holder_uid: holder.uid,
                    holder_pid: holder.pid,
                    fencing_token: l.fencing_token,
                    has_progress: progress.is_some(),
                    progress_done: progress.as_ref().map_or(0, |p| p.done),
                    progress_total: progress.as_ref().map_or(0, |p| p.total),
                    progress_message: keep(progress.as_ref().map_or("", |p| p.message.as_str())),
                    granted_at_ms: l.granted_at_ms,
                    queued_at_ms: l.queued_at_ms,
                    expires_in_ms: l.expires_in_ms,
                    position: l.position,
                }
            })
            .collect();
        let update = ts_queue_update {
            lease_id: q.lease_id,
            position: q.position,
            estimated_wait_ms: q.estimated_wait_ms,
            ahead_count: infos.len(),
            ahead: if infos.is_empty() {
                std::ptr::null()
            } else {
                infos.as_ptr()
            },
        };
        QueueView {
            _strings: strings,
            _infos: infos,
            update,
        }
    }
}

/// The caller's options, read and checked.
struct Options {
    shared: bool,
    no_wait: bool,
    ttl_ms: u32,
    max_wait_ms: u32,
    purpose: String,
    on_queue: ts_queue_fn,
    on_queue_data: *mut c_void,
    on_lost: ts_lost_fn,
    on_lost_data: UserData,
}

/// # Safety
/// `p` is NULL or points to options set up by `ts_acquire_options_init`.
unsafe fn read_options(p: *const ts_acquire_options) -> Result<Options, Failure> {
    let defaults = Options {
        shared: false,
        no_wait: false,
        ttl_ms: 0,
        max_wait_ms: 0,
        purpose: String::new(),
        on_queue: None,
        on_queue_data: std::ptr::null_mut(),
        on_lost: None,
        on_lost_data: UserData(std::ptr::null_mut()),
    };
    if p.is_null() {
        return Ok(defaults);
    }
    // SAFETY: non-NULL options start with their u32 size, per the contract.
    let size = unsafe { std::ptr::read(p.cast::<u32>()) } as usize;
    if size < OPTIONS_V1 {
        return Err(Failure::invalid(format!(
            "options.size is {size}, not {OPTIONS_V1}: set up the options with ts_acquire_options_init"
        )));
    }
    if size > OPTIONS_V1 {
        return Err(Failure::invalid(format!(
            "options.size is {size}: options of a newer libturnstile ({OPTIONS_V1} here); link the library of the header you compiled with"
        )));
    }
    // SAFETY: the caller's struct has this layout, as its size says.
    let o = unsafe { &*p };
    let known = TS_ACQUIRE_SHARED | TS_ACQUIRE_NO_WAIT;
    if o.flags & !known != 0 {
        return Err(Failure::invalid(format!(
            "unknown flags {:#x} in options.flags",
            o.flags & !known
        )));
    }
    Ok(Options {
        shared: o.flags & TS_ACQUIRE_SHARED != 0,
        no_wait: o.flags & TS_ACQUIRE_NO_WAIT != 0,
        ttl_ms: o.ttl_ms,
        max_wait_ms: o.max_wait_ms,
        // SAFETY: NULL or a NUL-terminated string, per the contract.
        purpose: unsafe { strings::optional(o.purpose, "options.purpose") }?
            .unwrap_or("")
            .to_string(),
        on_queue: o.on_queue,
        on_queue_data: o.on_queue_data,
        on_lost: o.on_lost,
        on_lost_data: UserData(o.on_lost_data),
    })
}

/// Acquires a lease on `resource`, waiting in the broker's fair queue up to
/// `timeout_ms` (`TS_WAIT_FOREVER`: until granted). `options` may be NULL
/// (EXCLUSIVE, queued, the broker's TTL). While queued, `options->on_queue`
/// is called on this thread with each change of position.
///
/// On success `*out` is the lease, kept alive by the library until
/// `ts_lease_release` (which frees the handle). On failure `*out` is NULL
/// and the request has left the queue.
///
/// Errors: `TS_ERR_BUSY` (`TS_ACQUIRE_NO_WAIT` and taken), `TS_ERR_TIMED_OUT`
/// (`timeout_ms` or `max_wait_ms` ran out), `TS_ERR_CANCELLED` (`on_queue`
/// returned non-zero), `TS_ERR_CLOSED` (the client was closed meanwhile),
/// `TS_ERR_PERMISSION_DENIED`, `TS_ERR_INVALID_ARGUMENT`,
/// `TS_ERR_DISCONNECTED`.
///
/// # Safety
/// `resource` is a NUL-terminated string, `options` NULL or initialised by
/// `ts_acquire_options_init`, `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_acquire(
    client: *mut crate::client::ts_client,
    resource: *const c_char,
    options: *const ts_acquire_options,
    timeout_ms: u32,
    out: *mut *mut ts_lease,
) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(out, "out") }?;
        *out = std::ptr::null_mut();
        let h = handles::client(client as usize)?;
        // SAFETY: per this function's contract.
        let resource = unsafe { strings::required(resource, "resource") }?;
        // SAFETY: per this function's contract.
        let o = unsafe { read_options(options) }?;
        let mut builder = h.client.acquire(resource).purpose(o.purpose.clone());
        if o.shared {
            builder = builder.shared();
        }
        if o.no_wait {
            builder = builder.no_wait();
        }
        if o.ttl_ms != 0 {
            builder = builder.ttl(std::time::Duration::from_millis(u64::from(o.ttl_ms)));
        }
        if o.max_wait_ms != 0 {
            builder = builder.max_wait(std::time::Duration::from_millis(u64::from(o.max_wait_ms)));
        }
        let rt = runtime()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let give_up = h.cancel.child_token();
        let deadline = deadline_of(timeout_ms).map(|d| Instant::now() + d);
        let task_give_up = give_up.clone();
        rt.spawn(async move {
            let r = wait_for_grant(builder, &tx, &task_give_up, deadline).await;
            let _ = tx.send(Msg::Done(r.map_err(|stop| match stop {
                Ok(Stop::GaveUp) => Failure::new(ts_error::TS_ERR_CANCELLED, "gave up waiting"),
                Ok(Stop::Deadline) => Failure::new(
                    ts_error::TS_ERR_TIMED_OUT,
                    format!("not granted within {timeout_ms} ms; the request left the queue"),
                ),
                Err(f) => f,
            })));
        });
        let mut caller_gave_up = false;
        let lease = loop {
            match rx.recv() {
                Ok(Msg::Queued(q)) => {
                    if let (Some(f), false) = (o.on_queue, caller_gave_up) {
                        let view = QueueView::new(&q);
                        // SAFETY: the caller's callback with its own pointer;
                        // `view` outlives the call.
                        if unsafe { f(o.on_queue_data, &view.update) } != 0 {
                            caller_gave_up = true;
                            give_up.cancel();
                        }
                    }
                }
                Ok(Msg::Done(r)) => break r,
                Err(_) => {
                    break Err(Failure::new(
                        ts_error::TS_ERR_PANIC,
                        "internal error in libturnstile: the acquire task ended without an answer",
                    ));
                }
            }
        };
        let lease = lease.map_err(|f| match f.code {
            ts_error::TS_ERR_CANCELLED if !caller_gave_up => Failure::closed("client"),
            ts_error::TS_ERR_CANCELLED => Failure::new(
                ts_error::TS_ERR_CANCELLED,
                "the queue callback gave up; the request left the queue",
            ),
            _ => f,
        })?;
        *out = LeaseHandle::register(lease, &o) as *mut ts_lease;
        Ok(())
    })
}

impl LeaseHandle {
    fn register(lease: Lease, o: &Options) -> usize {
        let details = (
            lease.id(),
            lease.fencing_token(),
            lease.ttl().as_millis() as u32,
        );
        let resource = strings::c_string(lease.resource());
        let lease = Arc::new(RwLock::new(Some(lease)));
        let gate = Gate::new();
        let lost_watch = o.on_lost.and_then(|f| {
            let data = o.on_lost_data;
            let lock = Arc::clone(&lease);
            let gate = Arc::clone(&gate);
            let rt = runtime().ok()?;
            Some(rt.spawn(async move {
                let held = lock.read_owned().await;
                let Some(l) = held.as_ref() else { return };
                let lost = l.lost().await;
                let id = l.id();
                drop(held);
                let detail = strings::c_string(&lost.detail);
                let reason = ts_lost_reason::of(lost.reason);
                gate.post(move || {
                    let data = data;
                    // SAFETY: the caller's callback with its own pointer;
                    // `detail` outlives the call.
                    unsafe { f(data.0, id, reason, detail.as_ptr()) }
                });
            }))
        });
        handles::insert(Entry::Lease(Arc::new(LeaseHandle {
            lease,
            details,
            resource,
            lost_watch: Mutex::new(lost_watch),
            gate,
            cancel: CancellationToken::new(),
        })))
    }
}

/// The lease's id, fencing token, TTL and resource.
///
/// # Safety
/// `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_lease_get_details(
    lease: *mut ts_lease,
    out: *mut ts_lease_details,
) -> ts_error {
    guard(|| {
        let h = handles::lease(lease as usize)?;
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(out, "out") }?;
        *out = ts_lease_details {
            lease_id: h.details.0,
            fencing_token: h.details.1,
            ttl_ms: h.details.2,
            resource: h.resource.as_ptr(),
        };
        Ok(())
    })
}

/// Reports how far the job under the lease has got (`done` of `total`
/// units, `total` 0 = unknown, and a stage `message`, NULL = ""); waiters
/// see it in their queue updates and watchers in their events.
///
/// # Safety
/// `message` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_lease_report_progress(
    lease: *mut ts_lease,
    done: u32,
    total: u32,
    message: *const c_char,
    timeout_ms: u32,
) -> ts_error {
    guard(|| {
        let h = handles::lease(lease as usize)?;
        // SAFETY: per this function's contract.
        let message = unsafe { strings::optional(message, "message") }?
            .unwrap_or("")
            .to_string();
        let lock = Arc::clone(&h.lease);
        block("progress report", &h.cancel, timeout_ms, async move {
            match lock.read().await.as_ref() {
                Some(l) => l
                    .progress(done, total, message)
                    .await
                    .map_err(Failure::from),
                None => Err(Failure::closed("lease")),
            }
        })
    })
}

/// Whether the lease is still held: `TS_OK`, or `TS_ERR_LOST` with the
/// reason in `*reason_out` (may be NULL) and the detail in
/// `ts_last_error_message()`. Does not wait.
///
/// # Safety
/// `reason_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_lease_check(
    lease: *mut ts_lease,
    reason_out: *mut ts_lost_reason,
) -> ts_error {
    guard(|| {
        let h = handles::lease(lease as usize)?;
        let lock = Arc::clone(&h.lease);
        let lost = block(
            "lease check",
            &h.cancel,
            crate::TS_WAIT_FOREVER,
            async move { Ok(lock.read().await.as_ref().and_then(Lease::lost_reason)) },
        )?;
        match lost {
            None => Ok(()),
            Some(l) => {
                // SAFETY: per this function's contract (NULL allowed).
                if let Some(r) = unsafe { reason_out.as_mut() } {
                    *r = ts_lost_reason::of(l.reason);
                }
                Err(Failure::new(
                    ts_error::TS_ERR_LOST,
                    format!("lease lost: {}", l.detail),
                ))
            }
        }
    })
}

/// Releases the lease, waits up to `timeout_ms` for the broker to confirm,
/// and frees the handle, in every case (also on error): the handle is
/// invalid afterwards, and a second call returns `TS_ERR_INVALID_HANDLE`.
/// No `on_lost` callback runs after this returns.
///
/// Errors: `TS_ERR_LOST` (it had been lost before: the work it protected
/// may have overlapped another holder's), `TS_ERR_TIMED_OUT`,
/// `TS_ERR_DISCONNECTED`.
#[unsafe(no_mangle)]
pub extern "C" fn ts_lease_release(lease: *mut ts_lease, timeout_ms: u32) -> ts_error {
    guard(|| {
        let h = handles::take_lease(lease as usize)?;
        h.gate.close();
        let watch = h
            .lost_watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let lock = Arc::clone(&h.lease);
        block("release", &h.cancel, timeout_ms, async move {
            if let Some(w) = watch {
                w.abort();
                let _ = w.await;
            }
            let Some(lease) = lock.write().await.take() else {
                return Err(Failure::closed("lease"));
            };
            if let Some(lost) = lease.lost_reason() {
                return Err(Failure::new(
                    ts_error::TS_ERR_LOST,
                    format!(
                        "the lease had been lost before the release: {}",
                        lost.detail
                    ),
                ));
            }
            lease.release().await.map_err(Failure::from)
        })
    })
}
