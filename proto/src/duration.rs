//! The one syntax for durations, shared by `turnstiled` (flags and config
//! file) and `turnstile` (`--ttl`, `--max-wait`, ...): `500ms`, `1.5s`, `2m`,
//! `1h 30m` (humantime's), or a bare number of seconds with an optional
//! fraction (`7`, `0.5`, as flock(1)'s `-w` takes it).
//!
//! It lives here because the durations it reads travel as the protocol's
//! `_ms` fields; it does not clamp them to a field's width (the client does,
//! at the edge). A value too large for a `Duration` is an error, never a
//! wrapped number.

use std::time::Duration;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a duration like 500ms, 1.5s, 2m or 1h 30m: {why}")]
pub struct DurationError {
    text: String,
    why: String,
}

/// Parses a duration in the syntax of this module's header.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    let fail = |why: String| DurationError {
        text: text.to_owned(),
        why,
    };
    if s.is_empty() {
        return Err(fail("it is empty".into()));
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // A bare number: seconds, with a fraction if any.
        let secs: f64 = s
            .parse()
            .map_err(|_| fail("not a number of seconds".into()))?;
        return Duration::try_from_secs_f64(secs).map_err(|_| fail("it is too large".into()));
    }
    humantime::parse_duration(s).map_err(|e| {
        fail(match e {
            humantime::DurationError::NumberOverflow => "it is too large".into(),
            other => other.to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_fractions_and_bare_seconds() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse(" 10s "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn garbage_and_overflow_are_errors() {
        for bad in ["", "x", "10 parsecs", "1.2.3", "-5s", "."] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let too_big = parse("99999999999999999999999h").unwrap_err();
        assert!(too_big.to_string().contains("too large"), "{too_big}");
        let too_big = parse("1e400").unwrap_err();
        assert!(too_big.to_string().contains("1e400"), "{too_big}");
        assert!(parse("99999999999999999999999999").is_err());
    }
}
