//! The committed `include/turnstile.h` is exactly what cbindgen makes of
//! the crate now. To refresh it after changing the ABI:
//!
//!     TURNSTILE_BLESS=1 cargo test -p turnstile-ffi --test header
//!
//! Not on Windows: cbindgen runs `cargo metadata`, which a test .exe under
//! Wine cannot start; the header does not depend on the platform.

#![cfg(not(windows))]

use std::path::Path;

#[test]
fn committed_header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut fresh = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen cannot read the crate")
        .write(&mut fresh);
    let fresh = String::from_utf8(fresh).expect("UTF-8 header");
    let path = dir.join("include/turnstile.h");
    if std::env::var_os("TURNSTILE_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write the header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/turnstile.h is not what cbindgen makes of the crate now; run\n    \
         TURNSTILE_BLESS=1 cargo test -p turnstile-ffi --test header\nand commit the result"
    );
}
