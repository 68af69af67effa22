//! The integration-test harness: spawn the real `turnstiled` on a temporary
//! socket, connect to it with the client library or with raw frames, send
//! it real signals, restart it on the same data.
//!
//! Every wait is bounded and generous; tests assert order and outcome,
//! never speed.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use turnstile_client::{Client, ConnectOptions};

pub mod flood;
mod raw;

#[allow(unused_imports)]
pub use raw::{PATIENCE, Raw, encode, error_code, hold_many};

/// A running `turnstiled` in its own temporary directory.
pub struct Broker {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub _tmp: Option<tempfile::TempDir>,
}

pub fn turnstiled() -> &'static str {
    env!("CARGO_BIN_EXE_turnstiled")
}

pub fn turnstile_cli() -> &'static str {
    env!("CARGO_BIN_EXE_turnstile")
}

/// A user other than root and the broker's own, so that the per-user
/// limits bind it: tests run roles as it.
pub const NOBODY: u32 = 65534;

/// Whether the tests run as root (needed to run a role as [`NOBODY`]).
#[cfg(unix)]
pub fn is_root() -> bool {
    // SAFETY: geteuid touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this test can run a client as [`NOBODY`] (only root can start a
/// process as another user); says that it is skipped when it cannot.
#[cfg(unix)]
pub fn can_run_as_nobody() -> bool {
    let root = is_root();
    if !root {
        eprintln!("skipped: needs root to run a client as another user");
    }
    root
}

/// A broker whose socket a second user can reach (the socket directory is
/// 0755 rather than the temp dir's 0700; still not writable by others).
#[cfg(unix)]
pub fn broker_for_two_users(args: &[&str]) -> Broker {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut broker = start_in(tmp.path(), args);
    broker._tmp = Some(tmp);
    broker
}

/// `turnstile` as [`NOBODY`] against `broker`, ready to run.
#[cfg(unix)]
pub fn cli_as_nobody_command(broker: &Broker, args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(turnstile_cli());
    cmd.arg("--socket")
        .arg(&broker.socket)
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null());
    cmd
}

/// Runs the CLI as [`NOBODY`] against `broker`: (exit code, stdout, stderr).
#[cfg(unix)]
pub fn cli_as_nobody(broker: &Broker, args: &[&str]) -> (i32, String, String) {
    let out = cli_as_nobody_command(broker, args)
        .output()
        .expect("run turnstile as nobody");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `turnstiled` with `args`, `{FILE}` in them standing for a config file
/// holding `toml`: its exit code, stdout and stderr, and the file's path.
pub fn check_config(toml: &str, args: &[&str]) -> (Option<i32>, String, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("turnstiled.toml");
    std::fs::write(&file, toml).unwrap();
    let file = file.to_str().unwrap();
    let out = Command::new(turnstiled())
        .args(args.iter().map(|a| a.replace("{FILE}", file)))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file.to_string(),
    )
}

/// Starts a broker with default settings on a fresh socket.
pub fn spawn_broker() -> Broker {
    spawn_broker_with(&[])
}

/// Starts a broker with extra flags on a fresh socket.
pub fn spawn_broker_with(args: &[&str]) -> Broker {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_path_buf();
    let mut b = start_in(&dir, args);
    b._tmp = Some(tmp);
    b
}

/// Starts a broker on `dir/turnstile.sock` with data in `dir/data`, and
/// waits until it accepts connections.
pub fn start_in(dir: &Path, args: &[&str]) -> Broker {
    let b = start_in_no_wait(dir, args, None);
    wait_ready(&b);
    b
}

/// Starts a broker without waiting for it; its stderr goes to `stderr`, or
/// to a log file in `dir` when `None`.
pub fn start_in_no_wait(dir: &Path, args: &[&str], stderr: Option<Stdio>) -> Broker {
    start_in_no_wait_env(dir, args, stderr, &[])
}

/// Starts a broker in `dir` with `env` set for it, and waits until it
/// accepts connections.
pub fn start_in_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Broker {
    let b = start_in_no_wait_env(dir, args, None, env);
    wait_ready(&b);
    b
}

