//! A granted `ts_lease`: one task on the library's I/O thread owns the
//! Rust client's [`Lease`] (which keeps itself alive) and serves the
//! handle's calls (progress, decline, check, release, detach), running
//! them concurrently; between calls it listens for yield requests and for
//! the loss, and posts the caller's callbacks to the callback thread.
//!
//! Why a task that owns the lease rather than a lock around it: hearing
//! yield requests takes the lease mutably for as long as it waits, which a
//! lock would turn into blocking every other call on the handle.

use std::ffi::{CString, c_char};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use turnstile_client::proto as v1;
use turnstile_client::{Lease, LeaseLost};

use crate::error::{Failure, guard, ts_error};
use crate::handles::{self, Entry};
use crate::lease::{ts_lease, ts_lost_fn, ts_lost_reason, ts_yield_fn, ts_yield_request};
use crate::runtime::{Gate, UserData, block, runtime};
use crate::strings;

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

/// The caller's asynchronous callbacks of one lease.
pub(crate) struct Hooks {
    pub on_lost: ts_lost_fn,
    pub on_lost_data: UserData,
    pub on_yield: ts_yield_fn,
    pub on_yield_data: UserData,
}

/// A call on the lease, served by its task.
enum Call {
    Progress(u32, u32, String, oneshot::Sender<Result<(), Failure>>),
    Decline(String, oneshot::Sender<Result<(), Failure>>),
    Check(oneshot::Sender<Option<LeaseLost>>),
    /// Ends the task (and the lease): release it, answering how that went.
    Release(oneshot::Sender<Result<(), Failure>>),
    /// Ends the task, letting go of the lease without releasing it.
    Detach(oneshot::Sender<()>),
}

pub(crate) struct LeaseHandle {
    calls: mpsc::UnboundedSender<Call>,
    details: (u64, u64, u32),
    resource: CString,
    /// The resume token as text; "" without a detach grace.
    resume: CString,
    gate: Arc<Gate>,
    cancel: CancellationToken,
}

impl LeaseHandle {
    /// Registers a granted lease; its handle number.
    pub(crate) fn register(lease: Lease, hooks: Hooks) -> Result<usize, Failure> {
        let details = (
            lease.id(),
            lease.fencing_token(),
            lease.ttl().as_millis().min(u128::from(u32::MAX)) as u32,
        );
        let resource = strings::c_string(lease.resource());
        let resume = strings::c_string(
            &lease
                .resume_token()
                .map(ToString::to_string)
                .unwrap_or_default(),
        );
        let (calls, rx) = mpsc::unbounded_channel();
        let gate = Gate::new();
        runtime()?.spawn(own(lease, rx, hooks, Arc::clone(&gate)));
        Ok(handles::insert(Entry::Lease(Arc::new(LeaseHandle {
            calls,
            details,
            resource,
            resume,
            gate,
            cancel: CancellationToken::new(),
        }))))
    }

    /// Sends a call to the lease's task and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        timeout_ms: u32,
        make: impl FnOnce(oneshot::Sender<T>) -> Call,
    ) -> Result<T, Failure> {
        let (tx, rx) = oneshot::channel();
        self.calls
            .send(make(tx))
            .map_err(|_| Failure::closed("lease"))?;
        block(what, &self.cancel, timeout_ms, async move {
            rx.await.map_err(|_| Failure::closed("lease"))
        })
    }
}

