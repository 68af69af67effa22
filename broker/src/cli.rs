//! `turnstiled`'s entry point: flags and config file, logging, binding the
//! socket, opening the durable store, serving until SIGINT/SIGTERM.
//!
//! Exit codes (sysexits): 0 after a clean stop; 64 bad flags; 69 the
//! endpoint is taken by a live broker or cannot be bound; 70 an internal
//! error (as for `turnstile`); 73 the data store cannot be opened (corrupt, unreadable, in use
//! by another broker, or its directory cannot be created, is not one, is
//! not writable by the broker or is writable by other users); 78 an
//! invalid configuration.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, Settings};
use crate::platform::service::{self, ServiceError};
use crate::platform::{limits, listener, readiness, signals};
use crate::server::Storage;

/// Bad flags.
pub const EXIT_USAGE: u8 = 64;
/// The endpoint cannot be served.
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Something failed that should not (EX_SOFTWARE, as `turnstile` says it).
pub const EXIT_SOFTWARE: u8 = 70;
/// The data store cannot be opened or read.
pub const EXIT_CANTCREAT: u8 = 73;
/// The configuration is invalid.
pub const EXIT_CONFIG: u8 = 78;

/// Runs `turnstiled` with the process's arguments.
pub fn main() -> ExitCode {
    // A test build only (feature `failpoints`): reads FAILPOINTS.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    main_from(std::env::args_os())
}

/// Runs `turnstiled` with these arguments (the first is the program name).
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|a| a == "service") {
        return service_command(&args[2..]);
    }
    if args.get(1).is_some_and(|a| a == "manpage") && args.len() == 2 {
        return manpage();
    }
    let config = match prepare(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&config.log_level, false);
    block_on(async {
        // Inside the runtime: the handlers register with its driver.
        match signals::shutdown_requested() {
            Ok(shutdown) => serve(config, shutdown).await,
            Err(e) => {
                tracing::error!("cannot install the signal handlers: {e}");
                ExitCode::from(EXIT_SOFTWARE)
            }
        }
    })
}

/// Parses the flags, reads the config file and resolves the settings; the
/// `Err` is the exit code (after `--help`, `--check-config`, or an error
/// already printed).
fn prepare(args: Vec<std::ffi::OsString>) -> Result<Config, ExitCode> {
    let flags = match Settings::try_parse_from(args) {
        Ok(f) => f,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return Err(ExitCode::from(code));
        }
    };
    if let Some(check) = flags.check_config.clone() {
        let file = check.or_else(|| flags.config.clone());
        let Some(file) = file else {
            eprintln_quiet("turnstiled: --check-config needs a FILE (or --config FILE)");
            return Err(ExitCode::from(EXIT_USAGE));
        };
        return Err(match flags.clone().resolve_with(Some(&file)) {
            Ok(_) => {
                println_quiet(&format!("{}: valid", file.display()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln_quiet(&format!("turnstiled: {e}"));
                ExitCode::from(EXIT_CONFIG)
            }
        });
    }
    let file = flags.config.clone();
    flags.resolve_with(file.as_deref()).map_err(|e| {
        eprintln_quiet(&format!("turnstiled: {e}"));
        ExitCode::from(EXIT_CONFIG)
    })
}

/// `turnstiled manpage`: the man page (roff) on stdout, for packaging.
fn manpage() -> ExitCode {
    let page = clap_mangen::Man::new(<Settings as clap::CommandFactory>::command());
    match page.render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln_quiet(&format!("turnstiled: cannot write the man page: {e}"));
            ExitCode::from(EXIT_SOFTWARE)
        }
    }
}

fn block_on(serve: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(serve),
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            ExitCode::from(EXIT_SOFTWARE)
        }
    }
}

/// `turnstiled service install|uninstall|run [FLAGS...]`: the Windows
/// service entry points (see `platform/service.rs`), given [`run_service`]
/// to serve with. On Unix the service manager is systemd (or none): see
/// `packaging/turnstiled.service`.
fn service_command(rest: &[std::ffi::OsString]) -> ExitCode {
    match service::command(rest, run_service) {
        Ok(done) => {
            println_quiet(done);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln_quiet(&e.to_string());
            ExitCode::from(match e {
                ServiceError::Usage | ServiceError::Unsupported => EXIT_USAGE,
                ServiceError::Failed { .. } => EXIT_SOFTWARE,
            })
        }
    }
}

/// The broker run by the Windows service: the same as the command line,
/// with `stop` (the SCM's stop request) in place of Ctrl-C, and logs in
/// `%ProgramData%\turnstile\turnstiled.log`. Returns the Win32 exit code.
fn run_service(flags: Vec<std::ffi::OsString>, stop: service::Stop) -> u32 {
    let args = std::iter::once("turnstiled".into()).chain(flags).collect();
    let config = match prepare(args) {
        Ok(c) => c,
        Err(_) => return u32::from(EXIT_CONFIG),
    };
    init_logging(&config.log_level, true);
    if block_on(serve(config, stop)) == ExitCode::SUCCESS {
        0
    } else {
        u32::from(EXIT_SOFTWARE)
    }
}

