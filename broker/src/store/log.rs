//! The append-only log in front of redb (`turnstile.wal`): every group
//! commit is one record appended to it and one `fdatasync`, instead of a
//! redb transaction. redb is brought up to date only at a checkpoint.
//!
//! It owns the file's layout, appending, and reading it back at startup;
//! when to checkpoint and what the records mean for redb is `mod.rs`'s.
//!
//! Layout: a header block of [`HEADER`] bytes, then two halves of equal
//! room ([`half_of`]: half the capacity, rounded down to whole blocks),
//! each holding one generation's records from its start, each record
//! `len: u32 LE | generation: u64 LE | crc: u32 LE | body (len bytes)`.
//! The CRC (CRC-32 by `crc32fast`, seeded with the file's salt) covers
//! length, generation and body; the salt, unreadable to others (the data
//! directory is private), keeps a publisher from forging a record inside a
//! payload that a scan past a torn tail could take for a good one. The
//! body is a [`Batch`] of operations (protobuf). The file is made at its
//! full size once, zero-filled and synced, and then reused in place: an
//! append never changes the file's size, so its `fdatasync` flushes data
//! only (as the benchmark's bare loop does).
//!
//! Header: `magic "TSWAL\0\0\x02" (8 bytes, the last one the version) |
//! salt: u32 LE | capacity: u64 LE | crc: u32 LE` (CRC-32 of the 20 bytes
//! before it), zero-padded to the block. The capacity is the room for
//! records the file was made with: where the halves lie follows from it,
//! never from the file's length. A file shorter than `HEADER + capacity`
//! was truncated (records of a generation not yet applied may have been
//! cut off), and the store refuses to start ([`StoreError::Corrupt`],
//! naming both lengths) rather than start without them. Bytes past
//! `HEADER + capacity` (a file grown by a copy) hold nothing of the log,
//! since no append goes there: they are ignored, with a warning. Earlier
//! builds wrote version 1, `magic "TSWAL\0\0\x01" | salt | crc` (16
//! bytes), without the capacity: such a log is read with the capacity its
//! length gives, as they read it, and `mod.rs` makes it anew as version 2
//! once redb holds what it had.
//!
//! Generations: generation `g` is written in half `g % 2`, from its
//! start; the writer moves on to `g + 1` in the other half once redb
//! holds `g - 1` (which that half held), while `g` is being applied.
//! redb's meta `log.applied` says which generation it holds. At startup
//! the records of generation `applied + 1`, then of `applied + 2`, are
//! replayed, each in its half, in order, up to the first that does not
//! check; older bytes further on carry an older generation (or the salt of
//! no record) and end the scan. A record of the generation that does not
//! check is a torn tail (a crash during its write: its submitters were
//! never answered; or a write that failed, whose submitters heard so)
//! unless a good record of the same generation follows it somewhere in
//! its half: then the file was damaged and the store refuses to start.
//!
//! Format 2's log (store format 2) had no halves: generation `applied + 1`
//! from the start of the whole room ([`Layout::Whole`]); it is read so
//! once, at the open that upgrades it.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message as _;

use super::StoreError;
use super::record::Record;
use crate::core::queues::StoreOp;

/// The log's file name inside the data directory.
pub const FILE_NAME: &str = "turnstile.wal";

/// Bytes before the first record: the header, padded to a block so that
/// appends never share a block with it.
pub(super) const HEADER: u64 = 4096;

/// The header's first bytes, the last one its version.
const MAGIC: &[u8; 8] = b"TSWAL\0\0\x02";

/// The header of version 1 (earlier builds): no capacity.
const MAGIC_V1: &[u8; 8] = b"TSWAL\0\0\x01";

/// Bytes of the header of version 2 (version 1 had 16).
const HEADER_LEN: usize = 24;

/// Bytes of a record before its body.
const RECORD_HEADER: usize = 16;

/// Positional I/O on the log's file, so that tests can inject faults.
pub(super) trait LogFile: Send + std::fmt::Debug {
    /// Reads exactly `out.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()>;
    /// Writes all of `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&self) -> std::io::Result<()>;
    /// The file's length.
    fn len(&self) -> std::io::Result<u64>;
}

