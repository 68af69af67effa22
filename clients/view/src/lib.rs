//! The JSON views of the broker's answers: one `serde` struct per thing
//! shown, the schema documented in `docs/json.md` (`turnstile --json`).
//! Shared by the CLI and libturnstile (`ts_status`, watch events), so that
//! a C program reads exactly what a script reads from the CLI. Wall-clock
//! instants come twice, as epoch milliseconds (`*_ms`) and as RFC 3339 UTC
//! text (`*_at`); a value that does not apply (a waiter's fencing token, a
//! lease with no purpose) is `null`, never 0 or "".
//!
//! Built from the wire types here and nowhere else, so that the schema
//! changes only with this crate (and its document). What it does not do:
//! print (the CLI does), or own any per-command view (the CLI's watch line).

#![deny(missing_docs)]

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use turnstile_client::proto as v1;
use turnstile_client::{Mode, ShortName, kinds};

/// RFC 3339 UTC with milliseconds, for epoch ms; `None` for 0 (not set).
pub fn rfc3339(ms: u64) -> Option<String> {
    (ms > 0).then(|| {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    })
}

fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn nonzero<T: Default + PartialEq>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

/// A lease's mode: `SHARED`, `EXCLUSIVE`, or `?` for one this build does
/// not know.
pub fn mode(l: &v1::Lease) -> &'static str {
    match kinds::mode(l) {
        Some(m @ (Mode::Shared | Mode::Exclusive)) => m.short_name(),
        Some(Mode::Unspecified) | None => "?",
    }
}

/// The login name of `uid` on this machine, `None` when it has none (or
/// the platform has no numeric uids).
#[cfg(unix)]
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids); it is
    // only read after getpwuid_r has filled it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to a live local of the stated size;
    // getpwuid_r writes the strings into `buf` and points `pwd` at them.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points at a NUL-terminated string inside `buf`,
    // which outlives this borrow.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

/// The login name of `uid`: none on platforms without numeric uids.
#[cfg(not(unix))]
pub fn user_name(_uid: u32) -> Option<String> {
    None
}

/// A connection as the broker sees it.
#[derive(Serialize)]
pub struct PeerView {
    /// What the client calls itself (`null` if nothing).
    pub client_name: Option<String>,
    /// Its uid, from the kernel.
    pub uid: u32,
    /// The uid's account name as the broker's OS gives it (else as this
    /// machine's), `null` when there is none.
    pub user: Option<String>,
    /// Its pid, from the kernel.
    pub pid: u32,
    /// The broker's id for the connection.
    pub session_id: u64,
    /// Its logon session as the OS knows it; `null` when unknown.
    pub login_session: Option<String>,
}

impl From<&v1::Peer> for PeerView {
    fn from(p: &v1::Peer) -> PeerView {
        PeerView {
            client_name: text(&p.client_name),
            uid: p.uid,
            user: text(&p.user).or_else(|| user_name(p.uid)),
            pid: p.pid,
            session_id: p.session_id,
            login_session: text(&p.login_session),
        }
    }
}

/// A holder's last progress report.
#[derive(Serialize)]
pub struct ProgressView {
    /// Steps done.
    pub done: u32,
    /// Steps in all; `null` when unknown.
    pub total: Option<u32>,
    /// What it is doing.
    pub message: Option<String>,
}

/// One lease, held or waiting.
#[derive(Serialize)]
pub struct LeaseView {
    /// The lease's id.
    pub lease_id: u64,
    /// The resource.
    pub resource: String,
    /// "EXCLUSIVE" or "SHARED".
    pub mode: &'static str,
    /// What it is for.
    pub purpose: Option<String>,
    /// Who holds it or waits for it.
    pub holder: Option<PeerView>,
    /// The grant's fencing token; `null` while waiting.
    pub fencing_token: Option<u64>,
    /// The last progress report.
    pub progress: Option<ProgressView>,
    /// When it was granted (epoch ms); `null` while waiting.
    pub granted_at_ms: Option<u64>,
    /// The same in RFC 3339.
    pub granted_at: Option<String>,
    /// When it joined the queue (epoch ms); `null` if it never waited.
    pub queued_at_ms: Option<u64>,
    /// The same in RFC 3339.
    pub queued_at: Option<String>,
    /// Time left before it expires unless kept alive (ms); `null` while
    /// waiting.
    pub expires_in_ms: Option<u32>,
    /// Place in the queue, 1 = next; `null` for a holder.
    pub position: Option<u32>,
    /// Permits it takes of a counting semaphore; `null` otherwise.
    pub permits: Option<u32>,
    /// Its process is gone and its place is kept for a re-attach.
    pub detached: bool,
    /// Alive and keeping its lease, but no progress for its stall time.
    pub stalled: bool,
    /// For a waiter: the broker's estimate of its wait (ms), the figure
    /// `run`, `why`, `status` and `top` show; `null` when there is none.
    pub estimated_wait_ms: Option<u32>,
}

