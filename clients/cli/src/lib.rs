//! `turnstile`, the debug CLI: a thin shell over `turnstile-client`.
//!
//! This file parses the command line and hands each command to its module,
//! which owns what it prints: `ping.rs`, `status.rs`, `why.rs`, `watch.rs`,
//! `run.rs` (with `child.rs`, the command it runs), `queue.rs`, `yield_.rs`,
//! `history.rs`, `top.rs`;
//! `format.rs` holds only what several share.
//!
//! Exit codes (sysexits style, the same numbers as `turnstiled`'s): 0
//! success; 1 the broker refused a request; 64 bad usage (including a
//! request the broker refused as an invalid argument); 69 the broker is unavailable; 70 an internal error;
//! 75 `run --no-wait` found the resource busy (or `run`'s or `queue
//! consume`'s `--max-wait` ran out);
//! 76 `run`'s lease was lost while its command ran (see `run.rs`);
//! `run` otherwise exits with its command's status (128+N if killed by
//! signal N).

#![deny(missing_docs)]

mod child;
mod format;
mod history;
mod locate;
mod ping;
mod queue;
mod run;
#[cfg(test)]
mod snapshot;
mod status;
mod top;
mod view;
mod waiting;
mod watch;
mod why;
mod yield_;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use turnstile_client::{ClientError, ConnectOptions, ErrorCode};

/// Success.
pub const EXIT_OK: u8 = 0;
/// The broker refused a request.
pub const EXIT_REFUSED: u8 = 1;
/// Bad usage, or a request the broker refused as an invalid argument.
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
    after_help = "Exit codes: 0 success; 1 the broker refused the request; 64 bad usage (or an argument the broker refused); 69 the broker is unavailable;\n70 internal error; 75 `run --no-wait` found the resource busy, or `run`'s or `queue consume`'s --max-wait ran out;\n76 `run`'s lease was lost while the command ran (unless --on-lost ignore);\n`run` otherwise exits with its command's status (128+N when the command was killed by signal N)."
)]
struct Cli {
    /// Broker socket [default: $TURNSTILE_SOCKET, else the user's broker ($XDG_RUNTIME_DIR/turnstile.sock or /tmp/turnstile-$UID/turnstile.sock) if it answers, else the system's (/run/turnstile/turnstile.sock)]
    #[arg(long, global = true, value_name = "PATH", display_order = 100)]
    socket: Option<PathBuf>,

    /// Only look for the user's own broker, not the system's
    #[arg(long, global = true, conflicts_with_all = ["socket", "system"], display_order = 101)]
    user: bool,

    /// Only look for the system broker (/run/turnstile/turnstile.sock)
    #[arg(long, global = true, conflicts_with = "socket", display_order = 102)]
    system: bool,

    /// Print JSON instead of text (one object per line for streams)
    #[arg(long, global = true, display_order = 103)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Round trips to the broker: prints the time of each, or min/p50/p99/max with --count
    Ping {
        /// Number of round trips
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// Payload size in bytes
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Holders and waiters of resources (all in use when none named), and queues
    Status {
        /// Resources to show
        resources: Vec<String>,
        #[arg(long, help = crate::format::NO_LEGEND)]
        no_legend: bool,
    },
    /// Why am I waiting? Who holds RESOURCE, for what, since when, how far, who waits, how long
    Why {
        /// The resource
        resource: String,
    },
    /// The leases of RESOURCE that ended, as the broker recorded them, and waits and holds p50/p95/max
    History(history::HistoryArgs),
    /// Watch resources (all when none named): one line per change; survives broker restarts
    Watch {
        /// Resources to watch
        resources: Vec<String>,
    },
    /// Hold a lease on RESOURCE while COMMAND runs (like flock(1)), showing the queue while waiting
    #[command(
        after_help = "The lease is held exactly as long as COMMAND lives: SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to turnstile\nare passed on to COMMAND and the lease is released only after it has exited; if turnstile is killed,\nCOMMAND is killed too (Linux, Windows; on Linux what COMMAND started and outlives it is not, and the lease\nthen ends with its TTL). COMMAND sees TURNSTILE_LEASE_ID and TURNSTILE_FENCING_TOKEN, and\n(Unix) TURNSTILE_PROGRESS_FD: lines `DONE/TOTAL MESSAGE` written there become the lease's progress,\ne.g. `echo \"3/10 copying\" >&$TURNSTILE_PROGRESS_FD`.\n\nAs flock(1): `turnstile run -n pcm make`, `-w 0.5`, `-s`, `-c 'shell line'`, `-E 3`, `-q`.\nExits with COMMAND's status; 75 (or -E's code) when -n finds RESOURCE busy or -w runs out;\n76 when the lease was lost while COMMAND ran (it was stopped as --on-lost says; not with --on-lost ignore)."
    )]
    Run(run::RunArgs),
    /// A live full-screen view of every resource: holders, progress, queues, the last events (q quits)
    Top,
    /// Ask the holders of RESOURCE to make way; with --revoke, take the lease of one that has not after --within
    Yield(yield_::YieldArgs),
    /// Message queues: list them, publish, consume, peek, purge, requeue dead letters
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Print a shell completion script: `turnstile completions bash > /etc/bash_completion.d/turnstile`
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `turnstile manpage > turnstile.1`; with --dir, write every page (turnstile-run.1, ...) there
    Manpage {
        /// Write turnstile.1 and a page for every subcommand (turnstile-run.1, turnstile-queue-consume.1, ...) into DIR
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// The fleet, read from etcd: every host and its resources, and every global queue (needs a build with the `fleet` feature)
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
}

