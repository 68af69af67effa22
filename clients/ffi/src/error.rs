//! Error codes at the C boundary, the thread-local last error message, and
//! the one wrapper every exported function runs its body in (so that no
//! panic ever crosses `extern "C"`).
//!
//! The mapping `ClientError` → `ts_error` lives here and nowhere else.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use turnstile_client::ClientError;
use turnstile_client::proto::{ErrorCode, LostReason};

/// What a call came to. `TS_OK` (0) is success; 1 to 10 are the broker's
/// wire codes (`ErrorCode` in the protocol, same numbers); 100 and up are
/// this library's own. After any other value than `TS_OK`,
/// `ts_last_error_message()` says why in a sentence.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum ts_error {
    /// Success.
    TS_OK = 0,
    /// A bad argument: a NULL pointer where one is required, a string that
    /// is not UTF-8, a name the broker refuses, an unknown flag.
    TS_ERR_INVALID_ARGUMENT = 1,
    /// The broker's policy refuses this verb to this user.
    TS_ERR_PERMISSION_DENIED = 2,
    /// `TS_ACQUIRE_NO_WAIT` found the resource taken; the message names the holder.
    TS_ERR_BUSY = 3,
    /// The broker does not know the lease or delivery (or it has ended).
    TS_ERR_NOT_FOUND = 4,
    /// A quota of the broker was reached (leases, watches, queue depth...).
    TS_ERR_RESOURCE_EXHAUSTED = 5,
    /// The broker does not speak this library's protocol version.
    TS_ERR_UNSUPPORTED_VERSION = 6,
    /// A message over the broker's frame limit.
    TS_ERR_FRAME_TOO_LARGE = 7,
    /// The wait ran out: the call's `timeout_ms`, or `max_wait_ms` of an
    /// acquire at the broker. For `ts_watch_next` / `ts_consumer_next`:
    /// nothing arrived in time.
    TS_ERR_TIMED_OUT = 8,
    /// The broker saw a protocol violation.
    TS_ERR_PROTOCOL_VIOLATION = 9,
    /// The broker failed internally.
    TS_ERR_INTERNAL = 10,
    /// Nothing answers at the socket (no broker, or no permission to connect).
    TS_ERR_UNAVAILABLE = 100,
    /// The connection to the broker was lost (the broker stopped or closed it).
    TS_ERR_DISCONNECTED = 101,
    /// The lease (or the place in the queue) was lost: expired, revoked.
    TS_ERR_LOST = 102,
    /// The broker answered something this library does not understand.
    TS_ERR_PROTOCOL = 103,
    /// The handle is NULL, already closed or released, or of another kind.
    TS_ERR_INVALID_HANDLE = 104,
    /// A queue callback returned non-zero: the request left the queue.
    TS_ERR_CANCELLED = 105,
    /// The handle was closed by another thread while this call waited on it.
    TS_ERR_CLOSED = 106,
    /// A bug in this library (a caught panic); the message says where.
    TS_ERR_PANIC = 107,
}

/// A failed call: its code and its sentence.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: ts_error,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: ts_error, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(ts_error::TS_ERR_INVALID_ARGUMENT, message)
    }

    pub(crate) fn timed_out(what: &str, timeout_ms: u32) -> Failure {
        Failure::new(
            ts_error::TS_ERR_TIMED_OUT,
            format!("{what}: no answer within {timeout_ms} ms"),
        )
    }

    pub(crate) fn closed(what: &str) -> Failure {
        Failure::new(
            ts_error::TS_ERR_CLOSED,
            format!("the {what} was closed while the call waited"),
        )
    }
}

