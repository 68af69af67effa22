//! libturnstile: the turnstile client behind a C ABI, for C, C++, C#
//! (P/Invoke), Python (ctypes), Go (cgo) and every other FFI.
//!
//! It wraps the Rust client (`turnstile-client`): one implementation of the
//! framing, the keep-alive, the routing of pushes and the reconnects for
//! every language. The header `include/turnstile.h` is generated from this
//! crate by cbindgen (`tests/header.rs` fails when it is stale) and states
//! every rule of the ABI: who frees what, which thread runs what.
//!
//! What it owns: the handle table (`handles`), the library's threads
//! (`runtime`), the conversion of errors (`error`), of arguments
//! (`strings`) and of nested answers to JSON (`json`). What it does not do:
//! any protocol work; that is all `turnstile-client`'s.

#![deny(missing_docs)]
#![allow(non_camel_case_types)]

mod client;
mod consumer;
mod error;
mod events;
mod handles;
mod history;
mod holder;
mod json;
mod lease;
mod runtime;
mod strings;
mod watch;

use std::ffi::c_char;

pub use client::*;
pub use consumer::*;
pub use error::ts_error;
pub use events::ts_notify_fn;
pub use history::*;
pub use holder::*;
pub use lease::*;
pub use watch::*;

/// `timeout_ms` value: wait as long as it takes.
pub const TS_WAIT_FOREVER: u32 = u32::MAX;

/// The library's version, e.g. "0.1.0" (a static string: do not free).
#[unsafe(no_mangle)]
pub extern "C" fn ts_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The name of an error code, e.g. "TS_ERR_BUSY" ("TS_ERR_UNKNOWN" for a
/// number that is none). A static string: do not free.
#[unsafe(no_mangle)]
pub extern "C" fn ts_error_name(code: i32) -> *const c_char {
    error::name_of(code).as_ptr()
}

/// Why the last call on this thread failed, in a sentence (UTF-8; "" after
/// a call that succeeded). The string belongs to the calling thread: valid
/// until its next call of a `ts_` function. Do not free.
#[unsafe(no_mangle)]
pub extern "C" fn ts_last_error_message() -> *const c_char {
    error::last_error_ptr()
}

/// How many handles of any kind are open in this process (for tests and
/// leak checks: 0 once everything is closed and released).
#[unsafe(no_mangle)]
pub extern "C" fn ts_open_handles() -> usize {
    std::panic::catch_unwind(handles::live).unwrap_or(0)
}
