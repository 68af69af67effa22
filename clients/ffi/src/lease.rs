//! `ts_lease` being acquired: the options (size-versioned), the blocking
//! acquire and re-attach with their queue callbacks on the calling thread,
//! and the views of a queue update. The held lease itself (its keep-alive,
//! its callbacks, release, detach) is `holder.rs`'s.

use std::ffi::{CString, c_char, c_void};

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use turnstile_client::proto as v1;
use turnstile_client::{ClientError, Lease, Pending, QueueUpdate, ResumeToken};

use crate::error::{Failure, guard, ts_error};
use crate::handles;
use crate::holder::{Hooks, LeaseHandle};
use crate::runtime::{UserData, deadline_of, runtime};
use crate::strings;

/// A granted lease. Opaque: created by `ts_acquire` or `ts_reattach`, freed
/// by `ts_lease_release` or `ts_lease_detach`.
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
    /// Taken away by the broker: a yield request with revoke that this
    /// holder did not honour in time (`detail` names the requester).
    TS_LOST_REVOKED = 3,
}

impl ts_lost_reason {
    pub(crate) fn of(r: Option<v1::LostReason>) -> ts_lost_reason {
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
    /// Permits of the resource's counting semaphore it holds or waits for;
    /// 0 when the resource has no capacity.
    pub permits: u32,
    /// Its connection closed and it is kept, within its detach grace, for
    /// its owner to re-attach (`ts_reattach`).
    pub detached: bool,
    /// A holder that keeps its lease alive but reported no progress for its
    /// `stall_after_ms`: stuck, not dead nor hung.
    pub stalled: bool,
    /// The holder's account name as the broker's OS gives it ("" if none).
    pub holder_user: *const c_char,
    /// The holder's logon session as the broker's OS knows it ("" if unknown).
    pub holder_login_session: *const c_char,
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
    /// With `detach_grace_ms`, the resume token of this place in the queue
    /// (as `ts_lease_resume_token` gives it; copy it to keep it); "" without.
    pub resume_token: *const c_char,
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

/// A request that this holder make way (`ts_request_yield`, `turnstile
/// yield`). Every pointer is valid only during the callback.
#[repr(C)]
pub struct ts_yield_request {
    /// The requester's client name.
    pub requester_name: *const c_char,
    /// The requester's user id (from the kernel).
    pub requester_uid: u32,
    /// The requester's process id (from the kernel).
    pub requester_pid: u32,
    /// The requester's account name ("" if none).
    pub requester_user: *const c_char,
    /// Why ("" if not said).
    pub reason: *const c_char,
    /// How long this holder has, ms (0 = at once).
    pub within_ms: u32,
    /// The lease will be taken (`TS_LOST_REVOKED`) if still held after
    /// `within_ms`.
    pub revoke: bool,
}

/// Called on the library's callback thread each time someone asks the
/// holder of this lease to make way. Make way with `ts_lease_release`
/// (and `ts_acquire` again later if you want), or answer
/// `ts_lease_decline_yield` (a revoke still stands). Never called after
/// `ts_lease_release` / `ts_lease_detach` returned. It may call any
/// function of this library, also on this lease.
pub type ts_yield_fn = Option<
    unsafe extern "C" fn(user_data: *mut c_void, lease_id: u64, request: *const ts_yield_request),
>;

/// How to acquire. Versioned by size, so that fields can be added (only
/// ever at the end) without breaking programs built against an older
/// header: the caller sets `struct_size` to `sizeof(ts_acquire_options)` as
/// it was compiled, and the library reads only the fields that size covers
/// (the others take their defaults). Every default is zero / NULL, so
///
/// ```c
/// ts_acquire_options opts = TS_ACQUIRE_OPTIONS_INIT;   // or
/// ts_acquire_options_init(&opts, sizeof opts);
/// ```
///
/// is an EXCLUSIVE, queued request with the broker's TTL and no callbacks.
/// A `struct_size` larger than this library's is accepted only when every
/// byte it does not know is zero (a newer caller that set nothing new);
/// smaller than version 1 or between two versions is `TS_ERR_INVALID_ARGUMENT`.
/// Version 1 ends after `on_lost_data`; version 2 adds `permits` to
/// `on_yield_data`.
#[repr(C)]
pub struct ts_acquire_options {
    /// `sizeof(ts_acquire_options)` as the caller was compiled; set by
    /// `ts_acquire_options_init`.
    pub struct_size: u32,
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
    /// (v2) With `capacity`: how many of the semaphore's permits this SHARED
    /// lease takes; 0 = 1.
    pub permits: u32,
    /// (v2) With `TS_ACQUIRE_SHARED`: the resource is a counting semaphore
    /// of this many permits (it must match the resource's capacity if it
    /// has one already); 0 = not a semaphore (unlimited SHARED).
    pub capacity: u32,
    /// (v2) Keep the lease (or the place in the queue) this long after the
    /// connection closes, for its owner to take back with `ts_reattach` and
    /// the resume token (`ts_lease_resume_token`,
    /// `ts_queue_update.resume_token`); 0 = it ends with the connection.
    pub detach_grace_ms: u32,
    /// (v2) Mark the holder stalled (watchers see `TS_EVENT_STALLED`) after
    /// this long without a progress report while it keeps its lease alive;
    /// 0 = never.
    pub stall_after_ms: u32,
    /// (v2) Yield requests (see `ts_yield_fn`); NULL = none (they are
    /// dropped; a revoke still happens).
    pub on_yield: ts_yield_fn,
    /// (v2) Passed to `on_yield` untouched; must stay valid until the lease
    /// is released or detached.
    pub on_yield_data: *mut c_void,
}

/// `struct_size` of version 1 of the options (wave 1: up to `on_lost_data`).
const OPTIONS_V1: usize = std::mem::offset_of!(ts_acquire_options, permits);
/// `struct_size` of this library's options (version 2).
const OPTIONS_V2: usize = std::mem::size_of::<ts_acquire_options>();
/// No version of the options will ever be this large: a larger
/// `struct_size` is garbage, not read.
const OPTIONS_MAX: usize = 1024;

fn default_options() -> ts_acquire_options {
    ts_acquire_options {
        struct_size: OPTIONS_V2 as u32,
        flags: 0,
        ttl_ms: 0,
        max_wait_ms: 0,
        purpose: std::ptr::null(),
        on_queue: None,
        on_queue_data: std::ptr::null_mut(),
        on_lost: None,
        on_lost_data: std::ptr::null_mut(),
        permits: 0,
        capacity: 0,
        detach_grace_ms: 0,
        stall_after_ms: 0,
        on_yield: None,
        on_yield_data: std::ptr::null_mut(),
    }
}

/// Fills the caller's options with the defaults (all zero / NULL) and sets
/// `struct_size`: writes exactly `struct_size` bytes, which must be
/// `sizeof(ts_acquire_options)` as the caller was compiled (at least
/// version 1's size), never more.
///
/// # Safety
/// `options` is NULL or writable for `struct_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_acquire_options_init(
    options: *mut ts_acquire_options,
    struct_size: usize,
) -> ts_error {
    guard(|| {
        if options.is_null() {
            return Err(Failure::invalid("options is NULL"));
        }
        // The sizes `ts_acquire` reads: a version's, or a newer library's.
        let known = struct_size == OPTIONS_V1 || (OPTIONS_V2..=OPTIONS_MAX).contains(&struct_size);
        if !known {
            return Err(Failure::invalid(format!(
                "struct_size {struct_size} is not the size of any ts_acquire_options \
                 (pass sizeof(ts_acquire_options); this library's is {OPTIONS_V2})"
            )));
        }
        // SAFETY: writable for `struct_size` bytes, per the contract; every
        // field's default is all-zero bytes.
        unsafe { std::ptr::write_bytes(options.cast::<u8>(), 0, struct_size) };
        // SAFETY: `struct_size` is the first field, within the bytes above.
        unsafe { options.cast::<u32>().write_unaligned(struct_size as u32) };
        Ok(())
    })
}

/// The caller's options, read and checked.
pub(crate) struct Options {
    shared: bool,
    no_wait: bool,
    ttl_ms: u32,
    max_wait_ms: u32,
    purpose: String,
    permits: u32,
    capacity: u32,
    detach_grace_ms: u32,
    stall_after_ms: u32,
    on_queue: ts_queue_fn,
    on_queue_data: *mut c_void,
    pub(crate) hooks: Hooks,
}

/// # Safety
/// `p` is NULL or points to `p->struct_size` readable bytes.
unsafe fn read_options(p: *const ts_acquire_options) -> Result<Options, Failure> {
    let mut o = default_options();
    if !p.is_null() {
        // SAFETY: non-NULL options start with their u32 size, per the contract.
        let size = unsafe { p.cast::<u32>().read_unaligned() } as usize;
        let known = match size {
            OPTIONS_V1 | OPTIONS_V2 => size,
            s if s > OPTIONS_V2 && s <= OPTIONS_MAX => {
                // SAFETY: the caller's struct is `size` bytes long.
                let tail = unsafe {
                    std::slice::from_raw_parts(p.cast::<u8>().add(OPTIONS_V2), s - OPTIONS_V2)
                };
                if tail.iter().any(|&b| b != 0) {
                    return Err(Failure::invalid(format!(
                        "options.struct_size is {s}: fields of a newer libturnstile are set, \
                         which this one ({OPTIONS_V2} bytes) does not know; link the library \
                         of the header you compiled with"
                    )));
                }
                OPTIONS_V2
            }
            s => {
                return Err(Failure::invalid(format!(
                    "options.struct_size is {s}, not the size of any ts_acquire_options \
                     ({OPTIONS_V1} or {OPTIONS_V2}): set it to sizeof(ts_acquire_options) \
                     (TS_ACQUIRE_OPTIONS_INIT or ts_acquire_options_init do)"
                )));
            }
        };
        // SAFETY: the caller's struct has at least `known` readable bytes,
        // laid out as this struct's first `known` bytes (fields are only
        // appended); every field is valid for any bit pattern it can hold.
        unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&raw mut o).cast::<u8>(), known) };
    }
    let flags = TS_ACQUIRE_SHARED | TS_ACQUIRE_NO_WAIT;
    if o.flags & !flags != 0 {
        return Err(Failure::invalid(format!(
            "unknown flags {:#x} in options.flags",
            o.flags & !flags
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
        permits: o.permits,
        capacity: o.capacity,
        detach_grace_ms: o.detach_grace_ms,
        stall_after_ms: o.stall_after_ms,
        on_queue: o.on_queue,
        on_queue_data: o.on_queue_data,
        hooks: Hooks {
            on_lost: o.on_lost,
            on_lost_data: UserData(o.on_lost_data),
            on_yield: o.on_yield,
            on_yield_data: UserData(o.on_yield_data),
        },
    })
}

/// What the I/O thread tells the thread waiting in `ts_acquire`.
enum Msg {
    Queued(v1::Queued, Option<ResumeToken>),
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
    start: BoxFuture<'static, Result<Pending, ClientError>>,
    tx: &std::sync::mpsc::Sender<Msg>,
    give_up: &CancellationToken,
    deadline: Option<Instant>,
) -> Result<Lease, Result<Stop, Failure>> {
    let mut start = start;
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
                let _ = tx.send(Msg::Queued(q.clone(), pending.resume_token().cloned()));
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

pub(crate) fn mode_of(m: i32) -> ts_mode {
    match v1::Mode::try_from(m) {
        Ok(v1::Mode::Exclusive) => ts_mode::TS_MODE_EXCLUSIVE,
        Ok(v1::Mode::Shared) => ts_mode::TS_MODE_SHARED,
        _ => ts_mode::TS_MODE_UNSPECIFIED,
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
    fn new(q: &v1::Queued, token: Option<&ResumeToken>) -> QueueView {
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
                    mode: mode_of(l.mode),
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
                    permits: l.permits,
                    detached: l.detached,
                    stalled: l.stalled,
                    holder_user: keep(&holder.user),
                    holder_login_session: keep(&holder.login_session),
                }
            })
            .collect();
        let token = keep(&token.map(ToString::to_string).unwrap_or_default());
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
            resume_token: token,
        };
        QueueView {
            _strings: strings,
            _infos: infos,
            update,
        }
    }
}

