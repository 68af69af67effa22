//! Who may do what, checked as a real second user: the test binary
//! re-executes itself as `nobody` (uid 65534, via the kernel, not a claim
//! in a message) and talks to a broker run by the test's user (root in CI).
//!
//! Unix only (uids, setuid children). Skipped with a note when the tests do
//! not run as root, since only root can start a process as another user.
#![cfg(unix)]

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use support::*;
use turnstile_client::proto::{self as v1, ErrorCode, client_frame::Body, reply};

/// Runs `script` as nobody against `broker`; returns its ROLE lines.
fn as_nobody(broker: &Broker, script: &str) -> Vec<String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["nobody_role", "--exact", "--nocapture", "--test-threads=1"])
        .env("TURNSTILE_TEST_ROLE", "nobody")
        .env("TURNSTILE_SOCKET", &broker.socket)
        .env("TURNSTILE_TEST_SCRIPT", script)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the nobody role failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().filter_map(role_line).collect()
}

#[test]
fn another_user_may_wait_and_watch_but_not_take_exclusive() {
    if !can_run_as_nobody() {
        return;
    }
    let broker = broker_for_two_users(&[]);
    let lines = as_nobody(&broker, "hello shared watch exclusive:pcm status");
    assert_eq!(
        lines,
        [
            format!("uid {NOBODY}"),
            "shared OK".to_string(),
            "watch OK".to_string(),
            "exclusive:pcm PERMISSION_DENIED".to_string(),
            "status OK".to_string(),
        ]
    );
    assert!(
        broker
            .log_text()
            .contains("may not lease-exclusive \"pcm\""),
        "the refusal is logged, naming the verb and the resource:\n{}",
        broker.log_text()
    );
}

#[test]
fn a_policy_grants_exclusive_on_one_resource_only() {
    if !can_run_as_nobody() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("policy.toml");
    std::fs::write(
        &config,
        format!(
            "[[policy]]\nverbs = [\"lease-exclusive\"]\nresources = [\"printer*\"]\nusers = [{NOBODY}]\n"
        ),
    )
    .unwrap();
    let broker = broker_for_two_users(&["--config", config.to_str().unwrap()]);
    let lines = as_nobody(&broker, "exclusive:printer-1 exclusive:pcm");
    assert_eq!(
        lines,
        ["exclusive:printer-1 OK", "exclusive:pcm PERMISSION_DENIED"]
    );
}

#[test]
fn a_rule_for_every_verb_grants_or_takes_away_all_of_them() {
    // `verbs = ["*"]`, as the error for an empty list suggests: every
    // verb. The first rule grants nobody even EXCLUSIVE leases (denied by
    // default) on the printers; the second, naming nobody, takes even
    // SHARED leases and watches (allowed by default) away on "pcm".
    if !can_run_as_nobody() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("policy.toml");
    std::fs::write(
        &config,
        format!(
            "[[policy]]\nverbs = [\"*\"]\nresources = [\"printer*\"]\nusers = [{NOBODY}]\n\
             [[policy]]\nverbs = [\"*\"]\nresources = [\"pcm\"]\n"
        ),
    )
    .unwrap();
    let broker = broker_for_two_users(&["--config", config.to_str().unwrap()]);
    let lines = as_nobody(&broker, "exclusive:printer-1 shared watch exclusive:pcm");
    assert_eq!(
        lines,
        [
            "exclusive:printer-1 OK",
            "shared PERMISSION_DENIED",
            "watch PERMISSION_DENIED",
            "exclusive:pcm PERMISSION_DENIED",
        ]
    );
}

#[tokio::test]
async fn one_user_is_capped_while_root_still_connects_and_acquires() {
    if !can_run_as_nobody() {
        return;
    }
    let broker = broker_for_two_users(&[]);
    // 300 connections from nobody: 256 are served, the rest refused.
    let mut flood = RoleProcess::as_nobody(
        &broker,
        "nobody_role",
        &[("TURNSTILE_TEST_SCRIPT", "flood:300")],
    );
    let line = flood.said();
    assert_eq!(line, "flood 256 served, 44 refused: RESOURCE_EXHAUSTED");
    // Meanwhile (nobody's 256 connections still open) root is served.
    let root = broker.client("root").await;
    let lease = root.acquire("pcm").wait().await.unwrap();
    lease.release().await.unwrap();
    drop(flood.child.stdin.take());
    let _ = flood.child.wait();
    assert!(broker.log_text().contains("per-user limit"));
}

