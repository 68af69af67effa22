//! The frame codec: one frame is a protobuf varint length prefix followed by
//! that many bytes of one message (the standard "delimited" form).
//!
//! It owns the framing rules: the length limit, checked before any memory is
//! reserved for a frame; the varint prefix, parsed without consuming it until
//! it is complete; and the errors for frames that break them. It does not
//! judge what a well-framed message says (an empty `ClientFrame`, an unknown
//! enum value, a second `Hello`): the broker does, and maps [`FrameError`]s to
//! wire errors with [`FrameError::wire_code`].
//!
//! It also owns the few encodings the broker needs beyond "encode this
//! message": a watch event encoded once and framed for each watcher
//! ([`encode_shared_watch_event`], [`encode_watch_event_frame`]), and the
//! largest delivery a publish can make ([`max_delivery_frame_len`]). No
//! protobuf byte is written by hand outside this crate.

use std::fmt;
use std::io;
use std::marker::PhantomData;

use std::collections::BTreeMap;

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tokio_util::codec::{Decoder, Encoder};

use crate::v1::{ClientFrame, ErrorCode, Publish, ServerFrame, WatchEvent};

/// The default frame limit: 1 MiB of message, the length prefix not counted.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 1 << 20;

/// The most the decoder reserves at once for an incomplete frame.
const RESERVE_STEP: usize = 64 << 10;

/// The longest a varint may be: 10 bytes carry 64 bits, 7 at a time.
const MAX_VARINT_BYTES: usize = 10;

/// The broker's side of a connection: decodes `ClientFrame`s, encodes
/// `ServerFrame`s.
pub type ServerCodec = FrameCodec<ClientFrame, ServerFrame>;

/// The client's side of a connection: decodes `ServerFrame`s, encodes
/// `ClientFrame`s.
pub type ClientCodec = FrameCodec<ServerFrame, ClientFrame>;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix (or, when encoding, the message) is over the limit.
    /// Raised before any memory is reserved for the frame.
    #[error("frame of {declared} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The length the prefix declared, or the encoded message's length.
        declared: u64,
        /// The codec's limit, in bytes.
        max: u32,
    },
    /// The length prefix is not a varint: longer than 10 bytes, or a value
    /// that does not fit in 64 bits.
    #[error("frame length prefix is not a valid varint (longer than 10 bytes or over 64 bits)")]
    BadLengthPrefix,
    /// The frame's bytes are not a valid message (including nesting deeper
    /// than prost's recursion limit).
    #[error("malformed frame: {0}")]
    Malformed(#[source] prost::DecodeError),
    /// The stream ended inside a frame: the peer sent part of one and left.
    #[error("stream ended inside a frame: {have} bytes of it were left over")]
    Truncated {
        /// Bytes of the unfinished frame (prefix included) that had arrived.
        have: usize,
    },
    /// Reading or writing the underlying stream failed.
    #[error("frame I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// The wire error the broker owes the peer before it closes the
    /// connection, or `None` when there is no one left to tell (the stream
    /// ended or broke).
    ///
    /// Such an error concerns no request, so it goes out in a `Reply` with
    /// id 0.
    pub fn wire_code(&self) -> Option<ErrorCode> {
        match self {
            FrameError::TooLarge { .. } => Some(ErrorCode::FrameTooLarge),
            FrameError::BadLengthPrefix | FrameError::Malformed(_) => {
                Some(ErrorCode::ProtocolViolation)
            }
            FrameError::Truncated { .. } | FrameError::Io(_) => None,
        }
    }
}

/// Reads `In` frames and writes `Out` frames, each at most
/// `max_frame_bytes` bytes of message.
///
/// The same limit applies both ways: a message too large to send is refused
/// with [`FrameError::TooLarge`] and nothing is written, so the sender can
/// answer with an error instead of a frame the peer would reject.
pub struct FrameCodec<In, Out> {
    max_frame_bytes: u32,
    // `fn(Out) -> In`: the codec holds neither, so it is Send, Sync and Unpin
    // whatever they are.
    messages: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec that accepts and sends frames of at most `max_frame_bytes`
    /// bytes of message (the length prefix not counted).
    pub fn new(max_frame_bytes: u32) -> Self {
        FrameCodec {
            max_frame_bytes,
            messages: PhantomData,
        }
    }

