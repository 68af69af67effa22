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

use std::time::Duration;

use clap::Args;
use turnstile_client::proto as v1;
use turnstile_client::{Client, ClientError, ConnectOptions};

use crate::child::{self, Stop};
use crate::format::span;
use crate::waiting::Waiting;
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

/// What to do to the command when someone asks the holders to make way
/// (`turnstile yield`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnYield {
    // Say so on stderr; the command runs on.
    Ignore,
    // SIGTERM (then SIGKILL after --kill-after): the lease is released
    // once it has exited; exit with its status.
    Term,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The resource to hold
    resource: String,
    /// Take a SHARED lease (default EXCLUSIVE)
    #[arg(short, long)]
    shared: bool,
    /// Take an EXCLUSIVE lease (the default; as flock -x)
    #[arg(short = 'x', long, conflicts_with = "shared")]
    exclusive: bool,
    /// Lease time to live, kept alive while the command runs [default: the broker's, 15s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Do not queue: exit 75 (or -E's code) at once if the resource is busy
    #[arg(short, long)]
    no_wait: bool,
    /// Give up after waiting this long in the queue (exit 75, or -E's code); 0.5, 1.5s, 2m
    #[arg(short = 'w', long, visible_alias = "timeout", value_name = "DURATION", value_parser = parse_duration)]
    max_wait: Option<Duration>,
    /// Exit with CODE instead of 75 when the resource is busy (-n) or the wait runs out (-w)
    #[arg(short = 'E', long, value_name = "CODE", default_value_t = EXIT_BUSY)]
    conflict_exit_code: u8,
    /// Print nothing of the wait (the queue, the grant); errors still
    #[arg(short, long)]
    quiet: bool,
    /// What the lease is for, shown to others [default: the command line]
    #[arg(long, value_name = "TEXT")]
    purpose: Option<String>,
    /// If the lease is lost while the command runs: SIGTERM it (then SIGKILL after --kill-after), SIGKILL it, or let it run on; exit 76 unless ignore
    #[arg(long, value_enum, value_name = "WHAT", default_value = "term")]
    on_lost: OnLost,
    /// When someone asks the holders to make way (turnstile yield): say so on stderr and run on, or SIGTERM the command (then SIGKILL after --kill-after) so that the lease goes once it has exited
    #[arg(long, value_enum, value_name = "WHAT", default_value = "ignore")]
    on_yield: OnYield,
    /// After SIGTERM for a lost lease or a yield request, SIGKILL the command if it still runs after this long
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    kill_after: Duration,
    /// Permits of RESOURCE's counting semaphore to take (with --shared; an exclusive lease takes them all) [default: 1]
    #[arg(long, value_name = "N", requires = "shared", value_parser = clap::value_parser!(u32).range(1..))]
    permits: Option<u32>,
    /// RESOURCE's capacity as a counting semaphore, C ≥ 1 (must match the broker's if it has one)
    #[arg(long, value_name = "C", value_parser = clap::value_parser!(u32).range(1..))]
    capacity: Option<u32>,
    /// Keep the lease or the place in the queue this long after turnstile's connection closes (the command sees TURNSTILE_RESUME_TOKEN)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    detach_grace: Option<Duration>,
    /// Show the lease as stuck after this long without a progress report
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stall_after: Option<Duration>,
    /// Run this shell command line (sh -c; cmd /C on Windows) instead of COMMAND
    #[arg(
        short = 'c',
        long = "command",
        value_name = "SHELL-COMMAND",
        conflicts_with = "command"
    )]
    shell_command: Option<String>,
    /// The command and its arguments (a `--` before it is needed only when its first word starts with -)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = false,
        required_unless_present = "shell_command",
        value_name = "COMMAND"
    )]
    command: Vec<String>,
    /// The TURNSTILE_PROGRESS_FD pipe, made by [`RunArgs::prepare`].
    #[arg(skip)]
    progress_pipe: Option<progress::Early>,
}

impl RunArgs {
    /// Call first thing, before the runtime opens its descriptors: makes
    /// the progress pipe while low descriptor numbers are free.
    pub fn prepare(&mut self) {
        self.progress_pipe = progress::early();
    }

    /// The program and its arguments: COMMAND, or the shell given -c.
    fn argv(&self) -> Vec<String> {
        match &self.shell_command {
            #[cfg(unix)]
            Some(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
            #[cfg(windows)]
            Some(line) => vec!["cmd".into(), "/C".into(), line.clone()],
            None => self.command.clone(),
        }
    }

    /// What the lease is for when --purpose says nothing.
    fn default_purpose(&self) -> String {
        match &self.shell_command {
            Some(line) => line.clone(),
            None => self.command.join(" "),
        }
    }
}

/// The one duration syntax of both binaries (`turnstile_proto::duration`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    turnstile_proto::duration::parse(s).map_err(|e| e.to_string())
}

