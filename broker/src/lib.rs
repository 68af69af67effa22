//! The turnstile broker.
//!
//! - [`core`]: the pure state machine (sessions, leases, watches, queues); no I/O.
//! - [`server`]: the transport that drives it over local sockets.
//! - [`store`]: durable storage of queues and counters (redb).
//! - [`platform`]: what differs between Unix and Windows.
//! - [`fleet`]: many hosts: the mirror into etcd and `global/` resources.
//! - [`config`] and [`cli`]: `turnstiled`'s flags, config file and entry point.
//!
//! The binary `turnstiled` lives in the root package and calls [`cli::main`].

#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod core;
pub mod fleet;
pub mod platform;
pub mod policy;
pub mod server;
pub mod store;
