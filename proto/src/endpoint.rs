//! Where the broker listens when nothing says otherwise: one rule for the
//! broker and every client, so that both find each other.

use std::path::PathBuf;

/// The environment variable that names the socket when `--socket` is absent.
pub const SOCKET_ENV: &str = "TURNSTILE_SOCKET";

/// The socket a broker serves and a client dials when nothing says
/// otherwise: `$XDG_RUNTIME_DIR/turnstile.sock`; else
/// `/run/turnstile/turnstile.sock` for root; else
/// `/tmp/turnstile-$UID/turnstile.sock`. On Windows the pipe
/// `\\.\pipe\turnstile`. A **file** path, never the Linux abstract
/// namespace (which has no permission checks).
pub fn default_socket() -> PathBuf {
    #[cfg(unix)]
    {
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("turnstile.sock");
        }
        // SAFETY: getuid cannot fail and touches no memory.
        let uid = unsafe { libc::getuid() };
        if uid == 0 {
            PathBuf::from("/run/turnstile/turnstile.sock")
        } else {
            PathBuf::from(format!("/tmp/turnstile-{uid}/turnstile.sock"))
        }
    }
    #[cfg(windows)]
    {
        PathBuf::from(r"\\.\pipe\turnstile")
    }
}

/// The socket named by `TURNSTILE_SOCKET`, else [`default_socket`].
pub fn socket_from_env() -> PathBuf {
    std::env::var_os(SOCKET_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_socket)
}
