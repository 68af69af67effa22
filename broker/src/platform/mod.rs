//! Everything that differs between Unix and Windows, one small module per
//! concern, each behind `cfg`: where the socket lives and how it is bound
//! and guarded ([`listener`]), who is calling ([`peer`]), when to stop
//! ([`signals`]) and where durable state goes ([`dirs`]).
//!
//! Porting to a new platform means reading these four files, nothing else.

pub mod dirs;
pub mod groups;
pub mod listener;
pub mod peer;
pub mod readiness;
#[cfg(windows)]
pub mod service;
pub mod signals;