impl From<&v1::Lease> for LeaseView {
    fn from(l: &v1::Lease) -> LeaseView {
        LeaseView {
            lease_id: l.lease_id,
            resource: l.resource.clone(),
            mode: mode(l),
            purpose: text(&l.purpose),
            holder: l.holder.as_ref().map(PeerView::from),
            fencing_token: nonzero(l.fencing_token),
            progress: l.progress.as_ref().map(|p| ProgressView {
                done: p.done,
                total: nonzero(p.total),
                message: text(&p.message),
            }),
            granted_at_ms: nonzero(l.granted_at_ms),
            granted_at: rfc3339(l.granted_at_ms),
            queued_at_ms: nonzero(l.queued_at_ms),
            queued_at: rfc3339(l.queued_at_ms),
            expires_in_ms: (l.granted_at_ms > 0).then_some(l.expires_in_ms),
            position: nonzero(l.position),
            permits: nonzero(l.permits),
            detached: l.detached,
            stalled: l.stalled,
            estimated_wait_ms: nonzero(l.estimated_wait_ms),
        }
    }
}

/// One resource's state.
#[derive(Serialize)]
pub struct ResourceView {
    /// The resource.
    pub resource: String,
    /// The revision of its last change.
    pub revision: u64,
    /// Who holds it, oldest grant first.
    pub holders: Vec<LeaseView>,
    /// Who waits, in queue order.
    pub waiters: Vec<LeaseView>,
    /// Permits of a counting semaphore; `null` for a plain resource.
    pub capacity: Option<u32>,
    /// Permits held now; `null` for a plain resource.
    pub permits_held: Option<u32>,
}

impl From<&v1::ResourceState> for ResourceView {
    fn from(r: &v1::ResourceState) -> ResourceView {
        ResourceView {
            resource: r.resource.clone(),
            revision: r.revision,
            holders: r.holders.iter().map(LeaseView::from).collect(),
            waiters: r.waiters.iter().map(LeaseView::from).collect(),
            capacity: nonzero(r.capacity),
            permits_held: (r.capacity > 0).then_some(r.permits_held),
        }
    }
}

/// One queue's counts.
#[derive(Serialize)]
pub struct QueueView {
    /// The queue.
    pub queue: String,
    /// Messages ready to deliver.
    pub ready: u64,
    /// Messages delivered and not yet settled.
    pub unacked: u64,
    /// Consumers attached.
    pub consumers: u64,
}

impl From<&v1::QueueInfo> for QueueView {
    fn from(q: &v1::QueueInfo) -> QueueView {
        QueueView {
            queue: q.queue.clone(),
            ready: q.ready,
            unacked: q.unacked,
            consumers: q.consumers.into(),
        }
    }
}

/// `turnstile status --json`.
#[derive(Serialize)]
pub struct StatusView {
    /// The broker's revision when it answered.
    pub revision: u64,
    /// The resources asked for (every one in use when none named).
    pub resources: Vec<ResourceView>,
    /// Every queue.
    pub queues: Vec<QueueView>,
    /// Resources were left out so that the answer fits in one frame
    /// (`Status.truncated`): name them to see them.
    pub truncated: bool,
    /// Queues were left out so that the answer fits in one frame.
    pub queues_truncated: bool,
}

impl From<&v1::Status> for StatusView {
    fn from(s: &v1::Status) -> StatusView {
        StatusView {
            revision: s.revision,
            resources: s.resources.iter().map(ResourceView::from).collect(),
            queues: s.queues.iter().map(QueueView::from).collect(),
            truncated: s.truncated,
            queues_truncated: s.queues_truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_and_zero_is_null() {
        assert_eq!(rfc3339(0), None);
        assert_eq!(
            rfc3339(1_700_000_000_123).as_deref(),
            Some("2023-11-14T22:13:20.123Z")
        );
    }

    #[test]
    fn a_waiter_has_nulls_where_nothing_applies() {
        let l = v1::Lease {
            lease_id: 7,
            resource: "pcm".into(),
            queued_at_ms: 1_700_000_000_000,
            position: 1,
            ..Default::default()
        };
        let v = serde_json::to_value(LeaseView::from(&l)).unwrap();
        assert_eq!(v["fencing_token"], serde_json::Value::Null);
        assert_eq!(v["purpose"], serde_json::Value::Null);
        assert_eq!(v["granted_at"], serde_json::Value::Null);
        assert_eq!(v["expires_in_ms"], serde_json::Value::Null);
        assert_eq!(v["queued_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["position"], 1);
    }
}