impl LogFile for std::fs::File {
    fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(self, out, offset)
        }
        #[cfg(windows)]
        {
            let (mut offset, mut out) = (offset, out);
            while !out.is_empty() {
                match std::os::windows::fs::FileExt::seek_read(self, out, offset)? {
                    0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    n => {
                        out = &mut std::mem::take(&mut out)[n..];
                        offset += n as u64;
                    }
                }
            }
            Ok(())
        }
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::write_all_at(self, data, offset)
        }
        #[cfg(windows)]
        {
            let (mut offset, mut data) = (offset, data);
            while !data.is_empty() {
                match std::os::windows::fs::FileExt::seek_write(self, data, offset)? {
                    0 => return Err(std::io::ErrorKind::WriteZero.into()),
                    n => {
                        data = &data[n..];
                        offset += n as u64;
                    }
                }
            }
            Ok(())
        }
    }
    fn sync_data(&self) -> std::io::Result<()> {
        std::fs::File::sync_data(self)
    }
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// The file of a log that is being replaced: it is closed, so that the
/// new one can take its name (Windows refuses to replace an open file),
/// and every operation on it fails.
#[derive(Debug)]
struct Closed;

impl LogFile for Closed {
    fn read_at(&self, _offset: u64, _out: &mut [u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("the log is closed"))
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("the log is closed"))
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Err(std::io::Error::other("the log is closed"))
    }
    fn len(&self) -> std::io::Result<u64> {
        Err(std::io::Error::other("the log is closed"))
    }
}

/// How the store opens its log file: the plain file in production, a
/// fault-injecting one in tests.
pub(super) type LogOpener = Box<dyn Fn(&Path) -> std::io::Result<Box<dyn LogFile>> + Send>;

pub(super) fn open_log_file(path: &Path) -> std::io::Result<Box<dyn LogFile>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    Ok(Box::new(file))
}

