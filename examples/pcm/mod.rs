//! The PCM story's two programs, shared by the `service`, `agent` and
//! `demo` examples: a job-running service (PCMSVC) that downloads its
//! packages at most two at a time (a `downloads` semaphore of 2), then holds
//! `pcm` EXCLUSIVE for each job, reports its progress and makes way at its
//! next checkpoint when a user asks; and a per-user agent (PCMWIN) that
//! initialises under a SHARED lease on `pcm`: when a job is running it
//! queues, says where it stands (and whether the job is stuck), keeps its
//! place if it is killed and restarted (a detach grace and a resume token
//! kept in a file only its user can read), and initialises the moment the
//! job makes way. There is no time-out path to fall into.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use turnstile_client::{Client, ClientError, ConnectOptions, ErrorCode, ResumeToken, proto as v1};

/// The resource the service and the agents take turns on.
pub const RESOURCE: &str = "pcm";

/// The durable queue of notices from the service to the agents.
pub const NOTICES: &str = "pcm.notices";

/// Posts a notice for the agents. It is durable once this returns: an agent
/// that starts later, even after a broker restart, still gets it.
pub async fn post_notice(client: &Client, text: &str) -> anyhow::Result<()> {
    let seq = client
        .publish(NOTICES, text.as_bytes().to_vec(), &[("from", "pcmsvc")])
        .await?;
    println!("PCMSVC  ==> Notice {seq} posted for the agents: {text}");
    Ok(())
}

/// The counting semaphore the service downloads under.
pub const DOWNLOADS: &str = "downloads";

/// How many downloads run at once.
pub const DOWNLOAD_SLOTS: u32 = 2;

/// Downloads `packages` at most [`DOWNLOAD_SLOTS`] at a time: each takes one
/// permit of the `downloads` semaphore; the others wait their turn in FIFO.
pub async fn download(client: &Client, packages: &[&str], step: Duration) -> anyhow::Result<()> {
    let one = |package: String| async move {
        let lease = client
            .acquire(DOWNLOADS)
            .shared()
            .capacity(DOWNLOAD_SLOTS)
            .purpose(format!("download {package}"))
            .wait_with(|q| {
                println!(
                    "PCMSVC  ==> Download of {package} waits: {} downloads already run (position {})",
                    q.ahead.iter().filter(|l| l.position == 0).count(),
                    q.position
                )
            })
            .await?;
        println!("PCMSVC  ==> Downloading {package}");
        tokio::time::sleep(step).await;
        lease.release().await?;
        println!("PCMSVC  ==> Downloaded {package}");
        anyhow::Ok(())
    };
    let all: Vec<_> = packages.iter().map(|p| one(p.to_string())).collect();
    for r in futures::future::join_all(all).await {
        r?;
    }
    Ok(())
}

/// How the service behaves, for the story.
#[derive(Clone, Debug)]
pub struct ServiceScript {
    /// Steps per job.
    pub steps: u32,
    /// How long a step takes.
    pub step: Duration,
    /// A step that hangs on a dialog for this many step times without
    /// reporting progress (the job is then *stuck*, not dead nor hung).
    pub stuck_step: Option<(u32, u32)>,
}

/// Runs `jobs` one after the other, each under an EXCLUSIVE lease on `pcm`,
/// reporting progress after each step. The lease says it is stuck after
/// two steps without progress. At each checkpoint (between steps) the
/// service looks for a yield request: if a user asked, it makes way
/// (releases) and queues its remaining work again behind whoever waits.
pub async fn run_service(
    options: ConnectOptions,
    jobs: &[String],
    script: ServiceScript,
) -> anyhow::Result<()> {
    let client = Client::connect(options.retry_for(Duration::from_secs(10))).await?;
    let steps = script.steps;
    for job in jobs {
        post_notice(&client, &format!("package '{job}' is being installed now")).await?;
        let mut done = 0;
        while done < steps {
            let mut lease = client
                .acquire(RESOURCE)
                .purpose(job.clone())
                .ttl(Duration::from_secs(5))
                .stall_after(script.step * 2)
                .wait()
                .await?;
            println!(
                "PCMSVC  ==> Job '{job}' {} (lease {}, fencing token {})",
                if done == 0 { "started" } else { "resumed" },
                lease.id(),
                lease.fencing_token()
            );
            while done < steps {
                if let Some(y) = lease.yield_requested() {
                    println!(
                        "PCMSVC  ==> '{job}': {} asks the job to make way ({}); making way at this checkpoint, steps {}..{steps} queued again",
                        y.requester
                            .as_ref()
                            .map_or("someone", |p| p.client_name.as_str()),
                        y.reason,
                        done + 1
                    );
                    break;
                }
                let mut pause = script.step;
                if let Some((at, times)) = script.stuck_step
                    && at == done + 1
                {
                    println!(
                        "PCMSVC  ==> '{job}': step {at} waits on the installer's dialog (no progress, lease kept alive)"
                    );
                    pause = script.step * times;
                }
                tokio::time::sleep(pause).await;
                done += 1;
                let what = step_name(done);
                lease.progress(done, steps, what).await?;
                println!("PCMSVC  ==> '{job}': step {done}/{steps} ({what})");
            }
            lease.release().await?;
        }
        println!("PCMSVC  ==> Job '{job}' finished; 'pcm' released");
    }
    Ok(())
}