/// As [`start_in_no_wait`], with `env` set for the broker.
pub fn start_in_no_wait_env(
    dir: &Path,
    args: &[&str],
    stderr: Option<Stdio>,
    env: &[(&str, &str)],
) -> Broker {
    let socket = dir.join("turnstile.sock");
    let data_dir = dir.join("data");
    let log = dir.join(format!("broker-{}.log", unique()));
    let stderr =
        stderr.unwrap_or_else(|| Stdio::from(std::fs::File::create(&log).expect("log file")));
    let child = Command::new(turnstiled())
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--log-level", "debug"])
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn turnstiled");
    Broker {
        child,
        dir: dir.to_path_buf(),
        socket,
        data_dir,
        log,
        _tmp: None,
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Waits until the broker's socket accepts a connection.
#[track_caller]
pub fn wait_ready(b: &Broker) {
    let start = Instant::now();
    loop {
        if std::os::unix::net::UnixStream::connect(&b.socket).is_ok() {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "broker did not start within {PATIENCE:?}; log:\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Broker {
    /// The broker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal to the broker.
    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// SIGKILLs the broker and reaps it.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits for the broker to exit.
    #[track_caller]
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_child(&mut self.child)
    }

    /// Connection options for this broker.
    pub fn options(&self, name: &str) -> ConnectOptions {
        ConnectOptions::new(name).socket(&self.socket)
    }

    /// A client-library connection.
    pub async fn client(&self, name: &str) -> Client {
        Client::connect(self.options(name))
            .await
            .expect("connect to the broker")
    }

    /// A raw connection that has said Hello.
    pub async fn raw(&self) -> Raw {
        Raw::connect(&self.socket).await
    }

    /// A raw connection that has said nothing yet.
    pub async fn raw_no_hello(&self) -> Raw {
        Raw::connect_no_hello(&self.socket).await
    }

    /// Runs the CLI against this broker and returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(turnstile_cli())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run turnstile");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts the CLI against this broker in the background.
    pub fn cli_spawn(&self, args: &[&str]) -> Child {
        Command::new(turnstile_cli())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn turnstile")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill touches no memory; a stale pid only yields an error.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Waits for a child to exit, within [`PATIENCE`].
#[track_caller]
pub fn wait_child(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "child did not exit within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Takes a lease on `resource` and releases it: two state changes.
pub async fn acquire_release(client: &Client, resource: &str) {
    client
        .acquire(resource)
        .wait()
        .await
        .expect("acquire")
        .release()
        .await
        .expect("release");
}

/// What a role process (this test binary re-executed) reported on a line:
/// the text after `ROLE: ` (libtest may print `test NAME ... ` before it).
pub fn role_line(line: &str) -> Option<String> {
    line.find("ROLE: ")
        .map(|at| line[at + 6..].trim().to_string())
}

/// Reads a role process's output up to its next `ROLE: ` line.
#[track_caller]
pub fn read_role_line(out: &mut impl std::io::BufRead) -> String {
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the role process exited"
        );
        if let Some(said) = role_line(&line) {
            return said;
        }
    }
}

/// Reads everything a child wrote to a pipe.
pub fn read_all(r: Option<impl Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

/// A process's resident memory in KiB, from `/proc` (0 where there is none).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// This test binary re-executed as [`NOBODY`] to run only the test
/// `role_test` (a role: it acts when `TURNSTILE_TEST_ROLE` is `"nobody"`
/// and returns at once otherwise), with `TURNSTILE_SOCKET` set to the
/// broker's and `env`. Its stdin tells it when to go on, a line at a
/// time; its stdout carries `ROLE:` lines. Killed when dropped.
#[cfg(unix)]
pub struct RoleProcess {
    pub child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

#[cfg(unix)]
impl RoleProcess {
    pub fn as_nobody(broker: &Broker, role_test: &str, env: &[(&str, &str)]) -> RoleProcess {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([role_test, "--exact", "--nocapture", "--test-threads=1"])
            .env("TURNSTILE_TEST_ROLE", "nobody")
            .env("TURNSTILE_SOCKET", &broker.socket)
            .envs(env.iter().copied())
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        RoleProcess { child, out }
    }

    /// Its next `ROLE:` line.
    #[track_caller]
    pub fn said(&mut self) -> String {
        read_role_line(&mut self.out)
    }

    /// Sends it a line (a command).
    pub fn tell(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

/// In a role: waits for the test's next line on stdin (a command), read
/// off the runtime's thread so that the role's tasks go on meanwhile (a
/// blocking read on a current-thread runtime stopped them all:
/// connections that were to read their answers read nothing while the
/// test measured).
pub async fn next_command() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)
    })
    .await;
}

#[cfg(unix)]
impl Drop for RoleProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