/// The operations of one group commit, as logged (decoded with prost,
/// encoded by [`encode_ops`]).
#[derive(Clone, PartialEq, prost::Message)]
struct Batch {
    #[prost(message, repeated, tag = "1")]
    ops: Vec<Op>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Op {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(message, tag = "1")]
    Append(Append),
    #[prost(message, tag = "2")]
    Remove(Key),
    #[prost(message, tag = "3")]
    SetAttempt(Key),
    #[prost(uint64, tag = "4")]
    ReserveCounters(u64),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Append {
    #[prost(string, tag = "1")]
    queue: String,
    #[prost(uint64, tag = "2")]
    seq: u64,
    #[prost(message, optional, tag = "3")]
    record: Option<Record>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Key {
    #[prost(string, tag = "1")]
    queue: String,
    #[prost(uint64, tag = "2")]
    seq: u64,
    /// For `SetAttempt` only.
    #[prost(uint32, tag = "3")]
    attempt: u32,
}

/// Appends `ops` to `buf` as a [`Batch`], written field by field rather
/// than built as one (no queue name copied into a `String` per
/// operation); [`decode_ops`] reads it back with prost.
fn encode_ops(ops: &[StoreOp], buf: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    fn field_len(tag: u32, len: usize) -> usize {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }
    fn varint_len(tag: u32, value: u64) -> usize {
        key_len(tag) + encoded_len_varint(value)
    }
    fn open(tag: u32, len: usize, buf: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
    }
    fn varint(tag: u32, value: u64, buf: &mut Vec<u8>) {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
    /// A `Remove` or `SetAttempt`: the varints before and after the
    /// queue's name are gathered on the stack and appended as two slices
    /// (byte by byte through prost's `encode_varint` this was ~300
    /// instructions per op on the store thread, two ops per ack: issue 14).
    fn key(tag: u32, queue: &str, seq: u64, attempt: u32, buf: &mut Vec<u8>) {
        let len = field_len(1, queue.len()) + varint_len(2, seq) + varint_len(3, attempt.into());
        let mut head = StackBytes::new();
        head.open(1, field_len(tag, len));
        head.open(tag, len);
        head.open(1, queue.len());
        let mut tail = StackBytes::new();
        tail.varint(2, seq);
        tail.varint(3, attempt.into());
        buf.reserve(head.len + queue.len() + tail.len);
        buf.extend_from_slice(head.bytes());
        buf.extend_from_slice(queue.as_bytes());
        buf.extend_from_slice(tail.bytes());
    }
    for op in ops {
        match op {
            StoreOp::Append { queue, message } => {
                let record = Record::of(message);
                let record_len = record.encoded_len();
                let len = field_len(1, queue.len())
                    + varint_len(2, message.seq)
                    + field_len(3, record_len);
                open(1, field_len(1, len), buf);
                open(1, len, buf);
                open(1, queue.len(), buf);
                buf.extend_from_slice(queue.as_bytes());
                varint(2, message.seq, buf);
                open(3, record_len, buf);
                buf.reserve(record_len);
                // Encoding into a Vec cannot run out of room.
                let _ = record.encode(buf);
            }
            StoreOp::Remove { queue, seq } => key(2, queue, *seq, 0, buf),
            StoreOp::SetAttempt {
                queue,
                seq,
                attempt,
            } => key(3, queue, *seq, *attempt, buf),
            StoreOp::ReserveCounters { reserve_until } => {
                open(1, varint_len(4, *reserve_until), buf);
                varint(4, *reserve_until, buf);
            }
        }
    }
}

/// Up to three keys and varints of a [`StoreOp`]'s encoding (tags below 16:
/// one byte each), made on the stack.
struct StackBytes {
    bytes: [u8; 33],
    len: usize,
}

impl StackBytes {
    fn new() -> StackBytes {
        StackBytes {
            bytes: [0; 33],
            len: 0,
        }
    }

    fn byte(&mut self, b: u8) {
        // Room for three keys and three varints of at most 10 bytes.
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn raw_varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte((value as u8) | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }

    /// A length-delimited field's key and length.
    fn open(&mut self, tag: u32, len: usize) {
        self.byte((tag << 3) as u8 | 2);
        self.raw_varint(len as u64);
    }

    /// A varint field, written even when 0 (as `encode_ops` always did).
    fn varint(&mut self, tag: u32, value: u64) {
        self.byte((tag << 3) as u8);
        self.raw_varint(value);
    }

    fn bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&self.bytes)
    }
}

fn decode_ops(body: &[u8]) -> Result<Vec<StoreOp>, String> {
    let batch = Batch::decode(Bytes::copy_from_slice(body)).map_err(|e| e.to_string())?;
    batch
        .ops
        .into_iter()
        .map(|op| match op.kind {
            Some(Kind::Append(a)) => Ok(StoreOp::Append {
                queue: a.queue.into(),
                message: a.record.unwrap_or_default().into_message(a.seq),
            }),
            Some(Kind::Remove(k)) => Ok(StoreOp::Remove {
                queue: k.queue.into(),
                seq: k.seq,
            }),
            Some(Kind::SetAttempt(k)) => Ok(StoreOp::SetAttempt {
                queue: k.queue.into(),
                seq: k.seq,
                attempt: k.attempt,
            }),
            Some(Kind::ReserveCounters(reserve_until)) => {
                Ok(StoreOp::ReserveCounters { reserve_until })
            }
            None => Err("an operation of an unknown kind".to_string()),
        })
        .collect()
}

fn crc(salt: u32, parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(salt);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

fn header_bytes(salt: u32, capacity: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&salt.to_le_bytes());
    header[12..20].copy_from_slice(&capacity.to_le_bytes());
    let check = crc(0, &[&header[..20]]);
    header[20..24].copy_from_slice(&check.to_le_bytes());
    header
}

/// The header of version 1, as earlier builds wrote it.
fn header_bytes_v1(salt: u32) -> [u8; 16] {
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(MAGIC_V1);
    header[8..12].copy_from_slice(&salt.to_le_bytes());
    let check = crc(0, &[&header[..12]]);
    header[12..16].copy_from_slice(&check.to_le_bytes());
    header
}

/// What a header that checks says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    salt: u32,
    /// The capacity the log was made with; `None` for version 1, which did
    /// not record it.
    capacity: Option<u64>,
}

/// Why the first bytes of a file are not a header this build reads.
enum BadHeader {
    /// Not a turnstile log at all.
    Foreign,
    /// A turnstile log's header that does not check.
    Damaged,
    /// A turnstile log of a version this build does not know (a later one).
    Version(u8),
}

/// Reads the header from the file's first bytes (zeros past its end).
fn read_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, BadHeader> {
    let salt = u32_at(bytes, 8);
    match &bytes[..8] {
        m if m == MAGIC => {
            if crc(0, &[&bytes[..20]]) != u32_at(bytes, 20) {
                return Err(BadHeader::Damaged);
            }
            Ok(Header {
                salt,
                capacity: Some(u64_at(bytes, 12)),
            })
        }
        m if m == MAGIC_V1 => {
            if bytes[..16] != header_bytes_v1(salt) {
                return Err(BadHeader::Damaged);
            }
            Ok(Header {
                salt,
                capacity: None,
            })
        }
        m if m[..7] == MAGIC[..7] => Err(BadHeader::Version(m[7])),
        _ => Err(BadHeader::Foreign),
    }
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&data[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(b)
}

/// The record of `generation` at `at` in `data` (the bytes after the
/// header), if there is a whole one that checks: its body and where the
/// next one starts.
fn record_at(data: &[u8], at: usize, generation: u64, salt: u32) -> Option<(&[u8], usize)> {
    let head = data.get(at..at.checked_add(RECORD_HEADER)?)?;
    if u64_at(head, 4) != generation {
        return None;
    }
    let len = u32_at(head, 0) as usize;
    let end = at.checked_add(RECORD_HEADER)?.checked_add(len)?;
    let body = data.get(at + RECORD_HEADER..end)?;
    if len == 0 || crc(salt, &[&head[..12], body]) != u32_at(head, 12) {
        return None;
    }
    Some((body, end))
}

/// The open log.
#[derive(Debug)]
pub(super) struct Log {
    path: PathBuf,
    file: Box<dyn LogFile>,
    salt: u32,
    /// The generation being written: redb holds every generation before
    /// the one before it.
    generation: u64,
    /// Where the next record goes, from the start of the generation's half.
    pos: u64,
    /// Room for records: as the header records it (for a header of
    /// version 1, the file's length past the header).
    capacity: u64,
    /// Whether the header records the capacity (version 2).
    recorded: bool,
    /// Room for one generation: half of it ([`half_of`]).
    half: u64,
    buf: Vec<u8>,
}

/// How the generations lie in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// Format 2: every generation from the start of the log.
    Whole,
    /// Format 3: generation `g` in half `g % 2`.
    Halves,
}

/// Room for one generation in a log of `capacity` bytes of records: half,
/// rounded down to whole blocks of [`HEADER`] bytes (a log too small for
/// that has halves of half its room).
pub(super) fn half_of(capacity: u64) -> u64 {
    let half = capacity / 2;
    match half - half % HEADER {
        0 => half,
        aligned => aligned,
    }
}

/// The records of `generation` in `region` (one generation's room, at
/// `offset` in the file), in order, up to the first that does not check.
/// That one is a torn tail, logged and left behind, unless a good record
/// of the generation follows it: then the region was damaged.
fn scan(
    path: &Path,
    region: &[u8],
    offset: u64,
    generation: u64,
    salt: u32,
) -> Result<Vec<StoreOp>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let mut ops = Vec::new();
    let mut at = 0usize;
    let mut records = 0u64;
    while let Some((body, next)) = record_at(region, at, generation, salt) {
        let mut batch = decode_ops(body).map_err(|e| {
            corrupt(format!(
                "its record at offset {} does not decode: {e}",
                offset + at as u64
            ))
        })?;
        ops.append(&mut batch);
        records += 1;
        at = next;
    }
    // Past the last good record: older generations, zeros, or a torn
    // record. A good record of this generation further on means the
    // bytes here were damaged after they were written.
    // Every place the generation's bytes occur is a candidate.
    let pattern = generation.to_le_bytes();
    let from = at + 1 + 4;
    let later = memchr::memmem::find_iter(region.get(from..).unwrap_or_default(), &pattern)
        .map(|i| from + i - 4)
        .find(|&o| record_at(region, o, generation, salt).is_some());
    if let Some(found) = later {
        return Err(corrupt(format!(
            "the record at offset {} does not check, but a later one at offset {} does: \
             the log was damaged",
            offset + at as u64,
            offset + found as u64
        )));
    }
    if region.len() >= at + RECORD_HEADER && u64_at(region, at + 4) == generation {
        tracing::warn!(
            file = %path.display(),
            "the log ends in a record that was not completely written (the broker stopped \
             during a write, or a write failed); it is ignored: {records} records of \
             generation {generation} before it were kept, at offset {}",
            offset + at as u64
        );
    }
    Ok(ops)
}

