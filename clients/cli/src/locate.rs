//! Finding the broker: which socket the CLI dials when `--socket` and
//! `TURNSTILE_SOCKET` say nothing, and what it says when nothing answers.
//!
//! A user that is not root tries its own broker's socket
//! (`$XDG_RUNTIME_DIR/turnstile.sock`, else `/tmp/turnstile-$UID/...`)
//! and then the system one (`/run/turnstile/turnstile.sock`); `--user`
//! or `--system` forces one. The first socket that accepts a connection is
//! the broker. This module does not speak the protocol: the command's own
//! connection does.

use std::path::PathBuf;

/// Where the system broker listens (`packaging/turnstiled.service`).
#[cfg(unix)]
pub const SYSTEM_SOCKET: &str = "/run/turnstile/turnstile.sock";

/// Which broker to look for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Which {
    /// The user's, then the system's.
    Any,
    /// The user's only.
    User,
    /// The system's only.
    System,
}

/// The sockets to try, in order, with none named explicitly.
pub fn candidates(which: Which) -> Vec<PathBuf> {
    #[cfg(unix)]
    {
        let system = PathBuf::from(SYSTEM_SOCKET);
        let user = turnstile_client::default_socket();
        let mut list = match which {
            Which::System => vec![system],
            Which::User => vec![user],
            Which::Any => vec![user, system],
        };
        list.dedup();
        list
    }
    #[cfg(not(unix))]
    {
        // One named pipe for everyone on Windows.
        let _ = which;
        vec![turnstile_client::default_socket()]
    }
}

/// The first of `candidates` that accepts a connection, or why none did:
/// every place looked at and what it answered, and how to start a broker.
pub fn find(candidates: &[PathBuf]) -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    for socket in candidates {
        match probe(socket) {
            Ok(()) => return Ok(socket.clone()),
            Err(e) => tried.push(format!("  {}: {e}", socket.display())),
        }
    }
    Err(format!(
        "no broker answers; looked at\n{}\n{}",
        tried.join("\n"),
        how_to_start(candidates.first().map(PathBuf::as_path))
    ))
}

/// What to do when no broker answers at `socket`: the command that starts
/// one there (`turnstiled` alone serves the default socket; any other
/// needs `--socket`).
pub fn how_to_start(socket: Option<&std::path::Path>) -> String {
    let own = match socket {
        Some(s) if s != turnstile_client::default_socket() => {
            format!("turnstiled --socket {}", s.display())
        }
        _ => "turnstiled".to_string(),
    };
    if cfg!(windows) {
        format!(
            "is turnstiled running? Start the service (`sc start turnstiled`, after `turnstiled service install`) or run `{own}` in a console."
        )
    } else {
        format!(
            "is turnstiled running? Start the system broker with `sudo systemctl start turnstiled` (packaging/turnstiled.service),\nor your own in the foreground with `{own}`."
        )
    }
}

#[cfg(unix)]
fn probe(socket: &std::path::Path) -> std::io::Result<()> {
    // A connection closed before Hello: the broker drops it quietly.
    std::os::unix::net::UnixStream::connect(socket).map(drop)
}

#[cfg(not(unix))]
fn probe(_socket: &std::path::Path) -> std::io::Result<()> {
    // Opening the pipe would take one of its instances; the command's own
    // connection reports a missing broker.
    Ok(())
}
