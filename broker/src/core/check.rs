//! One checker of the lease table's invariants, as `status` shows them,
//! shared by the property tests (`tests/props.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/core_ops.rs`). Compiled for tests and under
//! `cfg(fuzzing)` only; the broker itself never calls it.
//!
//! It reads the core from outside (status and peers) and changes nothing.

use std::collections::HashSet;

use super::{Core, Millis, Mode};

/// Checks, as of `expired_by` when given (the clock moved and `expire` ran
/// up to then):
/// - every listed resource is in use, listed once, in name order;
/// - its holders are one EXCLUSIVE lease or SHARED ones only, each with a
///   fencing token, position 0 and (as of `expired_by`) an expiry still
///   ahead, unless detached (a detached holder's TTL does not run: it has
///   no expiry);
/// - on a semaphore, the holders' permits are `permits_held` and at most
///   the capacity;
/// - its waiters are numbered 1, 2, ... with no token, and the head could
///   not go now (it does not fit beside the holders, or its permits do not
///   fit among those free);
/// - every lease appears once and belongs to an open session, unless it is
///   detached (its session closed within its grace).
///
/// The error says which rule broke, and where.
pub fn lease_table(core: &Core, expired_by: Option<Millis>) -> Result<(), String> {
    let status = core.status(&[]);
    if status.revision != core.revision() {
        return Err(format!(
            "status shows revision {} but the core is at {}",
            status.revision,
            core.revision()
        ));
    }
    let mut seen = HashSet::new();
    for pair in status.resources.windows(2) {
        if pair[0].resource >= pair[1].resource {
            return Err(format!(
                "resources not in name order or repeated: {} then {}",
                pair[0].resource, pair[1].resource
            ));
        }
    }
    for r in &status.resources {
        let name = &r.resource;
        if r.holders.is_empty() && r.waiters.is_empty() {
            return Err(format!("{name} is listed but unused"));
        }
        let exclusive = r
            .holders
            .iter()
            .filter(|h| h.mode == Mode::Exclusive)
            .count();
        if exclusive > 0 && r.holders.len() > 1 {
            return Err(format!(
                "{name}: an EXCLUSIVE holder beside others: {:?}",
                r.holders
            ));
        }
        for h in &r.holders {
            if h.position != 0 {
                return Err(format!(
                    "{name}: holder {} at position {}",
                    h.lease_id, h.position
                ));
            }
            if h.fencing.is_none() {
                return Err(format!(
                    "{name}: holder {} has no fencing token",
                    h.lease_id
                ));
            }
            match (h.expires_at, expired_by) {
                (None, _) if h.detached => {}
                (Some(_), _) if h.detached => {
                    return Err(format!(
                        "{name}: detached holder {} has an expiry",
                        h.lease_id
                    ));
                }
                (None, _) => return Err(format!("{name}: holder {} has no expiry", h.lease_id)),
                (Some(at), Some(now)) if at <= now => {
                    return Err(format!("{name}: {} held past its expiry", h.lease_id));
                }
                _ => {}
            }
        }
        for (i, w) in r.waiters.iter().enumerate() {
            if w.position as usize != i + 1 {
                return Err(format!(
                    "{name}: waiter {} at position {} (index {i})",
                    w.lease_id, w.position
                ));
            }
            if w.fencing.is_some() {
                return Err(format!("{name}: waiter {} has a fencing token", w.lease_id));
            }
        }
        let held: u64 = r.holders.iter().map(|h| u64::from(h.permits)).sum();
        if held != u64::from(r.permits_held) {
            return Err(format!(
                "{name}: permits_held {} but the holders take {held}",
                r.permits_held
            ));
        }
        if r.capacity > 0 && held > u64::from(r.capacity) {
            return Err(format!("{name}: {held} permits held of {}", r.capacity));
        }
        if let Some(head) = r.waiters.first() {
            let fits = match head.mode {
                _ if r.capacity > 0 => held + u64::from(head.permits) <= u64::from(r.capacity),
                Mode::Exclusive => r.holders.is_empty(),
                Mode::Shared => exclusive == 0,
            };
            if fits {
                return Err(format!(
                    "{name}: head waiter {} could go but waits",
                    head.lease_id
                ));
            }
        }
        for l in r.holders.iter().chain(&r.waiters) {
            if !seen.insert(l.lease_id) {
                return Err(format!("lease {} listed twice", l.lease_id));
            }
            if !l.detached && core.peer(l.holder.session).is_none() {
                return Err(format!(
                    "lease {} of closed or unknown session {}",
                    l.lease_id, l.holder.session
                ));
            }
        }
    }
    Ok(())
}
