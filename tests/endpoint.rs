//! The socket file under the running broker (issue #12 point 12): unlinked
//! while the broker runs, it is noticed within seconds, logged and bound
//! again; the broker keeps its lock all along. Unix only: a Windows pipe
//! name has no file to unlink.
#![cfg(unix)]

mod support;

use std::time::{Duration, Instant};

use support::*;
use turnstile_client::proto::{self as v1, client_frame::Body, reply};

#[tokio::test]
async fn an_unlinked_socket_file_is_bound_again() {
    let mut broker = spawn_broker();
    // A connection made before goes on: it does not use the file.
    let mut before = broker.raw().await;
    std::fs::remove_file(&broker.socket).unwrap();
    let removed = Instant::now();
    // A new client gets in once the file is back (checked every second).
    let mut after = loop {
        if std::os::unix::net::UnixStream::connect(&broker.socket).is_ok() {
            break broker.raw().await;
        }
        assert!(
            removed.elapsed() < PATIENCE,
            "no socket within {PATIENCE:?}; log:\n{}",
            broker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "FIGURE: socket file unlinked -> a new client connected after {:?}",
        removed.elapsed()
    );
    for raw in [&mut before, &mut after] {
        let r = raw.request(Body::Ping(v1::Ping::default())).await;
        assert!(matches!(r, reply::Result::Pong(_)), "{r:?}");
    }
    let log = broker.log_text();
    assert!(log.contains("socket file was removed"), "{log}");
    assert!(log.contains("socket file re-created"), "{log}");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&broker.socket)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o666, "every local user can connect again");

    // The broker still holds its lock: a second one on the path refuses.
    let mut second = start_in_no_wait(&broker.dir, &[], None);
    let status = second.wait_exit();
    assert_eq!(status.code(), Some(69), "{}", second.log_text());
    broker.signal(libc::SIGTERM);
    assert!(broker.wait_exit().success());
    assert!(!broker.socket.exists(), "removed at a clean stop");
}
