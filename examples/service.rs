//! A PCMSVC-like service: downloads its packages at most two at a time (a
//! `downloads` semaphore of 2), then runs jobs, each under an EXCLUSIVE
//! lease on `pcm`, reporting progress as it goes and making way at its next
//! checkpoint when someone asks (`turnstile yield pcm`), then queueing its
//! remaining work again.
//!
//! Run a broker (`cargo run --bin turnstiled`), then:
//!
//!     cargo run --example service -- "Install Office 97" "Update antivirus"
//!
//! and watch it with `turnstile watch pcm downloads` or `turnstile why pcm`;
//! ask it to make way with `turnstile yield pcm --reason "Install now"`.

#[path = "pcm/mod.rs"]
mod pcm;

use std::time::Duration;

use turnstile_client::{Client, ConnectOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut jobs: Vec<String> = std::env::args().skip(1).collect();
    if jobs.is_empty() {
        jobs.push("Install Office 97".into());
    }
    let step = Duration::from_secs(1);
    let downloader = Client::connect(ConnectOptions::new("pcmsvc[downloads]")).await?;
    pcm::download(
        &downloader,
        &["office97.cab", "antivirus.dat", "fonts.cab"],
        step,
    )
    .await?;
    let script = pcm::ServiceScript {
        steps: 5,
        step,
        stuck_step: None,
    };
    pcm::run_service(ConnectOptions::new("pcmsvc"), &jobs, script).await
}
