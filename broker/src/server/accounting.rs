//! Connection accounting: how many connections are open, per uid and in
//! all, against `--max-connections` and `--max-connections-per-uid`, and
//! each uid's handshakes (`--max-handshakes-per-uid`) and what its
//! connections have queued to go out (`--max-outbound-bytes-per-uid`,
//! [`UidOutbound`]). A [`ConnectionSlot`]
//! is one connection's place; dropping it (when the connection's reader
//! ends) gives the place back.
//!
//! The handshake bound is per uid, not global: the uid is known at accept
//! (the kernel's word), so one user's silent connections make only that
//! user's further connections wait, never another user's (the pattern of
//! CVE-2014-3639 in dbus-daemon).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::ServerConfig;
use super::outbound::UidOutbound;

/// Counts of open connections, per uid and in all. A slot is released when
/// its connection's reader ends.
#[derive(Default)]
pub(super) struct Counts {
    total: usize,
    per_uid: HashMap<u32, UidCount>,
}

/// One uid's open connections, its handshake permits and its outbound
/// account (shared by its connections; forgotten with its last connection).
struct UidCount {
    connections: usize,
    handshakes: Arc<Semaphore>,
    outbound: Arc<UidOutbound>,
}

/// One connection's place in the counts; dropping it gives the place back.
pub struct ConnectionSlot {
    counts: Arc<Mutex<Counts>>,
    uid: u32,
    handshakes: Arc<Semaphore>,
    outbound: Arc<UidOutbound>,
}

impl ConnectionSlot {
    /// Waits for one of this uid's handshake permits: at most
    /// `--max-handshakes-per-uid` of a uid's connections are between accept
    /// and Hello; the others wait their turn (an honest burst is slowed,
    /// not refused), and other uids are not concerned.
    pub async fn handshake_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.handshakes.clone().acquire_owned().await.ok()
    }

    /// The account of what the uid's connections have queued to go out.
    pub fn outbound(&self) -> Arc<UidOutbound> {
        self.outbound.clone()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.counts.lock() {
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.per_uid.get_mut(&self.uid) {
                n.connections = n.connections.saturating_sub(1);
                if n.connections == 0 {
                    c.per_uid.remove(&self.uid);
                }
            }
        }
    }
}

pub(super) fn take_slot(
    counts: &Arc<Mutex<Counts>>,
    config: &ServerConfig,
    uid: u32,
) -> Result<ConnectionSlot, String> {
    let mut c = counts
        .lock()
        .map_err(|_| "internal error: connection counts poisoned".to_string())?;
    if c.total >= config.max_connections {
        return Err(format!(
            "the broker has {} connections, its limit (--max-connections)",
            c.total
        ));
    }
    let privileged = uid == 0 || uid == config.own_uid;
    let mine = c.per_uid.get(&uid).map_or(0, |n| n.connections);
    if !privileged && mine >= config.max_connections_per_uid {
        return Err(format!(
            "uid {uid} already has {mine} connections, the per-user limit (--max-connections-per-uid)"
        ));
    }
    c.total += 1;
    let n = c.per_uid.entry(uid).or_insert_with(|| UidCount {
        connections: 0,
        handshakes: Arc::new(Semaphore::new(config.max_handshakes_per_uid)),
        outbound: if privileged {
            UidOutbound::new(usize::MAX, usize::MAX)
        } else {
            UidOutbound::new(
                config.max_outbound_bytes_per_uid,
                config.report_bytes_per_uid_per_second,
            )
        },
    });
    n.connections += 1;
    Ok(ConnectionSlot {
        counts: counts.clone(),
        uid,
        handshakes: n.handshakes.clone(),
        outbound: n.outbound.clone(),
    })
}
