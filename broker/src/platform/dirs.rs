//! Default locations: the broker's socket (shared with clients, so it is
//! defined next to the wire in `turnstile_proto::endpoint`) and its data
//! directory.

use std::path::PathBuf;

pub use turnstile_proto::endpoint::{SOCKET_ENV, default_socket};

/// Where durable state (queues, counters) lives without `--data-dir`:
/// `/var/lib/turnstile` for root, else `$XDG_STATE_HOME/turnstile` or
/// `~/.local/state/turnstile`; on Windows `%ProgramData%\turnstile`.
pub fn default_data_dir() -> PathBuf {
    #[cfg(unix)]
    {
        // SAFETY: getuid cannot fail and touches no memory.
        if unsafe { libc::getuid() } == 0 {
            return PathBuf::from("/var/lib/turnstile");
        }
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("turnstile");
        }
        match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local/state/turnstile"),
            None => PathBuf::from("/var/tmp/turnstile"),
        }
    }
    #[cfg(windows)]
    {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| r"C:\ProgramData".into());
        PathBuf::from(base).join("turnstile")
    }
}
