//! Everything that differs between Unix and Windows, one small module per
//! concern, each behind `cfg`: where the socket lives and how it is bound
//! and guarded ([`listener`], with the pipe's DACL), who is calling
//! ([`peer`], [`groups`]), when to stop ([`signals`]), telling the service
//! manager ([`readiness`]; the Windows SCM in `service`), and where durable
//! state goes ([`dirs`]) and how its directory is made private and durable
//! ([`fs`]); how a connection splits into reader and writer ([`stream`]).
//!
//! Porting to a new platform means reading these files, nothing else.

pub mod dirs;
pub mod fs;
pub mod groups;
pub mod listener;
pub mod peer;
pub mod readiness;
#[cfg(windows)]
pub mod service;
pub mod signals;
pub mod stream;