/// Waits on this thread for `start` (an acquire or a re-attach) to be
/// granted, calling `on_queue` here with each queue update; registers the
/// lease.
fn wait_here(
    h: &crate::client::ClientHandle,
    start: BoxFuture<'static, Result<Pending, ClientError>>,
    o: Options,
    timeout_ms: u32,
) -> Result<usize, Failure> {
    let rt = runtime()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let give_up = h.cancel.child_token();
    let deadline = deadline_of(timeout_ms).map(|d| Instant::now() + d);
    let task_give_up = give_up.clone();
    rt.spawn(async move {
        let r = wait_for_grant(start, &tx, &task_give_up, deadline).await;
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
            Ok(Msg::Queued(q, token)) => {
                if let (Some(f), false) = (o.on_queue, caller_gave_up) {
                    let view = QueueView::new(&q, token.as_ref());
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
    LeaseHandle::register(lease, o.hooks)
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
/// `TS_ERR_PERMISSION_DENIED`, `TS_ERR_INVALID_ARGUMENT` (also: more
/// permits than the capacity, a capacity other than the resource's),
/// `TS_ERR_DISCONNECTED`.
///
/// # Safety
/// `resource` is a NUL-terminated string, `options` NULL or set up as
/// `ts_acquire_options` says, `out` writable.
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
        let ms = |ms: u32| std::time::Duration::from_millis(u64::from(ms));
        let mut builder = h.client.acquire(resource).purpose(o.purpose.clone());
        if o.shared {
            builder = builder.shared();
        }
        if o.no_wait {
            builder = builder.no_wait();
        }
        if o.ttl_ms != 0 {
            builder = builder.ttl(ms(o.ttl_ms));
        }
        if o.max_wait_ms != 0 {
            builder = builder.max_wait(ms(o.max_wait_ms));
        }
        if o.permits != 0 {
            builder = builder.permits(o.permits);
        }
        if o.capacity != 0 {
            builder = builder.capacity(o.capacity);
        }
        if o.detach_grace_ms != 0 {
            builder = builder.detach_grace(ms(o.detach_grace_ms));
        }
        if o.stall_after_ms != 0 {
            builder = builder.stall_after(ms(o.stall_after_ms));
        }
        let id = wait_here(&h, Box::pin(builder.start()), o, timeout_ms)?;
        *out = id as *mut ts_lease;
        Ok(())
    })
}

/// Takes back a detached lease or place in the queue: one acquired with
/// `detach_grace_ms` whose connection closed (its process exited or was
/// killed, or it called `ts_lease_detach` and closed its client), within
/// that grace. `token` is its resume token as `ts_lease_resume_token` or
/// `ts_queue_update.resume_token` gave it (text: `LEASE:HEX:RESOURCE`).
/// Same user only. The lease comes back as it stands now: granted (`*out`
/// at once), or still queued, in which case this waits like `ts_acquire`
/// (up to `timeout_ms`, `options->on_queue` called here). Of `options`
/// (may be NULL) only the callbacks are used (`on_queue`, `on_lost`,
/// `on_yield` and their data); the lease keeps its mode, TTL, permits,
/// grace and purpose. The re-attached lease has the same id, fencing
/// token and resume token.
///
/// Errors: `TS_ERR_NOT_FOUND` (a wrong token, another user, a lease that
/// ended or whose grace ran out: the broker does not tell them apart),
/// `TS_ERR_INVALID_ARGUMENT` (not a resume token), and those of `ts_acquire`.
///
/// # Safety
/// `token` is a NUL-terminated string, `options` NULL or set up as
/// `ts_acquire_options` says, `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_reattach(
    client: *mut crate::client::ts_client,
    token: *const c_char,
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
        let text = unsafe { strings::required(token, "token") }?;
        let token: ResumeToken = text.parse().map_err(|_| {
            Failure::invalid("token is not a resume token (LEASE:HEX:RESOURCE, as ts_lease_resume_token gives it)")
        })?;
        // SAFETY: per this function's contract.
        let o = unsafe { read_options(options) }?;
        let c = h.client.clone();
        let start = Box::pin(async move { c.reattach(&token).await });
        let id = wait_here(&h, start, o, timeout_ms)?;
        *out = id as *mut ts_lease;
        Ok(())
    })
}
