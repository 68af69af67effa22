//! The command `turnstile run` runs under a lease, tied to the CLI's life:
//! whatever happens to `turnstile run`, the command never goes on running
//! without the lease.
//!
//! - **Killed with the CLI.** On Linux the child asks the kernel for
//!   `SIGKILL` when its parent dies (`PR_SET_PDEATHSIG`, set between fork
//!   and exec; it then checks `getppid()` to close the race with a parent
//!   that died before the call). On Windows the CLI puts itself in a job
//!   object with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` before spawning, so
//!   the command is born in the job and dies when the CLI's last handle to
//!   it closes, however the CLI ends. (Other Unixes have no such call: there
//!   the command outlives a `SIGKILL`ed CLI, and its lease ends.)
//! - **Signals passed on.** SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the
//!   CLI are sent to the command, and the CLI goes on waiting for it (the
//!   lease is released only once it has exited). A Ctrl-C typed at a
//!   terminal reaches the command directly too, since it shares the CLI's
//!   process group, so it may see that SIGINT twice. On Windows the console
//!   sends Ctrl-C to both; the CLI only keeps waiting.
//! - **The connection outlives the command.** On Unix the command inherits
//!   a second descriptor of the CLI's connection to the broker (it need not
//!   touch it), so that the broker sees the connection close only once the
//!   command has closed it too: a SIGKILLed CLI's lease ends only when its
//!   command is dead, never in the moment between the CLI's death and the
//!   command's (the kernel closes the CLI's files before it sends
//!   `PR_SET_PDEATHSIG`). After the command has exited, [`disconnect`] shuts
//!   the connection down, so that a daemon the command left behind with the
//!   descriptor does not keep it open. (A process the command started that
//!   survives a SIGKILLed CLI keeps the lease's connection open but sends no
//!   KeepAlive: the lease then ends when its TTL runs out.)
//! - **Stopped.** [`stop`] ends the command when the lease is lost.
//!
//! It does not talk to the broker: `run.rs` does.

use std::io;

use tokio::process::{Child, Command};

/// How to end the command when its lease is lost.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Ask it to stop: SIGTERM (on Windows, where a process cannot be
    /// asked, it is terminated at once).
    Term,
    /// SIGKILL (TerminateProcess on Windows).
    Kill,
}

/// The connection to the broker the command inherits (see the module
/// documentation): a descriptor on Unix, nothing on Windows.
#[cfg(unix)]
pub type Connection<'a> = Option<std::os::fd::BorrowedFd<'a>>;
/// The connection to the broker the command inherits: nothing on Windows.
#[cfg(windows)]
pub type Connection<'a> = Option<std::marker::PhantomData<&'a ()>>;

/// The connection `client` keeps for its children.
pub fn connection(client: &turnstile_client::Client) -> Connection<'_> {
    #[cfg(unix)]
    {
        client.socket_fd()
    }
    #[cfg(windows)]
    {
        let _ = client;
        None
    }
}

/// Spawns `command` tied to this process's life, inheriting `connection`
/// (see the module documentation).
pub fn spawn(command: &mut Command, connection: Connection<'_>) -> io::Result<Child> {
    imp::tie_to_parent(command, connection)?;
    command.spawn()
}

