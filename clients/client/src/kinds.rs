//! The enum fields of what the broker sends, typed: a lease's mode, a watch
//! event's kind, an error's code, a lost lease's reason.
//!
//! prost keeps enum fields as raw `i32` so that a value this version does
//! not know survives decoding; these functions read them as the generated
//! enums and answer `None` for such a value (never a silent
//! `*_UNSPECIFIED`, as prost's getters would). [`ShortName`] gives a value's
//! name without its enum's prefix (`EXCLUSIVE`, `GRANTED`, `NOT_FOUND`), as
//! people and scripts read it. Callers never need to touch the `i32`.

use turnstile_proto::v1;
pub use turnstile_proto::v1::{ErrorCode, EventKind, LostReason, Mode};

/// A lease's mode (`SHARED`, `EXCLUSIVE`).
pub fn mode(lease: &v1::Lease) -> Option<Mode> {
    Mode::try_from(lease.mode).ok()
}

/// What a watch event reports (`GRANTED`, `RELEASED`, ...).
pub fn event_kind(event: &v1::WatchEvent) -> Option<EventKind> {
    EventKind::try_from(event.kind).ok()
}

/// A recorded lease's mode (`SHARED`, `EXCLUSIVE`).
pub fn entry_mode(entry: &v1::HistoryEntry) -> Option<Mode> {
    Mode::try_from(entry.mode).ok()
}

/// What ended a recorded lease (`RELEASED`, `EXPIRED`, `DISCONNECTED`,
/// `CANCELLED`, `REVOKED`).
pub fn ended_by(entry: &v1::HistoryEntry) -> Option<EventKind> {
    EventKind::try_from(entry.ended_by).ok()
}

/// Why the broker refused a request.
pub fn error_code(error: &v1::Error) -> Option<ErrorCode> {
    ErrorCode::try_from(error.code).ok()
}

/// Why a lease or a place in the queue was lost.
pub fn lost_reason(lost: &v1::Lost) -> Option<LostReason> {
    LostReason::try_from(lost.reason).ok()
}

/// A value's name without its enum's prefix, as the `.proto` spells it:
/// `Mode::Exclusive` is `EXCLUSIVE`, `EventKind::Granted` is `GRANTED`.
pub trait ShortName: Copy {
    /// The name without the prefix.
    fn short_name(self) -> &'static str;
}

macro_rules! short_name {
    ($($ty:ty => $prefix:literal),* $(,)?) => {$(
        impl ShortName for $ty {
            fn short_name(self) -> &'static str {
                let name = self.as_str_name();
                name.strip_prefix($prefix).unwrap_or(name)
            }
        }
    )*};
}

short_name! {
    Mode => "MODE_",
    EventKind => "EVENT_KIND_",
    ErrorCode => "ERROR_CODE_",
    LostReason => "LOST_REASON_",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_drop_the_prefix_and_unknown_values_are_none() {
        assert_eq!(Mode::Exclusive.short_name(), "EXCLUSIVE");
        assert_eq!(EventKind::Granted.short_name(), "GRANTED");
        assert_eq!(ErrorCode::NotFound.short_name(), "NOT_FOUND");
        assert_eq!(LostReason::Expired.short_name(), "EXPIRED");
        let lease = v1::Lease {
            mode: 99,
            ..Default::default()
        };
        assert_eq!(mode(&lease), None);
        let lease = v1::Lease {
            mode: Mode::Shared as i32,
            ..Default::default()
        };
        assert_eq!(mode(&lease), Some(Mode::Shared));
    }
}
