//! Hand-written encoding and decoding of the frames a broker handles most
//! (issue 14): the `Ping`, `Acquire`, `Release` and `Ack` requests, the
//! `Pong`, `Done` and `AcquireReply { granted }` answers, and the queues'
//! `Delivery` ([`DeliveryFrame`]).
//!
//! They make the very bytes prost makes, and read what prost reads, only
//! without prost's generic passes (a length computed per nesting level,
//! a merge loop per message) and, on the way in, without allocating: a
//! decoded request borrows its strings and payload from the frame.
//!
//! The decoder is deliberately narrow: it takes a frame only when every
//! field it holds is a known field of one of the four requests, present
//! once, with its expected wire type, its varints well-formed, its strings
//! valid UTF-8, and nothing left over. Anything else (another request, an
//! unknown or repeated field, a broken byte) gets `None`, and the caller
//! decodes the frame with prost, which gives the answer or the error it
//! always gave. So a frame this module takes means exactly what prost
//! would make of it ([`HotFrame::to_message`] is that message), and one it
//! does not take is refused or accepted exactly as before.
//!
//! Nothing here allocates from a length the peer wrote: lengths are only
//! compared with the bytes present.

use bytes::BufMut;
use prost::bytes::Bytes;

use crate::v1::{self, ClientFrame, client_frame::Body};

/// A request decoded from a frame without allocating: its strings and
/// payload are borrowed from the frame's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotFrame<'a> {
    /// `ClientFrame.id`.
    pub id: u64,
    /// `ClientFrame.body`.
    pub request: HotRequest<'a>,
}

/// The body of a [`HotFrame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotRequest<'a> {
    /// `Ping { payload }`.
    Ping {
        /// `Ping.payload`.
        payload: &'a [u8],
    },
    /// `Acquire`, its fields as prost reads them.
    Acquire(AcquireRef<'a>),
    /// `Release { lease_id }`.
    Release {
        /// `Release.lease_id`.
        lease_id: u64,
    },
    /// `Ack { delivery_id }`: a consumer acking each delivery sends one
    /// per message.
    Ack {
        /// `Ack.delivery_id`.
        delivery_id: u64,
    },
}

/// `v1::Acquire` with its strings borrowed. Enum fields are the raw `i32`s,
/// as prost keeps them: judging them is the broker's job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct AcquireRef<'a> {
    pub resource: &'a str,
    pub mode: i32,
    pub ttl_ms: u32,
    pub wait: i32,
    pub max_wait_ms: u32,
    pub purpose: &'a str,
    pub permits: u32,
    pub capacity: u32,
    pub detach_grace_ms: u32,
    pub stall_after_ms: u32,
}

impl<'a> From<&'a v1::Acquire> for AcquireRef<'a> {
    /// An `Acquire` decoded by prost, seen as the hot decoder gives it.
    fn from(a: &'a v1::Acquire) -> Self {
        AcquireRef {
            resource: &a.resource,
            mode: a.mode,
            ttl_ms: a.ttl_ms,
            wait: a.wait,
            max_wait_ms: a.max_wait_ms,
            purpose: &a.purpose,
            permits: a.permits,
            capacity: a.capacity,
            detach_grace_ms: a.detach_grace_ms,
            stall_after_ms: a.stall_after_ms,
        }
    }
}

impl AcquireRef<'_> {
    /// The owned message prost would have decoded.
    pub fn to_message(&self) -> v1::Acquire {
        v1::Acquire {
            resource: self.resource.to_owned(),
            mode: self.mode,
            ttl_ms: self.ttl_ms,
            wait: self.wait,
            max_wait_ms: self.max_wait_ms,
            purpose: self.purpose.to_owned(),
            permits: self.permits,
            capacity: self.capacity,
            detach_grace_ms: self.detach_grace_ms,
            stall_after_ms: self.stall_after_ms,
        }
    }
}

