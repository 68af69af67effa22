//! Snapshot checks of the CLI's own renderings against
//! `tests/snapshots/NAME` (the same files `tests/cli.rs` checks);
//! `TURNSTILE_UPDATE_SNAPSHOTS=1` rewrites them.

/// Fails unless `text` is the snapshot `name`, or rewrites it when
/// `TURNSTILE_UPDATE_SNAPSHOTS` is set.
#[track_caller]
pub(crate) fn check(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/snapshots")
        .join(name);
    if std::env::var_os("TURNSTILE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        text, expected,
        "{name} changed; if intended, run with TURNSTILE_UPDATE_SNAPSHOTS=1"
    );
}