async fn serve(config: Config, shutdown: impl Future<Output = &'static str>) -> ExitCode {
    raise_open_files_limit(config.server.max_connections);
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
    if let Err(why) = check_data_dir(&config.data_dir) {
        tracing::error!("{why}");
        drop(bound);
        return ExitCode::from(EXIT_CANTCREAT);
    }
    let storage = match Storage::open_with_options(&config.data_dir, config.store) {
        Ok(s) => s,
        Err(e) => {
            match unwritable(&config.data_dir) {
                Some(why) => tracing::error!("{why}"),
                None => tracing::error!("cannot open the data store: {e}"),
            }
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
    readiness::ready(&bound.guard.path);
    let stop = async {
        let why = shutdown.await;
        tracing::info!("{why} received: stopping");
        readiness::stopping();
    };
    // The socket file is watched and re-created if it is unlinked.
    let (endpoint, guard) = bound.watched();
    let result = crate::server::run(endpoint, config.server, stop).await;
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

/// What to do about a data directory the broker cannot use, said at the
/// end of each sentence about one.
const DATA_DIR_ADVICE: &str = "or start turnstiled with another --data-dir (a directory it \
                               creates, mode 700, when missing)";

/// Whether `dir` can be the data directory, checked before the store
/// opens it so that the sentence is about the directory, not about a file
/// in it: it must be a directory (or not exist yet, when its nearest
/// existing ancestor is one) and must not be writable by other users, who
/// could replace the store's files (refused, as the socket's directory
/// is). One that other users can read or enter is only warned about:
/// the store's files are the broker's user's alone (0600, see
/// `store::make_private`), and refusing it would stop a broker that ran
/// before.
fn check_data_dir(dir: &std::path::Path) -> Result<(), String> {
    let shown = dir.display();
    let Some(existing) = dir.ancestors().find(|a| a.exists()) else {
        return Ok(());
    };
    if !existing.is_dir() {
        return Err(if existing == dir {
            format!(
                "the data directory {shown} is a file, not a directory: move the file aside, \
                 {DATA_DIR_ADVICE}"
            )
        } else {
            format!(
                "the data directory {shown} cannot be created: {} is a file, not a directory; \
                 move the file aside, {DATA_DIR_ADVICE}",
                existing.display()
            )
        });
    }
    if existing != dir {
        return Ok(());
    }
    let Some(mode) = crate::platform::fs::mode_bits(dir) else {
        return Ok(());
    };
    if mode & 0o022 != 0 {
        return Err(format!(
            "the data directory {shown} is writable by other users (mode {mode:o}), who could \
             replace the store's files: make it the broker's user's alone (chmod 700 {shown}), \
             {DATA_DIR_ADVICE}"
        ));
    }
    if mode & 0o005 != 0 {
        tracing::warn!(
            "other users can enter the data directory {shown} (mode {mode:o}): the store's \
             files are the broker's user's alone (0600), but others see their names and sizes; \
             chmod 700 {shown}"
        );
    }
    Ok(())
}

/// After the store failed to open: whether that is because the user the
/// broker runs as may not write in the data directory (or, when it is
/// missing, in the directory that would hold it), said so. Found by making
/// a file there and removing it at once.
fn unwritable(dir: &std::path::Path) -> Option<String> {
    let existing = dir.ancestors().find(|a| a.is_dir())?;
    let probe = existing.join(format!(".turnstiled-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(if existing == dir {
            format!(
                "the data directory {} is not writable by the user turnstiled runs as ({e}): \
                 give that user the directory (chown it, chmod 700), {DATA_DIR_ADVICE}",
                dir.display()
            )
        } else {
            format!(
                "the data directory {} cannot be created: the user turnstiled runs as may not \
                 write in {} ({e}); create it for that user (mode 700), {DATA_DIR_ADVICE}",
                dir.display(),
                existing.display()
            )
        }),
        Err(_) => None,
    }
}

/// Descriptors the broker holds besides its connections: stdio, the
/// listener and its lock file, the store, the runtime's poller and wakers, a
/// log file; counted generously.
const FILES_BESIDES_CONNECTIONS: u64 = 64;

/// Raises the soft open-files limit to the hard one (see
/// `platform/limits.rs`) and warns when even that is below what
/// `--max-connections` needs: past it `accept()` fails with `EMFILE`.
fn raise_open_files_limit(max_connections: usize) {
    let needed = (max_connections as u64).saturating_add(FILES_BESIDES_CONNECTIONS);
    match limits::raise_open_files_limit() {
        Ok(Some(l)) => {
            if l.now > l.before {
                tracing::info!(
                    from = l.before,
                    to = l.now,
                    "raised the open-files limit (soft RLIMIT_NOFILE) to the hard limit"
                );
            }
            if l.now < needed {
                tracing::warn!(
                    "the open-files limit is {} (hard limit {}), below the {needed} that \
                     --max-connections {max_connections} needs: connections past about {} \
                     cannot be accepted; raise the hard limit (LimitNOFILE= in the systemd \
                     unit, ulimit -Hn) or lower --max-connections",
                    l.now,
                    l.hard,
                    l.now.saturating_sub(FILES_BESIDES_CONNECTIONS)
                );
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
    }
}

/// Logs to stderr, or (`to_file`, for the Windows service, which has none)
/// to `turnstiled.log` in the platform's data directory.
fn init_logging(level: &str, to_file: bool) {
    // `level` was checked by `config::log_filter`; a RUST_LOG that does
    // not parse is said, not silently replaced.
    let bad_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_err());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let file = to_file
        .then(|| {
            let dir = crate::platform::dirs::default_data_dir();
            std::fs::create_dir_all(&dir).ok()?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("turnstiled.log"))
                .ok()
        })
        .flatten();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // A closed stderr must not stop the broker: write errors are
        // dropped silently instead of being reported (which would itself
        // fail).
        .log_internal_errors(false);
    let _ = match file {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        None => builder
            // Colours only on a terminal, and never with NO_COLOR set
            // (no-color.org: present and not empty).
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            )
            .with_writer(std::io::stderr)
            .try_init(),
    };
    if let Some(v) = bad_env {
        tracing::warn!("RUST_LOG={v:?} is not a log filter: using --log-level {level:?}");
    }
}

fn eprintln_quiet(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn println_quiet(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}
