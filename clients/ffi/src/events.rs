//! The event queue behind a watch or a consumer: the library's I/O thread
//! pushes, the caller pops with a timeout (`ts_watch_next`,
//! `ts_consumer_next`), and an event loop learns that something is waiting
//! from a file descriptor that is readable exactly while a pop would not
//! block (Unix), or from a notify callback (everywhere).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::{Failure, ts_error};
use crate::runtime::{Gate, UserData, deadline_of};

/// Called (on the library's callback thread) when a watch or consumer has
/// something waiting after it had nothing: an event, or its end.
pub type ts_notify_fn = Option<unsafe extern "C" fn(user_data: *mut std::ffi::c_void)>;

struct State<T> {
    items: VecDeque<T>,
    /// Why nothing more will come (the connection is gone, the handle closed).
    end: Option<(ts_error, String)>,
    /// Whether the wake-up fd is readable now.
    signalled: bool,
}

pub(crate) struct EventQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    signal: Signal,
    notify: Option<(unsafe extern "C" fn(*mut std::ffi::c_void), UserData)>,
    pub(crate) gate: Arc<Gate>,
}

impl<T> EventQueue<T> {
    pub(crate) fn new(
        notify: ts_notify_fn,
        user_data: *mut std::ffi::c_void,
    ) -> Result<Self, Failure> {
        Ok(EventQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                end: None,
                signalled: false,
            }),
            ready: Condvar::new(),
            signal: Signal::new()?,
            notify: notify.map(|f| (f, UserData(user_data))),
            gate: Gate::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fd that is readable while `pop` would not block (-1 without one).
    pub(crate) fn fd(&self) -> i64 {
        self.signal.fd()
    }

    fn raise(&self, s: &mut State<T>) -> bool {
        if s.signalled {
            return false;
        }
        s.signalled = true;
        self.signal.raise();
        true
    }

    fn notify(&self) {
        if let Some((f, data)) = self.notify {
            self.gate.post(move || {
                let data = data;
                // SAFETY: the caller's callback with the caller's pointer,
                // as registered; the gate keeps it from running after close.
                unsafe { f(data.0) }
            });
        }
    }

    /// Adds an event (dropped if the queue has ended).
    pub(crate) fn push(&self, item: T) {
        let raised = {
            let mut s = self.lock();
            if s.end.is_some() {
                return;
            }
            s.items.push_back(item);
            self.raise(&mut s)
        };
        self.ready.notify_all();
        if raised {
            self.notify();
        }
    }

    /// Ends the queue: once the events already in it are taken, `pop`
    /// answers this. With `discard`, events not yet taken are dropped.
    pub(crate) fn end(&self, code: ts_error, message: String, discard: bool) {
        let (raised, dropped) = {
            let mut s = self.lock();
            if s.end.is_none() {
                s.end = Some((code, message));
            }
            let dropped = if discard {
                std::mem::take(&mut s.items)
            } else {
                VecDeque::new()
            };
            (self.raise(&mut s), dropped)
        };
        drop(dropped);
        self.ready.notify_all();
        if raised {
            self.notify();
        }
    }

    /// Takes the next event, waiting at most `timeout_ms`.
    pub(crate) fn pop(&self, timeout_ms: u32) -> Result<T, Failure> {
        let mut s = self.lock();
        let idle = |s: &mut State<T>| s.items.is_empty() && s.end.is_none();
        s = match deadline_of(timeout_ms) {
            Some(d) => {
                self.ready
                    .wait_timeout_while(s, d, idle)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => self
                .ready
                .wait_while(s, idle)
                .unwrap_or_else(|p| p.into_inner()),
        };
        if let Some(item) = s.items.pop_front() {
            if s.items.is_empty() && s.end.is_none() && s.signalled {
                s.signalled = false;
                self.signal.lower();
            }
            return Ok(item);
        }
        match &s.end {
            Some((code, message)) => Err(Failure::new(*code, message.clone())),
            None => Err(Failure::new(
                ts_error::TS_ERR_TIMED_OUT,
                format!("nothing arrived within {timeout_ms} ms"),
            )),
        }
    }
}

/// A self-pipe: one byte in it while events wait.
#[cfg(unix)]
struct Signal {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
}

#[cfg(unix)]
impl Signal {
    fn new() -> Result<Signal, Failure> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(Failure::new(
                ts_error::TS_ERR_RESOURCE_EXHAUSTED,
                format!("cannot create a pipe: {}", std::io::Error::last_os_error()),
            ));
        }
        // SAFETY: both descriptors were just opened and are owned here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [read.as_raw_fd(), write.as_raw_fd()] {
            // SAFETY: fcntl on descriptors owned here.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                let fl = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
        }
        Ok(Signal { read, write })
    }

    fn fd(&self) -> i64 {
        use std::os::fd::AsRawFd;
        i64::from(self.read.as_raw_fd())
    }

    fn raise(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: a one-byte write from a live buffer to a descriptor owned here.
        let _ = unsafe { libc::write(self.write.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }

    fn lower(&self) {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 8];
        // SAFETY: a read into a live buffer of its length, from a descriptor owned here.
        let _ = unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

/// No descriptor on Windows: use the notify callback.
#[cfg(not(unix))]
struct Signal;

#[cfg(not(unix))]
impl Signal {
    fn new() -> Result<Signal, Failure> {
        Ok(Signal)
    }
    fn fd(&self) -> i64 {
        -1
    }
    fn raise(&self) {}
    fn lower(&self) {}
}
