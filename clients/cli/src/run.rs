//! `turnstile run`: hold a lease exactly as long as a command lives, like
//! flock(1), but queue visibly instead of blocking blind.
//!
//! Once granted, the command is spawned tied to the CLI (`child.rs`: it
//! dies with the CLI, and the signals SIGINT, SIGTERM, SIGHUP, SIGQUIT sent
//! to the CLI are passed on to it). The lease is released only after the
//! command has exited. If the lease is lost while the command runs (expired,
//! revoked, or the broker's connection lost), the command is stopped as
//! `--on-lost` says (SIGTERM, then SIGKILL after `--kill-after`; or SIGKILL;
//! or left alone) and `run` exits 76, unless `--on-lost ignore`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use turnstile_client::proto as v1;
use turnstile_client::{Client, ClientError, ConnectOptions};

use crate::child::{self, Stop};
use crate::format::{progress, span, who};
use crate::{EXIT_BUSY, EXIT_LOST, EXIT_SOFTWARE, EXIT_USAGE};

/// What to do to the command when its lease is lost.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnLost {
    // (Plain comments: doc comments here would turn `--help` into its long
    // form.) SIGTERM, then SIGKILL after --kill-after; exit 76.
    Term,
    // SIGKILL at once; exit 76.
    Kill,
    // Let the command run on without the lease; exit with its status.
    Ignore,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The resource to hold
    resource: String,
    /// Take a SHARED lease (default EXCLUSIVE)
    #[arg(long)]
    shared: bool,
    /// Lease time to live, kept alive while the command runs [default: the broker's, 15s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Do not queue: exit 75 at once if the resource is busy
    #[arg(long)]
    no_wait: bool,
    /// Give up after waiting this long in the queue (exit 75)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_wait: Option<Duration>,
    /// What the lease is for, shown to others [default: the command line]
    #[arg(long, value_name = "TEXT")]
    purpose: Option<String>,
    /// If the lease is lost while the command runs: SIGTERM it (then SIGKILL after --kill-after), SIGKILL it, or let it run on; exit 76 unless ignore
    #[arg(long, value_enum, value_name = "WHAT", default_value = "term")]
    on_lost: OnLost,
    /// After SIGTERM for a lost lease, SIGKILL the command if it still runs after this long
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    kill_after: Duration,
    /// Permits of RESOURCE's counting semaphore to take (with --shared) [default: 1]
    #[arg(long, value_name = "N")]
    permits: Option<u32>,
    /// RESOURCE's capacity as a counting semaphore (must match the broker's if it has one)
    #[arg(long, value_name = "C")]
    capacity: Option<u32>,
    /// Keep the lease or the place in the queue this long after turnstile's connection closes (the command sees TURNSTILE_RESUME_TOKEN)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    detach_grace: Option<Duration>,
    /// Show the lease as stuck after this long without a progress report
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stall_after: Option<Duration>,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime_like(s).ok_or_else(|| format!("'{s}' is not a duration like 10s, 500ms or 2m"))
}

/// Parses `500ms`, `10s`, `2m`, `1h` (or plain seconds).
fn humantime_like(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

pub async fn run(opts: ConnectOptions, args: RunArgs) -> Result<u8, ClientError> {
    let Some((program, rest)) = args.command.split_first() else {
        eprintln!("turnstile run: no command given");
        return Ok(EXIT_USAGE);
    };
    let client = Client::connect(opts.keep_socket_for_children()).await?;
    let mut req = client.acquire(&args.resource).purpose(
        args.purpose
            .clone()
            .unwrap_or_else(|| args.command.join(" ")),
    );
    if args.shared {
        req = req.shared();
    }
    if let Some(ttl) = args.ttl {
        req = req.ttl(ttl);
    }
    if args.no_wait {
        req = req.no_wait();
    }
    if let Some(w) = args.max_wait {
        req = req.max_wait(w);
    }
    if let Some(n) = args.permits {
        req = req.permits(n);
    }
    if let Some(c) = args.capacity {
        req = req.capacity(c);
    }
    if let Some(g) = args.detach_grace {
        req = req.detach_grace(g);
    }
    if let Some(s) = args.stall_after {
        req = req.stall_after(s);
    }
    let tty = std::io::stderr().is_terminal();
    let mut shown = false;
    let waited = std::time::Instant::now();
    let lease = match req
        .wait_with(|q| {
            shown = true;
            show_queued(&args.resource, q, tty);
        })
        .await
    {
        Ok(l) => l,
        Err(ClientError::Broker {
            code: v1::ErrorCode::Busy,
            message,
        }) => {
            eprintln!("turnstile: {message}");
            return Ok(EXIT_BUSY);
        }
        Err(ClientError::Lost(l)) => {
            if tty && shown {
                eprintln!();
            }
            eprintln!(
                "turnstile: gave up waiting for {}: {}",
                args.resource, l.detail
            );
            return Ok(EXIT_BUSY);
        }
        Err(e) => return Err(e),
    };
    if shown {
        if tty {
            eprint!("\r\x1b[2K");
        }
        eprintln!(
            "turnstile: {} granted after {} (fencing token {})",
            args.resource,
            span(waited.elapsed().as_millis() as u64),
            lease.fencing_token()
        );
    }
    // From here on the four signals are the command's to receive: caught
    // before the spawn, so that none can end the CLI and orphan it.
    let mut signals = match child::Signals::catch() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("turnstile: cannot catch signals to pass them on: {e}");
            let _ = lease.release().await;
            return Ok(EXIT_SOFTWARE);
        }
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(rest)
        .env("TURNSTILE_LEASE_ID", lease.id().to_string())
        .env("TURNSTILE_FENCING_TOKEN", lease.fencing_token().to_string());
    if let Some(token) = lease.resume_token() {
        // The owner's secret, to the owner's own command only (never printed).
        command.env("TURNSTILE_RESUME_TOKEN", token.to_string());
    }
    let connection = child::connection(&client);
    let mut child = match child::spawn(&mut command, connection) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("turnstile: cannot run {program}: {e}");
            let _ = lease.release().await;
            return Ok(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let (status, lost) = supervise(&mut child, &lease, &mut signals, &args, program).await;
    // Only now that the command has exited.
    let _ = lease.release().await;
    child::disconnect(connection);
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            eprintln!("turnstile: waiting for {program} failed: {e}");
            return Ok(EXIT_SOFTWARE);
        }
    };
    if lost && args.on_lost != OnLost::Ignore {
        return Ok(EXIT_LOST);
    }
    Ok(exit_code(status))
}