impl HotFrame<'_> {
    /// The owned `ClientFrame` prost would have decoded from the same bytes.
    pub fn to_message(&self) -> ClientFrame {
        let body = match self.request {
            HotRequest::Ping { payload } => Body::Ping(v1::Ping {
                payload: Bytes::copy_from_slice(payload),
            }),
            HotRequest::Acquire(a) => Body::Acquire(a.to_message()),
            HotRequest::Release { lease_id } => Body::Release(v1::Release { lease_id }),
            HotRequest::Ack { delivery_id } => Body::Ack(v1::Ack { delivery_id }),
        };
        ClientFrame {
            id: self.id,
            body: Some(body),
        }
    }
}

// Wire types.
const VARINT: u8 = 0;
const LEN: u8 = 2;

/// A one-byte key: field number (1 to 15) and wire type.
const fn key(field: u8, wire_type: u8) -> u8 {
    (field << 3) | wire_type
}

// `ClientFrame` fields.
const FRAME_ID: u8 = key(1, VARINT);
const FRAME_PING: u8 = key(3, LEN);
const FRAME_ACQUIRE: u8 = key(5, LEN);
const FRAME_RELEASE: u8 = key(7, LEN);
const FRAME_ACK: u8 = key(14, LEN);

/// Reads the frame's bytes one field at a time.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A varint as prost reads it (at most ten bytes, the tenth at most 1),
    /// or `None` where prost would fail.
    fn varint(&mut self) -> Option<u64> {
        if let Some((&byte, rest)) = self.bytes.split_first()
            && byte < 0x80
        {
            self.bytes = rest;
            return Some(u64::from(byte));
        }
        let mut value = 0u64;
        for index in 0..10 {
            let (&byte, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            if index == 9 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// The next field's key, if it is one byte long; `None` at the end too
    /// (see [`Reader::done`]).
    fn key(&mut self) -> Option<u8> {
        let (&byte, rest) = self.bytes.split_first()?;
        if byte & 0x80 != 0 {
            return None;
        }
        self.bytes = rest;
        Some(byte)
    }

    /// A length-delimited field's bytes, if all of them are present.
    fn delimited(&mut self) -> Option<&'a [u8]> {
        let len = self.varint()?;
        let len = usize::try_from(len).ok()?;
        if len > self.bytes.len() {
            return None;
        }
        let (field, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Some(field)
    }

    fn string(&mut self) -> Option<&'a str> {
        let bytes = self.delimited()?;
        if bytes.is_ascii() {
            // SAFETY: ASCII is valid UTF-8. (`is_ascii` reads a word at a
            // time; `from_utf8` takes ~140 instructions for a short name.)
            return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).ok()
    }

    fn done(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Marks field `bit` seen; `None` if it was already.
fn once(seen: &mut u32, bit: u8) -> Option<()> {
    let mask = 1u32 << bit;
    if *seen & mask != 0 {
        return None;
    }
    *seen |= mask;
    Some(())
}

/// Decodes a `ClientFrame`'s bytes (the length prefix already taken off)
/// when it is one of the hot requests in the plain form described in the
/// module's doc; `None` otherwise: decode it with prost then.
pub fn decode_request(bytes: &[u8]) -> Option<HotFrame<'_>> {
    let mut r = Reader { bytes };
    let mut id = None;
    let mut request = None;
    while !r.done() {
        match r.key()? {
            FRAME_ID if id.is_none() => id = Some(r.varint()?),
            FRAME_PING if request.is_none() => request = Some(ping(r.delimited()?)?),
            FRAME_ACQUIRE if request.is_none() => request = Some(acquire(r.delimited()?)?),
            FRAME_RELEASE if request.is_none() => {
                let lease_id = only_varint(r.delimited()?)?;
                request = Some(HotRequest::Release { lease_id });
            }
            FRAME_ACK if request.is_none() => {
                let delivery_id = only_varint(r.delimited()?)?;
                request = Some(HotRequest::Ack { delivery_id });
            }
            _ => return None,
        }
    }
    Some(HotFrame {
        id: id.unwrap_or(0),
        request: request?,
    })
}

fn ping(bytes: &[u8]) -> Option<HotRequest<'_>> {
    let mut r = Reader { bytes };
    let mut payload: Option<&[u8]> = None;
    while !r.done() {
        match r.key()? {
            k if k == key(1, LEN) && payload.is_none() => payload = Some(r.delimited()?),
            _ => return None,
        }
    }
    Some(HotRequest::Ping {
        payload: payload.unwrap_or_default(),
    })
}

/// A message of one varint field, number 1 (`Release`, `Ack`): its value.
fn only_varint(bytes: &[u8]) -> Option<u64> {
    let mut r = Reader { bytes };
    let mut value = None;
    while !r.done() {
        match r.key()? {
            k if k == key(1, VARINT) && value.is_none() => value = Some(r.varint()?),
            _ => return None,
        }
    }
    Some(value.unwrap_or(0))
}

fn acquire(bytes: &[u8]) -> Option<HotRequest<'_>> {
    let mut r = Reader { bytes };
    let mut a = AcquireRef::default();
    let mut seen = 0u32;
    while !r.done() {
        let k = r.key()?;
        let (field, wire_type) = (k >> 3, k & 7);
        once(&mut seen, field)?;
        // prost truncates a varint to the field's width (`as u32`, `as i32`).
        match (field, wire_type) {
            (1, LEN) => a.resource = r.string()?,
            (2, VARINT) => a.mode = r.varint()? as i32,
            (3, VARINT) => a.ttl_ms = r.varint()? as u32,
            (4, VARINT) => a.wait = r.varint()? as i32,
            (5, VARINT) => a.max_wait_ms = r.varint()? as u32,
            (6, LEN) => a.purpose = r.string()?,
            (7, VARINT) => a.permits = r.varint()? as u32,
            (8, VARINT) => a.capacity = r.varint()? as u32,
            (9, VARINT) => a.detach_grace_ms = r.varint()? as u32,
            (10, VARINT) => a.stall_after_ms = r.varint()? as u32,
            _ => return None,
        }
    }
    Some(HotRequest::Acquire(a))
}