pub async fn run(opts: ConnectOptions, mut args: RunArgs) -> Result<u8, ClientError> {
    let argv = args.argv();
    let Some((program, rest)) = argv.split_first() else {
        eprintln!("turnstile run: no command given");
        return Ok(EXIT_USAGE);
    };
    let client = Client::connect(opts.keep_socket_for_children()).await?;
    let mut req = client.acquire(&args.resource).purpose(
        args.purpose
            .clone()
            .unwrap_or_else(|| args.default_purpose()),
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
    let mut waiting = Waiting::new(&args.resource, args.quiet);
    let lease = match req.wait_with(|q| waiting.update(q)).await {
        Ok(l) => {
            waiting.granted(l.fencing_token());
            l
        }
        Err(ClientError::Broker {
            code: v1::ErrorCode::Busy,
            message,
        }) => {
            waiting.ended();
            if !args.quiet {
                eprintln!("turnstile: {message}");
            }
            return Ok(args.conflict_exit_code);
        }
        Err(ClientError::Lost(l)) if l.reason == Some(v1::LostReason::TimedOut) => {
            let said = waiting.ran_out();
            if !args.quiet {
                eprintln!("{said}");
            }
            return Ok(args.conflict_exit_code);
        }
        Err(ClientError::Lost(l)) => {
            waiting.ended();
            if !args.quiet {
                eprintln!(
                    "turnstile: gave up waiting for {}: {}",
                    args.resource, l.detail
                );
            }
            return Ok(args.conflict_exit_code);
        }
        Err(e) => {
            waiting.ended();
            return Err(e);
        }
    };
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
    let (progress, progress_writer) = progress::pipe(&mut command, args.progress_pipe.take());
    let spawned = child::spawn(&mut command, connection);
    // Only the command (and what it starts) holds the writing end now: the
    // reader sees the end of the pipe once they have all closed it.
    #[allow(dropping_copy_types)] // Windows has no progress pipe: nothing to drop there
    drop(progress_writer);
    let mut child = match spawned {
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
    let (status, lost) =
        supervise(&mut child, &lease, &mut signals, progress, &args, program).await;
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

/// "service (root, pid 12) asks the holders of pcm to make way within
/// 30 s: \"Install now\"", and what a revoke then does.
fn yield_line(asked: &v1::YieldRequested, resource: &str) -> String {
    let when = if asked.within_ms == 0 {
        "at once".to_string()
    } else {
        format!("within {}", span(u64::from(asked.within_ms)))
    };
    let mut line = format!(
        "{} asks the holders of {resource} to make way {when}",
        crate::format::who(asked.requester.as_ref())
    );
    if !asked.reason.is_empty() {
        line.push_str(&format!(": {:?}", asked.reason));
    }
    if asked.revoke {
        line.push_str(" (the lease is revoked then)");
    }
    line
}

/// Waits for the command to exit, passing signals on, and stops it as
/// `--on-lost` says if the lease is lost, or `--on-yield` if the holders
/// are asked to make way (then SIGKILL after
/// `--kill-after` if SIGTERM was not enough). Answers its exit status and
/// whether the lease was lost meanwhile.
async fn supervise(
    child: &mut tokio::process::Child,
    lease: &turnstile_client::Lease,
    signals: &mut child::Signals,
    mut progress: Option<progress::Lines>,
    args: &RunArgs,
    program: &str,
) -> (std::io::Result<std::process::ExitStatus>, bool) {
    let pid = child.id();
    let mut warned = false;
    let mut lost = false;
    let mut yields_done = false;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let status = loop {
        let kill_timer = async {
            match kill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let progress_line = async {
            match progress.as_mut() {
                Some(lines) => lines.next_line().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            s = child.wait() => break s,
            line = progress_line => match line {
                Ok(Some(line)) => match progress::parse(&line) {
                    Some((done, total, message)) => {
                        if let Err(e) = lease.progress(done, total, message).await {
                            eprintln!("turnstile: cannot report progress: {}", crate::describe(&e));
                        }
                    }
                    None if !warned => {
                        warned = true;
                        eprintln!(
                            "turnstile: ignoring {line:?} on TURNSTILE_PROGRESS_FD: lines read DONE/TOTAL MESSAGE, like 3/10 copying"
                        );
                    }
                    None => {}
                },
                // The end of the pipe (or a read error): no more progress.
                Ok(None) | Err(_) => progress = None,
            },
            caught = signals.pass_on(pid) => {
                eprintln!("turnstile: {} passed on to {program}; the lease is held until it exits", caught.name);
            }
            asked = lease.next_yield_request(), if !yields_done => {
                let Some(asked) = asked else {
                    yields_done = true;
                    continue;
                };
                let told = yield_line(&asked, &args.resource);
                match args.on_yield {
                    OnYield::Ignore => {
                        if !args.quiet {
                            eprintln!("turnstile: {told}; {program} runs on (--on-yield term would stop it)");
                        }
                    }
                    OnYield::Term if kill_at.is_some() => {}
                    OnYield::Term => {
                        eprintln!("turnstile: {told}: stopping {program} with SIGTERM (--on-yield term)");
                        if let Err(e) = child::stop(child, Stop::Term) {
                            eprintln!("turnstile: cannot stop {program}: {e}");
                        }
                        kill_at = Some(tokio::time::Instant::now() + args.kill_after);
                    }
                }
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
    // Lines the command wrote just before it exited: reported before the
    // release. Bounded: a process it left behind may hold the pipe open.
    if let Some(lines) = progress.as_mut() {
        let drain = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((done, total, message)) = progress::parse(&line) {
                    let _ = lease.progress(done, total, message).await;
                }
            }
        };
        let _ = tokio::time::timeout(PROGRESS_DRAIN, drain).await;
    }
    (status, lost)
}

/// How long progress lines written by a command that has exited are still
/// read (the pipe normally ends at once).
const PROGRESS_DRAIN: Duration = Duration::from_millis(200);

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

/// `TURNSTILE_PROGRESS_FD`: a pipe whose lines `DONE/TOTAL MESSAGE`,
/// written by the command, become the lease's progress (Unix).
mod progress {
    /// The lines the command writes.
    #[cfg(unix)]
    pub type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::net::unix::pipe::Receiver>>;
    /// No progress pipe on Windows.
    #[cfg(not(unix))]
    pub type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::io::Empty>>;

    /// The pipe, made by [`super::RunArgs::prepare`] before anything else
    /// opens a descriptor: its ends then get low numbers (3 and 4), and
    /// dash, the usual /bin/sh, only redirects to descriptors 0 to 9
    /// (`>&13` is "Bad fd number").
    #[cfg(unix)]
    pub type Early = (std::io::PipeReader, std::io::PipeWriter);
    /// No progress pipe on Windows.
    #[cfg(not(unix))]
    pub type Early = ();

    /// Makes the pipe early (see [`Early`]); one that cannot be made is
    /// said and done without.
    #[cfg(unix)]
    pub fn early() -> Option<Early> {
        std::io::pipe()
            .inspect_err(|e| eprintln!("turnstile: no TURNSTILE_PROGRESS_FD for the command: {e}"))
            .ok()
    }

    /// No progress pipe on Windows.
    #[cfg(not(unix))]
    pub fn early() -> Option<Early> {
        None
    }

    /// Names the pipe's writing end to `command` in `TURNSTILE_PROGRESS_FD`
    /// (the command inherits it); answers the reading end, and the writing
    /// end to drop once the command is spawned.
    #[cfg(unix)]
    pub fn pipe(
        command: &mut tokio::process::Command,
        early: Option<Early>,
    ) -> (Option<Lines>, Option<std::io::PipeWriter>) {
        use std::os::fd::{AsFd, AsRawFd, OwnedFd};
        use tokio::io::AsyncBufReadExt;
        let (reader, writer) = match early {
            Some(e) => e,
            None => return (None, None),
        };
        match tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
            Ok(receiver) => {
                command.env("TURNSTILE_PROGRESS_FD", writer.as_raw_fd().to_string());
                crate::child::inherit(command, writer.as_fd());
                (
                    Some(tokio::io::BufReader::new(receiver).lines()),
                    Some(writer),
                )
            }
            Err(e) => {
                eprintln!("turnstile: no TURNSTILE_PROGRESS_FD for the command: {e}");
                (None, None)
            }
        }
    }

    /// No progress pipe on Windows.
    #[cfg(not(unix))]
    pub fn pipe(
        _command: &mut tokio::process::Command,
        _early: Option<Early>,
    ) -> (Option<Lines>, Option<()>) {
        (None, None)
    }

    /// `3/10 copying files` as (3, 10, "copying files"); `3/10` alone too.
    pub fn parse(line: &str) -> Option<(u32, u32, &str)> {
        let line = line.trim_end_matches('\r');
        let (figures, message) = line.split_once(' ').unwrap_or((line, ""));
        let (done, total) = figures.split_once('/')?;
        Some((done.parse().ok()?, total.parse().ok()?, message.trim()))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn progress_lines_parse() {
            assert_eq!(
                super::parse("3/10 copying files"),
                Some((3, 10, "copying files"))
            );
            assert_eq!(super::parse("0/0"), Some((0, 0, "")));
            assert_eq!(super::parse("copying"), None);
            assert_eq!(super::parse("3/x y"), None);
            assert_eq!(super::parse("-1/10"), None);
        }
    }
}