/// `turnstile fleet ...`.
#[derive(Subcommand, Debug)]
enum FleetCommand {
    /// Every host of the fleet and its resources, and every global queue, read from etcd (no broker needed)
    Status(FleetStatusArgs),
}

/// The arguments of `turnstile fleet status`. The command itself reads
/// etcd, which only the broker's crate can (behind its `fleet` feature):
/// the `turnstile` binary passes it to [`main_with`].
#[derive(clap::Args, Debug, Clone)]
pub struct FleetStatusArgs {
    /// etcd endpoints of the fleet, comma-separated
    #[arg(long, env = "TURNSTILE_FLEET_ETCD", value_name = "URL[,URL...]")]
    pub fleet_etcd: String,
    /// Prefix of the fleet's keys in etcd
    #[arg(long, value_name = "PREFIX", default_value = "/turnstile")]
    pub fleet_prefix: String,
}

/// What runs `turnstile fleet status` (arguments, `--json`).
pub type FleetStatus = fn(&FleetStatusArgs, bool) -> ExitCode;

/// Runs the CLI with the process's arguments, without `fleet status`.
pub fn main() -> ExitCode {
    main_with(None)
}

/// Runs the CLI with the process's arguments; `fleet` runs
/// `turnstile fleet status` (the binary passes the broker crate's).
pub fn main_with(fleet: Option<FleetStatus>) -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match &mut cli.command {
        Command::Run(args) => args.prepare(),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "turnstile", &mut std::io::stdout());
            return ExitCode::from(EXIT_OK);
        }
        Command::Manpage { dir } => {
            let command = <Cli as clap::CommandFactory>::command();
            let written = match dir {
                // The page of each subcommand too, named as the top
                // page's SUBCOMMANDS section refers to them.
                Some(dir) => clap_mangen::generate_to(command, &*dir),
                None => clap_mangen::Man::new(command).render(&mut std::io::stdout()),
            };
            return match written {
                Ok(()) => ExitCode::from(EXIT_OK),
                Err(e) => {
                    eprintln!("turnstile: cannot write the man pages: {e}");
                    ExitCode::from(EXIT_SOFTWARE)
                }
            };
        }
        Command::Fleet {
            command: FleetCommand::Status(args),
        } => {
            return match fleet {
                Some(status) => status(args, cli.json),
                None => {
                    eprintln!("turnstile fleet status: this program has no fleet support");
                    ExitCode::from(EXIT_UNAVAILABLE)
                }
            };
        }
        _ => {}
    }
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
            eprintln!("turnstile: {}", describe(&e));
            ExitCode::from(exit_code_of(&e))
        }
    }
}

fn exit_code_of(e: &ClientError) -> u8 {
    match e {
        _ if e.is_unavailable() => EXIT_UNAVAILABLE,
        ClientError::Protocol(_) => EXIT_SOFTWARE,
        ClientError::Broker {
            code: ErrorCode::InvalidArgument | ErrorCode::FrameTooLarge,
            ..
        } => EXIT_USAGE,
        ClientError::Broker {
            code: ErrorCode::Internal,
            ..
        } => EXIT_SOFTWARE,
        _ => EXIT_REFUSED,
    }
}

