//! `ReportProgress`: a holder says how far its job has got; watchers and
//! waiters are told.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{LeaseId, Millis, Progress, SessionId};

pub(super) fn handle(
    d: &mut Dispatcher,
    session: SessionId,
    req: v1::ReportProgress,
    now: Millis,
) -> Answer {
    let progress = Progress {
        done: req.done,
        total: req.total,
        message: req.message,
    };
    let changes = d
        .core
        .report_progress(session, LeaseId(req.lease_id), progress, now)?;
    Ok((v1::reply::Result::Done(v1::Done::default()), changes))
}