/// What [`Log::append`] could not do.
pub(super) enum AppendError {
    /// The record does not fit in what is left of the generation's half:
    /// move on to the other half first.
    Full,
    /// The write failed: nothing is logged, the next append tries the
    /// same place again.
    Write(std::io::Error),
    /// The sync failed: whether the record is on disk is unknown.
    Sync(std::io::Error),
}

impl Log {
    /// Creates a log of `capacity` bytes of records at `path`, built aside
    /// and moved into place whole (a crash leaves no log or a whole one).
    pub(super) fn create(path: &Path, capacity: u64) -> std::io::Result<()> {
        let mut building = path.as_os_str().to_owned();
        building.push(format!(".new-{}", std::process::id()));
        let building = PathBuf::from(building);
        let _ = std::fs::remove_file(&building);
        let made = (|| {
            let file = crate::platform::fs::private_file()
                .create_new(true)
                .open(&building)?;
            let mut salt = [0u8; 4];
            getrandom::fill(&mut salt).map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut block = vec![0u8; HEADER as usize];
            block[..HEADER_LEN].copy_from_slice(&header_bytes(u32::from_le_bytes(salt), capacity));
            file.write_at(0, &block)?;
            // Zeros written for real, not a sparse file or unwritten
            // extents: an append later changes data only.
            let zeros = vec![0u8; 1 << 20];
            let mut at = HEADER;
            while at < HEADER + capacity {
                let n = zeros.len().min((HEADER + capacity - at) as usize);
                file.write_at(at, &zeros[..n])?;
                at += n as u64;
            }
            file.sync_all()?;
            std::fs::rename(&building, path)
        })();
        if made.is_err() {
            let _ = std::fs::remove_file(&building);
        }
        if let Some(dir) = path.parent() {
            crate::platform::fs::sync_dir(dir);
        }
        made
    }

