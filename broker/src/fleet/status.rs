//! `turnstile fleet status [--json]`: every host of the fleet and its
//! resources, read from etcd directly (not through the local broker: it
//! works when the local broker is down or is not in the fleet, and needs
//! no message of the local protocol).

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, SortOrder, SortTarget};
use serde::Serialize;

use super::keys::{HostKey, Keys};
use super::records::{HostRecord, QueueRecord, ResourceRecord};

/// One host as `fleet status` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HostStatus {
    /// Its name.
    pub host: String,
    /// Its description (absent if only its resources were seen).
    pub record: Option<HostRecord>,
    /// Its resources, by name.
    pub resources: Vec<ResourceRecord>,
}

/// One global queue as `fleet status` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GlobalQueue {
    /// The resource.
    pub resource: String,
    /// Its requests, oldest first, with their etcd create revisions.
    pub requests: Vec<(i64, QueueRecord)>,
}

/// The whole fleet, as `--json` prints it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FleetStatus {
    /// The etcd revision the snapshot was read at.
    pub revision: i64,
    /// Every host, by name.
    pub hosts: Vec<HostStatus>,
    /// Every global queue, by name.
    pub global: Vec<GlobalQueue>,
}

/// Reads the fleet under `prefix` from etcd.
pub async fn read(endpoints: &[String], prefix: &str) -> Result<FleetStatus, String> {
    let keys = Keys::new(prefix);
    let limit = Duration::from_secs(5);
    let options = ConnectOptions::new()
        .with_connect_timeout(limit)
        .with_timeout(limit);
    let mut client = Client::connect(endpoints, Some(options))
        .await
        .map_err(|e| format!("cannot connect to etcd {endpoints:?}: {e}"))?;
    let hosts = client
        .get(keys.hosts(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("cannot read {}: {e}", keys.hosts()))?;
    let revision = hosts.header().map_or(0, |h| h.revision());
    let mut by_host: BTreeMap<String, HostStatus> = BTreeMap::new();
    for kv in hosts.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        match keys.host_key(&key) {
            Some(HostKey::Host(h)) => {
                let entry = by_host.entry(h.clone()).or_insert_with(|| HostStatus {
                    host: h,
                    record: None,
                    resources: Vec::new(),
                });
                entry.record = serde_json::from_slice(kv.value()).ok();
            }
            Some(HostKey::Resource(h, _)) => {
                if let Ok(r) = serde_json::from_slice::<ResourceRecord>(kv.value()) {
                    by_host
                        .entry(h.clone())
                        .or_insert_with(|| HostStatus {
                            host: h,
                            record: None,
                            resources: Vec::new(),
                        })
                        .resources
                        .push(r);
                }
            }
            None => {}
        }
    }
    for h in by_host.values_mut() {
        h.resources.sort_by(|a, b| a.resource.cmp(&b.resource));
    }
    let queues = client
        .get(
            keys.global(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Ascend)
                    .with_revision(revision),
            ),
        )
        .await
        .map_err(|e| format!("cannot read {}: {e}", keys.global()))?;
    let mut global: BTreeMap<String, Vec<(i64, QueueRecord)>> = BTreeMap::new();
    for kv in queues.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        if let (Some(resource), Ok(record)) = (
            keys.waiter_resource(&key),
            serde_json::from_slice::<QueueRecord>(kv.value()),
        ) {
            global
                .entry(resource)
                .or_default()
                .push((kv.create_revision(), record));
        }
    }
    Ok(FleetStatus {
        revision,
        hosts: by_host.into_values().collect(),
        global: global
            .into_iter()
            .map(|(resource, requests)| GlobalQueue { resource, requests })
            .collect(),
    })
}

/// The human view of a [`FleetStatus`].
pub fn render(status: &FleetStatus) -> String {
    let mut out = String::new();
    if status.hosts.is_empty() {
        out.push_str("no host in the fleet\n");
    }
    for h in &status.hosts {
        match &h.record {
            Some(r) => out.push_str(&format!(
                "host {} (turnstiled {}, pid {}, etcd lease {}, ttl {} ms)\n",
                h.host, r.broker_version, r.pid, r.etcd_lease, r.ttl_ms
            )),
            None => out.push_str(&format!("host {}\n", h.host)),
        }
        if h.resources.is_empty() {
            out.push_str("  (no resource in use)\n");
        }
        for r in &h.resources {
            out.push_str(&format!(
                "  {}: {} holding, {} waiting\n",
                r.resource,
                r.holders.len(),
                r.waiters.len()
            ));
            for l in &r.holders {
                out.push_str(&format!(
                    "    held by {} (pid {}) {} for \"{}\"{}\n",
                    l.client,
                    l.pid,
                    l.mode,
                    l.purpose,
                    l.fencing_token
                        .map(|t| format!(", token {t}"))
                        .unwrap_or_default()
                ));
            }
            for (i, l) in r.waiters.iter().enumerate() {
                out.push_str(&format!(
                    "    {}. {} (pid {}) {} for \"{}\"\n",
                    i + 1,
                    l.client,
                    l.pid,
                    l.mode,
                    l.purpose
                ));
            }
        }
    }
    for q in &status.global {
        out.push_str(&format!("global queue {}:\n", q.resource));
        for (i, (rev, r)) in q.requests.iter().enumerate() {
            out.push_str(&format!(
                "  {}. {} lease {} {} for \"{}\" (revision {rev})\n",
                i + 1,
                r.host,
                r.lease_id,
                r.mode,
                r.purpose
            ));
        }
    }
    out
}
