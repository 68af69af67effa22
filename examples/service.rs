//! A PCMSVC-like service: runs jobs, each under an EXCLUSIVE lease on
//! `pcm`, reporting progress as it goes.
//!
//! Run a broker (`cargo run --bin turnstiled`), then:
//!
//!     cargo run --example service -- "Install Office 97" "Update antivirus"
//!
//! and watch it with `turnstile watch pcm` or `turnstile why pcm`.

#[path = "pcm/mod.rs"]
mod pcm;

use std::time::Duration;

use turnstile_client::ConnectOptions;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut jobs: Vec<String> = std::env::args().skip(1).collect();
    if jobs.is_empty() {
        jobs.push("Install Office 97".into());
    }
    pcm::run_service(
        ConnectOptions::new("pcmsvc"),
        &jobs,
        5,
        Duration::from_secs(1),
    )
    .await
}
