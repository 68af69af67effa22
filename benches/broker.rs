//! `cargo bench --bench broker`: the broker against the bare socket and
//! the semaphore it replaces, in one run, with real processes and sockets.
//!
//! It starts its own `turnstiled` (the one cargo built for this package)
//! on a temporary socket and measures each figure next to its baseline in
//! the same repetitions: Ping and Acquire+Release round trips against a
//! bare tokio echo, the contended handoff against a zero-logic relay and a
//! POSIX named semaphore, fan-out to 100 and 1000 watchers against a bare
//! fan-out, 64 pipelining clients against the echo, broker memory per idle
//! connection against a bare tokio server, durable publishes against a bare
//! `write + fdatasync`, consume with acks against deliveries alone, and the
//! peer brokers when installed (D-Bus through a private dbus-daemon, NATS
//! through a private nats-server; a SKIP line when absent). Every figure
//! but memory is taken twice, co-located and cross-CPU, with the processes
//! pinned (`support::placement`), and each row says which. Helper processes
//! are this binary re-executed in a role (`TURNSTILE_BENCH_ROLE`); they die
//! with it.
//!
//! It prints one Markdown table (and per-run values, to judge the noise)
//! and writes the same as JSON to `target/turnstile-bench.json`.
//!
//! - `TURNSTILE_BENCH_QUICK=1 cargo bench --bench broker`: small counts, well
//!   under a minute; CI's smoke test. It asserts nothing about speed: it
//!   fails only if a figure cannot be taken at all (a peer hangs or the
//!   broker answers something wrong). Run as a test (`cargo test --benches`,
//!   without cargo bench's `--bench` flag) it runs quick too.
//! - `cargo bench --bench broker -- ping handoff`: only the figures whose
//!   names contain one of the words (ping, handoff, fanout, throughput,
//!   idle, queues).
//!
//! Linux only: it reads `/proc` and uses Linux's death signal.

#[cfg(target_os = "linux")]
mod support;

#[cfg(target_os = "linux")]
#[path = "broker/bare.rs"]
mod bare;
#[cfg(target_os = "linux")]
#[path = "broker/fanout.rs"]
mod fanout;
#[cfg(target_os = "linux")]
#[path = "broker/handoff.rs"]
mod handoff;
#[cfg(target_os = "linux")]
#[path = "broker/idle.rs"]
mod idle;
#[cfg(target_os = "linux")]
#[path = "broker/peers.rs"]
mod peers;
#[cfg(target_os = "linux")]
#[path = "broker/ping.rs"]
mod ping;
#[cfg(target_os = "linux")]
#[path = "broker/queues.rs"]
mod queues;
#[cfg(target_os = "linux")]
#[path = "broker/throughput.rs"]
mod throughput;