/// The lease's task: owns the lease until a release or a detach.
async fn own(
    lease: Lease,
    mut calls: mpsc::UnboundedReceiver<Call>,
    hooks: Hooks,
    gate: Arc<Gate>,
) {
    // Whether the keep-alive task has stopped (the lease was lost): the
    // yield requests' channel closes then.
    let mut ended = false;
    // A release or detach that came while other calls ran.
    let mut last: Option<Call> = None;
    // Whether the handle can still send calls.
    let mut open = true;
    loop {
        let call = if let Some(c) = last.take() {
            c
        } else if ended {
            match calls.recv().await {
                Some(c) => c,
                None => return,
            }
        } else {
            tokio::select! {
                y = lease.next_yield_request() => {
                    match y {
                        Some(y) => tell_yield(&hooks, &gate, lease.id(), y),
                        None => {
                            ended = true;
                            tell_lost(&hooks, &gate, lease.id(), lease.lost_reason());
                        }
                    }
                    continue;
                }
                c = calls.recv() => match c {
                    Some(c) => c,
                    // The handle is gone without a release (cannot happen
                    // through the ABI): dropping the lease releases it.
                    None => return,
                },
            }
        };
        match call {
            Call::Release(reply) => {
                let r = match lease.lost_reason() {
                    Some(lost) => Err(Failure::new(
                        ts_error::TS_ERR_LOST,
                        format!(
                            "the lease had been lost before the release: {}",
                            lost.detail
                        ),
                    )),
                    None => lease.release().await.map_err(Failure::from),
                };
                let _ = reply.send(r);
                return;
            }
            Call::Detach(reply) => {
                let _ = lease.detach();
                let _ = reply.send(());
                return;
            }
            first => {
                // Serve this call and every one that comes while it runs,
                // concurrently; a release or detach waits for them to end.
                let mut running = FuturesUnordered::new();
                running.push(serve(&lease, first));
                loop {
                    tokio::select! {
                        done = running.next() => if done.is_none() { break },
                        c = calls.recv(), if open && last.is_none() => match c {
                            Some(c @ (Call::Release(_) | Call::Detach(_))) => last = Some(c),
                            Some(c) => running.push(serve(&lease, c)),
                            None => open = false,
                        },
                    }
                }
            }
        }
    }
}

/// One call that needs only a shared view of the lease.
async fn serve(lease: &Lease, call: Call) {
    match call {
        Call::Progress(done, total, message, reply) => {
            let r = lease.progress(done, total, message).await;
            let _ = reply.send(r.map_err(Failure::from));
        }
        Call::Decline(reason, reply) => {
            let r = lease.decline_yield(reason).await;
            let _ = reply.send(r.map_err(Failure::from));
        }
        Call::Check(reply) => {
            let _ = reply.send(lease.lost_reason());
        }
        // Handled by `own` (they end the task).
        Call::Release(reply) => {
            let _ = reply.send(Err(Failure::closed("lease")));
        }
        Call::Detach(reply) => {
            let _ = reply.send(());
        }
    }
}

fn tell_lost(hooks: &Hooks, gate: &Arc<Gate>, id: u64, lost: Option<LeaseLost>) {
    let Some(f) = hooks.on_lost else { return };
    let lost = lost.unwrap_or(LeaseLost {
        reason: None,
        detail: "the lease is no longer kept alive".into(),
    });
    let data = hooks.on_lost_data;
    let detail = strings::c_string(&lost.detail);
    let reason = ts_lost_reason::of(lost.reason);
    gate.post(move || {
        let data = data;
        // SAFETY: the caller's callback with its own pointer; `detail`
        // outlives the call.
        unsafe { f(data.0, id, reason, detail.as_ptr()) }
    });
}

