//! The hand-written codec of the hot frames (`turnstile_proto::hot`)
//! against prost: the same bytes out, the same messages in, and the frames
//! it does not take left to prost (so refused exactly as before).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use prost::Message;
use tokio_util::codec::Decoder;
use turnstile_proto::hot::{self, HotRequest};
use turnstile_proto::v1::{self, Acquire, Ping, Release};
use turnstile_proto::{ClientFrame, FrameError, ServerCodec, ServerFrame, client_frame::Body};
use turnstile_proto::{encode_frame, reply, server_frame};

fn prost_frame(frame: &ServerFrame) -> Vec<u8> {
    let mut dst = BytesMut::new();
    encode_frame(frame, &mut dst);
    dst.to_vec()
}

fn reply_frame(id: u64, result: reply::Result) -> ServerFrame {
    ServerFrame {
        body: Some(server_frame::Body::Reply(v1::Reply {
            id,
            result: Some(result),
        })),
    }
}

/// The frame's bytes, through [`hot::FrameBytes::put`].
fn bytes_of(frame: hot::FrameBytes<'_>) -> Vec<u8> {
    let mut dst = Vec::new();
    frame.put(&mut dst);
    assert_eq!(dst.len(), frame.len());
    dst
}

/// Varints at every width, 0 and the extremes included.
fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        (0u32..64).prop_flat_map(|bits| 0..=(u64::MAX >> bits)),
    ]
}

fn any_u32() -> impl Strategy<Value = u32> {
    any_u64().prop_map(|v| v as u32)
}

fn any_i32() -> impl Strategy<Value = i32> {
    prop_oneof![Just(0), Just(1), Just(2), Just(-1), any::<i32>()]
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z/.:-]{1,40}", ".{0,20}"]
}

fn any_acquire() -> impl Strategy<Value = Acquire> {
    (
        any_string(),
        any_i32(),
        any_u32(),
        any_i32(),
        any_u32(),
        any_string(),
        (any_u32(), any_u32(), any_u32(), any_u32()),
    )
        .prop_map(
            |(resource, mode, ttl_ms, wait, max_wait_ms, purpose, (p, c, d, s))| Acquire {
                resource,
                mode,
                ttl_ms,
                wait,
                max_wait_ms,
                purpose,
                permits: p,
                capacity: c,
                detach_grace_ms: d,
                stall_after_ms: s,
            },
        )
}

fn any_hot_frame() -> impl Strategy<Value = ClientFrame> {
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|p| Body::Ping(Ping {
            payload: Bytes::from(p)
        })),
        any_acquire().prop_map(Body::Acquire),
        any_u64().prop_map(|lease_id| Body::Release(Release { lease_id })),
        any_u64().prop_map(|delivery_id| Body::Ack(v1::Ack { delivery_id })),
    ];
    (any_u64(), body).prop_map(|(id, body)| ClientFrame {
        id,
        body: Some(body),
    })
}

/// What the broker's codec makes of one frame's bytes, as a comparable
/// value: the message, or the error's text.
fn through_codec(body: &[u8]) -> Result<Option<ClientFrame>, String> {
    let mut buf = BytesMut::new();
    prost::encoding::encode_varint(body.len() as u64, &mut buf);
    buf.extend_from_slice(body);
    ServerCodec::default()
        .decode(&mut buf)
        .map_err(|e| e.to_string())
}