use std::process::ExitCode;

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    println!("turnstile's benchmark harness runs on Linux only; nothing measured.");
    ExitCode::SUCCESS
}

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Ok(role) = std::env::var(support::procs::ROLE_ENV) {
        return match play(&role, &args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench peer {role}: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match orchestrate(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs this process as a peer in `role`.
#[cfg(target_os = "linux")]
fn play(role: &str, args: &[String]) -> anyhow::Result<()> {
    support::procs::raise_nofile();
    match role {
        "echo" => bare::echo(args),
        "relay" => bare::relay(args),
        "fanout-server" => bare::fanout_server(args),
        "idle-server" => bare::idle_server(args),
        "handoff-peer" => handoff::peer(args),
        "watchers" => fanout::watchers(args),
        "idle-holder" => idle::holder(args),
        "nats-responder" => peers::nats_responder(args),
        other => anyhow::bail!("unknown role {other}"),
    }
}

#[cfg(target_os = "linux")]
type Figure<'a> =
    Box<dyn Fn(&support::procs::Broker) -> anyhow::Result<Vec<support::report::Row>> + 'a>;

/// Runs the selected figures and reports them.
#[cfg(target_os = "linux")]
fn orchestrate(args: &[String]) -> anyhow::Result<ExitCode> {
    use std::time::Instant;

    use support::placement::{self, Placement};
    use support::procs::{Broker, raise_nofile};
    use support::report::{self, Kind, Row};

    let quick_env = std::env::var("TURNSTILE_BENCH_QUICK")
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false);
    let under_cargo_bench = args.iter().any(|a| a == "--bench");
    let tmp = tempfile::Builder::new()
        .prefix("turnstile-bench-")
        .tempdir()?;
    let plan = support::Plan {
        quick: quick_env || !under_cargo_bench,
        only: args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .cloned()
            .collect(),
        tmp: tmp.path().to_path_buf(),
    };
    let nofile = raise_nofile();
    let machine = machine();
    let source = source();
    let load_before = loadavg();
    let started = Instant::now();
    eprintln!(
        "turnstile benchmarks ({} run): {machine}; source {source}; load average {load_before}; \
         open files limit {nofile}",
        if plan.quick { "quick" } else { "full" }
    );

    let cpus = placement::allowed_cpus();
    let placements = placement::available(&cpus);
    let pinning = match (cpus.first(), cpus.get(1)) {
        (Some(s), Some(c)) => format!(
            "co-located = broker, baseline servers and clients all pinned to CPU {s}; \
             cross-CPU = servers pinned to CPU {s}, clients to CPU {c} (sched_setaffinity, as taskset)"
        ),
        (Some(s), None) => format!(
            "co-located = everything pinned to CPU {s}. SKIP cross-CPU: this process may run on \
             one CPU only"
        ),
        _ => "unpinned: the CPUs allowed could not be read".to_string(),
    };
    eprintln!("  placement: {pinning}");

    // The figures, and whether the placement matters to them (memory does
    // not: it is taken once). Each figure gets a broker of its own, so that
    // none measures what an earlier one left behind: a watcher that left
    // has the broker keep its watch history for a minute
    // (`HISTORY_LINGER_MS`: a resource view per state change), which made
    // the lease flood after the fan-out figure cost half as much again
    // per operation.
    let figures: Vec<(&str, bool, Figure)> = vec![
        ("ping", true, Box::new(|b| ping::run(&plan, b))),
        ("handoff", true, Box::new(|b| handoff::run(&plan, b))),
        ("fanout", true, Box::new(|b| fanout::run(&plan, b))),
        ("throughput", true, Box::new(|b| throughput::run(&plan, b))),
        // It starts a fresh broker per repetition itself (the one made
        // for it idles).
        ("idle", false, Box::new(|_| idle::run(&plan))),
        ("queues", true, Box::new(|b| queues::run(&plan, b))),
    ];
    let mut rows: Vec<Row> = Vec::new();
    let mut failed = Vec::new();
    for (name, placed, figure) in &figures {
        if !plan.wants(name) {
            continue;
        }
        let here: &[Placement] = if *placed {
            &placements
        } else {
            &placements[..placements.len().min(1)]
        };
        let broker = Broker::start(&plan.path(&format!("broker-{name}")), &[])?;
        // Each placement's rows, to be interleaved so that a figure's two
        // placements stand side by side.
        let mut taken: Vec<Vec<Row>> = Vec::new();
        for &p in here {
            let (label, key) = if *placed {
                (p.label(), p.key())
            } else {
                ("any (memory)", "any")
            };
            let t = Instant::now();
            eprintln!("  {name} ({label})...");
            let result = placement::enter(p, &cpus, &[broker.pid()]).and_then(|()| figure(&broker));
            match result {
                Ok(r) => taken.push(r.into_iter().map(|row| row.placed(label, key)).collect()),
                Err(e) => {
                    let why = format!("failed: {e:#}");
                    eprintln!("  {name} {why}\n  broker log:\n{}", broker.log_tail());
                    taken.push(vec![
                        Row::missing(name, name, Kind::Latency, &why).placed(label, key),
                    ]);
                    failed.push(*name);
                }
            }
            eprintln!("  {name} ({label}) took {:.1} s", t.elapsed().as_secs_f64());
        }
        rows.extend(interleave(taken));
    }
    drop(figures);

    let load_after = loadavg();
    println!();
    println!(
        "{machine}; source {source}; load average {load_before} before, {load_after} after \
         (other work on the machine shares its CPUs)."
    );
    println!();
    println!("Placement: {pinning}.");
    println!();
    println!("{}", report::table(&rows));
    println!("Runs (each value one repetition; the spread is the noise):");
    println!("{}", report::details(&rows));
    println!("Targets (issue 14):");
    println!("{}", report::verdicts(&rows));

    let header = serde_json::json!({
        "quick": plan.quick,
        "machine": machine,
        "source": source,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "seconds": started.elapsed().as_secs_f64(),
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "failed": failed,
        "placement": pinning,
    });
    let json = report::json(&rows, header);
    let target_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| "target".into());
    let out = target_dir.join("turnstile-bench.json");
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!(
        "Wrote {} ({:.0} s in all).",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The rows of each placement, taken in turn: row i of the first, row i of
/// the second, and so on (a figure's placements side by side).
#[cfg(target_os = "linux")]
fn interleave(taken: Vec<Vec<support::report::Row>>) -> Vec<support::report::Row> {
    let mut iters: Vec<_> = taken.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        for it in &mut iters {
            out.extend(it.next());
        }
        if out.len() == before {
            return out;
        }
    }
}

/// CPUs, CPU model, kernel and compiler, in one line.
#[cfg(target_os = "linux")]
fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let rustc =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "rustc unknown".into());
    format!("{cpus} CPUs, {model}, Linux {kernel}, {rustc}")
}

/// The 1, 5 and 15 minute load averages: how much else was running.
#[cfg(target_os = "linux")]
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The commit the broker was built from, `+changes` when the tree differs
/// from it, and what runs it instead when the environment says so (an A/B
/// run through a prefix runs another binary than this tree's: the header
/// says so rather than name HEAD alone). Read-only plumbing: nothing here
/// touches the index.
#[cfg(target_os = "linux")]
fn source() -> String {
    let mut source = tree_source();
    for (env, what) in [
        (support::procs::BROKER_PREFIX_ENV, "broker run through"),
        (support::procs::BROKER_ARGS_ENV, "broker flags"),
    ] {
        if let Some(value) = std::env::var(env).ok().filter(|v| !v.trim().is_empty()) {
            source.push_str(&format!(" ({what} `{}`)", value.trim()));
        }
    }
    source
}

#[cfg(target_os = "linux")]
fn tree_source() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("GIT_OPTIONAL_LOCKS", "0")
            .output()
            .ok()
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]).filter(|o| o.status.success()) else {
        return "unknown".into();
    };
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    match git(&["diff-index", "--quiet", "HEAD", "--"]).map(|o| o.status.success()) {
        Some(true) => head,
        _ => format!("{head}+changes"),
    }
}
