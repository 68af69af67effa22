//! Rate-limited warnings: a flood of refusals (policy denials, refused
//! publishes) must not become a flood of log lines, nor hide that it
//! happened.

use crate::core::Millis;

/// Lines logged per second of one kind; past it they are counted, and the
/// count is logged when the next second begins.
const PER_SECOND: u32 = 10;

/// The state of one kind of rate-limited warning.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    since: Millis,
    count: u32,
}

impl LogLimit {
    /// Whether a line may be logged `now`; logs how many of `what` were
    /// left out in the second that just ended.
    pub(crate) fn admit(&mut self, now: Millis, what: &str) -> bool {
        if now >= self.since + 1000 {
            if self.count > PER_SECOND {
                tracing::warn!("{} more {what} were not logged", self.count - PER_SECOND);
            }
            self.since = now;
            self.count = 0;
        }
        self.count += 1;
        self.count <= PER_SECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_lines_a_second_then_a_count() {
        let mut limit = LogLimit::default();
        let admitted = (0..25).filter(|_| limit.admit(0, "refusals")).count();
        assert_eq!(admitted, 10);
        assert!(limit.admit(1000, "refusals"), "a new second begins");
    }
}
