//! Everything that differs between Unix and Windows, one small module per
//! concern, each behind `cfg`: where the socket lives and how it is bound
//! and guarded ([`listener`], with the pipe's DACL), who is calling
//! ([`peer`], [`groups`]), user and group names ([`accounts`]), when to stop
//! ([`signals`]), telling the service manager ([`readiness`]; the Windows
//! SCM in [`service`]), where durable state goes ([`dirs`]) and how its
//! directory is made private and durable ([`fs`]), how a connection splits
//! into reader and writer ([`stream`]), and how many files it may open
//! ([`limits`]), and what the machine is called ([`host`]).
//!
//! Porting to a new platform means reading these files, nothing else.
//! `cfg(unix)` and `cfg(windows)` appear nowhere else in the broker, and
//! this is a leaf: nothing here imports the policy, the server or the
//! command line (the policy implements its view of a peer on its side; the
//! command line hands the service its entry point as a function).

pub mod accounts;
pub mod dirs;
pub mod fs;
pub mod groups;
pub mod host;
pub mod limits;
pub mod listener;
pub mod peer;
pub mod readiness;
pub mod service;
pub mod signals;
pub mod stream;