    /// The limit this codec enforces, in bytes of message.
    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// Changes the limit, e.g. to the one a broker announced in its
    /// `HelloReply`.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: u32) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// Takes one frame off the front of `src` and hands its message's
    /// bytes to `read`, under the same framing rules as
    /// [`Decoder::decode`]: `Ok(None)`, consuming nothing, while the frame
    /// is incomplete; the limit checked before any memory is reserved. The
    /// frame is consumed whatever `read` answers; its error is
    /// [`FrameError::Malformed`]. What `read` makes may borrow nothing from
    /// the frame: it is gone when this returns (a caller that wants to use
    /// the bytes in place does so inside `read`).
    pub fn decode_with<T>(
        &mut self,
        src: &mut BytesMut,
        read: impl FnOnce(&[u8]) -> Result<T, prost::DecodeError>,
    ) -> Result<Option<T>, FrameError> {
        let Some((declared, prefix_len)) = peek_varint(src)? else {
            return Ok(None);
        };
        self.check_len(declared)?;
        // Checked above: `declared` is at most `u32::MAX`, so neither step
        // fails on a 64-bit target; on a smaller one, too large is too large.
        let frame_len = usize::try_from(declared)
            .ok()
            .and_then(|body_len| body_len.checked_add(prefix_len))
            .ok_or(FrameError::TooLarge {
                declared,
                max: self.max_frame_bytes,
            })?;
        let Some(body) = src.get(prefix_len..frame_len) else {
            // Incomplete: make room for the rest of this frame, no more, and
            // at most 64 KiB at a time: memory follows the bytes that really
            // arrive, not a length a peer declared and never sends.
            src.reserve((frame_len - src.len()).min(RESERVE_STEP));
            return Ok(None);
        };
        let message = read(body);
        src.advance(frame_len);
        message.map(Some).map_err(FrameError::Malformed)
    }

    fn check_len(&self, declared: u64) -> Result<(), FrameError> {
        if declared > u64::from(self.max_frame_bytes) {
            return Err(FrameError::TooLarge {
                declared,
                max: self.max_frame_bytes,
            });
        }
        Ok(())
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    /// A codec with [`DEFAULT_MAX_FRAME_BYTES`].
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl<In, Out> Clone for FrameCodec<In, Out> {
    fn clone(&self) -> Self {
        FrameCodec::new(self.max_frame_bytes)
    }
}

impl<In, Out> fmt::Debug for FrameCodec<In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCodec")
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish()
    }
}

/// A message a [`FrameCodec`] reads: prost decodes it, unless a faster
/// decoder that agrees with prost takes the frame first.
pub trait FrameMessage: Message + Default {
    /// Decodes one frame's message (its length prefix taken off).
    fn decode_frame(body: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(body)
    }
}

impl FrameMessage for ServerFrame {}

impl FrameMessage for ClientFrame {
    /// The hot requests (`Ping`, `Acquire`, `Release`) in their plain form
    /// are read by hand ([`crate::hot`]); everything else by prost.
    fn decode_frame(body: &[u8]) -> Result<Self, prost::DecodeError> {
        match crate::hot::decode_request(body) {
            Some(frame) => Ok(frame.to_message()),
            None => Self::decode(body),
        }
    }
}

impl<In: FrameMessage, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = FrameError;

    /// Decodes one frame from the front of `src`, or returns `Ok(None)` and
    /// consumes nothing while the frame is incomplete.
    ///
    /// A frame that is framed correctly but is not a valid message is
    /// consumed before [`FrameError::Malformed`] is returned. The message is
    /// decoded from a borrowed slice, so its `bytes` fields are copies: they
    /// do not pin the read buffer however long they are kept.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        self.decode_with(src, In::decode_frame)
    }

    /// As [`decode`](Self::decode); then bytes left over once the stream has
    /// ended are an unfinished frame, reported as [`FrameError::Truncated`].
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        match self.decode(src)? {
            Some(message) => Ok(Some(message)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated { have: src.len() }),
        }
    }
}

impl<In, Out: Message> FrameCodec<In, Out> {
    /// Appends `message` to `dst` as one frame, or refuses a message over
    /// the limit and leaves `dst` untouched; what the [`Encoder`] impl does,
    /// for a message the caller keeps.
    ///
    /// (The codec implements `Encoder<Out>` only: a second impl for `&Out`
    /// would leave `SinkExt::flush` and `close` on a `FramedWrite` without
    /// an inferable item type.)
    pub fn encode_ref(&self, message: &Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.check_len(message.encoded_len() as u64)?;
        encode_frame(message, dst);
        Ok(())
    }
}