/// An error for people: the broker's words without the protocol's code
/// names, and for a refusal by the policy what would be allowed instead.
pub(crate) fn describe(e: &ClientError) -> String {
    let (code, message) = match e {
        ClientError::Broker { code, message } => (code, message),
        ClientError::Connect { socket, .. } => {
            return format!("{e}\n{}", locate::how_to_start(Some(socket)));
        }
        _ => return e.to_string(),
    };
    if *code != ErrorCode::PermissionDenied {
        return message.clone();
    }
    // "permission denied: uid 1000 may not lease-exclusive "pcm" (...)"
    let verb = message
        .split_once(" may not ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("VERB");
    let mut hint = String::new();
    if verb == "lease-exclusive" {
        hint.push_str("\n  a shared lease may be allowed: try --shared if the command only reads;");
    }
    hint.push_str(&format!(
        "\n  or allow it in the broker's --config file with a rule like\n    [[policy]]\n    verbs = [\"{verb}\"]\n    resources = [\"NAME\"]\n    users = [{}]",
        user_name()
    ));
    format!("{message}{hint}")
}

/// The user running the CLI as a policy rule names it: `"name"`, or the
/// uid when it has no name.
fn user_name() -> String {
    #[cfg(unix)]
    {
        // SAFETY: getuid cannot fail and has no preconditions.
        let uid = unsafe { libc::getuid() };
        format::user_name(uid).map_or_else(|| uid.to_string(), |n| format!("\"{n}\""))
    }
    #[cfg(not(unix))]
    {
        "\"YOUR-USER\"".to_string()
    }
}

/// The socket to dial: `--socket`, else `TURNSTILE_SOCKET`, else the first
/// broker that answers of those `--user` / `--system` allow (`locate.rs`).
fn socket(cli: &Cli) -> Result<PathBuf, String> {
    if let Some(s) = &cli.socket {
        return Ok(s.clone());
    }
    let which = match (cli.user, cli.system) {
        (true, _) => locate::Which::User,
        (_, true) => locate::Which::System,
        _ => match std::env::var_os(turnstile_client::SOCKET_ENV).filter(|s| !s.is_empty()) {
            Some(s) => return Ok(PathBuf::from(s)),
            None => locate::Which::Any,
        },
    };
    locate::find(&locate::candidates(which))
}

pub(crate) fn options(socket: &Option<PathBuf>) -> ConnectOptions {
    // No pid in the name: the broker knows it from the kernel and shows it.
    let mut o = ConnectOptions::new("turnstile-cli");
    if let Some(s) = socket {
        o = o.socket(s);
    }
    o
}

async fn execute(cli: Cli) -> Result<u8, ClientError> {
    let socket = match socket(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("turnstile: {e}");
            return Ok(EXIT_UNAVAILABLE);
        }
    };
    let opts = options(&Some(socket));
    match cli.command {
        Command::Ping { count, size } => ping::run(opts, count, size, cli.json).await,
        Command::Status {
            resources,
            no_legend,
        } => status::run(opts, resources, !no_legend, cli.json).await,
        Command::Why { resource } => why::run(opts, resource, cli.json).await,
        Command::Watch { resources } => watch::watch(opts, resources, cli.json).await,
        Command::History(args) => history::run(opts, args, cli.json).await,
        Command::Run(args) => run::run(opts, args).await,
        Command::Queue { command } => queue::run(opts, command, cli.json).await,
        Command::Top => top::run(opts, cli.json).await,
        Command::Yield(args) => yield_::run(opts, args, cli.json).await,
        // Answered in `main`, without a broker.
        Command::Completions { .. } | Command::Manpage { .. } | Command::Fleet { .. } => {
            Ok(EXIT_OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_refusal_suggests_what_would_be_allowed() {
        let e = ClientError::Broker {
            code: ErrorCode::PermissionDenied,
            message: "permission denied: uid 1000 may not lease-exclusive \"pcm\" (default for lease-exclusive)".into(),
        };
        let text = describe(&e);
        assert!(text.contains("--shared"), "{text}");
        assert!(text.contains("[[policy]]"), "{text}");
        assert!(text.contains("verbs = [\"lease-exclusive\"]"), "{text}");
        assert!(!text.contains("ERROR_CODE"), "{text}");
        assert_eq!(exit_code_of(&e), EXIT_REFUSED);
        let e = ClientError::Broker {
            code: ErrorCode::InvalidArgument,
            message: "a time to live of 10 ms is outside the accepted range".into(),
        };
        assert_eq!(
            describe(&e),
            "a time to live of 10 ms is outside the accepted range"
        );
        assert_eq!(exit_code_of(&e), EXIT_USAGE);
    }
}
