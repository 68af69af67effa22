//! Wire tests: hand-built frames through the codec, both well-formed ones
//! (every request kind, several per buffer, one byte at a time) and hostile
//! ones (truncated, oversized, absurd length prefixes, deep nesting, garbage).
//!
//! They test framing and decoding only; what the broker makes of a decoded
//! frame is tested in the broker's own crate.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use proptest::prelude::*;
use prost::Message;
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};
use turnstile_proto::v1::{
    self, Ack, Acquire, Cancel, Consume, GetStatus, Hello, KeepAlive, Mode, Nack, Ping, Pong,
    Publish, Release, ReportProgress, Unwatch, WaitPolicy, Watch,
};
use turnstile_proto::{
    ClientCodec, ClientFrame, DEFAULT_MAX_FRAME_BYTES, FrameError, Reply, ServerCodec, ServerFrame,
    client_frame::Body, encode_frame, reply, server_frame,
};

/// A buffer no test frame comes near; a decoder that rejects a prefix without
/// reserving anything leaves a buffer's capacity at or under it.
const SMALL_CAPACITY: usize = 64;

fn frame(id: u64, body: Body) -> ClientFrame {
    ClientFrame {
        id,
        body: Some(body),
    }
}

/// One request of every kind, each with non-default fields.
fn every_request() -> Vec<ClientFrame> {
    let headers = BTreeMap::from([("kind".to_owned(), "notice".to_owned())]);
    let bodies = vec![
        Body::Hello(Hello {
            protocol_version: turnstile_proto::PROTOCOL_VERSION,
            client_name: "pcm-agent".into(),
        }),
        Body::Ping(Ping {
            payload: Bytes::from_static(b"hi"),
        }),
        Body::GetStatus(GetStatus {
            resources: vec!["pcm".into(), "spool".into()],
        }),
        Body::Acquire(Acquire {
            resource: "pcm".into(),
            mode: Mode::Exclusive as i32,
            ttl_ms: 15_000,
            wait: WaitPolicy::Queue as i32,
            max_wait_ms: 60_000,
            purpose: "job 42: install office".into(),
            permits: 2,
            capacity: 3,
            detach_grace_ms: 30_000,
            stall_after_ms: 10_000,
        }),
        Body::KeepAlive(KeepAlive { lease_id: 7 }),
        Body::Release(Release { lease_id: 7 }),
        Body::Cancel(Cancel { lease_id: 8 }),
        Body::ReportProgress(ReportProgress {
            lease_id: 7,
            done: 3,
            total: 10,
            message: "copying files".into(),
        }),
        Body::Watch(Watch {
            resources: vec!["pcm".into()],
            start_revision: 12,
        }),
        Body::Unwatch(Unwatch { watch_id: 3 }),
        Body::Publish(Publish {
            queue: "notices".into(),
            payload: Bytes::from_static(b"\x00\xffbinary"),
            headers,
        }),
        Body::Consume(Consume {
            queue: "notices".into(),
            prefetch: 16,
        }),
        Body::Ack(Ack { delivery_id: 5 }),
        Body::Nack(Nack {
            delivery_id: 6,
            requeue: true,
        }),
        Body::Reattach(v1::Reattach {
            lease_id: 8,
            resume_token: Bytes::from_static(&[0xa5; 16]),
        }),
        Body::RequestYield(v1::RequestYield {
            resource: "pcm".into(),
            within_ms: 5000,
            reason: "Install now".into(),
            revoke: true,
        }),
        Body::DeclineYield(v1::DeclineYield {
            lease_id: 7,
            reason: "2 minutes left".into(),
        }),
        Body::GetHistory(v1::GetHistory {
            resource: "pcm".into(),
            since_ms: 1_764_000_000_000,
            limit: 50,
        }),
        Body::CancelConsume(v1::CancelConsume { consumer_id: 3 }),
        Body::PeekQueue(v1::PeekQueue {
            queue: "notices".into(),
            limit: 10,
        }),
        Body::PurgeQueue(v1::PurgeQueue {
            queue: "notices".into(),
        }),
        Body::RequeueDead(v1::RequeueDead {
            queue: "notices".into(),
        }),
    ];
    bodies
        .into_iter()
        .zip(1..)
        .map(|(body, id)| frame(id, body))
        .collect()
}