/// The longest varint, in bytes.
const MAX_VARINT: usize = 10;

fn varint_len(value: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// A varint field's bytes when its value is not the default 0.
fn varint_field_len(value: u64) -> usize {
    if value == 0 { 0 } else { 1 + varint_len(value) }
}

/// A length-delimited field's bytes, key and length included.
fn delimited_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// The most bytes of a hot answer's frame before its tail: the length
/// prefix, `ServerFrame.reply`'s key and length, `Reply.id`, the result's
/// key and length, an `AcquireReply.granted` key and length, `Granted`'s
/// three varints and its resume token's key and length (a granted
/// `LeaseUpdate`'s head, [`lease_granted_frame`], takes less).
pub const HEAD_MAX: usize = 3 * MAX_VARINT
    + 1
    + (1 + MAX_VARINT)
    + 1
    + MAX_VARINT
    + 1
    + 3 * (1 + MAX_VARINT)
    + 1
    + MAX_VARINT;

/// A hot answer's frame: `head`, then `tail` as it is (a `Pong`'s
/// payload, a `Granted`'s resume token: the frame's last field's bytes).
/// Made on the stack, so that the caller copies it once, where it goes.
#[derive(Clone, Copy, Debug)]
pub struct FrameBytes<'a> {
    head: [u8; HEAD_MAX],
    head_len: usize,
    tail: &'a [u8],
}

impl<'a> FrameBytes<'a> {
    fn new() -> Self {
        FrameBytes {
            head: [0; HEAD_MAX],
            head_len: 0,
            tail: &[],
        }
    }

    /// The frame's first bytes.
    pub fn head(&self) -> &[u8] {
        self.head.get(..self.head_len).unwrap_or(&self.head)
    }

