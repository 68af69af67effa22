//! The JSON the fleet writes into etcd. Field names are a documented,
//! stable schema (README "Many machines"): other tools read them.

use serde::{Deserialize, Serialize};

use crate::core::{LeaseView, Mode, ResourceView};

/// `PREFIX/hosts/HOST`: a broker of the fleet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostRecord {
    /// `--host-name`.
    pub host: String,
    /// The broker's version.
    pub broker_version: String,
    /// The broker's process id.
    pub pid: u32,
    /// When it (re-)registered, in milliseconds since the Unix epoch.
    pub registered_at_ms: u64,
    /// Its etcd lease's TTL, in milliseconds.
    pub ttl_ms: u64,
    /// Its etcd lease (hex, as etcdctl prints it).
    pub etcd_lease: String,
}

/// `PREFIX/hosts/HOST/resources/NAME`: one resource's state on a host.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResourceRecord {
    /// The resource.
    pub resource: String,
    /// The host's revision of its last change.
    pub revision: u64,
    /// Its semaphore capacity; 0 = not a semaphore.
    pub capacity: u32,
    /// Permits held now.
    pub permits_held: u32,
    /// Holders, in grant order.
    pub holders: Vec<LeaseRecord>,
    /// Waiters, first in line first.
    pub waiters: Vec<LeaseRecord>,
    /// When the host wrote this, in milliseconds since the Unix epoch.
    pub written_at_ms: u64,
}

/// One lease in a [`ResourceRecord`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LeaseRecord {
    /// The host's lease id.
    pub lease_id: u64,
    /// "exclusive" or "shared".
    pub mode: String,
    /// What it is for.
    pub purpose: String,
    /// The holder's client name.
    pub client: String,
    /// The holder's process id.
    pub pid: u32,
    /// The holder's uid.
    pub uid: u32,
    /// The holder's account name ("" if none).
    pub user: String,
    /// Permits it takes (0: not a semaphore).
    pub permits: u32,
    /// Its fencing token, once granted.
    pub fencing_token: Option<u64>,
    /// Its progress: done, total, message.
    pub progress: Option<(u32, u32, String)>,
}

/// The value of a request's key in a global queue.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QueueRecord {
    /// The host that asked.
    pub host: String,
    /// Its lease id there.
    pub lease_id: u64,
    /// "exclusive" or "shared".
    pub mode: String,
    /// Permits it takes (SHARED on a semaphore).
    pub permits: u32,
    /// The capacity it named (0: not a semaphore).
    pub capacity: u32,
    /// What it is for.
    pub purpose: String,
    /// The requester's client name and pid.
    pub client: String,
    /// The requester's pid.
    pub pid: u32,
}

/// The name of a mode in the records.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Exclusive => "exclusive",
        Mode::Shared => "shared",
    }
}

impl LeaseRecord {
    /// The record of a lease view.
    pub fn of(v: &LeaseView) -> LeaseRecord {
        LeaseRecord {
            lease_id: v.lease_id.0,
            mode: mode_name(v.mode).to_string(),
            purpose: v.purpose.to_string(),
            client: v.holder.client_name.clone(),
            pid: v.holder.pid,
            uid: v.holder.uid,
            user: v.holder.user.clone(),
            permits: v.permits,
            fencing_token: v.fencing.map(|f| f.0),
            progress: v
                .progress
                .as_ref()
                .map(|p| (p.done, p.total, p.message.to_string())),
        }
    }
}

impl ResourceRecord {
    /// The record of a resource's state, written at `now_ms` (wall clock).
    pub fn of(v: &ResourceView, now_ms: u64) -> ResourceRecord {
        ResourceRecord {
            resource: v.resource.to_string(),
            revision: v.revision.0,
            capacity: v.capacity,
            permits_held: v.permits_held,
            holders: v.holders.iter().map(LeaseRecord::of).collect(),
            waiters: v.waiters.iter().map(LeaseRecord::of).collect(),
            written_at_ms: now_ms,
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