fn tell_yield(hooks: &Hooks, gate: &Arc<Gate>, id: u64, y: v1::YieldRequested) {
    let Some(f) = hooks.on_yield else { return };
    let data = hooks.on_yield_data;
    let peer = y.requester.unwrap_or_default();
    let strings = [
        strings::c_string(&peer.client_name),
        strings::c_string(&peer.user),
        strings::c_string(&y.reason),
    ];
    let (uid, pid, within_ms, revoke) = (peer.uid, peer.pid, y.within_ms, y.revoke);
    gate.post(move || {
        let data = data;
        let request = ts_yield_request {
            requester_name: strings[0].as_ptr(),
            requester_uid: uid,
            requester_pid: pid,
            requester_user: strings[1].as_ptr(),
            reason: strings[2].as_ptr(),
            within_ms,
            revoke,
        };
        // SAFETY: the caller's callback with its own pointer; `request`
        // and its strings outlive the call.
        unsafe { f(data.0, id, &request) }
    });
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

/// The lease's resume token, for `ts_reattach` after this process (or its
/// connection) is gone: text `LEASE:HEX:RESOURCE`, a secret (keep it where
/// only this user can read it), "" when the lease was acquired without
/// `detach_grace_ms`. `*token_out` belongs to the handle: valid until
/// `ts_lease_release` / `ts_lease_detach`; copy it to keep it.
///
/// # Safety
/// `token_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_lease_resume_token(
    lease: *mut ts_lease,
    token_out: *mut *const c_char,
) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(token_out, "token_out") }?;
        *out = std::ptr::null();
        let h = handles::lease(lease as usize)?;
        *out = h.resume.as_ptr();
        Ok(())
    })
}

/// Reports how far the job under the lease has got (`done` of `total`
/// units, `total` 0 = unknown, and a stage `message`, NULL = ""); waiters
/// see it in their queue updates and watchers in their events. It also
/// clears the stalled mark (`stall_after_ms`).
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
        h.call("progress report", timeout_ms, |tx| {
            Call::Progress(done, total, message, tx)
        })?
    })
}

/// Answers a yield request (`on_yield`): this holder will not make way now;
/// watchers see `TS_EVENT_YIELD_DECLINED` with `reason` (NULL = ""). A
/// revoke the requester asked for still happens when its time is up.
///
/// Errors: `TS_ERR_NOT_FOUND` (the lease has ended), `TS_ERR_TIMED_OUT`,
/// `TS_ERR_DISCONNECTED`.
///
/// # Safety
/// `reason` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_lease_decline_yield(
    lease: *mut ts_lease,
    reason: *const c_char,
    timeout_ms: u32,
) -> ts_error {
    guard(|| {
        let h = handles::lease(lease as usize)?;
        // SAFETY: per this function's contract.
        let reason = unsafe { strings::optional(reason, "reason") }?
            .unwrap_or("")
            .to_string();
        h.call("yield decline", timeout_ms, |tx| Call::Decline(reason, tx))?
    })
}

/// Whether the lease is still held: `TS_OK`, or `TS_ERR_LOST` with the
/// reason in `*reason_out` (may be NULL) and the detail in
/// `ts_last_error_message()`. Does not wait for the broker.
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
        let lost = h.call("lease check", crate::TS_WAIT_FOREVER, Call::Check)?;
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
/// No `on_lost` or `on_yield` callback runs after this returns.
///
/// Errors: `TS_ERR_LOST` (it had been lost before: the work it protected
/// may have overlapped another holder's), `TS_ERR_TIMED_OUT`,
/// `TS_ERR_DISCONNECTED`.
#[unsafe(no_mangle)]
pub extern "C" fn ts_lease_release(lease: *mut ts_lease, timeout_ms: u32) -> ts_error {
    guard(|| {
        let h = handles::take_lease(lease as usize)?;
        h.gate.close();
        h.call("release", timeout_ms, Call::Release)?
    })
}

/// Lets go of the lease without releasing it, and frees the handle (a
/// second call, or a release after it, is `TS_ERR_INVALID_HANDLE`). The
/// library stops keeping it alive; with `detach_grace_ms`, once this
/// process's connection closes (close the client and every other lease and
/// consumer opened through it, or exit) the broker keeps the lease for
/// that grace, for `ts_reattach` with its resume token (take it with
/// `ts_lease_resume_token` first). Without a grace it ends when the
/// connection closes. While the connection stays open its TTL runs: close
/// it soon. No callback of the lease runs after this returns.
#[unsafe(no_mangle)]
pub extern "C" fn ts_lease_detach(lease: *mut ts_lease) -> ts_error {
    guard(|| {
        let h = handles::take_lease(lease as usize)?;
        h.gate.close();
        h.call("detach", crate::TS_WAIT_FOREVER, Call::Detach)
    })
}
