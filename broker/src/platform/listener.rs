//! Binding the broker's endpoint safely.
//!
//! Unix: a socket **file** (never the Linux abstract namespace, which has
//! no permission checks), mode 0666 so that every local user can connect
//! (connecting grants nothing: the policy decides each verb), inside a
//! directory only the broker's user can write (created 0755 when missing;
//! the broker refuses to start if it is writable by others, because anyone
//! who can write there could swap the socket). A lock file beside the
//! socket (`PATH.lock`, held with an exclusive lock for the broker's life)
//! tells a live broker from a stale socket left by a killed one: a second
//! broker on a live path refuses and leaves the first alone; a stale socket
//! is replaced.
//!
//! The socket file is watched while the broker runs ([`Endpoint`]): one
//! unlinked by hand or by a cleaner of temporary files is noticed within
//! [`CHECK_EVERY`], logged, and bound again at the same path (the broker
//! still holds the lock, so the path is still its own). Connections
//! already open are not concerned: they do not use the file.
//!
//! Windows: a named pipe; the pipe's security (DACL, first instance,
//! remote clients) is set by `interprocess`'s listener options. A pipe
//! name has no file that could be unlinked: it lives as long as the
//! broker's listener, so there is nothing to watch.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use std::time::Duration;

use interprocess::local_socket::ListenerOptions;
use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::Listener as _;

/// How often the socket file is checked (Unix).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why the endpoint could not be bound. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another broker holds the lock: it is alive and serving.
    #[error(
        "another turnstiled{pid} is already serving {path}; stop it first or choose another --socket"
    )]
    InUse {
        /// The socket path.
        path: PathBuf,
        /// " (pid N)" when the lock file says so.
        pid: String,
    },
    /// The socket's directory is unsafe.
    #[error("{dir}: {reason}; choose a directory only the broker's user can write (--socket)")]
    UnsafeDirectory {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Something that is not a socket sits where the socket goes.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// An I/O error while preparing or binding.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A bound listener and what guards its endpoint.
pub struct BoundListener {
    /// The listener to accept on.
    pub listener: Listener,
    /// Keep it as long as the listener serves.
    pub guard: EndpointGuard,
}

impl BoundListener {
    /// The listener as an [`Endpoint`] that keeps its socket file in place
    /// (Unix), and the guard to keep while it serves.
    pub fn watched(self) -> (Endpoint, EndpointGuard) {
        (
            Endpoint {
                #[cfg(unix)]
                watch: SocketWatch::new(&self.guard.path),
                listener: self.listener,
            },
            self.guard,
        )
    }
}

/// What the server accepts connections on: a listener, and (for a socket
/// file bound by [`bind`]) the watch that re-creates the file when it is
/// unlinked. A bare [`Listener`] converts into one that is not watched
/// (tests that bind their own).
pub struct Endpoint {
    listener: Listener,
    #[cfg(unix)]
    watch: Option<SocketWatch>,
}

impl From<Listener> for Endpoint {
    fn from(listener: Listener) -> Endpoint {
        Endpoint {
            listener,
            #[cfg(unix)]
            watch: None,
        }
    }
}

impl Endpoint {
    /// The next connection. Between connections, checks the socket file
    /// every [`CHECK_EVERY`] and binds it again if it is gone.
    pub async fn accept(&mut self) -> io::Result<Stream> {
        #[cfg(unix)]
        loop {
            let Some(watch) = &mut self.watch else {
                return self.listener.accept().await;
            };
            tokio::select! {
                accepted = self.listener.accept() => return accepted,
                _ = watch.tick.tick() => {
                    if let Some(listener) = watch.check() {
                        // The old listener is unreachable (no file names
                        // it): dropping it closes nothing anyone uses.
                        self.listener = listener;
                    }
                }
            }
        }
        #[cfg(not(unix))]
        self.listener.accept().await
    }
}

/// The socket file as the broker bound it: which inode, checked how often.
#[cfg(unix)]
struct SocketWatch {
    path: PathBuf,
    /// (device, inode) of the file the broker bound.
    bound: (u64, u64),
    tick: tokio::time::Interval,
    /// Something else sits at the path: said once.
    told_replaced: bool,
    /// The last re-creation failed: said once until it succeeds.
    told_failed: bool,
}

#[cfg(unix)]
impl SocketWatch {
    fn new(path: &Path) -> Option<SocketWatch> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).ok()?;
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(SocketWatch {
            path: path.to_path_buf(),
            bound: (meta.dev(), meta.ino()),
            tick,
            told_replaced: false,
            told_failed: false,
        })
    }

    /// A new listener when the socket file was gone and is bound again.
    fn check(&mut self) -> Option<Listener> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.bound => None,
            Ok(_) => {
                // Only the broker's user (or root) can write the directory:
                // whoever put this there meant it. Leave it, say so once.
                if !self.told_replaced {
                    self.told_replaced = true;
                    tracing::error!(
                        path = %self.path.display(),
                        "the socket file was replaced by another file while the broker runs; \
                         new clients cannot reach this broker (connections already open go on)"
                    );
                }
                None
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.told_failed {
                    tracing::warn!(
                        path = %self.path.display(),
                        "the socket file was removed while the broker runs: binding it again"
                    );
                }
                match listen(&self.path) {
                    Ok((listener, bound)) => {
                        self.bound = bound;
                        self.told_failed = false;
                        tracing::info!(path = %self.path.display(), "socket file re-created: accepting connections again");
                        Some(listener)
                    }
                    Err(e) => {
                        if !self.told_failed {
                            self.told_failed = true;
                            tracing::error!(
                                "cannot re-create the socket file ({e}); retrying every {CHECK_EVERY:?}"
                            );
                        }
                        None
                    }
                }
            }
            Err(_) => None,
        }
    }
}