/// The name of a request kind. The match has no catch-all arm, so a kind
/// added to the .proto does not compile here until `every_request` has it.
fn kind(body: &Body) -> &'static str {
    match body {
        Body::Hello(_) => "hello",
        Body::Ping(_) => "ping",
        Body::GetStatus(_) => "get_status",
        Body::Acquire(_) => "acquire",
        Body::KeepAlive(_) => "keep_alive",
        Body::Release(_) => "release",
        Body::Cancel(_) => "cancel",
        Body::ReportProgress(_) => "report_progress",
        Body::Watch(_) => "watch",
        Body::Unwatch(_) => "unwatch",
        Body::Publish(_) => "publish",
        Body::Consume(_) => "consume",
        Body::Ack(_) => "ack",
        Body::Nack(_) => "nack",
        Body::Reattach(_) => "reattach",
        Body::RequestYield(_) => "request_yield",
        Body::DeclineYield(_) => "decline_yield",
        Body::GetHistory(_) => "get_history",
        Body::CancelConsume(_) => "cancel_consume",
        Body::PeekQueue(_) => "peek_queue",
        Body::PurgeQueue(_) => "purge_queue",
        Body::RequeueDead(_) => "requeue_dead",
    }
}

/// `message` as one frame, encoded the way a client's codec does it.
fn client_bytes(message: &ClientFrame) -> BytesMut {
    let mut buf = BytesMut::new();
    ClientCodec::default()
        .encode_ref(message, &mut buf)
        .expect("test frames are under the limit");
    buf
}

/// A buffer of small, fixed capacity holding `bytes`.
fn small_buffer(bytes: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(SMALL_CAPACITY);
    buf.extend_from_slice(bytes);
    buf
}

#[track_caller]
fn assert_too_large(result: Result<Option<ClientFrame>, FrameError>, declared: u64) {
    match result {
        Err(FrameError::TooLarge { declared: d, max }) => {
            assert_eq!(d, declared);
            assert_eq!(max, DEFAULT_MAX_FRAME_BYTES);
        }
        other => panic!("expected TooLarge {{ declared: {declared} }}, got {other:?}"),
    }
}

#[track_caller]
fn assert_capacity_did_not_grow(buf: &BytesMut) {
    assert!(
        buf.capacity() <= SMALL_CAPACITY,
        "the decoder reserved {} bytes for a frame it should have refused",
        buf.capacity()
    );
}

// Every request kind survives the trip from a client's codec to the broker's.
#[test]
fn every_request_kind_round_trips() {
    let requests = every_request();
    let mut kinds: Vec<_> = requests
        .iter()
        .filter_map(|request| request.body.as_ref().map(kind))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), 22, "one request of each kind: {kinds:?}");

    for request in requests {
        let mut buf = client_bytes(&request);
        let decoded = ServerCodec::default().decode(&mut buf).unwrap();
        assert_eq!(decoded, Some(request));
        assert!(buf.is_empty(), "the frame is consumed whole");
    }
}

