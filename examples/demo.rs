//! The whole PCM story against a real broker, in one command:
//!
//!     cargo run --release --example demo
//!
//! It starts `turnstiled` on a temporary socket (this program re-executed as
//! the broker, running the same entry point as the `turnstiled` binary) and
//! plays the story:
//!
//! - the service downloads three packages under a `downloads` semaphore of
//!   2: two run while the third waits its turn;
//! - it begins a job under an EXCLUSIVE lease on `pcm`, and mid-job the
//!   agent starts: it queues its initialisation and says where it stands;
//! - the agent is killed (`kill -9`) while it waits, and started again: it
//!   re-attaches to its place in the queue with the token it kept;
//! - the job hangs on a dialog, keeping its lease alive without progress:
//!   the waiting agent shows it as *stuck* (not dead, not hung);
//! - the user (alice) asks the job to make way: the service does at its
//!   next checkpoint and queues its remaining work again, and the agent
//!   initialises at once; the job then finishes.
//!
//! The old failure ("Timed out waiting for the PCM service semaphore ...
//! Exiting") has no path to happen.
//!
//! `TURNSTILE_DEMO_FAST=1` shortens the job for tests.

#[path = "pcm/mod.rs"]
mod pcm;

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use turnstile_client::{Client, ConnectOptions, proto as v1};

fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // The broker: the same entry point as the `turnstiled` binary.
        Some("--as-turnstiled") => {
            let rest = std::iter::once("turnstiled".into()).chain(args[2..].iter().map(Into::into));
            return Ok(turnstile_broker::cli::main_from(rest));
        }
        Some("--as-scheduler") => {
            runtime()?.block_on(async {
                let client =
                    Client::connect(ConnectOptions::new("pcmsvc").socket(&args[2])).await?;
                pcm::post_notice(
                    &client,
                    "mandatory package 'Install Office 97' is scheduled for today",
                )
                .await
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        Some("--as-service") => {
            runtime()?.block_on(async {
                let downloads =
                    Client::connect(ConnectOptions::new("pcmsvc[downloads]").socket(&args[2]))
                        .await?;
                pcm::download(
                    &downloads,
                    &["office97.cab", "antivirus.dat", "fonts.cab"],
                    step(),
                )
                .await?;
                let script = pcm::ServiceScript {
                    steps: 5,
                    step: step(),
                    // Step 3 hangs on a dialog for 8 step times.
                    stuck_step: Some((3, 8)),
                };
                pcm::run_service(
                    ConnectOptions::new("pcmsvc").socket(&args[2]),
                    &["Install Office 97".to_string()],
                    script,
                )
                .await
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        Some("--as-agent") => {
            runtime()?.block_on(pcm::run_agent(
                ConnectOptions::new("pcmwin[alice]").socket(&args[2]),
                "alice",
                Some(std::path::Path::new(&args[3])),
            ))?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    story()
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn step() -> Duration {
    if std::env::var_os("TURNSTILE_DEMO_FAST").is_some() {
        Duration::from_millis(150)
    } else {
        Duration::from_millis(1200)
    }
}

fn role(args: &[&str], stderr: Stdio) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::null())
        .stderr(stderr)
        .spawn()?)
}

fn story() -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("turnstile.sock");
    let socket_arg = socket.to_string_lossy().to_string();
    let data = dir.path().join("data").to_string_lossy().to_string();
    let broker_args = [
        "--as-turnstiled",
        "--socket",
        &socket_arg,
        "--data-dir",
        &data,
        "--log-level",
        "warn",
    ];
    println!("demo    ==> starting turnstiled on {socket_arg}");
    let mut broker = role(&broker_args, Stdio::inherit())?;
    let rt = runtime()?;
    rt.block_on(Client::connect(
        ConnectOptions::new("demo")
            .socket(&socket)
            .retry_for(Duration::from_secs(10)),
    ))?;
    println!("demo    ==> the service schedules today's job while no agent runs");
    role(&["--as-scheduler", &socket_arg], Stdio::inherit())?.wait()?;
    println!("demo    ==> the broker restarts (the notice is on disk, not in memory)");
    stop(&mut broker)?;
    let mut broker = role(&broker_args, Stdio::inherit())?;
    let observer = rt.block_on(Client::connect(
        ConnectOptions::new("demo")
            .socket(&socket)
            .retry_for(Duration::from_secs(10)),
    ))?;

    println!(
        "demo    ==> starting the service: it downloads three packages (at most two at once), then runs one job, 'Install Office 97'"
    );
    let mut service = role(&["--as-service", &socket_arg], Stdio::inherit())?;
    let seen = |what: &str, test: &dyn Fn(&v1::ResourceState) -> bool| -> anyhow::Result<()> {
        // The demo only watches; polling status keeps it short.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = rt.block_on(observer.status(&[pcm::RESOURCE.to_string()]))?;
            if status.resources.first().is_some_and(test) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "never saw {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    seen("the job under way", &|r| {
        r.holders
            .iter()
            .any(|h| h.progress.as_ref().is_some_and(|p| p.done >= 1))
    })?;
    println!(
        "demo    ==> the job is under way: starting the agent (this is where a semaphore timed out)"
    );
    let token_file = dir.path().join("pcmwin-alice.token");
    let token_arg = token_file.to_string_lossy().to_string();
    let started = Instant::now();
    let mut agent = role(&["--as-agent", &socket_arg, &token_arg], Stdio::inherit())?;
    seen("the agent queued", &|r| !r.waiters.is_empty())?;
    while !token_file.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("demo    ==> the agent is killed while it waits (kill -9), then started again");
    agent.kill()?;
    agent.wait()?;
    seen("the agent's place kept", &|r| {
        r.waiters.iter().any(|w| w.detached)
    })?;
    let mut agent = role(&["--as-agent", &socket_arg, &token_arg], Stdio::inherit())?;
    seen("the job stuck", &|r| r.holders.iter().any(|h| h.stalled))?;
    println!(
        "demo    ==> the job keeps its lease alive but makes no progress: the agent shows it as stuck (not dead, not hung)"
    );
    let alice = rt.block_on(Client::connect(
        ConnectOptions::new("alice").socket(&socket),
    ))?;
    println!("demo    ==> alice clicks 'Install now' in the agent: the job is asked to make way");
    rt.block_on(
        alice
            .request_yield(pcm::RESOURCE)
            .within(Duration::from_secs(60))
            .reason("alice clicked 'Install now'")
            .send(),
    )?;
    let agent_status = agent.wait()?;
    println!(
        "demo    ==> the agent initialised {:.1} s after it first started, killed once and never timed out; nobody restarted anything by hand",
        started.elapsed().as_secs_f64()
    );
    let service_status = service.wait()?;
    drop(observer);
    let broker_status = stop(&mut broker)?;
    println!("demo    ==> turnstiled stopped ({broker_status})");
    if agent_status.success() && service_status.success() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("demo    ==> something failed: agent {agent_status}, service {service_status}");
        Ok(ExitCode::FAILURE)
    }
}

/// Stops the broker as a service manager would: SIGTERM on Unix (a clean
/// stop), TerminateProcess on Windows.
fn stop(broker: &mut Child) -> std::io::Result<std::process::ExitStatus> {
    #[cfg(unix)]
    {
        // SAFETY: kill touches no memory; a stale pid only yields an error.
        unsafe {
            libc::kill(broker.id() as i32, libc::SIGTERM);
        }
    }
    #[cfg(not(unix))]
    broker.kill()?;
    broker.wait()
}
