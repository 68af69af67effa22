//! Bytes from a peer → the broker's frame decoder (`ServerCodec`), as the
//! connection reader drives it: append what arrived, decode frames until it
//! needs more, stop at the first error, and at EOF report leftovers.
//!
//! Input layout: byte 0 picks the frame limit (16 B, 1 KiB, 64 KiB or the
//! default 1 MiB), byte 1 the read sizes; the rest is the stream.
//!
//! Asserted, beyond "no panic":
//! - every decoded frame (10-byte prefix at most, body) is within the limit, and nothing after a
//!   decoding error is ever decoded (the reader closes);
//! - how the bytes are split into reads changes nothing: the same frames and
//!   the same error come out of one big read and of many small ones;
//! - no single allocation made by a `decode` call exceeds what the limit
//!   allows (see `check_peak`): a length prefix over the limit is refused
//!   before anything is reserved for it;
//! - a decoded frame re-encodes to one that decodes to the same message.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio_util::codec::Decoder;
use turnstile_proto::{ClientFrame, DEFAULT_MAX_FRAME_BYTES, ServerCodec};

/// Records the largest single allocation (or reallocation) made.
struct PeakAlloc;

static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; the only
// addition is an atomic store.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        PEAK.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        PEAK.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        PEAK.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// What one decoding run produced: the frames, then the error that ended
/// it (as displayed), if any.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<ClientFrame>,
    body_lens: Vec<usize>,
    end: Option<String>,
}

/// The largest single allocation one `decode` call may make with `buffered`
/// bytes in the buffer: the buffer grows to hold one frame at the limit
/// (doubling, so twice that), and decoding a frame's body allocates at most
/// a constant factor of the body (a 2-byte empty `repeated string` entry
/// becomes a 24-byte `String`, and the `Vec` holding them doubles). What
/// must never happen is an allocation sized by a length over the limit.
fn check_peak(limit: u32, buffered: usize) {
    let frame = limit as usize + 10;
    let allowed = 2 * frame.max(buffered) + 32 * frame + 4096;
    let peak = PEAK.load(Ordering::Relaxed);
    assert!(
        peak <= allowed,
        "one decode allocated {peak} bytes at once with {buffered} bytes buffered \
         under a {limit}-byte limit"
    );
}

fn run(limit: u32, input: &[u8], read_sizes: impl Iterator<Item = usize>) -> Outcome {
    let mut codec = ServerCodec::new(limit);
    let mut buf = BytesMut::new();
    let mut out = Outcome {
        frames: Vec::new(),
        body_lens: Vec::new(),
        end: None,
    };
    let mut rest = input;
    let mut sizes = read_sizes;
    loop {
        let eof = rest.is_empty();
        if !eof {
            let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        loop {
            let before = buf.len();
            PEAK.store(0, Ordering::Relaxed);
            let result = if eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            check_peak(limit, before);
            match result {
                Ok(Some(frame)) => {
                    let consumed = before - buf.len();
                    // Consumed = a prefix of at most 10 bytes + the body,
                    // and the body is what the limit bounds.
                    assert!(
                        consumed <= limit as usize + 10,
                        "decoded a frame of {consumed} bytes over the {limit}-byte limit"
                    );
                    out.body_lens.push(consumed);
                    out.frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    out.end = Some(e.to_string());
                    return out;
                }
            }
        }
        if eof {
            return out;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [pick, split, input @ ..] = data else {
        return;
    };
    let limit = match pick % 4 {
        0 => 16,
        1 => 1024,
        2 => 64 * 1024,
        _ => DEFAULT_MAX_FRAME_BYTES,
    };
    let whole = run(limit, input, std::iter::once(input.len()));
    // Reads of 1 byte, then `step` bytes, then 7, repeating.
    let step = usize::from(*split) + 1;
    let pattern = [1, step, 7];
    let chunked = run(limit, input, pattern.into_iter().cycle());
    assert_eq!(
        whole, chunked,
        "the split of the stream into reads mattered"
    );

    for frame in &whole.frames {
        let again = ClientFrame::decode(frame.encode_to_vec().as_slice())
            .expect("a decoded frame re-encodes to a valid one");
        assert_eq!(&again, frame, "re-encoding changed the frame");
    }
});