    /// The bytes that follow [`FrameBytes::head`].
    pub fn tail(&self) -> &'a [u8] {
        self.tail
    }

    /// The whole frame's length.
    pub fn len(&self) -> usize {
        self.head_len + self.tail.len()
    }

    /// Whether the frame is empty (never: a frame has its length prefix).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the whole frame to `dst`.
    pub fn put(&self, dst: &mut impl BufMut) {
        dst.put_slice(self.head());
        dst.put_slice(self.tail);
    }

    fn byte(&mut self, b: u8) {
        // The head's room is [`HEAD_MAX`], the most any answer's head takes.
        if let Some(slot) = self.head.get_mut(self.head_len) {
            *slot = b;
            self.head_len += 1;
        }
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte((value as u8) | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }

    fn varint_field(&mut self, field: u8, value: u64) {
        if value != 0 {
            self.byte(key(field, VARINT));
            self.varint(value);
        }
    }

    /// A non-empty bytes field's key and length (its bytes follow).
    fn delimited_head(&mut self, field: u8, len: usize) {
        if len != 0 {
            self.byte(key(field, LEN));
            self.varint(len as u64);
        }
    }

    /// `ServerFrame { reply: Reply { id, <result> } }` up to the result
    /// field's bytes, which are `result_len` long.
    fn reply(&mut self, id: u64, result_key: u8, result_len: usize) {
        let result = delimited_field_len(result_len);
        let reply = varint_field_len(id) + result;
        let frame = delimited_field_len(reply);
        self.varint(frame as u64);
        self.byte(key(1, LEN));
        self.varint(reply as u64);
        self.varint_field(1, id);
        self.byte(result_key);
        self.varint(result_len as u64);
    }
}

/// The frame `ServerFrame { reply: Reply { id, done: Done {} } }`, byte
/// for byte what prost makes of it.
pub fn done_frame(id: u64) -> FrameBytes<'static> {
    let mut f = FrameBytes::new();
    f.reply(id, key(8, LEN), 0);
    f
}

/// The frame `ServerFrame { reply: Reply { id, pong: Pong { payload } } }`,
/// byte for byte what prost makes of it.
pub fn pong_frame(id: u64, payload: &[u8]) -> FrameBytes<'_> {
    let mut f = FrameBytes::new();
    if payload.is_empty() {
        f.reply(id, key(4, LEN), 0);
        return f;
    }
    f.reply(id, key(4, LEN), delimited_field_len(payload.len()));
    f.byte(key(1, LEN));
    f.varint(payload.len() as u64);
    f.tail = payload;
    f
}

/// The frame `ServerFrame { reply: Reply { id, acquire: AcquireReply
/// { granted: Granted { .. } } } }`, byte for byte what prost makes of it.
pub fn granted_frame(id: u64, granted: &v1::Granted) -> FrameBytes<'_> {
    let inner = granted_len(granted);
    let mut f = FrameBytes::new();
    f.reply(id, key(6, LEN), delimited_field_len(inner));
    f.byte(key(1, LEN));
    f.varint(inner as u64);
    f.granted(granted);
    f
}

/// The frame `ServerFrame { lease_update: LeaseUpdate { lease_id, granted:
/// Granted { .. } } }` (a queued request granted: the handoff's frame),
/// byte for byte what prost makes of it.
pub fn lease_granted_frame(lease_id: u64, granted: &v1::Granted) -> FrameBytes<'_> {
    let inner = granted_len(granted);
    let update = varint_field_len(lease_id) + delimited_field_len(inner);
    let mut f = FrameBytes::new();
    f.varint(delimited_field_len(update) as u64);
    f.byte(key(2, LEN));
    f.varint(update as u64);
    f.varint_field(1, lease_id);
    f.byte(key(2, LEN));
    f.varint(inner as u64);
    f.granted(granted);
    f
}

/// A `Granted` message's bytes.
fn granted_len(granted: &v1::Granted) -> usize {
    let token = granted.resume_token.len();
    varint_field_len(granted.lease_id)
        + varint_field_len(granted.fencing_token)
        + varint_field_len(u64::from(granted.ttl_ms))
        + if token == 0 {
            0
        } else {
            delimited_field_len(token)
        }
}

impl<'a> FrameBytes<'a> {
    /// A `Granted` message's fields; its resume token is the tail.
    fn granted(&mut self, granted: &'a v1::Granted) {
        self.varint_field(1, granted.lease_id);
        self.varint_field(2, granted.fencing_token);
        self.varint_field(3, u64::from(granted.ttl_ms));
        let token = &granted.resume_token[..];
        if !token.is_empty() {
            self.byte(key(4, LEN));
            self.varint(token.len() as u64);
            self.tail = token;
        }
    }
}

