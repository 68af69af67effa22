//! The fleet (DESIGN "Fleet", issue #18): one broker per host, every
//! host's state mirrored into etcd, and `global/` resources arbitrated
//! across hosts by etcd (its leases, create-revision order and watches),
//! never by a cluster of turnstile's own.
//!
//! The core stays pure: it never talks to etcd. It refuses `global/`
//! names without a fleet and grants a `global/` waiter only once the
//! fleet task *admits* it ([`crate::core::Core::admit`], with the fencing
//! token etcd gave it); when the fleet task cannot vouch for its etcd
//! lease any more it tells the core so ([`crate::core::Core::fleet_lost`]),
//! which takes every `global/` holder's lease back. The fleet task learns
//! what happens locally from a watch of every resource that the core task
//! hands it, newest state per resource ([`Inbox`]).
//!
//! This module owns the key layout ([`keys`]), the JSON records
//! ([`records`]), the admission rule ([`admission`]) and, with the `fleet`
//! cargo feature, the etcd task (`etcd.rs`) and `turnstile fleet status`
//! (`status.rs`). It does not own the core's gate (in
//! `core/leases`) nor the dispatcher's side (`server/dispatch/fleet.rs`).

pub mod admission;
#[cfg(feature = "fleet")]
mod etcd;
pub mod keys;
pub mod records;
#[cfg(feature = "fleet")]
pub mod status;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::{FencingToken, LeaseId, LeaseView, StateEvent};

/// Whether this build can join a fleet (the `fleet` cargo feature).
pub const AVAILABLE: bool = cfg!(feature = "fleet");

/// The fleet's settings (`--fleet-*` flags and config keys).
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// etcd endpoints (`--fleet-etcd URL[,URL...]`).
    pub endpoints: Vec<String>,
    /// Prefix of every key (`--fleet-prefix`, default `/turnstile`).
    pub prefix: String,
    /// This host's name in the fleet (`--host-name`, default the OS's).
    pub host: String,
    /// TTL of the broker's etcd lease (`--fleet-ttl`, default 10 s).
    pub ttl: Duration,
    /// Least time between two writes of one resource's mirrored state
    /// (`--fleet-mirror-interval`, default 200 ms).
    pub mirror_interval: Duration,
}

impl FleetConfig {
    /// How long before the etcd lease can run out at etcd the broker gives
    /// up its global holders: a fifth of the TTL, at least 500 ms, at most
    /// half of it.
    pub fn margin(&self, ttl: Duration) -> Duration {
        (ttl / 5).max(Duration::from_millis(500)).min(ttl / 2)
    }
}

/// The endpoints of `URL[,URL...]`.
pub fn endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// What the fleet task tells the core task. `epoch` counts the fleet's
/// registrations with etcd: an admission of an epoch that was lost is
/// void (it may reach the core task after the loss).
#[derive(Clone, Debug, PartialEq)]
pub enum FleetEvent {
    /// The waiter `lease` of a `global/` resource may be granted, with
    /// this fencing token (its etcd key's create revision).
    Admit {
        /// The registration it was decided under.
        epoch: u64,
        /// The local lease.
        lease: LeaseId,
        /// Its fencing token.
        token: FencingToken,
    },
    /// Where the waiter `lease` of a `global/` resource stands across
    /// hosts: its position among the waiters of the etcd queue, and the
    /// requests ahead of it (holders first; `holder.client_name` says
    /// which host).
    Place {
        /// The registration it was seen under.
        epoch: u64,
        /// The local lease.
        lease: LeaseId,
        /// 1 = next in line across hosts.
        position: u32,
        /// The requests ahead.
        ahead: Vec<LeaseView>,
    },
    /// The registration `epoch` is lost (or cannot be vouched for): every
    /// `global/` holder loses its lease, with `detail`.
    Lost {
        /// The registration lost.
        epoch: u64,
        /// Why, for the holders.
        detail: String,
    },
}

