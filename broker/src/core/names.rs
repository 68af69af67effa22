//! Validation of resource and queue names.
//!
//! Owns the one rule every name obeys (1 to 255 bytes of UTF-8 without
//! control characters, not beginning or ending with white space: `"pcm "`
//! and `"pcm"` would be two resources that look the same in every table).
//! It does not decide who may use a name: that is the policy's job.

use super::{BadArgument, CoreError};

/// Longest accepted name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks a resource or queue name; `what` ("resource", "queue") names it in
/// the error.
pub fn check_name(what: &'static str, name: &str) -> Result<(), CoreError> {
    let reason = if name.is_empty() {
        "it is empty".to_string()
    } else if name.len() > MAX_NAME_BYTES {
        format!(
            "it is {} bytes long, the limit is {MAX_NAME_BYTES}",
            name.len()
        )
    } else if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        "it begins or ends with white space".to_string()
    } else if !has_control(name) {
        return Ok(());
    } else if let Some(c) = name.chars().find(|c| c.is_control()) {
        format!("it contains the control character {c:?}")
    } else {
        return Ok(());
    };
    Err(CoreError::InvalidName { what, reason })
}

/// Whether `s` holds a control character (`char::is_control`). A name is
/// checked on every Acquire: a name of printable ASCII (the usual kind) is
/// told by one pass over its bytes with no early exit, which the compiler
/// turns into vector code; any other byte sends it to the character test
/// (decoding every name character by character was ~150 instructions per
/// Acquire, issue 14).
fn has_control(s: &str) -> bool {
    let printable_ascii = s
        .as_bytes()
        .iter()
        .fold(true, |all, &b| all & (b.wrapping_sub(0x20) < 0x5f));
    !printable_ascii && s.chars().any(char::is_control)
}

/// Longest free text accepted (a lease's purpose, a progress message), in
/// bytes: every watcher and waiter gets a copy, so it is bounded like a
/// name, not only by the frame size.
pub const MAX_TEXT_BYTES: usize = 1024;

/// Most names in one request (status or watch of named resources).
pub const MAX_NAMES_PER_REQUEST: usize = 256;

/// Checks a free-text field; `what` names it in the error.
pub fn check_text(what: &'static str, text: &str) -> Result<(), CoreError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(CoreError::InvalidArgument(BadArgument::TextTooLong {
            what,
            len: text.len(),
            limit: MAX_TEXT_BYTES,
        }));
    }
    Ok(())
}

/// Checks the number of names in one request.
pub fn check_name_count(count: usize) -> Result<(), CoreError> {
    if count > MAX_NAMES_PER_REQUEST {
        return Err(CoreError::Quota {
            what: "names in one request",
            limit: MAX_NAMES_PER_REQUEST,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(check_name("resource", "pcm").is_ok());
        assert!(check_name("resource", &"x".repeat(255)).is_ok());
        assert!(check_name("resource", "é").is_ok());
        assert!(check_name("resource", "").is_err());
        assert!(check_name("resource", &"x".repeat(256)).is_err());
        assert!(check_name("queue", "a\nb").is_err());
        assert!(check_name("queue", "a\u{7f}b").is_err());
        assert!(check_name("queue", "a\u{85}b").is_err());
        assert!(check_name("queue", "a\u{a0}b").is_ok());
        assert!(check_name("resource", "print queue").is_ok());
        for padded in [" ", "  ", " pcm", "pcm ", "pcm\u{a0}", "\u{3000}pcm"] {
            let e = check_name("resource", padded).unwrap_err();
            assert!(e.to_string().contains("white space"), "{padded:?}: {e}");
        }
    }

    /// The fast scan agrees with `char::is_control` on every character
    /// of the first two planes and a sample beyond, alone and in company.
    #[test]
    fn the_fast_scan_finds_exactly_the_control_characters() {
        let sample = (0u32..0x2_0000).chain([0x10_ffff, 0xe_0001, 0x1_f600]);
        for c in sample.filter_map(char::from_u32) {
            for s in [
                c.to_string(),
                format!("a{c}"),
                format!("{c}z"),
                format!("é{c}\u{a0}"),
            ] {
                assert_eq!(has_control(&s), s.chars().any(char::is_control), "{s:?}");
            }
        }
    }
}
