//! The PCM story's two programs, shared by the `service`, `agent` and
//! `demo` examples: a job-running service (PCMSVC) that holds `pcm`
//! EXCLUSIVE for each job and reports its progress, and a per-user agent
//! (PCMWIN) that initialises under a SHARED lease on `pcm`: when a job is
//! running it queues, says where it stands, and initialises the moment the
//! job ends. There is no time-out path to fall into.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use turnstile_client::{Client, ConnectOptions, proto as v1};

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

/// Runs `jobs` one after the other, each under an EXCLUSIVE lease on `pcm`,
/// reporting progress after each of `steps` steps of `step` each.
pub async fn run_service(
    options: ConnectOptions,
    jobs: &[String],
    steps: u32,
    step: Duration,
) -> anyhow::Result<()> {
    let client = Client::connect(options.retry_for(Duration::from_secs(10))).await?;
    for job in jobs {
        post_notice(&client, &format!("package '{job}' is being installed now")).await?;
        let lease = client
            .acquire(RESOURCE)
            .purpose(job.clone())
            .ttl(Duration::from_secs(5))
            .wait()
            .await?;
        println!(
            "PCMSVC  ==> Job '{job}' started (lease {}, fencing token {})",
            lease.id(),
            lease.fencing_token()
        );
        for done in 1..=steps {
            tokio::time::sleep(step).await;
            let what = step_name(done);
            lease.progress(done, steps, what).await?;
            println!("PCMSVC  ==> '{job}': step {done}/{steps} ({what})");
        }
        lease.release().await?;
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

/// Initialises the agent for `user`: a SHARED lease on `pcm`, queued
/// behind any running job, however long it runs.
pub async fn run_agent(options: ConnectOptions, user: &str) -> anyhow::Result<()> {
    const TAG: &str = "Package Command Manager ==>";
    println!("{TAG} Initializing (user {user})");
    let client = Client::connect(options.retry_for(Duration::from_secs(10))).await?;
    let started = Instant::now();
    let lease = client
        .acquire(RESOURCE)
        .shared()
        .purpose(format!("initialise the agent of {user}"))
        .wait_with(|q| println!("{TAG} {}", describe_wait(q)))
        .await?;
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

/// "PCM service busy with 'Install Office 97' (2/5): initialization queued, position 1".
fn describe_wait(q: &v1::Queued) -> String {
    let holder = q.ahead.iter().find(|l| l.position == 0);
    let mut s = match holder {
        Some(h) => {
            let mut s = format!("PCM service busy with '{}'", h.purpose);
            if let Some(p) = &h.progress {
                s.push_str(&format!(" ({}/{})", p.done, p.total));
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
