//! Harness for libturnstile's tests: the real `turnstiled` on a fresh
//! endpoint (a socket file; a named pipe on Windows), and the paths of the
//! built library and binaries.
//!
//! `turnstiled` is the one `cargo test --workspace` builds beside this
//! crate's tests (target/<profile>/). Run alone, `cargo test -p
//! turnstile-ffi` needs it built first: `cargo build --bin turnstiled --bin turnstile`.

#![allow(dead_code)]

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use turnstile::*;

/// How long any single wait in a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// The same, for the library's `timeout_ms` arguments.
pub const PATIENCE_MS: u32 = 30_000;

/// target/<profile>/, where cargo puts the binaries and libturnstile.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Where this test build's libturnstile is: target/<profile>/deps (cargo
/// copies it up to target/<profile>/ only for `cargo build`, not for tests).
/// Panics when the library there is older than the crate's sources: `cargo
/// test` links its tests with the rlib and does not rebuild the shared
/// library that the C and C# programs load (`cargo build -p turnstile-ffi`,
/// or `cargo test --workspace`, does).
#[track_caller]
pub fn lib_dir() -> PathBuf {
    let dir = build_dir().join("deps");
    let name = if cfg!(windows) {
        "turnstile.dll"
    } else {
        "libturnstile.so"
    };
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let built = modified(&dir.join(name));
    let newest_source = std::fs::read_dir(crate_dir().join("src"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| modified(&e.path()))
        .max();
    assert!(
        built.is_some() && built >= newest_source,
        "{} is missing or older than clients/ffi/src: run `cargo build -p turnstile-ffi`",
        dir.join(name).display()
    );
    dir
}

/// A built binary of the workspace, by name.
#[track_caller]
pub fn binary(name: &str) -> PathBuf {
    let p = build_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --bin turnstiled --bin turnstile` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// A running `turnstiled` in its own temporary directory.
pub struct Broker {
    pub child: Child,
    pub endpoint: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_broker() -> Broker {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = tempfile::tempdir().expect("temp dir");
    let endpoint = if cfg!(windows) {
        PathBuf::from(format!(
            r"\\.\pipe\turnstile-ffi-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    } else {
        dir.path().join("turnstile.sock")
    };
    let child = Command::new(binary("turnstiled"))
        .arg("--socket")
        .arg(&endpoint)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--log-level", "warn"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn turnstiled");
    let b = Broker {
        child,
        endpoint,
        dir,
    };
    // Ready when a client can connect (the library retries meanwhile).
    let c = b.connect("ready-check");
    close_client(c);
    b
}

impl Broker {
    pub fn socket(&self) -> CString {
        CString::new(self.endpoint.to_string_lossy().as_bytes()).unwrap()
    }

    /// A `ts_client`, through the C ABI.
    #[track_caller]
    pub fn connect(&self, name: &str) -> *mut ts_client {
        let name = CString::new(name).unwrap();
        let mut c = std::ptr::null_mut();
        let e = unsafe { ts_connect(self.socket().as_ptr(), name.as_ptr(), PATIENCE_MS, &mut c) };
        ok(e);
        assert!(!c.is_null());
        c
    }

    /// Connection options for the Rust client.
    pub fn options(&self, name: &str) -> turnstile_client::ConnectOptions {
        turnstile_client::ConnectOptions::new(name)
            .socket(&self.endpoint)
            .retry_for(PATIENCE)
    }

    /// Runs the CLI against this broker; (exit code, stdout).
    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(binary("turnstile"))
            .arg("--socket")
            .arg(&self.endpoint)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run turnstile");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

/// The thread's last error message.
pub fn last_error() -> String {
    unsafe { CStr::from_ptr(ts_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts success, showing the library's message otherwise.
#[track_caller]
pub fn ok(e: ts_error) {
    assert_eq!(e, ts_error::TS_OK, "{}", last_error());
}

#[track_caller]
pub fn close_client(c: *mut ts_client) {
    ok(ts_client_close_checked(c));
}

fn ts_client_close_checked(c: *mut ts_client) -> ts_error {
    unsafe { ts_client_close(c) }
}

/// Polls `cond` until it holds (bounded by [`PATIENCE`]).
#[track_caller]
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A Rust holder of `resource` (EXCLUSIVE, purpose "job"), on its own runtime.
pub struct Holder {
    rt: tokio::runtime::Runtime,
    lease: Option<turnstile_client::Lease>,
}

impl Holder {
    pub fn take(broker: &Broker, resource: &str) -> Holder {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let lease = rt.block_on(async {
            let c = turnstile_client::Client::connect(broker.options("holder"))
                .await
                .unwrap();
            c.acquire(resource).purpose("job").wait().await.unwrap()
        });
        Holder {
            rt,
            lease: Some(lease),
        }
    }

    pub fn progress(&self, done: u32, total: u32, msg: &str) {
        let l = self.lease.as_ref().unwrap();
        self.rt.block_on(l.progress(done, total, msg)).unwrap();
    }

    pub fn release(&mut self) {
        let l = self.lease.take().unwrap();
        self.rt.block_on(l.release()).unwrap();
    }
}

/// A program under test whose stdout is read line by line.
pub struct Agent {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
    patience: Duration,
}

impl Agent {
    /// Starts `cmd` against `broker` (through `TURNSTILE_SOCKET`).
    pub fn spawn(broker: &Broker, mut cmd: Command, patience: Duration) -> Agent {
        use std::io::BufRead;
        let mut child = cmd
            .env("TURNSTILE_SOCKET", &broker.endpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Agent {
            child,
            lines,
            seen: Vec::new(),
            patience,
        }
    }

    /// Waits for a line containing `text`; its index in `seen`.
    #[track_caller]
    pub fn expect(&mut self, text: &str) -> usize {
        if let Some(i) = self.seen.iter().position(|l| l.contains(text)) {
            return i;
        }
        let start = Instant::now();
        loop {
            let left = self.patience.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("  | {line}");
                    self.seen.push(line);
                    if self.seen.last().unwrap().contains(text) {
                        return self.seen.len() - 1;
                    }
                }
                Err(e) => panic!(
                    "no line with {text:?} ({e}); got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the program to exit (bounded); its exit code.
    #[track_caller]
    pub fn wait(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    eprintln!("  | {line}");
                    self.seen.push(line);
                }
                return st.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < self.patience,
                "the agent did not exit; got:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The seed's scenario, for an agent in any language: a Rust holder runs a
/// job on `pcm` and reports progress; the agent, started meanwhile, must
/// queue (position 1, the job and its progress ahead), follow the progress,
/// and initialise only once the job has released `pcm`. Returns its lines.
#[track_caller]
pub fn queue_behind_a_job(broker: &Broker, agent: Command, patience: Duration) -> Vec<String> {
    let mut holder = Holder::take(broker, "pcm");
    holder.progress(1, 4, "copying");
    let mut agent = Agent::spawn(broker, agent, patience);
    agent.expect("queued: position 1");
    agent.expect("progress 1/4 copying");
    holder.progress(2, 4, "registering");
    let followed = agent.expect("progress 2/4 registering");
    holder.release();
    let granted = agent.expect("granted");
    let initialised = agent.expect("initialised");
    assert_eq!(
        agent.wait(),
        0,
        "the agent failed; got:\n{}",
        agent.seen.join("\n")
    );
    assert!(
        followed < granted && granted < initialised,
        "{:#?}",
        agent.seen
    );
    assert!(
        agent.seen.iter().all(|l| !l.contains("lost")),
        "{:#?}",
        agent.seen
    );
    agent.seen.clone()
}

/// Whether `program` can be run (found on PATH).
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// This crate's directory.
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles the C program `source` with the system's `cc` (warnings are
/// errors) against `include/turnstile.h`, linked with `link` (extra
/// arguments; `{lib}` stands for [`lib_dir`]).
#[track_caller]
pub fn cc(source: &Path, out: &Path, link: &[&str]) {
    let lib = lib_dir();
    let st = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-pthread"])
        .arg(format!("-I{}", crate_dir().join("include").display()))
        .arg(source)
        .arg("-o")
        .arg(out)
        .args(
            link.iter()
                .map(|a| a.replace("{lib}", &lib.to_string_lossy())),
        )
        .status()
        .expect("run cc (the system C compiler)");
    assert!(st.success(), "cc failed on {}", source.display());
}

/// Linking with the shared library of this build. The path is a DT_RPATH
/// (`--disable-new-dtags`), which the loader prefers to `LD_LIBRARY_PATH`:
/// cargo's test environment puts target/<profile>/ on it, where an older
/// `cargo build` may have left a stale copy of the library.
pub const LINK_SHARED: &[&str] = &[
    "-L{lib}",
    "-lturnstile",
    "-Wl,--disable-new-dtags,-rpath,{lib}",
];

/// Valgrind's arguments for a run that must show no memory error and no
/// leak that counts: definitely and indirectly lost. Not "possibly lost":
/// every live Rust HashMap is reported so (hashbrown keeps a pointer into
/// the middle of its allocation), among them the library's handle table
/// and the I/O thread's state, alive by design until exit.
pub fn valgrind_args(log: &Path) -> Vec<String> {
    vec![
        "--error-exitcode=99".into(),
        "--leak-check=full".into(),
        "--show-leak-kinds=definite,indirect".into(),
        "--errors-for-leak-kinds=definite,indirect".into(),
        format!("--log-file={}", log.display()),
    ]
}