// Every pushed kind and a reply survive the trip from the broker to a client.
#[test]
fn server_frames_round_trip() {
    let frames = [
        server_frame::Body::Reply(Reply {
            id: 9,
            result: Some(reply::Result::Error(v1::Error {
                code: v1::ErrorCode::Busy as i32,
                message: "pcm is held by pcmsvc (pid 4242)".into(),
            })),
        }),
        server_frame::Body::LeaseUpdate(v1::LeaseUpdate {
            lease_id: 8,
            change: Some(v1::lease_update::Change::Lost(v1::Lost {
                reason: v1::LostReason::TimedOut as i32,
                detail: "waited 60000 ms".into(),
            })),
        }),
        server_frame::Body::LeaseUpdate(v1::LeaseUpdate {
            lease_id: 7,
            change: Some(v1::lease_update::Change::YieldRequested(
                v1::YieldRequested {
                    requester: Some(v1::Peer {
                        client_name: "turnstile".into(),
                        uid: 1000,
                        pid: 77,
                        session_id: 4,
                        user: "alice".into(),
                        login_session: "3".into(),
                    }),
                    reason: "Install now".into(),
                    within_ms: 5000,
                    revoke: false,
                },
            )),
        }),
        server_frame::Body::WatchEvent(v1::WatchEvent {
            watch_id: 3,
            revision: 13,
            kind: v1::EventKind::Granted as i32,
            state: Some(v1::ResourceState {
                resource: "pcm".into(),
                revision: 13,
                holders: vec![v1::Lease {
                    lease_id: 7,
                    resource: "pcm".into(),
                    mode: Mode::Exclusive as i32,
                    fencing_token: 41,
                    granted_at_ms: 1_764_000_000_000,
                    expires_in_ms: 15_000,
                    permits: 3,
                    stalled: true,
                    ..Default::default()
                }],
                waiters: vec![],
                capacity: 3,
                permits_held: 3,
            }),
            coalesced: true,
            detail: String::new(),
        }),
        server_frame::Body::Reply(Reply {
            id: 10,
            result: Some(reply::Result::History(v1::History {
                entries: vec![v1::HistoryEntry {
                    lease_id: 7,
                    resource: "pcm".into(),
                    mode: Mode::Exclusive as i32,
                    permits: 0,
                    purpose: "job 42".into(),
                    holder: Some(v1::Peer {
                        client_name: "pcmsvc".into(),
                        uid: 0,
                        pid: 4242,
                        session_id: 2,
                        user: "root".into(),
                        login_session: String::new(),
                    }),
                    queued_at_ms: 1_764_000_000_000,
                    granted_at_ms: 1_764_000_001_000,
                    ended_at_ms: 1_764_000_061_000,
                    ended_by: v1::EventKind::Released as i32,
                    detail: "lease 7 of pcmsvc (root, pid 4242) released".into(),
                    fencing_token: 41,
                    timed_out: false,
                }],
                truncated: true,
            })),
        }),
        server_frame::Body::Reply(Reply {
            id: 11,
            result: Some(reply::Result::QueuePeek(v1::QueuePeek {
                messages: vec![v1::Delivery {
                    seq: 3,
                    queue: "notices".into(),
                    payload: Bytes::from_static(b"peeked"),
                    ..Default::default()
                }],
                truncated: true,
            })),
        }),
        server_frame::Body::Reply(Reply {
            id: 12,
            result: Some(reply::Result::QueueCount(v1::QueueCount { count: 7 })),
        }),
        server_frame::Body::Delivery(v1::Delivery {
            consumer_id: 1,
            delivery_id: 2,
            seq: 3,
            queue: "notices".into(),
            payload: Bytes::from_static(b"reboot at 18:00"),
            headers: BTreeMap::new(),
            attempt: 1,
        }),
    ];
    for body in frames {
        let message = ServerFrame { body: Some(body) };
        let mut buf = BytesMut::new();
        ServerCodec::default()
            .encode_ref(&message, &mut buf)
            .unwrap();
        let decoded = ClientCodec::default().decode(&mut buf).unwrap();
        assert_eq!(decoded, Some(message));
        assert!(buf.is_empty());
    }
}

// The Ping and Pong frames shown in README.md are the bytes the codec makes.
#[test]
fn readme_examples_are_exact() {
    let ping = frame(
        1,
        Body::Ping(Ping {
            payload: Bytes::from_static(b"hi"),
        }),
    );
    assert_eq!(
        &client_bytes(&ping)[..],
        [0x08, 0x08, 0x01, 0x1a, 0x04, 0x0a, 0x02, 0x68, 0x69]
    );

    let pong = ServerFrame {
        body: Some(server_frame::Body::Reply(Reply {
            id: 1,
            result: Some(reply::Result::Pong(Pong {
                payload: Bytes::from_static(b"hi"),
            })),
        })),
    };
    let mut buf = BytesMut::new();
    encode_frame(&pong, &mut buf);
    assert_eq!(
        &buf[..],
        [
            0x0a, 0x0a, 0x08, 0x08, 0x01, 0x22, 0x04, 0x0a, 0x02, 0x68, 0x69
        ]
    );
}