/// The newest state of every resource that changed since the fleet task
/// last looked: the core task puts, the fleet task takes. Bounded by the
/// number of resources, whatever the rate of changes.
#[derive(Default)]
pub struct Inbox {
    pending: Mutex<std::collections::HashMap<Arc<str>, Arc<StateEvent>>>,
    notify: tokio::sync::Notify,
}

impl Inbox {
    /// Records the newest state of a resource (the core task): the
    /// event its watchers get, shared, never copied.
    pub fn put(&self, event: Arc<StateEvent>) {
        if let Ok(mut p) = self.pending.lock() {
            p.insert(event.state.resource.clone(), event);
        }
        self.notify.notify_one();
    }

    /// Takes every state recorded since the last call.
    pub fn take(&self) -> Vec<Arc<StateEvent>> {
        match self.pending.lock() {
            Ok(mut p) => p.drain().map(|(_, v)| v).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Resolves once something was put since the last [`Inbox::take`].
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

/// Starts the fleet task: it registers with etcd, mirrors the states it
/// gets from `inbox`, arbitrates `global/` resources and tells the core
/// task through `tell`, until `stop` is cancelled (then it revokes its
/// etcd lease, so that its keys go at once).
#[cfg(feature = "fleet")]
pub fn spawn<T: From<FleetEvent> + Send + 'static>(
    config: FleetConfig,
    inbox: Arc<Inbox>,
    tell: tokio::sync::mpsc::Sender<T>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(etcd::run(config, inbox, tell, stop))
}

/// `turnstile fleet status [--json] --fleet-etcd URL[,URL...]
/// [--fleet-prefix PREFIX]` (arguments parsed by the CLI): every host of
/// the fleet and its resources, read from etcd. Exit codes: 0, 69 etcd
/// cannot be read (or this build has no fleet), 70 internal.
pub fn status_main(etcd: &str, prefix: &str, json: bool) -> std::process::ExitCode {
    use std::process::ExitCode;
    let endpoints = endpoints(etcd);
    #[cfg(feature = "fleet")]
    {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("turnstile fleet status: {e}");
                return ExitCode::from(70);
            }
        };
        match runtime.block_on(status::read(&endpoints, prefix)) {
            Ok(s) if json => {
                println!("{}", serde_json::to_string(&s).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Ok(s) => {
                print!("{}", status::render(&s));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("turnstile fleet status: {e}");
                ExitCode::from(69)
            }
        }
    }
    #[cfg(not(feature = "fleet"))]
    {
        let _ = (json, endpoints, prefix);
        eprintln!(
            "turnstile fleet status: this turnstile was built without the `fleet` feature (cargo build --features fleet)"
        );
        ExitCode::from(69)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::config::Settings;

    fn resolve(args: &[&str]) -> Result<crate::config::Config, String> {
        let mut argv = vec!["turnstiled"];
        argv.extend_from_slice(args);
        Settings::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .resolve()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn fleet_flags_resolve_with_their_defaults_or_are_refused() {
        let none = resolve(&[]).unwrap();
        assert!(none.server.fleet.is_none() && !none.server.core.fleet);
        let given = resolve(&[
            "--fleet-etcd",
            "http://a:2379, http://b:2379",
            "--host-name",
            "pc42",
        ]);
        if !super::AVAILABLE {
            let e = given.unwrap_err();
            assert!(e.contains("without the `fleet` feature"), "{e}");
            return;
        }
        let c = given.unwrap();
        let f = c.server.fleet.unwrap();
        assert!(c.server.core.fleet);
        assert_eq!(f.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!((f.prefix.as_str(), f.host.as_str()), ("/turnstile", "pc42"));
        assert_eq!(f.ttl, std::time::Duration::from_secs(10));
        assert_eq!(f.margin(f.ttl), std::time::Duration::from_secs(2));
        for bad in [
            &["--fleet-etcd", "http://a:2379", "--fleet-ttl", "1s"][..],
            &["--fleet-etcd", ","][..],
            &["--fleet-etcd", "http://a:2379", "--host-name", ""][..],
            &[
                "--fleet-etcd",
                "http://a:2379",
                "--fleet-mirror-interval",
                "0s",
            ][..],
        ] {
            assert!(resolve(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
