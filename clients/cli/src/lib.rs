//! `turnstile`, the debug CLI: a thin shell over `turnstile-client`.
//!
//! This file parses the command line and hands each command to its module,
//! which owns what it prints: `ping.rs`, `status.rs`, `why.rs`, `watch.rs`,
//! `run.rs` (with `child.rs`, the command it runs), `queue.rs`, `yield_.rs`;
//! `format.rs` holds only what several share.
//!
//! Exit codes (sysexits style): 0 success; 1 the broker refused a request;
//! 64 bad usage; 69 the broker is unavailable; 70 an internal error;
//! 75 `run --no-wait` found the resource busy (or `--max-wait` ran out);
//! 76 `run`'s lease was lost while its command ran (see `run.rs`);
//! `run` otherwise exits with its command's status (128+N if killed by
//! signal N).

#![deny(missing_docs)]

mod child;
mod format;
mod ping;
mod queue;
mod run;
mod status;
mod watch;
mod why;
mod yield_;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use turnstile_client::{ClientError, ConnectOptions};

/// Success.
pub const EXIT_OK: u8 = 0;
/// The broker refused a request.
pub const EXIT_REFUSED: u8 = 1;
/// Bad usage.
pub const EXIT_USAGE: u8 = 64;
/// The broker is unavailable.
pub const EXIT_UNAVAILABLE: u8 = 69;
/// An internal error.
pub const EXIT_SOFTWARE: u8 = 70;
/// The resource is busy (`run --no-wait`) or the wait ran out.
pub const EXIT_BUSY: u8 = 75;
/// `run`: the lease was lost while the command ran (and the command was
/// stopped, unless `--on-lost ignore`).
pub const EXIT_LOST: u8 = 76;

#[derive(Parser, Debug)]
#[command(
    name = "turnstile",
    version,
    about = "Talk to a turnstile broker: leases, queues, watches.",
    after_help = "Exit codes: 0 success; 1 the broker refused the request; 64 bad usage; 69 the broker is unavailable;\n70 internal error; 75 `run --no-wait` found the resource busy or --max-wait ran out;\n76 `run`'s lease was lost while the command ran (unless --on-lost ignore);\n`run` otherwise exits with its command's status (128+N when the command was killed by signal N)."
)]
struct Cli {
    /// Broker socket [default: $TURNSTILE_SOCKET, else $XDG_RUNTIME_DIR/turnstile.sock, /run/turnstile/turnstile.sock for root, /tmp/turnstile-$UID/turnstile.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Print JSON instead of text (one object per line for streams)
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Round trips to the broker: prints the time of each, or min/p50/p99/max with --count
    Ping {
        /// Number of round trips
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Payload size in bytes
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Holders and waiters of resources (all in use when none named), and queues
    Status {
        /// Resources to show
        resources: Vec<String>,
    },
    /// Why am I waiting? Who holds RESOURCE, for what, since when, how far, who waits, how long
    Why {
        /// The resource
        resource: String,
    },
    /// Watch resources (all when none named): one line per change; survives broker restarts
    Watch {
        /// Resources to watch
        resources: Vec<String>,
    },
    /// Hold a lease on RESOURCE while COMMAND runs (like flock(1)), showing the queue while waiting
    #[command(
        after_help = "The lease is held exactly as long as COMMAND lives: SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to turnstile\nare passed on to COMMAND and the lease is released only after it has exited; if turnstile is killed,\nCOMMAND is killed too (Linux, Windows). COMMAND sees TURNSTILE_LEASE_ID and TURNSTILE_FENCING_TOKEN.\n\nExits with COMMAND's status; 75 when --no-wait finds RESOURCE busy or --max-wait runs out;\n76 when the lease was lost while COMMAND ran (it was stopped as --on-lost says; not with --on-lost ignore)."
    )]
    Run(run::RunArgs),
    /// Ask the holders of RESOURCE to make way; with --revoke, take the lease of one that has not after --within
    Yield(yield_::YieldArgs),
    /// Message queues: list them, publish, consume
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
}

/// Runs the CLI with the process's arguments.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("turnstile: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("turnstile: {e}");
            ExitCode::from(exit_code_of(&e))
        }
    }
}

fn exit_code_of(e: &ClientError) -> u8 {
    if e.is_unavailable() {
        EXIT_UNAVAILABLE
    } else if matches!(e, ClientError::Protocol(_)) {
        EXIT_SOFTWARE
    } else {
        EXIT_REFUSED
    }
}

pub(crate) fn options(socket: &Option<PathBuf>) -> ConnectOptions {
    let name = format!("turnstile-cli[{}]", std::process::id());
    let mut o = ConnectOptions::new(name);
    if let Some(s) = socket {
        o = o.socket(s);
    }
    o
}

async fn execute(cli: Cli) -> Result<u8, ClientError> {
    let opts = options(&cli.socket);
    match cli.command {
        Command::Ping { count, size } => ping::run(opts, count, size, cli.json).await,
        Command::Status { resources } => status::run(opts, resources, cli.json).await,
        Command::Why { resource } => why::run(opts, resource, cli.json).await,
        Command::Watch { resources } => watch::watch(opts, resources, cli.json).await,
        Command::Run(args) => run::run(opts, args).await,
        Command::Queue { command } => queue::run(opts, command, cli.json).await,
        Command::Yield(args) => yield_::run(opts, args, cli.json).await,
    }
}