// Every proper prefix of a frame is "not yet": nothing is consumed, and at
// the end of the stream the leftover is reported as a truncated frame.
#[test]
fn every_prefix_of_a_frame_waits_then_is_truncated_at_eof() {
    let whole = client_bytes(&every_request()[3]); // the Acquire: several fields
    for cut in 0..whole.len() {
        let mut buf = BytesMut::from(&whole[..cut]);
        let mut codec = ServerCodec::default();
        assert!(matches!(codec.decode(&mut buf), Ok(None)), "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed at cut {cut}");
        match codec.decode_eof(&mut buf) {
            Ok(None) if cut == 0 => {}
            Err(FrameError::Truncated { have }) if cut > 0 => assert_eq!(have, cut),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

// A declared length one byte over the default limit is refused before the
// body is waited for or any room is reserved.
#[test]
fn one_byte_over_the_limit_is_refused() {
    let mut buf = small_buffer(&[]);
    prost::encoding::encode_varint(u64::from(DEFAULT_MAX_FRAME_BYTES) + 1, &mut buf);
    assert_too_large(
        ServerCodec::default().decode(&mut buf),
        u64::from(DEFAULT_MAX_FRAME_BYTES) + 1,
    );
    assert_capacity_did_not_grow(&buf);
}

// A frame of exactly the limit is accepted.
#[test]
fn a_frame_of_exactly_the_limit_is_accepted() {
    let max = 32u32;
    let ping = frame(1, Body::Ping(Ping::default()));
    let overhead = ping.encoded_len();
    let payload = vec![b'x'; max as usize - overhead - 2]; // tag + 1-byte length
    let ping = frame(
        1,
        Body::Ping(Ping {
            payload: payload.into(),
        }),
    );
    assert_eq!(ping.encoded_len(), max as usize);

    let mut buf = BytesMut::new();
    ClientCodec::new(max)
        .encode(ping.clone(), &mut buf)
        .unwrap();
    assert_eq!(ServerCodec::new(max).decode(&mut buf).unwrap(), Some(ping));
}

// 0xFFFFFFFF (4 GiB) is refused with a message a human can read.
#[test]
fn a_four_gib_prefix_is_refused_without_allocating() {
    let mut buf = small_buffer(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let result = ServerCodec::default().decode(&mut buf);
    let message = result.as_ref().map_err(ToString::to_string).err();
    assert_eq!(
        message.as_deref(),
        Some("frame of 4294967295 bytes exceeds the 1048576-byte limit")
    );
    assert_too_large(result, 0xffff_ffff);
    assert_capacity_did_not_grow(&buf);
}

// The largest 10-byte varint (u64::MAX) is a valid prefix, and far too large.
#[test]
fn a_ten_byte_prefix_is_refused_without_allocating() {
    let mut buf = small_buffer(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert_too_large(ServerCodec::default().decode(&mut buf), u64::MAX);
    assert_capacity_did_not_grow(&buf);
}

// An 11-byte varint, or a 10th byte that overflows 64 bits, is no length.
#[test]
fn an_eleven_byte_or_overflowing_prefix_is_a_bad_prefix() {
    let eleven = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x00,
    ];
    let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
    for bytes in [&eleven[..], &overflow[..]] {
        let mut buf = small_buffer(bytes);
        let result = ServerCodec::default().decode(&mut buf);
        assert!(
            matches!(result, Err(FrameError::BadLengthPrefix)),
            "{bytes:02x?}: {result:?}"
        );
        assert_capacity_did_not_grow(&buf);
    }
}

// A prefix still arriving is waited for, even with every continuation bit set.
#[test]
fn an_incomplete_prefix_waits() {
    let mut buf = small_buffer(&[0xff; 9]);
    assert!(matches!(ServerCodec::default().decode(&mut buf), Ok(None)));
    assert_eq!(buf.len(), 9);
    assert_capacity_did_not_grow(&buf);
}

// A zero-length frame is valid protobuf: the default message, no body.
// (The broker refuses it as a protocol violation; the codec does not judge.)
#[test]
fn a_zero_length_frame_is_the_default_message() {
    let mut buf = BytesMut::from(&[0x00][..]);
    let decoded = ServerCodec::default().decode(&mut buf).unwrap();
    assert_eq!(decoded, Some(ClientFrame::default()));
    assert!(buf.is_empty());
}

// Several frames in one read come out one by one, in order.
#[test]
fn several_frames_in_one_buffer() {
    let requests = every_request();
    let mut buf = BytesMut::new();
    for request in &requests {
        encode_frame(request, &mut buf);
    }
    let mut codec = ServerCodec::default();
    let mut decoded = Vec::new();
    while let Some(request) = codec.decode(&mut buf).unwrap() {
        decoded.push(request);
    }
    assert_eq!(decoded, requests);
    assert!(buf.is_empty());
    assert!(matches!(codec.decode_eof(&mut buf), Ok(None)));
}

// A frame that arrives one byte at a time is decoded once, when whole.
#[test]
fn one_frame_one_byte_at_a_time() {
    let request = every_request()[10].clone(); // the Publish, with headers
    let whole = client_bytes(&request);
    let mut codec = ServerCodec::default();
    let mut buf = BytesMut::new();
    for (index, &byte) in whole.iter().enumerate() {
        buf.extend_from_slice(&[byte]);
        let decoded = codec.decode(&mut buf).unwrap();
        if index + 1 < whole.len() {
            assert_eq!(decoded, None, "decoded early, at byte {index}");
        } else {
            assert_eq!(decoded, Some(request.clone()));
        }
    }
    assert!(buf.is_empty());
}

// A frame whose body is not a valid message is consumed and reported, and
// the frame after it still decodes.
#[test]
fn a_malformed_body_is_consumed_and_reported() {
    // Field 1 as a varint whose continuation never ends inside the frame.
    let mut buf = BytesMut::from(&[0x02, 0x08, 0x80][..]);
    encode_frame(&every_request()[1], &mut buf);
    let mut codec = ServerCodec::default();
    let result = codec.decode(&mut buf);
    assert!(
        matches!(result, Err(FrameError::Malformed(_))),
        "{result:?}"
    );
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(every_request()[1].clone())
    );
}

/// A ClientFrame body of `depth` unknown groups (field 100) nested in one
/// another. The schema has no recursive message, but prost counts group
/// nesting against the same recursion limit (100).
fn nested_groups(depth: usize) -> Vec<u8> {
    const START_GROUP_100: [u8; 2] = [0xa3, 0x06]; // (100 << 3) | 3
    const END_GROUP_100: [u8; 2] = [0xa4, 0x06]; // (100 << 3) | 4
    let mut body = Vec::with_capacity(depth * 4);
    for _ in 0..depth {
        body.extend_from_slice(&START_GROUP_100);
    }
    for _ in 0..depth {
        body.extend_from_slice(&END_GROUP_100);
    }
    body
}

fn framed(body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    prost::encoding::encode_varint(body.len() as u64, &mut buf);
    buf.extend_from_slice(body);
    buf
}

// Nesting within prost's recursion limit is skipped as unknown fields;
// beyond it, the frame is malformed rather than a stack overflow.
#[test]
fn nesting_beyond_the_recursion_limit_is_malformed() {
    let mut shallow = framed(&nested_groups(50));
    assert_eq!(
        ServerCodec::default().decode(&mut shallow).unwrap(),
        Some(ClientFrame::default())
    );

    let mut deep = framed(&nested_groups(10_000));
    match ServerCodec::default().decode(&mut deep) {
        Err(FrameError::Malformed(error)) => {
            assert!(error.to_string().contains("recursion limit"), "{error}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

// An enum value this version does not know survives decoding as its number.
// The broker must read it with `Mode::try_from` and refuse it: the generated
// getter would silently call it MODE_UNSPECIFIED.
#[test]
fn unknown_enum_values_survive_as_numbers() {
    let request = frame(
        1,
        Body::Acquire(Acquire {
            resource: "pcm".into(),
            mode: 99,
            wait: 7,
            ..Default::default()
        }),
    );
    let mut buf = client_bytes(&request);
    let Some(ClientFrame {
        body: Some(Body::Acquire(acquire)),
        ..
    }) = ServerCodec::default().decode(&mut buf).unwrap()
    else {
        panic!("expected an Acquire");
    };
    assert_eq!(acquire.mode, 99);
    assert_eq!(acquire.wait, 7);
    assert!(Mode::try_from(acquire.mode).is_err());
    assert!(WaitPolicy::try_from(acquire.wait).is_err());
    assert_eq!(acquire.mode(), Mode::Unspecified, "the getter hides it");
}

// A message over the limit is refused on the way out, and nothing is written.
#[test]
fn encoding_over_the_limit_writes_nothing() {
    let big = frame(
        1,
        Body::Ping(Ping {
            payload: vec![0u8; 100].into(),
        }),
    );
    let mut buf = BytesMut::from(&b"earlier frames"[..]);
    let result = ClientCodec::new(64).encode(big.clone(), &mut buf);
    assert!(
        matches!(result, Err(FrameError::TooLarge { declared, max: 64 }) if declared == big.encoded_len() as u64),
        "{result:?}"
    );
    assert_eq!(&buf[..], b"earlier frames");
}

// Frame errors map to the wire errors the broker owes the peer.
#[test]
fn frame_errors_map_to_wire_codes() {
    use v1::ErrorCode;
    let too_large = FrameError::TooLarge {
        declared: 2,
        max: 1,
    };
    assert_eq!(too_large.wire_code(), Some(ErrorCode::FrameTooLarge));
    assert_eq!(
        FrameError::BadLengthPrefix.wire_code(),
        Some(ErrorCode::ProtocolViolation)
    );
    assert_eq!(FrameError::Truncated { have: 3 }.wire_code(), None);
}

// The codec works under tokio-util's Framed machinery: frames written by a
// client's FramedWrite are read by the broker's FramedRead, and a stream
// that stops mid-frame ends in Truncated.
#[tokio::test]
async fn framed_over_a_stream() {
    let (client, broker) = tokio::io::duplex(64);
    let requests = every_request();
    let expected = requests.clone();
    let writer = tokio::spawn(async move {
        let mut sink = FramedWrite::new(client, ClientCodec::default());
        for request in requests {
            sink.feed(request).await.unwrap();
        }
        sink.flush().await.unwrap();
        // A last frame cut short: its prefix promises more than follows.
        let mut io = sink.into_inner();
        tokio::io::AsyncWriteExt::write_all(&mut io, &[0x05, 0x08])
            .await
            .unwrap();
    });
    let mut stream = FramedRead::new(broker, ServerCodec::default());
    for request in expected {
        assert_eq!(stream.next().await.unwrap().unwrap(), request);
    }
    writer.await.unwrap();
    let last = stream.next().await.unwrap();
    assert!(
        matches!(last, Err(FrameError::Truncated { have: 2 })),
        "{last:?}"
    );
}

proptest! {
    // Arbitrary bytes, arriving in arbitrary pieces, never panic the
    // decoder, and it never reserves room beyond what a frame under its
    // limit needs.
    #[test]
    fn garbage_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        piece in 1usize..64,
    ) {
        const MAX: u32 = 256;
        let mut codec = ServerCodec::new(MAX);
        let mut buf = BytesMut::new();
        'feed: for chunk in bytes.chunks(piece) {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
            // Growth is bounded by the input so far plus one frame's room.
            prop_assert!(buf.capacity() <= 2 * (bytes.len() + MAX as usize + 10) + 64);
        }
        let _ = codec.decode_eof(&mut buf);
    }

    // A well-framed body of arbitrary bytes decodes or is Malformed, and is
    // consumed either way.
    #[test]
    fn framed_garbage_is_a_message_or_malformed(
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut buf = framed(&body);
        let result = ServerCodec::default().decode(&mut buf);
        prop_assert!(matches!(result, Ok(Some(_)) | Err(FrameError::Malformed(_))));
        prop_assert!(buf.is_empty());
    }

    // A valid frame split at any point decodes the same as the whole frame.
    #[test]
    fn a_frame_split_anywhere_decodes_the_same(
        which in 0usize..14,
        cut in any::<prop::sample::Index>(),
    ) {
        let request = every_request()[which].clone();
        let whole = client_bytes(&request);
        let cut = cut.index(whole.len());
        let mut codec = ServerCodec::default();
        let mut buf = BytesMut::from(&whole[..cut]);
        prop_assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&whole[cut..]);
        prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(request));
    }
}