/// Not a test of its own: the client run as nobody by the tests above.
#[tokio::test]
async fn nobody_role() {
    if std::env::var("TURNSTILE_TEST_ROLE").as_deref() != Ok("nobody") {
        return;
    }
    let socket = std::env::var("TURNSTILE_SOCKET").unwrap();
    let script = std::env::var("TURNSTILE_TEST_SCRIPT").unwrap();
    for step in script.split_whitespace() {
        if let Some(n) = step.strip_prefix("flood:") {
            flood(&socket, n.parse().unwrap()).await;
            continue;
        }
        let (name, body) = match step {
            "hello" => {
                println!("ROLE: uid {}", hello_uid(&socket).await);
                continue;
            }
            "shared" => (
                "shared",
                Body::Acquire(v1::Acquire {
                    resource: "pcm".into(),
                    mode: v1::Mode::Shared as i32,
                    ..Default::default()
                }),
            ),
            "watch" => (
                "watch",
                Body::Watch(v1::Watch {
                    resources: vec!["pcm".into()],
                    start_revision: 0,
                }),
            ),
            "status" => ("status", Body::GetStatus(v1::GetStatus::default())),
            other => match other.strip_prefix("exclusive:") {
                Some(resource) => (
                    other,
                    Body::Acquire(v1::Acquire {
                        resource: resource.into(),
                        mode: v1::Mode::Exclusive as i32,
                        ..Default::default()
                    }),
                ),
                None => panic!("unknown step {other}"),
            },
        };
        let mut raw = Raw::connect(&socket).await;
        let r = raw.request(body).await;
        let verdict =
            error_code(&r).map_or("OK", |c| c.as_str_name().trim_start_matches("ERROR_CODE_"));
        println!("ROLE: {name} {verdict}");
    }
}

async fn hello_uid(socket: &str) -> u32 {
    let mut raw = Raw::connect_no_hello(socket).await;
    match raw
        .request(Body::Hello(v1::Hello {
            protocol_version: 1,
            client_name: "nobody".into(),
        }))
        .await
    {
        reply::Result::Hello(h) => h.peer.unwrap().uid,
        other => panic!("{other:?}"),
    }
}

/// Opens `n` connections and says Hello on each; reports how many were
/// served and how the first refusal read; keeps them open until stdin closes.
async fn flood(socket: &str, n: usize) {
    let mut open = Vec::new();
    let mut refused = 0;
    let mut first_refusal = String::new();
    for _ in 0..n {
        let mut raw = Raw::connect_no_hello(socket).await;
        // A refused connection may be closed before the Hello is written.
        let _ = futures::SinkExt::send(
            &mut raw.framed,
            v1::ClientFrame {
                id: 1,
                body: Some(Body::Hello(v1::Hello {
                    protocol_version: 1,
                    client_name: "flood".into(),
                })),
            },
        )
        .await;
        match raw.next_frame().await {
            Some(v1::server_frame::Body::Reply(v1::Reply {
                result: Some(reply::Result::Hello(_)),
                ..
            })) => open.push(raw),
            Some(v1::server_frame::Body::Reply(v1::Reply {
                result: Some(reply::Result::Error(e)),
                ..
            })) => {
                refused += 1;
                if first_refusal.is_empty() {
                    first_refusal = ErrorCode::try_from(e.code)
                        .map(|c| {
                            c.as_str_name()
                                .trim_start_matches("ERROR_CODE_")
                                .to_string()
                        })
                        .unwrap_or_default();
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    println!(
        "ROLE: flood {} served, {refused} refused: {first_refusal}",
        open.len()
    );
    next_command().await;
    drop(open);
}