/// The frame `ServerFrame { delivery: Delivery { .. } }` of borrowed
/// fields, written byte for byte as prost writes it, without building the
/// message (no `String` for the queue's name, no map for the headers, no
/// generic length passes): a consumer that acks each delivery gets one
/// per ack (issue 14).
#[derive(Clone, Copy, Debug)]
pub struct DeliveryFrame<'a> {
    /// `Delivery.consumer_id`.
    pub consumer_id: u64,
    /// `Delivery.delivery_id`.
    pub delivery_id: u64,
    /// `Delivery.seq`.
    pub seq: u64,
    /// `Delivery.queue`.
    pub queue: &'a str,
    /// `Delivery.payload`.
    pub payload: &'a [u8],
    /// `Delivery.headers`, keys unique, in any order: they are written in
    /// key order, as prost writes its `BTreeMap`.
    pub headers: &'a [(String, String)],
    /// `Delivery.attempt`.
    pub attempt: u32,
}

/// A string field's bytes when it is not empty (proto3 skips the default).
fn string_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        delimited_field_len(len)
    }
}

/// One `map<string, string>` entry's message length: its key and value
/// fields, each skipped when empty (as prost does).
fn header_entry_len(key: &str, value: &str) -> usize {
    string_field_len(key.len()) + string_field_len(value.len())
}

fn put_bytes_field(dst: &mut impl BufMut, field: u8, bytes: &[u8]) {
    if !bytes.is_empty() {
        dst.put_u8(key(field, LEN));
        prost::encoding::encode_varint(bytes.len() as u64, dst);
        dst.put_slice(bytes);
    }
}

impl DeliveryFrame<'_> {
    /// The `Delivery` message's length.
    fn message_len(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| delimited_field_len(header_entry_len(k, v)))
            .sum();
        varint_field_len(self.consumer_id)
            + varint_field_len(self.delivery_id)
            + varint_field_len(self.seq)
            + string_field_len(self.queue.len())
            + string_field_len(self.payload.len())
            + headers
            + varint_field_len(u64::from(self.attempt))
    }

    /// The whole frame's length, its length prefix included.
    pub fn len(&self) -> usize {
        let frame = delimited_field_len(self.message_len());
        varint_len(frame as u64) + frame
    }

    /// Whether the frame is empty (never: a frame has its length prefix).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the whole frame (length prefix, then `ServerFrame`) to `dst`:
    /// the varints gathered on the stack between the borrowed slices, so
    /// that `dst` sees a few `put_slice`s rather than a call per byte.
    pub fn put(&self, dst: &mut impl BufMut) {
        let message = self.message_len();
        let mut f = FrameBytes::new();
        f.varint(delimited_field_len(message) as u64);
        f.byte(key(4, LEN));
        f.varint(message as u64);
        f.varint_field(1, self.consumer_id);
        f.varint_field(2, self.delivery_id);
        f.varint_field(3, self.seq);
        f.delimited_head(4, self.queue.len());
        dst.put_slice(f.head());
        dst.put_slice(self.queue.as_bytes());
        f.head_len = 0;
        f.delimited_head(5, self.payload.len());
        dst.put_slice(f.head());
        dst.put_slice(self.payload);
        if self.headers.is_sorted_by(|a, b| a.0 <= b.0) {
            for (k, v) in self.headers {
                put_header(dst, k, v);
            }
        } else {
            let mut sorted: Vec<&(String, String)> = self.headers.iter().collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in sorted {
                put_header(dst, k, v);
            }
        }
        f.head_len = 0;
        f.varint_field(7, u64::from(self.attempt));
        dst.put_slice(f.head());
    }
}

/// One `Delivery.headers` entry.
fn put_header(dst: &mut impl BufMut, k: &str, v: &str) {
    dst.put_u8(key(6, LEN));
    prost::encoding::encode_varint(header_entry_len(k, v) as u64, dst);
    put_bytes_field(dst, 1, k.as_bytes());
    put_bytes_field(dst, 2, v.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        for (v, n) in [(0, 1), (1, 1), (127, 1), (128, 2), (16383, 2), (16384, 3)] {
            assert_eq!(varint_len(v), n, "{v}");
        }
        assert_eq!(varint_len(u64::MAX), 10);
    }
}
