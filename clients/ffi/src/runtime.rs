//! The library's own threads: one tokio runtime (one I/O worker thread,
//! `turnstile-io`) that runs every connection, and one callback thread
//! (`turnstile-callbacks`) that runs the caller's asynchronous callbacks
//! (lease lost, "an event is waiting"), one at a time.
//!
//! The caller's threads never enter the runtime: a blocking call spawns its
//! work on the runtime and waits on a plain channel. So a callback may call
//! any function of the library, and no caller ever sees tokio.

use std::future::Future;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use crate::error::{Failure, ts_error};

/// How long a blocking call waits: `TS_WAIT_FOREVER` means no limit.
pub(crate) fn deadline_of(timeout_ms: u32) -> Option<Duration> {
    (timeout_ms != crate::TS_WAIT_FOREVER).then(|| Duration::from_millis(u64::from(timeout_ms)))
}

/// The runtime, started on first use.
pub(crate) fn runtime() -> Result<&'static Runtime, Failure> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("turnstile-io")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the library's I/O thread: {e}"))
        })
        .as_ref()
        .map_err(|e| Failure::new(ts_error::TS_ERR_INTERNAL, e.clone()))
}

/// Runs `work` on the runtime and waits for it on this thread, at most
/// `timeout_ms`, or until `cancel` fires (the handle was closed). On a
/// time-out or cancel the work is dropped, which for every client
/// operation means "abandoned" (a dropped request's answer is ignored).
pub(crate) fn block<T: Send + 'static>(
    what: &'static str,
    cancel: &CancellationToken,
    timeout_ms: u32,
    work: impl Future<Output = Result<T, Failure>> + Send + 'static,
) -> Result<T, Failure> {
    let rt = runtime()?;
    let (tx, rx) = mpsc::sync_channel(1);
    let cancel = cancel.clone();
    let limit = deadline_of(timeout_ms);
    rt.spawn(async move {
        let timer = async {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let r = tokio::select! {
            r = work => r,
            _ = cancel.cancelled() => Err(Failure::closed(what)),
            _ = timer => Err(Failure::timed_out(what, timeout_ms)),
        };
        let _ = tx.send(r);
    });
    rx.recv().unwrap_or_else(|_| {
        Err(Failure::new(
            ts_error::TS_ERR_PANIC,
            format!("internal error in libturnstile: the task for {what} ended without an answer"),
        ))
    })
}

/// The caller's opaque pointer, handed back untouched. The library never
/// dereferences it; the caller vouches that it may be used from the
/// callback thread.
#[derive(Clone, Copy)]
pub(crate) struct UserData(pub *mut std::ffi::c_void);

// SAFETY: the pointer is never dereferenced here, only passed back to the
// caller's own callback, as the header documents.
unsafe impl Send for UserData {}
// SAFETY: as for Send: only ever copied and handed back.
unsafe impl Sync for UserData {}

/// A gate that callbacks of one handle pass through: closing it waits for
/// a callback that runs and stops the ones not yet run, so no callback
/// runs after the close returns (the caller may then free its user data).
#[derive(Default)]
pub(crate) struct Gate {
    open: Mutex<bool>,
}

thread_local! {
    /// The gate whose callback this thread is running, if any.
    static INSIDE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Gate {
    pub(crate) fn new() -> Arc<Gate> {
        Arc::new(Gate {
            open: Mutex::new(true),
        })
    }

    /// Closes the gate. Called from inside one of its own callbacks (a
    /// lost callback that releases its lease) it does not wait for itself.
    pub(crate) fn close(self: &Arc<Self>) {
        let me = Arc::as_ptr(self) as usize;
        if INSIDE.with(|i| i.get()) == me {
            // This thread holds the lock in `run`; it is set to closed there.
            CLOSED_FROM_INSIDE.with(|c| c.set(true));
            return;
        }
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }

    /// Runs `callback` on the callback thread unless the gate is closed by then.
    pub(crate) fn post(self: &Arc<Self>, callback: impl FnOnce() + Send + 'static) {
        let gate = Arc::clone(self);
        post(Box::new(move || {
            let mut open = gate.open.lock().unwrap_or_else(|p| p.into_inner());
            if !*open {
                return;
            }
            let me = Arc::as_ptr(&gate) as usize;
            INSIDE.with(|i| i.set(me));
            CLOSED_FROM_INSIDE.with(|c| c.set(false));
            callback();
            INSIDE.with(|i| i.set(0));
            if CLOSED_FROM_INSIDE.with(|c| c.replace(false)) {
                *open = false;
            }
        }));
    }
}

thread_local! {
    static CLOSED_FROM_INSIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

type Job = Box<dyn FnOnce() + Send>;

/// How long the callback thread waits for work before it ends (a new one
/// starts with the next callback). Runtimes that adopt foreign threads
/// calling into them (Mono waits for them at exit) see it end.
const CALLBACK_THREAD_IDLE: Duration = Duration::from_millis(200);

/// The callback thread's queue, when the thread runs.
static CALLBACK_QUEUE: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// Queues a job for the callback thread, starting it if it is not running.
fn post(job: Job) {
    let mut queue = CALLBACK_QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    let job = match queue.as_ref() {
        Some(tx) => match tx.send(job) {
            Ok(()) => return,
            Err(mpsc::SendError(job)) => job,
        },
        None => job,
    };
    let (tx, rx) = mpsc::channel::<Job>();
    let started = std::thread::Builder::new()
        .name("turnstile-callbacks".into())
        .spawn(move || callback_thread(rx));
    match started {
        Ok(_) => {
            let _ = tx.send(job);
            *queue = Some(tx);
        }
        // No thread could be started: run it here (the I/O thread) rather
        // than never.
        Err(_) => {
            drop(queue);
            job();
        }
    }
}

fn callback_thread(rx: mpsc::Receiver<Job>) {
    loop {
        let job = match rx.recv_timeout(CALLBACK_THREAD_IDLE) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // End, unless a job came in meanwhile: decided under the
                // lock that `post` sends under, so none is stranded.
                let mut queue = CALLBACK_QUEUE.lock().unwrap_or_else(|p| p.into_inner());
                match rx.try_recv() {
                    Ok(job) => job,
                    Err(_) => {
                        *queue = None;
                        return;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        // A panic in the library's part of a job must not end the thread
        // (the caller's C code cannot unwind).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}
