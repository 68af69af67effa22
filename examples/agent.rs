//! A PCMWIN-like agent: initialises under a SHARED lease on `pcm`. Started
//! while the service runs a job, it queues, says where it stands, how far
//! the job has got and whether it is stuck, and initialises when the job
//! ends or makes way: no time-out, no exit, no restart by hand. Killed
//! while it waits and started again within a minute, it re-attaches to its
//! place in the queue with the resume token it kept in
//! `$TMPDIR/pcmwin-USER.token` (mode 0600).
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
    let token = std::env::temp_dir().join(format!("pcmwin-{user}.token"));
    pcm::run_agent(
        ConnectOptions::new(format!("pcmwin[{user}]")),
        &user,
        Some(&token),
    )
    .await
}