    /// Opens the log and reads the records of the generations after
    /// `applied` that it may hold: those to replay, in order. In each, a
    /// torn tail is logged and left behind; damage followed by good
    /// records is [`StoreError::Corrupt`], and so is a file shorter than
    /// the header says it was made (truncated). The log is returned at
    /// generation `applied + 1`; [`Log::restart`] it before writing.
    pub(super) fn open(
        path: &Path,
        file: Box<dyn LogFile>,
        applied: u64,
        layout: Layout,
    ) -> Result<(Log, Vec<StoreOp>), StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail,
        };
        let read_err = |e: std::io::Error| StoreError::Read {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let len = file.len().map_err(read_err)?;
        let mut bytes = [0u8; HEADER_LEN];
        let readable = bytes.len().min(usize::try_from(len).unwrap_or(HEADER_LEN));
        file.read_at(0, &mut bytes[..readable]).map_err(read_err)?;
        let header_cut = || {
            corrupt(format!(
                "it is {len} bytes long, shorter than a log's header ({HEADER} bytes): it was \
                 truncated, and the records in it not yet applied to the database may be \
                 lost; restore it whole from a backup"
            ))
        };
        let header = match read_header(&bytes) {
            Ok(header) => header,
            // The header itself may have been cut.
            Err(_) if len < HEADER => return Err(header_cut()),
            Err(BadHeader::Foreign) => {
                return Err(corrupt("it is not a turnstile log".to_string()));
            }
            Err(BadHeader::Damaged) => {
                return Err(corrupt("its header does not check".to_string()));
            }
            Err(BadHeader::Version(version)) => {
                return Err(StoreError::Format {
                    path: path.to_path_buf(),
                    detail: format!(
                        "its log header is of version {version}, and this broker reads \
                         versions 1 and 2 (a later turnstiled made it)"
                    ),
                });
            }
        };
        let capacity = match header.capacity {
            Some(capacity) => {
                let made = HEADER.checked_add(capacity).ok_or_else(|| {
                    corrupt(format!("its header gives a capacity of {capacity} bytes"))
                })?;
                // Zeros where the cut was read as no record: extended
                // back, the log gives what is left before the cut.
                if len < made {
                    return Err(corrupt(format!(
                        "it is {len} bytes long, but was made at {made} bytes: it was \
                         truncated, and records in it not yet applied to the database may have \
                         been cut off; restore it whole from a backup, or extend it back to \
                         {made} bytes (`truncate -s {made}`) to start without what was cut off"
                    )));
                }
                if len > made {
                    tracing::warn!(
                        file = %path.display(),
                        "the log is {len} bytes long but was made at {made} bytes: the {} bytes \
                         past its end hold nothing of it and are ignored",
                        len - made
                    );
                }
                capacity
            }
            None if len < HEADER => return Err(header_cut()),
            None => len - HEADER,
        };
        let salt = header.salt;
        let size = usize::try_from(capacity)
            .map_err(|_| corrupt(format!("it is too large ({len} bytes)")))?;
        let mut data = vec![0u8; size];
        file.read_at(HEADER, &mut data).map_err(read_err)?;
        let half = half_of(capacity);
        // The store refuses such an `applied` before (it names its file);
        // this keeps the sums below from overflowing whoever calls.
        let (Some(next), Some(last)) = (applied.checked_add(1), applied.checked_add(2)) else {
            return Err(corrupt(format!(
                "generation {applied} is said to be applied, the last there can be"
            )));
        };
        let generations: Vec<(u64, u64, u64)> = match layout {
            Layout::Whole => vec![(next, 0, capacity)],
            Layout::Halves => (next..=last).map(|g| (g, (g % 2) * half, half)).collect(),
        };
        let mut ops = Vec::new();
        for (generation, start, room) in generations {
            // Both bounds are within `data`, whose length is `capacity`.
            let region = data
                .get(start as usize..(start + room) as usize)
                .unwrap_or_default();
            ops.append(&mut scan(path, region, HEADER + start, generation, salt)?);
        }
        Ok((
            Log {
                path: path.to_path_buf(),
                file,
                salt,
                generation: next,
                pos: 0,
                capacity,
                recorded: header.capacity.is_some(),
                half,
                buf: Vec::new(),
            },
            ops,
        ))
    }

    /// The generation being written.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of records of the current generation.
    pub(super) fn used(&self) -> u64 {
        self.pos
    }

    /// Where the current generation's half starts in the file.
    fn base(&self) -> u64 {
        HEADER + (self.generation % 2) * self.half
    }

    /// Where the next record goes in the file.
    #[cfg(test)]
    pub(super) fn offset(&self) -> u64 {
        self.base() + self.pos
    }

    /// Writes a record of `ops` for `generation` at `at` past the header,
    /// as any layout would place it: its length.
    #[cfg(test)]
    pub(super) fn write_record_at(&mut self, at: u64, generation: u64, ops: &[StoreOp]) -> u64 {
        let current = self.generation;
        self.generation = generation;
        self.encode(ops);
        self.generation = current;
        self.file.write_at(HEADER + at, &self.buf).unwrap();
        self.file.sync_data().unwrap();
        self.buf.len() as u64
    }

    /// Room for records in all.
    pub(super) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the header records the capacity: a log of version 1 (an
    /// earlier build's) does not, and is made anew once applied.
    pub(super) fn records_capacity(&self) -> bool {
        self.recorded
    }

    /// Rewrites the header as version 1 (an earlier build's), keeping the
    /// salt, so that the records still check.
    #[cfg(test)]
    pub(super) fn write_header_v1(&mut self) {
        let mut block = vec![0u8; HEADER as usize];
        block[..16].copy_from_slice(&header_bytes_v1(self.salt));
        self.file.write_at(0, &block).unwrap();
        self.file.sync_data().unwrap();
    }

    /// The path of the file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the file, before a new log takes its name.
    pub(super) fn close(&mut self) {
        self.file = Box::new(Closed);
    }

    /// Starts `generation` at the beginning of its half, which holds
    /// `generation - 2` or older, already applied. Nothing is written:
    /// the old records carry an older generation.
    pub(super) fn restart(&mut self, generation: u64) {
        self.generation = generation;
        self.pos = 0;
    }

    /// Whether a record of `ops` would fit in an empty half of the log.
    pub(super) fn fits_empty(&mut self, ops: &[StoreOp]) -> bool {
        self.encode(ops);
        self.buf.len() as u64 <= self.half
    }

    fn encode(&mut self, ops: &[StoreOp]) {
        let buf = &mut self.buf;
        buf.clear();
        buf.resize(RECORD_HEADER, 0);
        encode_ops(ops, buf);
        let len = u32::try_from(buf.len() - RECORD_HEADER).unwrap_or(u32::MAX);
        buf[0..4].copy_from_slice(&len.to_le_bytes());
        buf[4..12].copy_from_slice(&self.generation.to_le_bytes());
        let check = crc(self.salt, &[&buf[..12], &buf[RECORD_HEADER..]]);
        buf[12..16].copy_from_slice(&check.to_le_bytes());
    }

    /// Appends `ops` as one record and syncs it: on `Ok` they survive a
    /// crash.
    pub(super) fn append(
        &mut self,
        ops: &[StoreOp],
        #[cfg(feature = "failpoints")] injected: &super::failpoints::Sites,
    ) -> Result<(), AppendError> {
        self.encode(ops);
        let len = self.buf.len() as u64;
        if self.buf.len() - RECORD_HEADER > u32::MAX as usize
            || self.pos.saturating_add(len) > self.half
        {
            return Err(AppendError::Full);
        }
        #[cfg(feature = "failpoints")]
        if let Some(e) = injected.before_write() {
            return Err(AppendError::Write(e));
        }
        self.file
            .write_at(self.base() + self.pos, &self.buf)
            .map_err(AppendError::Write)?;
        #[cfg(feature = "failpoints")]
        if let Some(e) = injected.before_sync() {
            return Err(AppendError::Sync(e));
        }
        self.file.sync_data().map_err(AppendError::Sync)?;
        self.pos += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::core::queues::Message;

    proptest::proptest! {
        /// What is logged reads back as it was, every kind of operation,
        /// headers and publisher included.
        #[test]
        fn operations_read_back_as_logged(
            steps in proptest::collection::vec(
                (0u8..4, "[a-z./]{0,12}|[a-z]{120,255}", proptest::num::u64::ANY, proptest::num::u32::ANY,
                 proptest::collection::vec(proptest::num::u8::ANY, 0..40),
                 proptest::collection::vec(("[a-z]{1,5}", "[a-zé]{0,5}"), 0..3),
                 proptest::option::of(proptest::num::u32::ANY)),
                1..12,
            ),
        ) {
            let ops: Vec<StoreOp> = steps
                .into_iter()
                .map(|(kind, queue, seq, n, payload, headers, publisher)| {
                    let queue: Arc<str> = queue.into();
                    match kind {
                        0 => StoreOp::Append {
                            queue,
                            message: Message {
                                seq,
                                payload: Bytes::from(payload),
                                headers,
                                attempt: n,
                                publisher,
                            },
                        },
                        1 => StoreOp::Remove { queue, seq },
                        2 => StoreOp::SetAttempt { queue, seq, attempt: n },
                        _ => StoreOp::ReserveCounters { reserve_until: seq },
                    }
                })
                .collect();
            let mut buf = Vec::new();
            encode_ops(&ops, &mut buf);
            proptest::prop_assert_eq!(decode_ops(&buf).unwrap(), ops);
        }
    }
}