impl<In, Out: Message> Encoder<Out> for FrameCodec<In, Out> {
    type Error = FrameError;

    /// Appends one frame to `dst`, or refuses a message over the limit and
    /// leaves `dst` untouched.
    fn encode(&mut self, message: Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_ref(&message, dst)
    }
}

/// Appends `message` to `dst` as one frame: its varint length, then its bytes.
///
/// Enforces no limit; [`FrameCodec`]'s encoders check theirs first.
pub fn encode_frame(message: &impl Message, dst: &mut BytesMut) {
    // prost's only encoding error is a destination without room, and a
    // `BytesMut` grows as needed, so there is nothing to handle. The
    // message's length is computed once, by prost (reserving room first
    // would compute it twice).
    let _ = message.encode_length_delimited(dst);
}

/// A `WatchEvent` encoded once for every watcher it goes to: all its
/// fields but `watch_id`, which is left at 0 (so absent from the bytes).
/// Each watcher's frame is then made with [`encode_watch_event_frame`],
/// without encoding the event again.
pub fn encode_shared_watch_event(mut event: WatchEvent) -> Bytes {
    event.watch_id = 0;
    Bytes::from(event.encode_to_vec())
}

/// Appends one frame `ServerFrame { watch_event: WatchEvent { watch_id,
/// ..shared } }` to `dst`, where `shared` is what
/// [`encode_shared_watch_event`] made. Protobuf accepts fields in any order,
/// so the id goes first and the shared bytes follow as they are.
pub fn encode_watch_event_frame(watch_id: u64, shared: &[u8], dst: &mut BytesMut) {
    // WatchEvent { watch_id (field 1, varint), ..shared }
    let inner = key_len(WATCH_EVENT_WATCH_ID) + encoded_len_varint(watch_id) + shared.len();
    // ServerFrame { watch_event (field 3, length-delimited) }
    let outer = key_len(SERVER_FRAME_WATCH_EVENT) + encoded_len_varint(inner as u64) + inner;
    dst.reserve(encoded_len_varint(outer as u64) + outer);
    encode_varint(outer as u64, dst);
    encode_key(SERVER_FRAME_WATCH_EVENT, WireType::LengthDelimited, dst);
    encode_varint(inner as u64, dst);
    encode_key(WATCH_EVENT_WATCH_ID, WireType::Varint, dst);
    encode_varint(watch_id, dst);
    dst.extend_from_slice(shared);
}

/// `ServerFrame.watch_event`'s field number.
const SERVER_FRAME_WATCH_EVENT: u32 = 3;
/// `WatchEvent.watch_id`'s field number.
const WATCH_EVENT_WATCH_ID: u32 = 1;
/// `ServerFrame.delivery`'s field number.
const SERVER_FRAME_DELIVERY: u32 = 4;

/// The length (length prefix not counted) of the largest
/// `ServerFrame { delivery }` that can carry the message of `publish`:
/// every id and counter at its longest, and `added_headers` (headers the
/// broker may add on the way, such as a dead-letter queue's) beside the
/// publisher's. A broker refuses a message whose delivery could be over the
/// frame limit, since no consumer could receive it.
///
/// Keys of `added_headers` that the publisher also set are counted twice:
/// the figure is an upper bound, exact when the keys differ.
pub fn max_delivery_frame_len(
    publish: &Publish,
    added_headers: &BTreeMap<String, String>,
) -> usize {
    use prost::encoding::{btree_map, bytes, string, uint32, uint64};
    // Delivery { consumer_id 1, delivery_id 2, seq 3, queue 4, payload 5,
    //            headers 6, attempt 7 }
    let delivery = uint64::encoded_len(1, &u64::MAX)
        + uint64::encoded_len(2, &u64::MAX)
        + uint64::encoded_len(3, &u64::MAX)
        + string::encoded_len(4, &publish.queue)
        + bytes::encoded_len(5, &publish.payload)
        + btree_map::encoded_len(
            string::encoded_len,
            string::encoded_len,
            6,
            &publish.headers,
        )
        + btree_map::encoded_len(string::encoded_len, string::encoded_len, 6, added_headers)
        + uint32::encoded_len(7, &u32::MAX);
    key_len(SERVER_FRAME_DELIVERY) + encoded_len_varint(delivery as u64) + delivery
}

