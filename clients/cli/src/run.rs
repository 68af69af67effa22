//! `turnstile run`: hold a lease while a command runs, like flock(1), but
//! queue visibly instead of blocking blind.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use turnstile_client::proto as v1;
use turnstile_client::{Client, ClientError, ConnectOptions};

use crate::format::{progress, span, who};
use crate::{EXIT_BUSY, EXIT_SOFTWARE, EXIT_USAGE};

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
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
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
    let client = Client::connect(opts).await?;
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
    let mut child = match tokio::process::Command::new(program)
        .args(rest)
        .env("TURNSTILE_LEASE_ID", lease.id().to_string())
        .env("TURNSTILE_FENCING_TOKEN", lease.fencing_token().to_string())
        .spawn()
    {
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
    let status = tokio::select! {
        s = child.wait() => s,
        lost = lease.lost() => {
            eprintln!("turnstile: WARNING: the lease on {} was lost while the command runs: {}", args.resource, lost.detail);
            child.wait().await
        }
    };
    let _ = lease.release().await;
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            eprintln!("turnstile: waiting for {program} failed: {e}");
            return Ok(EXIT_SOFTWARE);
        }
    };
    Ok(exit_code(status))
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
