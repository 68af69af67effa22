//! The processes of a run: the real `turnstiled`, and the bench binary
//! re-executed in a role (echo server, relay, handoff peer, watchers...).
//!
//! Every child gets `PR_SET_PDEATHSIG = SIGKILL` before it execs, so that
//! it dies with the harness however the harness ends (a panic, Ctrl-C, a
//! CI timeout); the handles also kill and reap their child when dropped.
//! Children are spawned from the main thread only: the death signal fires
//! when the *thread* that forked the child exits.
//!
//! It also reads what the kernel says about a process: its scheduling state
//! (is it asleep?), its resident memory and its CPU time.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::PATIENCE;

/// The environment variable that makes the bench binary run as a peer.
pub const ROLE_ENV: &str = "TURNSTILE_BENCH_ROLE";

/// Arms the death signal in a freshly forked child, before it execs, and
/// pins it to `cpus` if given (a server in the current placement).
fn die_with_parent(cmd: &mut Command, cpus: Option<libc::cpu_set_t>) {
    let parent = std::process::id() as libc::pid_t;
    let arm = move || {
        // SAFETY: plain system calls with constant arguments, and a
        // cpu_set_t copied into the closure before the fork.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            // The parent may have died before the signal was armed.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            if let Some(set) = &cpus
                && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe system calls
    // (prctl, getppid, sched_setaffinity, _exit) and touches no memory of
    // the parent.
    unsafe {
        cmd.pre_exec(arm);
    }
}

/// Raises this process's soft limit on open files to its hard limit; the
/// children (the broker too) inherit it. Returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to fill in and then to pass back.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// A running `turnstiled` on a socket of its own, killed when dropped.
pub struct Broker {
    child: Child,
    /// The socket it serves.
    pub socket: PathBuf,
    log: PathBuf,
    /// Stop it with SIGTERM, so that a profiler it runs under can write
    /// its output.
    gentle: bool,
}

/// The environment variable with a command to run the broker under.
pub const BROKER_PREFIX_ENV: &str = "TURNSTILE_BENCH_BROKER_PREFIX";

/// The environment variable with more flags for the broker.
pub const BROKER_ARGS_ENV: &str = "TURNSTILE_BENCH_BROKER_ARGS";

impl Broker {
    /// Starts `turnstiled` on `dir/broker.sock` with its data in `dir/data`,
    /// logging warnings to `dir/broker.log`, and waits until it accepts.
    pub fn start(dir: &Path, extra: &[&str]) -> Result<Broker> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("broker.sock");
        let log = dir.join("broker.log");
        // A profiler to run the broker under, for instance
        // `TURNSTILE_BENCH_BROKER_PREFIX="valgrind --tool=callgrind"`.
        let prefix: Vec<String> = std::env::var(BROKER_PREFIX_ENV)
            .map(|p| p.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(env!("CARGO_BIN_EXE_turnstiled"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_turnstiled")),
        };
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--log-level", "warn"])
            // No heartbeats: a fan-out round must see only its own event.
            .args(["--heartbeat-interval", "0s"])
            .args(["--max-connections", "20000"])
            .args(["--max-connections-per-uid", "20000"])
            // The queue figures pipeline more publishes than the default cap.
            .args(["--max-in-flight", "100000"])
            // The queue figures publish into one queue faster than they
            // drain it: since a checkpoint no longer holds publishes up,
            // the 8 x 32 in flight row alone passes the default 100 000
            // messages a queue may hold, and the publish stops with "queue
            // ... is full" (the figure is the publish rate, not the
            // broker's limit). 64 B payloads: 10 million is 640 MB of
            // payloads, hence the bytes bound of 1 GiB.
            .args(["--max-queue-depth", "10000000"])
            .args(["--max-queue-bytes", "1073741824"])
            .args(extra)
            // More flags for the broker, for instance
            // `TURNSTILE_BENCH_BROKER_ARGS="--history-max-entries 0"` to take
            // the figures without recording lease history.
            .args(
                std::env::var(BROKER_ARGS_ENV)
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        die_with_parent(&mut cmd, super::placement::server_set());
        let child = cmd.spawn().context("spawning turnstiled")?;
        let mut broker = Broker {
            child,
            socket,
            log,
            gentle: !prefix.is_empty(),
        };
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&broker.socket).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                bail!("turnstiled exited with {status}: {}", broker.log_tail());
            }
            if start.elapsed() > PATIENCE {
                bail!("turnstiled did not listen within {PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(broker)
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of the broker's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.gentle {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bench binary running as a peer in some role. It reports on its
/// stdout, one line at a time; it is killed when dropped.
pub struct Peer {
    child: Child,
    role: String,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    /// Starts the bench binary as `role` with `args`; a server role is
    /// pinned to the current placement's server CPU, a client role stays
    /// on the harness's.
    pub fn spawn(role: &str, args: &[String]) -> Result<Peer> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args(args).env(ROLE_ENV, role).stderr(Stdio::inherit());
        let server = super::placement::is_server_role(role);
        Peer::start(cmd, role, server)
    }

    /// Starts another program (a peer broker such as `dbus-daemon`) as a
    /// server of the current placement, reading its stdout by lines. Its
    /// stderr is dropped: nats-server logs every start there, and
    /// dbus-daemon warns that it cannot raise its open-files limit; a
    /// daemon that fails shows as a missing address or port instead.
    pub fn program(program: &Path, args: &[String], role: &str) -> Result<Peer> {
        let mut cmd = Command::new(program);
        cmd.args(args).stderr(Stdio::null());
        Peer::start(cmd, role, true)
    }

    fn start(mut cmd: Command, role: &str, server: bool) -> Result<Peer> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let cpus = if server {
            super::placement::server_set()
        } else {
            None
        };
        die_with_parent(&mut cmd, cpus);
        let mut child = cmd.spawn().with_context(|| format!("spawning {role}"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, lines) = mpsc::channel();
        // A reader thread, so that every wait on a line can be bounded. It
        // forks nothing, so the death signal's thread rule does not apply.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Peer {
            child,
            role: role.to_string(),
            lines,
        })
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the peer prints, waiting at most [`PATIENCE`].
    pub fn line(&mut self) -> Result<String> {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => Ok(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("{} printed nothing for {PATIENCE:?}", self.role)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string());
                bail!(
                    "{} ended ({status:?}) before saying what it should",
                    self.role
                )
            }
        }
    }

    /// Waits for a line that starts with `word`, and returns the rest of it.
    pub fn expect(&mut self, word: &str) -> Result<String> {
        let line = self.line()?;
        match line.strip_prefix(word) {
            Some(rest) => Ok(rest.trim().to_string()),
            None => bail!("{} said {line:?}, expected {word}", self.role),
        }
    }

    /// Waits for the peer to exit on its own.
    pub fn wait(mut self) -> Result<()> {
        let status = self.child.wait()?;
        if !status.success() {
            bail!("{} exited with {status}", self.role);
        }
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The scheduling state letter of a process's main thread (`R`, `S`, `D`...)
/// from `/proc/PID/stat`, or `None` once it is gone.
pub fn sched_state(pid: u32) -> Option<u8> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the state follows
    // the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

/// Waits (spinning politely) until every one of `pids` is asleep in the
/// kernel. Returns false if one was still awake after a second.
pub fn wait_asleep(pids: &[u32]) -> bool {
    let start = Instant::now();
    loop {
        if pids.iter().all(|&p| sched_state(p) == Some(b'S')) {
            return true;
        }
        if start.elapsed() > Duration::from_secs(1) {
            return false;
        }
        std::thread::yield_now();
    }
}

/// A process's resident set size, in bytes (`VmRSS` in `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("bad VmRSS line {line:?}"))?
        .parse()?;
    Ok(kib * 1024)
}

/// CPU time (user + system, all threads) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}