fn step_name(n: u32) -> &'static str {
    match n {
        1 => "downloading",
        2 => "copying files",
        3 => "registering components",
        4 => "updating shortcuts",
        _ => "cleaning up",
    }
}

/// How long a killed agent's place in the queue is kept for it.
pub const AGENT_GRACE: Duration = Duration::from_secs(60);

/// Initialises the agent for `user`: a SHARED lease on `pcm`, queued
/// behind any running job, however long it runs. With `token_file`, the
/// place in the queue outlives the process for [`AGENT_GRACE`]: a
/// restarted agent re-attaches with the token kept there and keeps its
/// place.
pub async fn run_agent(
    options: ConnectOptions,
    user: &str,
    token_file: Option<&Path>,
) -> anyhow::Result<()> {
    const TAG: &str = "Package Command Manager ==>";
    println!("{TAG} Initializing (user {user})");
    let client = Client::connect(options.retry_for(Duration::from_secs(10))).await?;
    let started = Instant::now();
    let mut pending = None;
    if let Some(token) = token_file.and_then(read_token) {
        match client.reattach(&token).await {
            Ok(p) => {
                if let turnstile_client::QueueUpdate::Queued(q) = p.state() {
                    println!(
                        "{TAG} Restarted: re-attached to its place in the queue (position {}), nothing lost",
                        q.position
                    );
                }
                pending = Some(p);
            }
            Err(ClientError::Broker {
                code: ErrorCode::NotFound,
                ..
            }) => println!("{TAG} Its old place is gone (grace over); queueing again"),
            Err(e) => return Err(e.into()),
        }
    }
    let pending = match pending {
        Some(p) => p,
        None => {
            let mut req = client
                .acquire(RESOURCE)
                .shared()
                .purpose(format!("initialise the agent of {user}"));
            if token_file.is_some() {
                req = req.detach_grace(AGENT_GRACE);
            }
            req.start().await?
        }
    };
    if let (Some(path), Some(token)) = (token_file, pending.resume_token()) {
        write_token(path, token)?;
    }
    let lease = pending
        .wait_with(|q| println!("{TAG} {}", describe_wait(q)))
        .await?;
    if let Some(path) = token_file {
        let _ = std::fs::remove_file(path);
    }
    println!(
        "{TAG} Initialized (waited {:.1} s, fencing token {})",
        started.elapsed().as_secs_f64(),
        lease.fencing_token()
    );
    lease.release().await?;
    // The notices posted while no agent ran (the old design lost them).
    let mut notices = client.consume(NOTICES, 16).await?;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(300), notices.next()).await;
        let Ok(Some(notice)) = next else { break };
        println!(
            "{TAG} Notice {}: {}",
            notice.seq(),
            String::from_utf8_lossy(notice.payload())
        );
        notice.ack().await?;
    }
    Ok(())
}

/// The resume token kept in `path`, if there is a readable one.
fn read_token(path: &Path) -> Option<ResumeToken> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Keeps the resume token where only this user can read it.
fn write_token(path: &Path, token: &ResumeToken) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    // Written whole then renamed: a reader never sees half a token.
    let partial = path.with_extension("partial");
    std::io::Write::write_all(&mut options.open(&partial)?, token.to_string().as_bytes())?;
    std::fs::rename(&partial, path)
}

/// "PCM service busy with 'Install Office 97' (2/5): initialization queued, position 1".
fn describe_wait(q: &v1::Queued) -> String {
    let holder = q.ahead.iter().find(|l| l.position == 0);
    let mut s = match holder {
        Some(h) => {
            let mut s = format!("PCM service busy with '{}'", h.purpose);
            if let Some(p) = &h.progress {
                s.push_str(&format!(" ({}/{})", p.done, p.total));
            }
            if h.stalled {
                s.push_str(", stuck: alive but no progress lately");
            }
            s
        }
        None => "PCM service busy".to_string(),
    };
    s.push_str(&format!(": initialization queued, position {}", q.position));
    if q.estimated_wait_ms >= 100 {
        s.push_str(&format!(
            ", about {:.1} s to go",
            f64::from(q.estimated_wait_ms) / 1000.0
        ));
    }
    s
}