/// The command's end of its progress pipe (`TURNSTILE_PROGRESS_FD`): the
/// command inherits `fd` under its own number.
#[cfg(unix)]
pub fn inherit(command: &mut Command, fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let fd = fd.as_raw_fd();
    // SAFETY: runs in the child between fork and exec; fcntl is
    // async-signal-safe and acts on the child's copy only.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Shuts the inherited connection down for every process that holds it
/// (call once the command has exited and the lease is released).
pub fn disconnect(connection: Connection<'_>) {
    imp::disconnect(connection);
}

/// A signal sent to the CLI that the command must see; `None` once no more
/// can come.
pub struct Signals {
    imp: imp::Signals,
}

impl Signals {
    /// Starts catching the signals that are passed on. Call before spawning:
    /// from then on they no longer end the CLI.
    pub fn catch() -> io::Result<Signals> {
        Ok(Signals {
            imp: imp::Signals::catch()?,
        })
    }

    /// The next signal caught, passed on already to the process `pid` (the
    /// command's, while it has not been waited for; `None` passes it on to
    /// nobody).
    pub async fn pass_on(&mut self, pid: Option<u32>) -> Caught {
        self.imp.pass_on(pid).await
    }
}

/// A signal caught by [`Signals`].
#[derive(Copy, Clone, Debug)]
pub struct Caught {
    /// Its name, for log lines.
    pub name: &'static str,
    /// The status a program ended by it exits with, as a shell reports it:
    /// 128 + its number (Ctrl-C on Windows: 130, as SIGINT).
    pub exit_code: u8,
}

/// Ends the command (see [`Stop`]); it is not waited for.
pub fn stop(child: &mut Child, how: Stop) -> io::Result<()> {
    imp::stop(child, how)
}

#[cfg(unix)]
mod imp {
    use std::io;

    use std::os::fd::AsRawFd;

    use tokio::process::{Child, Command};
    use tokio::signal::unix::{Signal, SignalKind, signal};

    use super::{Caught, Connection, Stop};

    pub fn tie_to_parent(command: &mut Command, connection: Connection<'_>) -> io::Result<()> {
        let inherit = connection.map(|fd| fd.as_raw_fd());
        // The pid the child must find as its parent; read before the fork.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the child between fork and exec and
        // calls only async-signal-safe functions (fcntl, prctl, getppid,
        // raise) on its own copies of the descriptors.
        unsafe {
            command.pre_exec(move || {
                if let Some(fd) = inherit {
                    // Clear close-on-exec on the child's copy only.
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                #[cfg(any(target_os = "linux", target_os = "android"))]
                {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // The parent may have died before prctl: then nobody
                    // would send the signal, and the child has been
                    // re-parented.
                    if libc::getppid() != parent {
                        libc::raise(libc::SIGKILL);
                    }
                }
                Ok(())
            });
        }
        Ok(())
    }

    pub fn disconnect(connection: Connection<'_>) {
        if let Some(fd) = connection {
            // SAFETY: shutdown on a descriptor borrowed for the call.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    const PASSED_ON: [(libc::c_int, &str); 4] = [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGQUIT, "SIGQUIT"),
    ];

    pub struct Signals {
        streams: Vec<(libc::c_int, &'static str, Signal)>,
    }

    impl Signals {
        pub fn catch() -> io::Result<Signals> {
            let streams = PASSED_ON
                .iter()
                .map(|&(n, name)| Ok((n, name, signal(SignalKind::from_raw(n))?)))
                .collect::<io::Result<_>>()?;
            Ok(Signals { streams })
        }

        pub async fn pass_on(&mut self, pid: Option<u32>) -> Caught {
            let caught =
                futures::future::select_all(self.streams.iter_mut().map(|(n, name, s)| {
                    Box::pin(async move { s.recv().await.map(|_| (*n, *name)) })
                }));
            match caught.await.0 {
                Some((n, name)) => {
                    if let Some(pid) = pid {
                        // SAFETY: kill touches no memory; the pid is our
                        // child, not yet reaped (the caller stops passing
                        // signals on once `wait` has seen it exit).
                        unsafe { libc::kill(pid as libc::pid_t, n) };
                    }
                    Caught {
                        name,
                        exit_code: 128 + n as u8,
                    }
                }
                // A signal stream never ends while the runtime runs.
                None => std::future::pending().await,
            }
        }
    }

    pub fn stop(child: &mut Child, how: Stop) -> io::Result<()> {
        let Some(pid) = child.id() else {
            return Ok(()); // already exited
        };
        let n = match how {
            Stop::Term => libc::SIGTERM,
            Stop::Kill => libc::SIGKILL,
        };
        // SAFETY: as above.
        if unsafe { libc::kill(pid as libc::pid_t, n) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(windows)]
mod imp {
    use std::io;

    use tokio::process::{Child, Command};
    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation,
        SetInformationJobObject,
    };
    use windows_sys::Win32::System::Threading::GetCurrentProcess;

    use super::{Caught, Connection, Stop};

    /// Puts the CLI itself in a new job that kills its processes when its
    /// last handle closes, so the command is born in it (no window between
    /// spawn and assignment). The handle is never closed: the process's
    /// end closes it.
    pub fn tie_to_parent(_command: &mut Command, _connection: Connection<'_>) -> io::Result<()> {
        // SAFETY: plain Win32 calls with valid arguments; the limit struct
        // is plain data, zeroed as documented before setting a flag.
        unsafe {
            let job = CreateJobObjectW(std::ptr::null(), std::ptr::null());
            if job.is_null() {
                return Err(io::Error::last_os_error());
            }
            let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
            limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
            if SetInformationJobObject(
                job,
                JobObjectExtendedLimitInformation,
                std::ptr::addr_of!(limits).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            ) == 0
                || AssignProcessToJobObject(job, GetCurrentProcess()) == 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    pub fn disconnect(_connection: Connection<'_>) {}

    pub struct Signals;

    impl Signals {
        pub fn catch() -> io::Result<Signals> {
            Ok(Signals)
        }

        /// Ctrl-C reaches every process of the console, the command too:
        /// the CLI only goes on waiting for it.
        pub async fn pass_on(&mut self, _pid: Option<u32>) -> Caught {
            match tokio::signal::ctrl_c().await {
                Ok(()) => Caught {
                    name: "Ctrl-C",
                    exit_code: 130,
                },
                Err(_) => std::future::pending().await,
            }
        }
    }

    pub fn stop(child: &mut Child, _how: Stop) -> io::Result<()> {
        child.start_kill()
    }
}