fn through_prost(body: &[u8]) -> Result<Option<ClientFrame>, String> {
    ClientFrame::decode(body)
        .map(Some)
        .map_err(|e| FrameError::Malformed(e).to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// `Pong`, `Done` and `Granted` frames (as an answer and as a
    /// `LeaseUpdate`) are prost's, byte for byte.
    #[test]
    fn hot_answers_are_prosts_bytes(
        id in any_u64(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        lease_id in any_u64(),
        fencing_token in any_u64(),
        ttl_ms in any_u32(),
        token in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let pong = bytes_of(hot::pong_frame(id, &payload));
        let expected = reply_frame(id, reply::Result::Pong(v1::Pong { payload: Bytes::from(payload.clone()) }));
        prop_assert_eq!(pong, prost_frame(&expected));

        let done = bytes_of(hot::done_frame(id));
        prop_assert_eq!(done, prost_frame(&reply_frame(id, reply::Result::Done(v1::Done::default()))));

        let granted = v1::Granted {
            lease_id,
            fencing_token,
            ttl_ms,
            resume_token: Bytes::from(token),
        };
        let mine = bytes_of(hot::granted_frame(id, &granted));
        let expected = reply_frame(id, reply::Result::Acquire(v1::AcquireReply {
            outcome: Some(v1::acquire_reply::Outcome::Granted(granted.clone())),
        }));
        prop_assert_eq!(mine, prost_frame(&expected));

        let mine = bytes_of(hot::lease_granted_frame(id, &granted));
        let expected = ServerFrame {
            body: Some(server_frame::Body::LeaseUpdate(v1::LeaseUpdate {
                lease_id: id,
                change: Some(v1::lease_update::Change::Granted(granted.clone())),
            })),
        };
        prop_assert_eq!(mine, prost_frame(&expected));
    }

    /// A `Delivery` frame is prost's, byte for byte, whatever order its
    /// headers come in.
    #[test]
    fn delivery_frames_are_prosts_bytes(
        (consumer_id, delivery_id, seq) in (any_u64(), any_u64(), any_u64()),
        queue in any_string(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        headers in proptest::collection::btree_map(any_string(), any_string(), 0..5),
        reversed in any::<bool>(),
        attempt in any_u32(),
    ) {
        let mut pairs: Vec<(String, String)> = headers.clone().into_iter().collect();
        if reversed {
            pairs.reverse();
        }
        let frame = hot::DeliveryFrame {
            consumer_id,
            delivery_id,
            seq,
            queue: &queue,
            payload: &payload,
            headers: &pairs,
            attempt,
        };
        let mut mine = Vec::new();
        frame.put(&mut mine);
        prop_assert_eq!(mine.len(), frame.len());
        let expected = ServerFrame {
            body: Some(server_frame::Body::Delivery(v1::Delivery {
                consumer_id,
                delivery_id,
                seq,
                queue: queue.clone(),
                payload: Bytes::from(payload.clone()),
                headers,
                attempt,
            })),
        };
        prop_assert_eq!(mine, prost_frame(&expected));
    }

    /// Every hot request prost encodes is taken by the hand decoder, and
    /// read as the same message.
    #[test]
    fn hot_requests_read_as_prost_reads_them(frame in any_hot_frame()) {
        let bytes = frame.encode_to_vec();
        let decoded = hot::decode_request(&bytes);
        prop_assert!(decoded.is_some(), "not taken: {:?}", frame);
        if let Some(decoded) = decoded {
            prop_assert_eq!(decoded.to_message(), frame.clone());
        }
        prop_assert_eq!(through_codec(&bytes), Ok(Some(frame)));
    }

    /// A hot request with a byte changed, cut short or with bytes added:
    /// whatever the hand decoder takes, prost reads the same; the broker's
    /// codec answers (message or error) exactly what prost alone does.
    #[test]
    fn mangled_hot_requests_agree_with_prost(
        frame in any_hot_frame(),
        at in any::<usize>(),
        byte in any::<u8>(),
        how in 0u8..4,
        tail in proptest::collection::vec(any::<u8>(), 1..12),
    ) {
        let mut bytes = frame.encode_to_vec();
        match how {
            0 if !bytes.is_empty() => {
                let i = at % bytes.len();
                bytes[i] = byte;
            }
            1 => bytes.truncate(at % (bytes.len() + 1)),
            2 => bytes.extend_from_slice(&tail),
            _ => {
                let i = at % (bytes.len() + 1);
                bytes.insert(i, byte);
            }
        }
        if let Some(decoded) = hot::decode_request(&bytes) {
            prop_assert_eq!(Some(decoded.to_message()), ClientFrame::decode(&bytes[..]).ok());
        }
        prop_assert_eq!(through_codec(&bytes), through_prost(&bytes));
    }

    /// Garbage: never a panic, and the same answer as prost's.
    #[test]
    fn garbage_agrees_with_prost(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Some(decoded) = hot::decode_request(&bytes) {
            prop_assert_eq!(Some(decoded.to_message()), ClientFrame::decode(&bytes[..]).ok());
        }
        prop_assert_eq!(through_codec(&bytes), through_prost(&bytes));
    }
}

/// Frames prost reads but the hand decoder leaves to it: a field twice
/// (last wins, or messages merge), an unknown field, a key in two bytes, a
/// non-hot request.
#[test]
fn unusual_forms_are_left_to_prost() {
    let cases: &[&[u8]] = &[
        // id twice
        &[0x08, 0x01, 0x08, 0x02, 0x3a, 0x02, 0x08, 0x05],
        // Release twice (prost merges: lease_id 6)
        &[0x08, 0x01, 0x3a, 0x02, 0x08, 0x05, 0x3a, 0x02, 0x08, 0x06],
        // Ping then Release (prost: the last one)
        &[0x08, 0x01, 0x1a, 0x00, 0x3a, 0x02, 0x08, 0x05],
        // an unknown field (99, varint) in the frame
        &[0x08, 0x01, 0x98, 0x06, 0x01, 0x3a, 0x02, 0x08, 0x05],
        // the id's key written in two bytes (0x88 0x00 is field 1, varint)
        &[0x88, 0x00, 0x01, 0x3a, 0x02, 0x08, 0x05],
        // KeepAlive { lease_id: 5 }
        &[0x08, 0x01, 0x32, 0x02, 0x08, 0x05],
        // an Acquire with field 2 twice
        &[
            0x08, 0x01, 0x2a, 0x07, 0x0a, 0x01, b'r', 0x10, 0x01, 0x10, 0x02,
        ],
    ];
    for bytes in cases {
        assert!(hot::decode_request(bytes).is_none(), "{bytes:?}");
        let prost = ClientFrame::decode(*bytes).expect("valid protobuf");
        assert_eq!(through_codec(bytes), Ok(Some(prost)), "{bytes:?}");
    }
}

/// A length inside the frame larger than what follows is refused as
/// before (malformed), and nothing is reserved for it.
#[test]
fn a_lying_length_is_malformed_as_before() {
    // Ping { payload: <declares 2^32 bytes> }
    let bytes = [0x08, 0x01, 0x1a, 0x06, 0x0a, 0x80, 0x80, 0x80, 0x80, 0x10];
    assert!(hot::decode_request(&bytes).is_none());
    let mine = through_codec(&bytes);
    assert!(mine.is_err(), "{mine:?}");
    assert_eq!(mine, through_prost(&bytes));
    // Acquire { resource: invalid UTF-8 }
    let bytes = [0x08, 0x01, 0x2a, 0x03, 0x0a, 0x01, 0xff];
    assert!(hot::decode_request(&bytes).is_none());
    let mine = through_codec(&bytes);
    assert!(mine.is_err(), "{mine:?}");
    assert_eq!(mine, through_prost(&bytes));
}

/// What the decoder borrows is the frame's own bytes.
#[test]
fn a_hot_request_borrows_from_the_frame() {
    let frame = ClientFrame {
        id: 7,
        body: Some(Body::Acquire(Acquire {
            resource: "pcm".into(),
            mode: v1::Mode::Exclusive as i32,
            ..Default::default()
        })),
    };
    let bytes = frame.encode_to_vec();
    let Some(decoded) = hot::decode_request(&bytes) else {
        panic!("not taken");
    };
    assert_eq!(decoded.id, 7);
    let HotRequest::Acquire(a) = decoded.request else {
        panic!("not an Acquire: {decoded:?}");
    };
    let range = bytes.as_ptr_range();
    assert!(range.contains(&a.resource.as_ptr()));
    assert_eq!(a.resource, "pcm");
}