/// Waits for the command to exit, passing signals on, and stops it as
/// `--on-lost` says if the lease is lost (then SIGKILL after
/// `--kill-after` if SIGTERM was not enough). Answers its exit status and
/// whether the lease was lost meanwhile.
async fn supervise(
    child: &mut tokio::process::Child,
    lease: &turnstile_client::Lease,
    signals: &mut child::Signals,
    args: &RunArgs,
    program: &str,
) -> (std::io::Result<std::process::ExitStatus>, bool) {
    let pid = child.id();
    let mut lost = false;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let status = loop {
        let kill_timer = async {
            match kill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            s = child.wait() => break s,
            name = signals.pass_on(pid) => {
                eprintln!("turnstile: {name} passed on to {program}; the lease is held until it exits");
            }
            why = lease.lost(), if !lost => {
                lost = true;
                let how = match args.on_lost {
                    OnLost::Ignore => {
                        eprintln!(
                            "turnstile: WARNING: the lease on {} was lost while {program} runs ({}); it runs on unprotected (--on-lost ignore)",
                            args.resource, why.detail
                        );
                        continue;
                    }
                    OnLost::Term => Stop::Term,
                    OnLost::Kill => Stop::Kill,
                };
                eprintln!(
                    "turnstile: the lease on {} was lost ({}): stopping {program} with {}",
                    args.resource,
                    why.detail,
                    if how == Stop::Term { "SIGTERM" } else { "SIGKILL" }
                );
                if let Err(e) = child::stop(child, how) {
                    eprintln!("turnstile: cannot stop {program}: {e}");
                }
                if how == Stop::Term {
                    kill_at = Some(tokio::time::Instant::now() + args.kill_after);
                }
            }
            () = kill_timer => {
                kill_at = None;
                eprintln!(
                    "turnstile: {program} still runs {} after SIGTERM: SIGKILL",
                    span(args.kill_after.as_millis() as u64)
                );
                if let Err(e) = child::stop(child, Stop::Kill) {
                    eprintln!("turnstile: cannot kill {program}: {e}");
                }
            }
        }
    };
    (status, lost)
}

fn exit_code(status: std::process::ExitStatus) -> u8 {
    if let Some(c) = status.code() {
        return c as u8;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return 128u8.wrapping_add(sig as u8);
        }
    }
    EXIT_SOFTWARE
}

/// One line on where we stand: rewritten in place on a terminal, logged
/// otherwise.
fn show_queued(resource: &str, q: &v1::Queued, tty: bool) {
    let mut line = format!("turnstile: waiting for {resource}: position {}", q.position);
    if let Some(h) = q.ahead.iter().find(|l| l.position == 0) {
        line.push_str(&format!(", held by {}", who(h.holder.as_ref())));
        if !h.purpose.is_empty() {
            line.push_str(&format!(" for \"{}\"", h.purpose));
        }
        if let Some(p) = &h.progress {
            line.push_str(&format!(" ({})", progress(p)));
        }
        if h.stalled {
            line.push_str(", stuck: no progress lately");
        }
        if h.detached {
            line.push_str(", its process gone (kept for a re-attach)");
        }
    }
    if q.estimated_wait_ms > 0 {
        line.push_str(&format!(
            ", about {} left",
            span(u64::from(q.estimated_wait_ms))
        ));
    }
    let mut err = std::io::stderr();
    if tty {
        let _ = write!(err, "\r\x1b[2K{line}");
    } else {
        let _ = writeln!(err, "{line}");
    }
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(humantime_like("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(humantime_like("10s"), Some(Duration::from_secs(10)));
        assert_eq!(humantime_like("2m"), Some(Duration::from_secs(120)));
        assert_eq!(humantime_like("7"), Some(Duration::from_secs(7)));
        assert_eq!(humantime_like("x"), None);
    }
}