/// The wire's code → ours (the same number).
fn wire_code(code: ErrorCode) -> ts_error {
    use ts_error::*;
    match code {
        ErrorCode::InvalidArgument => TS_ERR_INVALID_ARGUMENT,
        ErrorCode::PermissionDenied => TS_ERR_PERMISSION_DENIED,
        ErrorCode::Busy => TS_ERR_BUSY,
        ErrorCode::NotFound => TS_ERR_NOT_FOUND,
        ErrorCode::ResourceExhausted => TS_ERR_RESOURCE_EXHAUSTED,
        ErrorCode::UnsupportedVersion => TS_ERR_UNSUPPORTED_VERSION,
        ErrorCode::FrameTooLarge => TS_ERR_FRAME_TOO_LARGE,
        ErrorCode::TimedOut => TS_ERR_TIMED_OUT,
        ErrorCode::ProtocolViolation => TS_ERR_PROTOCOL_VIOLATION,
        ErrorCode::Internal | ErrorCode::Unspecified => TS_ERR_INTERNAL,
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let code = match &e {
            ClientError::Connect { .. } => ts_error::TS_ERR_UNAVAILABLE,
            ClientError::Disconnected(_) => ts_error::TS_ERR_DISCONNECTED,
            ClientError::Broker { code, .. } => wire_code(*code),
            ClientError::Lost(l) if l.reason == Some(LostReason::TimedOut) => {
                ts_error::TS_ERR_TIMED_OUT
            }
            ClientError::Lost(_) => ts_error::TS_ERR_LOST,
            ClientError::Protocol(_) => ts_error::TS_ERR_PROTOCOL,
        };
        Failure::new(code, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error.
fn set_last_error(message: &str) {
    // An interior NUL cannot be represented: cut the message there.
    let bytes = message.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let c = CString::new(&bytes[..end]).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
}

/// The last error message of this thread (a pointer into thread-local storage).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// Runs an exported function's body: its `Err` becomes the returned code
/// and this thread's last error message; a panic becomes `TS_ERR_PANIC`.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Failure>) -> ts_error {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            set_last_error("");
            ts_error::TS_OK
        }
        Ok(Err(f)) => {
            set_last_error(&f.message);
            f.code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            set_last_error(&format!("internal error in libturnstile: {what}"));
            ts_error::TS_ERR_PANIC
        }
    }
}

/// The name of a code, `"TS_ERR_BUSY"`; `"TS_ERR_UNKNOWN"` for a number
/// that is not one.
pub(crate) fn name_of(code: i32) -> &'static std::ffi::CStr {
    match code {
        0 => c"TS_OK",
        1 => c"TS_ERR_INVALID_ARGUMENT",
        2 => c"TS_ERR_PERMISSION_DENIED",
        3 => c"TS_ERR_BUSY",
        4 => c"TS_ERR_NOT_FOUND",
        5 => c"TS_ERR_RESOURCE_EXHAUSTED",
        6 => c"TS_ERR_UNSUPPORTED_VERSION",
        7 => c"TS_ERR_FRAME_TOO_LARGE",
        8 => c"TS_ERR_TIMED_OUT",
        9 => c"TS_ERR_PROTOCOL_VIOLATION",
        10 => c"TS_ERR_INTERNAL",
        100 => c"TS_ERR_UNAVAILABLE",
        101 => c"TS_ERR_DISCONNECTED",
        102 => c"TS_ERR_LOST",
        103 => c"TS_ERR_PROTOCOL",
        104 => c"TS_ERR_INVALID_HANDLE",
        105 => c"TS_ERR_CANCELLED",
        106 => c"TS_ERR_CLOSED",
        107 => c"TS_ERR_PANIC",
        _ => c"TS_ERR_UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_code_and_a_message() {
        let code = guard(|| panic!("boom"));
        assert_eq!(code, ts_error::TS_ERR_PANIC);
        let msg = unsafe { std::ffi::CStr::from_ptr(last_error_ptr()) };
        assert!(msg.to_str().unwrap().contains("boom"), "{msg:?}");
    }

    #[test]
    fn every_code_has_its_own_name() {
        for code in [
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100, 101, 102, 103, 104, 105, 106, 107,
        ] {
            assert_ne!(name_of(code), c"TS_ERR_UNKNOWN", "{code}");
        }
        assert_eq!(name_of(42), c"TS_ERR_UNKNOWN");
    }
}
