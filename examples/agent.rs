//! A PCMWIN-like agent: initialises under a SHARED lease on `pcm`. Started
//! while the service runs a job, it queues, says where it stands and how far
//! the job has got, and initialises when the job ends: no time-out, no exit,
//! no restart by hand.
//!
//! Run a broker and the `service` example, then:
//!
//!     cargo run --example agent -- alice

#[path = "pcm/mod.rs"]
mod pcm;

use turnstile_client::ConnectOptions;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let user = std::env::args()
        .nth(1)
        .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "user".into()));
    pcm::run_agent(ConnectOptions::new(format!("pcmwin[{user}]")), &user).await
}
