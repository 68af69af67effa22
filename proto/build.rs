//! Compiles `turnstile/v1/turnstile.proto` into Rust with prost.
//!
//! The .proto is parsed by `protox` (pure Rust), so building this crate needs
//! no system `protoc`. The generated file lands in `OUT_DIR` and is included
//! by `src/lib.rs`; nothing else is generated or checked in.

use std::error::Error;

const PROTO: &str = "turnstile/v1/turnstile.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");

    let descriptors = protox::compile([PROTO], ["."])?;
    prost_build::Config::new()
        // Payloads become `bytes::Bytes`, so the broker can hand one message to
        // several consumers and to storage without copying it.
        .bytes(["."])
        // Headers encode in key order: the same message always makes the
        // same bytes, and printed headers come out sorted.
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