/// Reads the varint at the front of `buf` without consuming it: its value
/// and length in bytes, or `None` while it is incomplete.
fn peek_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    let mut value = 0u64;
    for (index, &byte) in buf.iter().take(MAX_VARINT_BYTES).enumerate() {
        // The tenth byte carries only bit 63: anything above it overflows,
        // and its continuation bit would mean an eleventh byte.
        if index == MAX_VARINT_BYTES - 1 && byte > 1 {
            return Err(FrameError::BadLengthPrefix);
        }
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((value, index + 1)));
        }
    }
    // Fewer than ten bytes so far, all with the continuation bit set.
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_varint_reads_canonical_and_padded_forms() {
        assert_eq!(peek_varint(&[0x00]).ok(), Some(Some((0, 1))));
        assert_eq!(peek_varint(&[0x96, 0x01, 0xff]).ok(), Some(Some((150, 2))));
        // Non-canonical padding is valid protobuf: 0 in two bytes.
        assert_eq!(peek_varint(&[0x80, 0x00]).ok(), Some(Some((0, 2))));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(peek_varint(&max).ok(), Some(Some((u64::MAX, 10))));
    }

    #[test]
    fn peek_varint_waits_for_an_incomplete_prefix() {
        assert_eq!(peek_varint(&[]).ok(), Some(None));
        assert_eq!(peek_varint(&[0xff; 9]).ok(), Some(None));
    }

    use crate::v1::{Delivery, ResourceState, server_frame};

    fn watch_event() -> WatchEvent {
        WatchEvent {
            watch_id: 0,
            revision: 300,
            kind: 2,
            state: Some(ResourceState {
                resource: "pcm".into(),
                revision: 300,
                holders: Vec::new(),
                waiters: Vec::new(),
                capacity: 2,
                permits_held: 1,
            }),
            coalesced: true,
            detail: "lease 7 released".into(),
        }
    }

    #[test]
    fn a_shared_watch_event_frames_as_prost_would_for_every_watch_id() {
        let mut event = watch_event();
        // A watch id given to the shared encoder is left out.
        event.watch_id = 99;
        let shared = encode_shared_watch_event(event);
        for watch_id in [0, 1, 127, 128, 300, u64::MAX] {
            let mut dst = BytesMut::new();
            encode_watch_event_frame(watch_id, &shared, &mut dst);
            let expected = ServerFrame {
                body: Some(server_frame::Body::WatchEvent(WatchEvent {
                    watch_id,
                    ..watch_event()
                })),
            };
            let decoded = ServerFrame::decode_length_delimited(&dst[..]).unwrap();
            assert_eq!(decoded, expected, "watch id {watch_id}");
            // Same length as prost's own frame, byte for byte where the
            // field order agrees (prost writes watch_id first too).
            let mut prost_bytes = BytesMut::new();
            encode_frame(&expected, &mut prost_bytes);
            if watch_id != 0 {
                assert_eq!(dst, prost_bytes, "watch id {watch_id}");
            }
        }
    }

    #[test]
    fn the_largest_delivery_is_what_prost_encodes() {
        let publish = Publish {
            queue: "jobs".into(),
            payload: Bytes::from(vec![7u8; 300]),
            headers: BTreeMap::from([("from".to_string(), "svc".to_string())]),
        };
        let added = BTreeMap::from([
            (
                "turnstile-dead-letter-queue".to_string(),
                "jobs".to_string(),
            ),
            (
                "turnstile-dead-letter-seq".to_string(),
                u64::MAX.to_string(),
            ),
        ]);
        for extra in [BTreeMap::new(), added] {
            let mut headers = publish.headers.clone();
            headers.extend(extra.clone());
            let largest = ServerFrame {
                body: Some(server_frame::Body::Delivery(Delivery {
                    consumer_id: u64::MAX,
                    delivery_id: u64::MAX,
                    seq: u64::MAX,
                    queue: publish.queue.clone(),
                    payload: publish.payload.clone(),
                    headers,
                    attempt: u32::MAX,
                })),
            };
            assert_eq!(
                max_delivery_frame_len(&publish, &extra),
                largest.encoded_len()
            );
        }
    }

    #[test]
    fn peek_varint_refuses_eleven_bytes_and_overflow() {
        assert!(matches!(
            peek_varint(&[0xff; 10]),
            Err(FrameError::BadLengthPrefix)
        ));
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(matches!(
            peek_varint(&overflow),
            Err(FrameError::BadLengthPrefix)
        ));
    }
}
