//! A connection speaking raw frames, for protocol tests: what is asserted
//! is what goes on the wire. Shared by the root package's integration tests
//! (`support`) and the broker crate's in-process server tests
//! (`broker/tests/server.rs`, which include this file by path).

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;
use turnstile_proto::v1::{self, client_frame::Body, reply, server_frame};
use turnstile_proto::{ClientCodec, PROTOCOL_VERSION};

/// How long any single wait in a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A connection speaking raw frames, for protocol tests.
pub struct Raw {
    pub framed: Framed<UnixStream, ClientCodec>,
    pub next_id: u64,
    /// Pushed frames that arrived while waiting for a reply.
    pub pushed: Vec<server_frame::Body>,
}

impl Raw {
    /// Connects to a socket and says Hello.
    pub async fn connect(socket: impl AsRef<Path>) -> Raw {
        let mut r = Raw::connect_no_hello(socket).await;
        let reply = r
            .request(Body::Hello(v1::Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: "raw".into(),
            }))
            .await;
        assert!(matches!(reply, reply::Result::Hello(_)), "{reply:?}");
        r
    }

    /// Connects to a socket and says nothing yet.
    pub async fn connect_no_hello(socket: impl AsRef<Path>) -> Raw {
        let s = UnixStream::connect(socket.as_ref()).await.expect("connect");
        Raw {
            framed: Framed::new(s, ClientCodec::new(64 << 20)),
            next_id: 1,
            pushed: Vec::new(),
        }
    }

    /// Sends a request and waits for its reply (keeping pushed frames).
    pub async fn request(&mut self, body: Body) -> reply::Result {
        let id = self.next_id;
        self.next_id += 1;
        {
            self.send(v1::ClientFrame {
                id,
                body: Some(body),
            })
            .await;
            loop {
                match self.next_frame().await {
                    Some(server_frame::Body::Reply(r)) if r.id == id => {
                        return r.result.expect("reply with a result");
                    }
                    Some(server_frame::Body::Reply(r)) => panic!("unexpected reply {r:?}"),
                    Some(other) => self.pushed.push(other),
                    None => panic!("connection closed while waiting for reply {id}"),
                }
            }
        }
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: v1::ClientFrame) {
        self.framed.send(frame).await.expect("send frame");
    }

    /// Writes raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.framed
            .get_mut()
            .write_all(bytes)
            .await
            .expect("write bytes");
    }

    /// The next frame's body, or None at EOF (or on a read error).
    pub async fn next_frame(&mut self) -> Option<server_frame::Body> {
        match tokio::time::timeout(PATIENCE, self.framed.next()).await {
            Ok(Some(Ok(f))) => f.body,
            Ok(_) => None,
            Err(_) => panic!("no frame within {PATIENCE:?}"),
        }
    }

    /// Waits for a pushed frame matching `pick` (looking at kept ones first).
    pub async fn expect_push<T>(
        &mut self,
        mut pick: impl FnMut(&server_frame::Body) -> Option<T>,
    ) -> T {
        if let Some(i) = self.pushed.iter().position(|p| pick(p).is_some()) {
            let p = self.pushed.remove(i);
            return pick(&p).expect("picked");
        }
        loop {
            match self.next_frame().await {
                Some(b) => match pick(&b) {
                    Some(t) => return t,
                    None => self.pushed.push(b),
                },
                None => panic!("connection closed while waiting for a push"),
            }
        }
    }

    /// Expects the broker to send an error with id 0 and close.
    pub async fn expect_fatal(&mut self) -> v1::Error {
        {
            let frame = self.next_frame().await;
            let err = match frame {
                Some(server_frame::Body::Reply(v1::Reply {
                    id,
                    result: Some(reply::Result::Error(e)),
                })) => {
                    assert_eq!(id, 0, "a fatal error concerns no request");
                    e
                }
                other => panic!("expected a fatal error, got {other:?}"),
            };
            assert!(self.next_frame().await.is_none(), "the broker should close");
            err
        }
    }
}

/// Encodes a frame by hand (length prefix + message).
pub fn encode(frame: &v1::ClientFrame) -> BytesMut {
    let mut b = BytesMut::new();
    turnstile_proto::encode_frame(frame, &mut b);
    b
}

/// The error code of a reply, if it is an error.
pub fn error_code(r: &reply::Result) -> Option<v1::ErrorCode> {
    match r {
        reply::Result::Error(e) => v1::ErrorCode::try_from(e.code).ok(),
        _ => None,
    }
}

/// Takes `count` SHARED leases on `r00000`, `r00001`, ... with a purpose
/// of `purpose` bytes, over as many connections as the per-connection
/// limit needs; the connections are returned (the leases last with them).
pub async fn hold_many(socket: impl AsRef<Path> + Copy, count: usize, purpose: usize) -> Vec<Raw> {
    let mut conns = Vec::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        let mut raw = Raw::connect(socket).await;
        for i in chunk {
            let r = raw
                .request(Body::Acquire(v1::Acquire {
                    resource: format!("r{i:05}"),
                    mode: v1::Mode::Shared as i32,
                    wait: v1::WaitPolicy::NoWait as i32,
                    purpose: "p".repeat(purpose),
                    ..Default::default()
                }))
                .await;
            assert!(matches!(r, reply::Result::Acquire(_)), "{r:?}");
        }
        conns.push(raw);
    }
    conns
}