/// The endpoint's lock. Dropping it removes the socket file and the lock
/// file, and releases the lock.
pub struct EndpointGuard {
    /// What the listener is bound to.
    pub path: PathBuf,
    _lock: Option<File>,
}

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(lock_path(&self.path));
        }
    }
}

#[cfg(unix)]
fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BindError + 'a {
    move |source| BindError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Binds the broker's socket at `path` (Unix) or pipe name (Windows).
/// Must be called inside a tokio runtime.
#[cfg(unix)]
pub fn bind(path: &Path) -> Result<BoundListener, BindError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(io_err("cannot create the socket directory", &dir))?;
    }
    let meta = std::fs::metadata(&dir).map_err(io_err("cannot inspect", &dir))?;
    let me = super::peer::own_uid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(BindError::UnsafeDirectory {
            dir,
            reason: format!(
                "it belongs to uid {}, not to the broker's uid {me}",
                meta.uid()
            ),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(BindError::UnsafeDirectory {
            dir,
            reason: format!(
                "it is writable by other users (mode {:o})",
                meta.mode() & 0o7777
            ),
        });
    }

    let lock_file = lock_path(path);
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_file)
        .map_err(io_err("cannot open the lock file", &lock_file))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&lock_file)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            return Err(BindError::InUse {
                path: path.to_path_buf(),
                pid,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(io_err("cannot lock", &lock_file)(e));
        }
    }
    lock.set_len(0)
        .and_then(|_| writeln!(lock, "{}", std::process::id()))
        .map_err(io_err("cannot write the lock file", &lock_file))?;

    // We hold the lock, so a socket file here is stale (its broker died).
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            tracing::info!(path = %path.display(), "replacing a stale socket left by a broker that is gone");
            std::fs::remove_file(path).map_err(io_err("cannot remove the stale socket", path))?;
        }
        Ok(_) => return Err(BindError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot inspect", path)(e)),
    }

    let (listener, _) = listen(path)?;
    Ok(BoundListener {
        listener,
        guard: EndpointGuard {
            path: path.to_path_buf(),
            _lock: Some(lock),
        },
    })
}

