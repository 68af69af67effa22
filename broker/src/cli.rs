//! `turnstiled`'s entry point: flags and config file, logging, binding the
//! socket, opening the durable store, serving until SIGINT/SIGTERM.
//!
//! Exit codes (sysexits): 0 after a clean stop; 64 bad flags; 69 the
//! endpoint is taken by a live broker or cannot be bound; 71 an internal
//! error; 73 the data store cannot be opened (corrupt, unreadable, in use
//! by another broker, or its directory cannot be created); 78 an invalid
//! configuration.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, Settings};
use crate::platform::{listener, signals};
use crate::server::Storage;

/// Bad flags.
pub const EXIT_USAGE: u8 = 64;
/// The endpoint cannot be served.
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Something failed that should not.
pub const EXIT_SOFTWARE: u8 = 71;
/// The data store cannot be opened or read.
pub const EXIT_CANTCREAT: u8 = 73;
/// The configuration is invalid.
pub const EXIT_CONFIG: u8 = 78;

/// Runs `turnstiled` with the process's arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs `turnstiled` with these arguments (the first is the program name).
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let flags = match Settings::try_parse_from(args) {
        Ok(f) => f,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Some(check) = flags.check_config.clone() {
        let file = if check.as_os_str().is_empty() {
            flags.config.clone()
        } else {
            Some(check)
        };
        let Some(file) = file else {
            eprintln_quiet("turnstiled: --check-config needs a FILE (or --config FILE)");
            return ExitCode::from(EXIT_USAGE);
        };
        return match Settings::from_file(&file).and_then(|s| flags.clone().or(s).resolve()) {
            Ok(_) => {
                println_quiet(&format!("{}: valid", file.display()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln_quiet(&format!("turnstiled: {e}"));
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    let settings = match &flags.config {
        Some(file) => match Settings::from_file(file) {
            Ok(s) => flags.clone().or(s),
            Err(e) => {
                eprintln_quiet(&format!("turnstiled: {e}"));
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => flags,
    };
    let config = match settings.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln_quiet(&format!("turnstiled: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let shutdown = match signals::shutdown_requested() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install the signal handlers: {e}");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    // The endpoint first, so that a second broker on a live endpoint is
    // told so (exit 69) without touching the first one's store; then the
    // store, before a single connection is accepted. A store that cannot
    // be used gives the endpoint back (the guard removes the socket) and
    // stops the broker: never a silent fresh start.
    let bound = match listener::bind(&config.socket) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let mut config = config;
    let storage = match Storage::open(&config.data_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot open the data store: {e}");
            drop(bound);
            return ExitCode::from(EXIT_CANTCREAT);
        }
    };
    let (queues, messages) = storage.found();
    tracing::info!(
        data = %storage.path().display(),
        queues,
        messages,
        "durable state opened"
    );
    config.server.storage = Some(storage);
    tracing::info!(
        socket = %bound.guard.path.display(),
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        "turnstiled ready: accepting connections"
    );
    let stop = async {
        let why = shutdown.await;
        tracing::info!("{why} received: stopping");
    };
    let listener::BoundListener { listener, guard } = bound;
    let result = crate::server::run(listener, config.server, stop).await;
    // Removes the socket file and releases the lock.
    drop(guard);
    match result {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("the server failed: {e}");
            ExitCode::from(EXIT_SOFTWARE)
        }
    }
}

fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // A closed stderr must not stop the broker: write errors are dropped
    // silently instead of being reported (which would itself fail).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false)
        .try_init();
}

fn eprintln_quiet(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn println_quiet(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}
