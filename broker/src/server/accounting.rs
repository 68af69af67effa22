//! Connection accounting: how many connections are open, per uid and in
//! all, against `--max-connections` and `--max-connections-per-uid`. A
//! [`ConnectionSlot`] is one connection's place; dropping it (when the
//! connection's reader ends) gives the place back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::ServerConfig;

/// Counts of open connections, per uid and in all. A slot is released when
/// its connection's reader ends.
#[derive(Default)]
pub(super) struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// One connection's place in the counts; dropping it gives the place back.
pub struct ConnectionSlot {
    counts: Arc<Mutex<Counts>>,
    uid: u32,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.counts.lock() {
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.per_uid.get_mut(&self.uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
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
    let mine = c.per_uid.get(&uid).copied().unwrap_or(0);
    if !privileged && mine >= config.max_connections_per_uid {
        return Err(format!(
            "uid {uid} already has {mine} connections, the per-user limit (--max-connections-per-uid)"
        ));
    }
    c.total += 1;
    *c.per_uid.entry(uid).or_insert(0) += 1;
    Ok(ConnectionSlot {
        counts: counts.clone(),
        uid,
    })
}