/// Listens on a socket file at `path` (where nothing is), mode 0666;
/// answers the listener and the (device, inode) of its file.
#[cfg(unix)]
fn listen(path: &Path) -> Result<(Listener, (u64, u64)), BindError> {
    use interprocess::local_socket::{GenericFilePath, ToFsName};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let name = path
        .to_fs_name::<GenericFilePath>()
        .map_err(io_err("invalid socket path", path))?;
    let listener = ListenerOptions::new()
        .name(name)
        .reclaim_name(false)
        .try_overwrite(false)
        .create_tokio()
        .map_err(io_err("cannot listen on", path))?;
    // bind() applied the umask; widen to 0666 now. The directory is ours
    // alone, so nobody can swap the file between bind and chmod.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(io_err("cannot set the mode of", path))?;
    let meta = std::fs::symlink_metadata(path).map_err(io_err("cannot inspect", path))?;
    Ok((listener, (meta.dev(), meta.ino())))
}

/// The pipe's security descriptor, in SDDL ("Security Descriptor String
/// Format", Microsoft Learn), protected from inheritance (`P`):
///
/// - deny everything to network logons (`NU`) and anonymous (`AN`): with
///   `PIPE_REJECT_REMOTE_CLIENTS` (interprocess sets it by default) remote
///   clients never get in;
/// - full control (`GA`) to LocalSystem (`SY`), Administrators (`BA`) and
///   the pipe's owner (`OW`: the broker's own account, which must be able
///   to create further instances of its pipe);
/// - to authenticated users (`AU`, interactive ones included) `0x0012019B`:
///   `FILE_GENERIC_READ | FILE_GENERIC_WRITE` **without** `FILE_APPEND_DATA`
///   (0x4), which for a pipe is `FILE_CREATE_PIPE_INSTANCE`: clients can
///   read and write but never add a server instance to squat the name
///   ("Named Pipe Security and Access Rights"). The client asks for no
///   more (see `turnstile-client`'s `transport.rs`).
///
/// Being able to connect grants nothing else: the policy decides each verb.
#[cfg(windows)]
pub const PIPE_SDDL: &str =
    "D:P(D;;GA;;;NU)(D;;GA;;;AN)(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;OW)(A;;0x0012019b;;;AU)";

/// Binds the broker's named pipe. `path` is `\\.\pipe\NAME` or a bare name.
///
/// The first instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE`
/// (interprocess does this for the first instance of a listener), so a
/// name already taken, by a live broker or by a squatter, makes this fail
/// loudly instead of joining someone else's pipe. Wine does not enforce
/// that flag nor the DACL (seen under Wine 8); only real Windows proves it.
#[cfg(windows)]
pub fn bind(path: &Path) -> Result<BoundListener, BindError> {
    use interprocess::local_socket::{GenericNamespaced, ToNsName};
    use interprocess::os::windows::local_socket::ListenerOptionsExt;
    use interprocess::os::windows::security_descriptor::SecurityDescriptor;
    let text = path.to_string_lossy();
    let bare = text.strip_prefix(r"\\.\pipe\").unwrap_or(&text).to_string();
    let name = bare
        .clone()
        .to_ns_name::<GenericNamespaced>()
        .map_err(io_err("invalid pipe name", path))?;
    let sddl = widestring::U16CString::from_str(PIPE_SDDL).map_err(|e| BindError::Io {
        what: "invalid security descriptor for",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
    })?;
    let descriptor = SecurityDescriptor::deserialize(&sddl)
        .map_err(io_err("cannot build the security descriptor of", path))?;
    let listener = ListenerOptions::new()
        .name(name)
        .security_descriptor(descriptor)
        .create_tokio()
        .map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied => BindError::InUse {
                path: path.to_path_buf(),
                pid: String::new(),
            },
            _ => io_err("cannot create the pipe", path)(e),
        })?;
    Ok(BoundListener {
        listener,
        guard: EndpointGuard {
            path: path.to_path_buf(),
            _lock: None,
        },
    })
}
