//! Durable storage: the queued messages and the counters' high-water marks,
//! in two files inside the broker's data directory: a `redb` database,
//! `turnstile.redb`, and an append-only log in front of it,
//! `turnstile.wal`.
//!
//! It owns the files: opening them (never a silent fresh start over a file
//! it cannot read, never a panic on a corrupt one), loading everything at
//! startup, and committing batches of [`StoreOp`]s. A batch is committed by
//! appending it to the log as one record and `fdatasync`ing the log: one
//! sync and a few thousand instructions, where a redb transaction costs a
//! quarter of a million. redb is brought up to date at a checkpoint, in one
//! durable transaction (redb's default durability, `Immediate`), on a
//! thread of its own; the in-memory queue table is what the broker reads
//! while it runs, so redb is read only at startup (and for history).
//! [`StoreWriter`] runs the commits on a thread of their own and shares
//! one record among every batch submitted meanwhile (group commit).
//!
//! It decides nothing about queues: the core says what to write.
//!
//! Layout (format 3):
//! - `turnstile.redb`, table `messages`: `(queue, seq)` → a protobuf
//!   record (attempt, payload, headers), so one range scan yields every
//!   queue in order;
//! - table `meta`: `format` (3), `counters.reserved_until` (the core's
//!   counter reservation), `queues.last_seq` (the highest sequence number
//!   ever stored) and `log.applied` (the last log generation a checkpoint
//!   applied); all three only ever rise;
//! - table `lease_history`: the leases that ended, per resource, in
//!   batches (see `history.rs`). History does not go through the log: it
//!   is committed to redb directly, on the redb thread. A file from before
//!   it simply has none yet; a table `history` (the first layout, never
//!   released) is dropped;
//! - `turnstile.wal`: a header (which records the size the file was made
//!   at), then two halves of equal room; generation `g` of the log is
//!   written in half `g % 2`, from its start, as records, each one group
//!   commit's operations with their length, generation and CRC-32
//!   (`log.rs` has the byte layout). The file is made at its full size
//!   ([`LOG_CAPACITY`]) once and overwritten in place, so that an append's
//!   `fdatasync` has no size change to commit.
//!
//! Checkpoint: after the commit that takes the current generation past
//! [`CHECKPOINT_BYTES`] or [`CHECKPOINT_INTERVAL`] after the last one (the
//! submitters are answered first), the writer hands the generation's
//! operations to the redb thread and goes on at once with the next
//! generation in the other half. The redb thread applies them (their net
//! effect, [`net_effect`]) and sets `log.applied` to the generation, in
//! one redb transaction. The other half held the generation before the
//! current one: it may be reused only once redb holds that one. If it does
//! not yet when a checkpoint is due, the checkpoint is put off and the
//! current generation goes on in its half (it has room past the checkpoint
//! size: half the log); only a record that does not fit in what is left of
//! the half makes the writer wait for it (both counted, at debug level). A
//! record larger than a half goes straight into redb, after everything
//! handed over before it. At a clean stop the last generation is handed
//! over and the redb thread finishes its work before the store closes.
//! A checkpoint that fails (a full disk) is kept by the redb thread and
//! tried again before any other job it takes (a history line, a read, the
//! next checkpoint, which includes it); every commit after the failure,
//! and every put-off checkpoint, asks for such a try (one queued at a
//! time), so redb is reopened as soon as there is room, as when every
//! commit was a redb transaction. Commits go on in the log until they
//! need the failed generation's half, and then fail with its error.
//! Operations are idempotent (insert or remove by `(queue, seq)`,
//! attempts set, high-water marks raised), and the generation makes a log
//! that redb already holds replay nothing.
//!
//! Every redb write and read after the open happens on the redb thread,
//! in the order asked: checkpoints, history lines (the writer hands them
//! over after the commit they came with, nobody waits), and reads of the
//! history (answered there after every line handed over before, so a read
//! sees every line recorded before it). redb allows one write transaction
//! at a time: so the writer thread, which only appends to the log, never
//! waits for redb except for a full half, a record larger than a half, the
//! open and the stop.
//!
//! Recovery at open: redb is loaded; the log's records of generation
//! `log.applied + 1` (in its half) and then of `log.applied + 2` (in the
//! other) are replayed in order, each up to the first that does not check
//! (the writer writes at most those two before redb holds the first).
//! That one is a torn tail (a crash during its write, whose submitters
//! were never answered, or a write that failed): it is dropped with a
//! warning. If a good record of the same generation follows it in its
//! half, the log was damaged and the store refuses to start
//! ([`StoreError::Corrupt`]), as it does for a damaged redb file, a log
//! shorter than the size its header records (truncated: records not yet
//! applied may have been cut off), a missing log once `log.applied` is
//! set, or a `log.applied` so large that `log.applied + 3` overflows. A
//! known blind spot: damage to the last record of generation
//! `log.applied + 1` is taken for a torn tail even when `log.applied + 2`
//! has records (so that record could only have been torn by a failed
//! write), and that record is dropped; the one-piece log of format 2 had
//! the same blind spot for its last record. Then, before the broker goes
//! on, both generations are applied and marked applied in one redb
//! transaction, and the log goes on with `log.applied + 3`, a generation
//! never written before.
//!
//! Format 2 (the log in one piece: generation `log.applied + 1` from the
//! start of the log) is opened, its log replayed the old way, and upgraded
//! to format 3 in the transaction that applies it. Format 1 (no log) is
//! opened and upgraded in place: its log is created on first open. A log
//! found beside a database of this format that never applied one (a new
//! database, its predecessor moved aside) was left by another store: it
//! is made anew, since the generations it holds are those the new store
//! writes next. A broker that reads only format 2 refuses format 3 (its
//! format check) rather than misread the log. A log whose header does not
//! record its size (version 1, from earlier builds) is read with the size
//! its length gives, as those builds did, and made anew with a header of
//! version 2 once redb holds what it had, as for a change of size.

mod history;
mod log;
mod record;
mod storage;
#[cfg(test)]
mod tests;
mod writer;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use std::ops::Bound;

use redb::backends::FileBackend;
use redb::{
    BackendError, Database, DatabaseError, ReadableDatabase, ReadableTable, StorageBackend,
    TableDefinition,
};

use crate::core::Counters;
use crate::core::queues::{Message, StoreOp};
use crate::platform::fs::sync_dir;
use log::{AppendError, Layout, Log, LogOpener};
use record::Record;

#[cfg(test)]
pub use history::HistoryLine;
pub use history::{
    HistoryBounds, HistoryJournal, HistoryQuery, LineTimes, Recorded, RecordedLease, StagedHistory,
};
pub use storage::Storage;
pub use writer::{StoreWriter, after_answers};

/// The store's file name inside the data directory.
pub const FILE_NAME: &str = "turnstile.redb";

/// The layout version this broker writes and reads.
const FORMAT: u64 = 3;

/// The layout with the log in one piece (every generation from the start
/// of the log): opened, its log replayed, and upgraded to [`FORMAT`].
const FORMAT_ONE_LOG: u64 = 2;

/// The layout before the log: opened, and upgraded to [`FORMAT`].
const FORMAT_WITHOUT_LOG: u64 = 1;

/// Room for records in the log file, made at this size once and reused
/// (`--store-log-size`); each of its two halves holds one generation.
pub const LOG_CAPACITY: u64 = 16 << 20;

/// A checkpoint follows the commit that brought the log's current
/// generation past this many bytes (`--store-checkpoint-size`); a
/// generation holds at most half the log, and a record that does not fit
/// in what is left of that is preceded by one.
pub const CHECKPOINT_BYTES: u64 = 4 << 20;

/// A checkpoint follows the first commit this long after the last one,
/// however little the log holds (`--store-checkpoint-interval`).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// The log's sizes and the checkpoint's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// Room for records in the log file ([`LOG_CAPACITY`]), in two
    /// halves of one generation each. A log of another size is made anew
    /// at startup, once redb holds all of it.
    pub capacity: u64,
    /// [`CHECKPOINT_BYTES`].
    pub checkpoint_bytes: u64,
    /// [`CHECKPOINT_INTERVAL`].
    pub checkpoint_interval: Duration,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            capacity: LOG_CAPACITY,
            checkpoint_bytes: CHECKPOINT_BYTES,
            checkpoint_interval: CHECKPOINT_INTERVAL,
        }
    }
}

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_FORMAT: &str = "format";
const META_RESERVED_UNTIL: &str = "counters.reserved_until";
const META_LAST_SEQ: &str = "queues.last_seq";
const META_LOG_APPLIED: &str = "log.applied";

/// What a failed store operation was doing, for the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doing {
    Open,
    Read,
    Write,
}

/// Storage failures. Every message names the file, and those met at
/// startup say what the operator can do. Cloneable, so that one failed
/// group commit can be reported to each of its submitters.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {}: {detail}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The operating system's reason.
        detail: String,
    },
    /// Another process has the file open.
    #[error(
        "{} is in use by another process: is another turnstiled running with this data directory?",
        path.display()
    )]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a readable turnstile store. What the operator can
    /// do depends on the file ([`corrupt_advice`]); a `detail` may add a
    /// way out of its own (a truncated log can be extended back).
    #[error(
        "{} is corrupt ({detail}); the broker will not start over it. {}",
        path.display(),
        corrupt_advice(path)
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The file was written by another version of turnstile or redb.
    #[error("{} has a format this broker cannot use: {detail}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Which format it is.
        detail: String,
    },
    /// The file could not be opened or read (permissions, I/O).
    #[error("cannot read {}: {detail}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The reason.
        detail: String,
    },
    /// The disk is full: the transaction was not committed. Later commits
    /// are tried again.
    #[error("cannot write {}: the disk is full", path.display())]
    DiskFull {
        /// The file.
        path: PathBuf,
    },
    /// A write failed: the transaction was not committed. Later commits
    /// reopen the file and try again.
    #[error("cannot write {}: {detail}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The reason.
        detail: String,
    },
    /// A sync of the file failed during this transaction: it may or may
    /// not be on disk, and nothing more is written until a restart.
    #[error(
        "cannot sync {}: {detail}; whether this write is stored is unknown, and the store takes \
         no more writes until the broker restarts",
        path.display()
    )]
    SyncFailed {
        /// The file.
        path: PathBuf,
        /// The reason.
        detail: String,
    },
    /// An earlier sync failed: the store refuses writes until a restart.
    #[error(
        "{} takes no more writes: a sync of it failed earlier, so what is on disk is uncertain; \
         restart the broker to read it afresh",
        path.display()
    )]
    Poisoned {
        /// The file.
        path: PathBuf,
    },
    /// The writer thread has stopped: the broker is shutting down.
    #[error("the store is closed")]
    Closed,
}

/// What to do about a corrupt store file, for the message: the two files
/// go together. The log holds what the database does not have yet, and
/// the database says which of the log's records are new, so a backup of
/// one is good only with the other of the same moment; and the log alone
/// cannot be moved aside (a missing log is refused once the database has
/// applied one). Moving both aside starts afresh.
fn corrupt_advice(path: &Path) -> &'static str {
    if path.file_name() == Some(std::ffi::OsStr::new(log::FILE_NAME)) {
        "A backup of the log is good only with the turnstile.redb of the same moment: restore \
         both from it, or move both aside to start with empty queues (fencing tokens and \
         revisions then restart from zero); the log cannot be moved aside alone"
    } else {
        "Restore it from a backup, with the turnstile.wal of the same moment, or move both aside \
         to start with empty queues (fencing tokens and revisions then restart from zero)"
    }
}

impl StoreError {
    /// Whether this is a full disk (answered as RESOURCE_EXHAUSTED rather
    /// than INTERNAL).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. })
    }

    /// Whether the write this error answers may have been stored after
    /// all (its sync failed): the honest answer to its submitter is that
    /// the outcome is unknown, not that it failed.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, StoreError::SyncFailed { .. })
    }

    /// Whether the store refuses every write from now on (a sync failed).
    pub fn is_poisoned(&self) -> bool {
        matches!(
            self,
            StoreError::SyncFailed { .. } | StoreError::Poisoned { .. }
        )
    }
}

/// Everything durable, as the broker finds it at startup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The counters' persisted reservation (0 for a new store).
    pub counters: Counters,
    /// The highest message sequence number ever stored: give it to
    /// [`crate::core::queues::QueueTable::new`] so that none is reused.
    pub last_seq: u64,
    /// Every queue that holds messages, by name, each with its messages in
    /// sequence order.
    pub queues: Vec<(String, Vec<Message>)>,
}

/// How the store (re)opens its database: a plain file in production, a
/// fault-injecting backend in tests. `first` is true for the open at
/// startup, false for a reopen after a failed write. The opener wraps its
/// backend in [`SyncWatched`] with the [`SyncFailed`] flag and the
/// [`BytesRead`] count it is given, so that the store learns when a sync
/// failed, and a long open can say how far it has read.
type Opener =
    Box<dyn Fn(&Path, bool, SyncFailed, BytesRead) -> Result<Database, DatabaseError> + Send>;

/// Raised, once and for good, when the file system failed to sync the
/// store's file.
type SyncFailed = Arc<AtomicBool>;

/// Bytes of the database read so far (for [`Opening`]'s progress).
type BytesRead = Arc<AtomicU64>;

/// A storage backend that raises a flag when a sync fails (and counts the
/// bytes read, for the progress of a long open).
///
/// After a failed `fsync` the kernel may have dropped the dirty pages and
/// cleared the error, so a retry can report success over lost data
/// (PostgreSQL's "fsyncgate", 2018): the only safe course is to write
/// nothing more until the broker restarts and reads the file as it really
/// is. Write errors before the sync (a full disk) are not that: nothing was
/// committed, and the next commit may try again.
#[derive(Debug)]
struct SyncWatched<B> {
    inner: B,
    failed: SyncFailed,
    read: BytesRead,
}

impl<B: StorageBackend> StorageBackend for SyncWatched<B> {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.read.fetch_add(out.len() as u64, Ordering::Relaxed);
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        let result = self.inner.sync_data();
        if result.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        result
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// The open store. Owned by one thread at a time ([`StoreWriter`]'s, once
/// the broker runs); redb is written by a thread of its own ([`Redb`]).
pub struct Store {
    path: PathBuf,
    /// Raised by the backend when a sync failed: from then on the store
    /// refuses every write (see [`SyncWatched`]).
    sync_failed: SyncFailed,
    commits: Arc<AtomicU64>,
    /// The log every commit is appended to (see `log.rs`).
    log: Log,
    /// What the log's current generation holds: handed to the redb thread
    /// when the log moves on to the next one.
    pending: Vec<StoreOp>,
    /// The last generation handed to the redb thread.
    handed: u64,
    /// When the log last moved on to a new generation.
    checkpointed: Instant,
    options: LogOptions,
    /// The thread that writes redb.
    redb: RedbThread,
    /// Checkpoints put off because the other half of the log was still
    /// being applied, and commits that waited for it (see
    /// [`Store::start_checkpoint`]).
    deferred: u64,
    waited: u64,
    /// The generation whose checkpoint was last put off.
    deferred_in: u64,
    /// The open under way, for the log, until the first [`Store::load`]
    /// ends it.
    opening: Option<Opening>,
    /// Set on the redb thread when a sweep of the history (see
    /// [`Store::commit_staged`]) failed, taken by the writer
    /// ([`Store::take_sweep_failed`]), which then sweeps at the next
    /// commit rather than an hour later.
    sweep_failed: Arc<AtomicBool>,
    /// Set by tests that simulate a crash: no checkpoint when dropped.
    #[cfg(test)]
    crashed: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("commits", &self.commits())
            .field("log", &self.log.path())
            .field("generation", &self.log.generation())
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// What the redb thread tells the writer: the last generation of the log
/// it applied, and why the latest checkpoint failed, if it did.
#[derive(Debug)]
struct Progress {
    applied: u64,
    /// Why the last checkpoint failed, until one succeeds.
    failed: Option<StoreError>,
    /// Checkpoints that failed so far.
    failures: u64,
    /// A [`Job::Retry`] is queued and not yet taken: one is enough.
    retry_queued: bool,
    /// A simulated crash: the thread drops what is left to do.
    aborted: bool,
    /// The redb thread has ended (told to stop, or by a panic): nothing
    /// waited for will come.
    stopped: bool,
    /// Tests hold checkpoints back, to crash while one is under way.
    #[cfg(test)]
    paused: bool,
    /// Threads in [`RedbThread::wait_applied`]'s wait (tests observe it).
    #[cfg(test)]
    waiting: u32,
}

#[derive(Debug)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Shared {
    fn new(applied: u64) -> Shared {
        Shared {
            progress: Mutex::new(Progress {
                applied,
                failed: None,
                failures: 0,
                retry_queued: false,
                aborted: false,
                stopped: false,
                #[cfg(test)]
                paused: false,
                #[cfg(test)]
                waiting: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        // Nothing panics while holding it; a poisoned lock still holds
        // the last progress, which is right.
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, generation: u64, result: &Result<(), StoreError>) {
        let mut progress = self.lock();
        match result {
            Ok(()) => {
                progress.applied = progress.applied.max(generation);
                progress.failed = None;
            }
            Err(e) => {
                progress.failed = Some(e.clone());
                progress.failures += 1;
            }
        }
        drop(progress);
        self.changed.notify_all();
    }

    fn applied(&self) -> u64 {
        self.lock().applied
    }
}

/// redb's page cache. Messages are also held in memory by the queue
/// table, so reads need little; the lease history's writes need more:
/// each second of a flood rewrites one leaf per resource that ended
/// leases (1 024 resources at 500 lines each: ~16 MiB of pages), and
/// with the 16 MiB this was before, redb read those pages back from the
/// file at every commit (`FileBackend::read` in the profile). Measured
/// (`store::tests` history flood, 1 024 resources x 500 lines a second,
/// the redb thread's CPU): 114 ns a line at 16 MiB, 67 at 64 MiB; 256
/// MiB was no faster. The memory is taken only as pages are touched.
const REDB_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Work for the redb thread, done in the order given.
enum Job {
    /// A checkpoint: the operations of a generation of the log, whole.
    Apply {
        generation: u64,
        ops: Vec<StoreOp>,
    },
    /// The checkpoint that failed, once more.
    Retry,
    /// Anything else on redb: history, reads, loading.
    Run(Box<dyn FnOnce(&mut Redb) + Send>),
    Stop,
}

/// The thread that owns redb: every write to it (checkpoints, history)
/// and every read of it once the store is open happen there, in the
/// order they were asked for, so that the writer thread never waits for
/// redb (except for a record larger than half the log, and at a clean
/// stop).
#[derive(Debug)]
struct RedbThread {
    jobs: std::sync::mpsc::Sender<Job>,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RedbThread {
    fn spawn(redb: Redb) -> Result<RedbThread, StoreError> {
        let (jobs, receiver) = std::sync::mpsc::channel();
        let shared = redb.shared.clone();
        let path = redb.path.clone();
        let thread = std::thread::Builder::new()
            .name("turnstile-redb".to_string())
            .spawn(move || serve(redb, receiver))
            .map_err(|e| StoreError::Read {
                path,
                detail: format!("cannot start the store's thread: {e}"),
            })?;
        Ok(RedbThread {
            jobs,
            shared,
            thread: Some(thread),
        })
    }

    fn send(&self, job: Job) {
        // The thread ends only when this handle goes.
        let _ = self.jobs.send(job);
    }

    /// Runs `f` on the redb thread after everything asked before, and
    /// waits for its result.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Redb) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        self.send(Job::Run(Box::new(move |redb| {
            let _ = done.send(f(redb));
        })));
        answer.recv().map_err(|_| StoreError::Closed)
    }

    /// Waits until redb holds `generation` of the log. A checkpoint that
    /// failed is tried once more, and its error is this one's if it fails
    /// again.
    fn wait_applied(&self, generation: u64) -> Result<(), StoreError> {
        let mut progress = self.shared.lock();
        // The failures counted when this wait asked for a retry.
        let mut retried: Option<u64> = None;
        loop {
            if progress.applied >= generation {
                return Ok(());
            }
            if let Some(e) = &progress.failed {
                match retried {
                    Some(failures) if progress.failures > failures => return Err(e.clone()),
                    Some(_) => {}
                    None => {
                        retried = Some(progress.failures);
                        self.send(Job::Retry);
                    }
                }
            }
            // The thread marks itself stopped however it ends ([`Stopped`]),
            // so a wait never outlives it.
            if progress.aborted
                || progress.stopped
                || self.thread.as_ref().is_none_or(|t| t.is_finished())
            {
                return Err(StoreError::Closed);
            }
            #[cfg(test)]
            {
                progress.waiting += 1;
            }
            progress = self
                .shared
                .changed
                .wait(progress)
                .unwrap_or_else(|e| e.into_inner());
            #[cfg(test)]
            {
                progress.waiting -= 1;
            }
        }
    }

    /// Asks the redb thread to try a failed checkpoint again, without
    /// waiting for it: nothing to do if none failed, or if a retry is
    /// already queued.
    fn ask_retry(&self) {
        let mut progress = self.shared.lock();
        if progress.failed.is_some() && !progress.retry_queued && !progress.stopped {
            progress.retry_queued = true;
            drop(progress);
            self.send(Job::Retry);
        }
    }

    /// A crash: what is queued is dropped, nothing more reaches redb.
    #[cfg(test)]
    fn abort(&mut self) {
        self.shared.lock().aborted = true;
        self.shared.changed.notify_all();
    }

    /// Holds checkpoints back (tests).
    #[cfg(test)]
    fn pause(&self, paused: bool) {
        self.shared.lock().paused = paused;
        self.shared.changed.notify_all();
    }
}

impl Drop for RedbThread {
    fn drop(&mut self) {
        self.send(Job::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Marks the redb thread stopped and wakes whoever waits for it, on every
/// way out of [`serve`], a panic included (a panic outside [`guarded`]
/// would otherwise leave [`RedbThread::wait_applied`] waiting forever).
struct Stopped(Arc<Shared>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
        self.0.changed.notify_all();
    }
}

/// The redb thread: each job in turn, until told to stop. A checkpoint
/// that failed is tried again before any other job (a checkpoint
/// includes it), so that redb is reopened as soon as it can be and
/// history reads do not wait for the log to fill.
fn serve(mut redb: Redb, jobs: std::sync::mpsc::Receiver<Job>) {
    let _stopped = Stopped(redb.shared.clone());
    for job in jobs {
        if redb.shared.lock().aborted {
            return;
        }
        match job {
            Job::Apply { generation, ops } => {
                #[cfg(test)]
                if !redb.wait_unpaused() {
                    return;
                }
                let _ = redb.checkpoint(generation, ops, false);
            }
            Job::Retry => {
                redb.shared.lock().retry_queued = false;
                let _ = redb.retry();
            }
            Job::Run(f) => {
                // Its failure is logged and reported by the checkpoint;
                // the job goes on regardless (a read may still succeed).
                let _ = redb.retry();
                f(&mut redb);
            }
            Job::Stop => break,
        }
    }
    if let Some((generation, _)) = &redb.unapplied {
        tracing::warn!(
            "generation {generation} of the store's log could not be applied to its database; \
             it is replayed at the next start"
        );
    }
}

/// redb, as the redb thread holds it.
struct Redb {
    path: PathBuf,
    /// `None` after a failed write: the next use (a write or a read)
    /// reopens the file, since redb refuses every operation after an I/O
    /// error.
    db: Option<Database>,
    opener: Opener,
    sync_failed: SyncFailed,
    buf: Vec<u8>,
    /// Where each resource's history lines stand (see `history.rs`).
    spans: history::Spans,
    /// The generation whose checkpoint failed, with its operations (and
    /// those of any generation handed over since): applied before
    /// anything else is.
    unapplied: Option<(u64, Vec<StoreOp>)>,
    shared: Arc<Shared>,
}

fn open_file(
    path: &Path,
    first: bool,
    sync_failed: SyncFailed,
    read: BytesRead,
) -> Result<Database, DatabaseError> {
    let file = crate::platform::fs::private_file()
        .create(true)
        .truncate(false)
        .open(path)?;
    let backend = SyncWatched {
        inner: FileBackend::new(file)?,
        failed: sync_failed,
        read,
    };
    let mut builder = Database::builder();
    builder.set_cache_size(REDB_CACHE_BYTES);
    // At startup, verify every page's checksum, so that a file damaged
    // outside redb is reported as corrupt instead of being trusted. It
    // reads the whole file: with loading the messages, the bulk of a
    // large store's open (a 2.2 GB file: 1.9 s of 5 warm, 3.9 s of 7.5
    // cold).
    builder.set_check_integrity_on_open(first);
    builder.create_with_backend(backend)
}

/// Runs a redb call that may panic on a damaged file; a panic becomes an
/// error naming the file.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: "the storage library failed while reading it".to_string(),
        })
    })
}

/// Turns a redb error into a [`StoreError`] naming the file.
fn classify(path: &Path, doing: Doing, err: impl Into<redb::Error>) -> StoreError {
    let path = path.to_path_buf();
    let err: redb::Error = err.into();
    match err {
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked { path },
        redb::Error::Corrupted(detail) => StoreError::Corrupt { path, detail },
        redb::Error::RepairAborted => StoreError::Corrupt {
            path,
            detail: "its repair was aborted".to_string(),
        },
        redb::Error::UpgradeRequired(v) => StoreError::Format {
            path,
            detail: format!("redb file format {v}, which this broker's redb cannot read"),
        },
        redb::Error::Io(e) if doing == Doing::Write && is_disk_full(&e) => {
            StoreError::DiskFull { path }
        }
        redb::Error::Io(e)
            if doing != Doing::Write && e.kind() == std::io::ErrorKind::InvalidData =>
        {
            StoreError::Corrupt {
                path,
                detail: e.to_string(),
            }
        }
        redb::Error::TableTypeMismatch { .. } | redb::Error::TableIsMultimap(_) => {
            StoreError::Format {
                path,
                detail: format!("not a turnstile store: {err}"),
            }
        }
        other => match doing {
            Doing::Open | Doing::Read => StoreError::Read {
                path,
                detail: other.to_string(),
            },
            Doing::Write => StoreError::Write {
                path,
                detail: other.to_string(),
            },
        },
    }
}

fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Creates the data directory if missing: only the broker's user may enter
/// it on unix.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
    crate::platform::fs::create_private_dir(dir).map_err(|e| StoreError::CreateDir {
        dir: dir.to_path_buf(),
        detail: e.to_string(),
    })
}

impl Store {
    /// Opens (or creates) `dir/turnstile.redb`, creating `dir` (mode 0700
    /// on unix) if missing. A file that is not a readable store, or that
    /// another process holds, is an error naming it; it is never replaced.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_options(dir, LogOptions::default())
    }

    /// [`Store::open`] with the log's sizes given.
    pub fn open_with_options(dir: &Path, options: LogOptions) -> Result<Store, StoreError> {
        Store::open_with(
            dir,
            Box::new(open_file),
            Box::new(log::open_log_file),
            options,
        )
    }

    fn open_with(
        dir: &Path,
        opener: Opener,
        log_opener: LogOpener,
        options: LogOptions,
    ) -> Result<Store, StoreError> {
        create_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let log_path = dir.join(log::FILE_NAME);
        let sync_failed = SyncFailed::default();
        let opening = Opening::start(&path, &log_path, PROGRESS_EVERY);
        // When it cannot be told whether the file exists, opening it says why.
        if !path.try_exists().unwrap_or(true) {
            opening.phase("creating the database");
            create(dir, &path, &opener)?;
        }
        refuse_empty(&path)?;
        opening.phase("checking and opening the database");
        let read = opening.shared.read.clone();
        let (db, format) = guarded(&path, || {
            let db = opener(&path, true, sync_failed.clone(), read)
                .map_err(|e| classify(&path, Doing::Open, e))?;
            let format = prepare(&path, &db)?;
            Ok((db, format))
        })?;
        let applied = guarded(&path, || read_meta(&path, &db, META_LOG_APPLIED))?;
        let create_log = |what: &str| {
            Log::create(&log_path, options.capacity).map_err(|e| StoreError::Write {
                detail: format!("{what}: {e}"),
                path: log_path.clone(),
            })
        };
        // The log, and what it holds of the generations after `applied`.
        let open_log = |applied: u64, layout: Layout| {
            let file = log_opener(&log_path).map_err(|e| StoreError::Read {
                path: log_path.clone(),
                detail: e.to_string(),
            })?;
            Log::open(&log_path, file, applied, layout)
        };
        if !log_path.try_exists().unwrap_or(true) {
            if applied.is_some() {
                return Err(StoreError::Corrupt {
                    path: log_path,
                    detail: "it is missing, and turnstile.redb has applied a log: what was \
                             stored since its last checkpoint was only in it"
                        .to_string(),
                });
            }
            // A store from before the log, or one just created.
            create_log("cannot create the log")?;
        } else if applied.is_none() && format == FORMAT {
            // A database that never applied a log (a new one, or one from
            // before the log) has nothing in this one: it was left by
            // another store, its database moved aside to start afresh.
            // Its records carry the generations the new store writes next,
            // under the same salt: kept, they came back at a later start.
            tracing::warn!(
                file = %log_path.display(),
                "the log was left by another store ({} has never applied a log): it is made \
                 anew, and what it held is dropped",
                path.display()
            );
            create_log("cannot make anew the log another store left")?;
        }
        let layout = if format == FORMAT_ONE_LOG {
            Layout::Whole
        } else {
            Layout::Halves
        };
        let applied = applied.unwrap_or(0);
        // The log goes on with `applied + 3`: a generation that cannot be
        // written (only a crafted file says so) is a file not to trust.
        if applied.checked_add(3).is_none() {
            return Err(StoreError::Corrupt {
                path,
                detail: format!(
                    "its log generation {applied} is past the last one the log can reach"
                ),
            });
        }
        make_private(&[&path, &log_path]);
        opening.phase("reading the log");
        let (mut log, replay) = open_log(applied, layout)?;
        opening.replayed(replay.len());
        if !replay.is_empty() {
            tracing::info!(
                file = %log_path.display(),
                "{} operations found in the log since the last checkpoint",
                replay.len()
            );
        }
        let mut redb = Redb {
            path: path.clone(),
            db: Some(db),
            opener,
            sync_failed: sync_failed.clone(),
            buf: Vec::new(),
            spans: history::Spans::default(),
            unapplied: None,
            shared: Arc::new(Shared::new(applied)),
        };
        // What the log held is applied to redb (here, before anything is
        // answered), with both generations the log may hold marked as
        // applied (and the file upgraded, for one of format 2), and the
        // log goes on with a generation never written before.
        let last = applied + 2;
        opening.phase("applying the log to the database");
        redb.checkpoint(last, replay, format != FORMAT)?;
        redb.unapplied = None;
        if format != FORMAT {
            tracing::info!(
                file = %path.display(),
                "store upgraded from format {format} to {FORMAT} (the log in two halves): a \
                 broker older than this one can no longer open it"
            );
        }
        log.restart(last + 1);
        // The size compared is the one the log was made at (a log cut
        // short was refused above, never taken for one of another size);
        // a log of an earlier build, whose header does not record it, is
        // made anew whatever its size, so that a later cut is noticed.
        if !log.records_capacity() {
            tracing::info!(
                file = %log_path.display(),
                "the log was made by an earlier build, without its size in its header: it is \
                 made anew (a broker older than this one can no longer open it)"
            );
        }
        if log.capacity() != options.capacity || !log.records_capacity() {
            // redb holds everything the old log had: it is replaced whole
            // (closed first: Windows does not replace an open file).
            log.close();
            opening.phase("making the log anew");
            create_log("cannot make the log anew at its configured size")?;
            log = open_log(last, Layout::Halves)?.0;
            log.restart(last + 1);
        }
        Ok(Store {
            path,
            sync_failed,
            commits: Arc::new(AtomicU64::new(0)),
            log,
            pending: Vec::new(),
            handed: last,
            checkpointed: Instant::now(),
            options,
            redb: RedbThread::spawn(redb)?,
            deferred: 0,
            waited: 0,
            deferred_in: 0,
            sweep_failed: Arc::new(AtomicBool::new(false)),
            opening: Some(opening),
            #[cfg(test)]
            crashed: false,
        })
    }

    /// The log's file.
    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Transactions committed since the store was opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Reads everything: the counters, the sequence high-water mark and
    /// every queue's messages in order. A record that does not decode is
    /// [`StoreError::Corrupt`]. What only the log holds is checkpointed
    /// first. The first load after the open ends the open, for the log
    /// (see [`Opening`]).
    pub fn load(&mut self) -> Result<Loaded, StoreError> {
        if !self.pending.is_empty() {
            self.checkpoint()?;
        } else {
            self.redb.wait_applied(self.handed)?;
        }
        let opening = self.opening.take();
        let shared = opening.as_ref().map(|opening| {
            opening.phase("reading the messages");
            opening.shared.clone()
        });
        let loaded = self.redb.call(move |redb| {
            let counted = shared.as_ref().map(|shared| &shared.messages);
            redb.load(counted)
        })??;
        if let Some(opening) = opening {
            opening.done(&loaded);
        }
        Ok(loaded)
    }

    /// Commits `ops` durably, as one record of the log: when it returns
    /// `Ok`, all of them survive a crash; when it returns `Err`, none was
    /// made.
    ///
    /// Once a sync has failed, this commit's error is
    /// [`StoreError::SyncFailed`] (its outcome is unknown) and every later
    /// one is refused with [`StoreError::Poisoned`] without touching the
    /// file, until the store is opened again.
    pub fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.commit_staged(ops, &mut Vec::new(), None)
    }

    /// [`Store::commit_staged`] with lines not yet staged (the tests').
    #[cfg(test)]
    pub fn commit_with_history(
        &mut self,
        ops: &[StoreOp],
        history: &[HistoryLine],
        bounds: Option<(HistoryBounds, u64, bool)>,
    ) -> Result<(), StoreError> {
        let mut journal = HistoryJournal::default();
        for line in history {
            journal.record_line(line);
        }
        let staged = bounds.map_or_else(StagedHistory::default, |(b, _, _)| {
            StagedHistory::from_journal(&journal, b.max_entries)
        });
        self.commit_staged(ops, &mut vec![staged], bounds)
    }

    /// [`Store::commit`], with history appended (the writer thread's
    /// grouping of several hand-overs, in order) and its resources
    /// bounded; `sweep` (the bounds' third field): also apply the bounds
    /// to every resource.
    ///
    /// `ops` go to the log; history, which is not in the log, is handed to
    /// the redb thread (taken out of `history`) once `ops` are stored, and
    /// committed there in a transaction of its own, after whatever it was
    /// given before; nobody waits for it, and a failure of it is logged.
    /// When `ops` fail, `history` is left as it was.
    pub fn commit_staged(
        &mut self,
        ops: &[StoreOp],
        history: &mut Vec<StagedHistory>,
        bounds: Option<(HistoryBounds, u64, bool)>,
    ) -> Result<(), StoreError> {
        if self.sync_failed.load(Ordering::SeqCst) {
            return Err(self.poisoned());
        }
        // A transaction of redb's only for lines, or for a sweep that is
        // due: the bounds alone are known from the first hand-over on, and
        // taking them for work made every later publish pay a second sync
        // (an empty redb commit) for as long as the broker ran.
        let with_history = history.iter().any(|staged| !staged.is_empty())
            || bounds.is_some_and(|(_, _, sweep)| sweep);
        if !ops.is_empty() {
            self.log_ops(ops)?;
            self.commits.fetch_add(1, Ordering::Relaxed);
            // As every commit did before the redb thread: a failed
            // checkpoint is tried again soon, not when its half is needed.
            self.redb.ask_retry();
        }
        if with_history {
            let staged = std::mem::take(history);
            let sweep = bounds.is_some_and(|(_, _, sweep)| sweep);
            let sweep_failed = self.sweep_failed.clone();
            self.redb.send(Job::Run(Box::new(move |redb| {
                if let Err(e) = redb.commit(&[], &staged, bounds, None, false) {
                    if sweep {
                        sweep_failed.store(true, Ordering::SeqCst);
                    }
                    tracing::warn!(
                        "{} lines of lease history were not stored: {e}",
                        staged.iter().map(StagedHistory::lines).sum::<usize>()
                    );
                }
            })));
        }
        history.clear();
        Ok(())
    }

    /// Whether a sweep of the history failed since the last call: the
    /// writer then asks for one again with its next commit.
    pub fn take_sweep_failed(&self) -> bool {
        self.sweep_failed.swap(false, Ordering::SeqCst)
    }

    fn poisoned(&self) -> StoreError {
        StoreError::Poisoned {
            path: self.path.clone(),
        }
    }

    /// Appends `ops` to the log (moving on to the log's other half first
    /// when this one is full).
    fn log_ops(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        #[cfg(feature = "failpoints")]
        let injected = failpoints::Sites::of(ops);
        let mut switched = false;
        loop {
            let appended = self.log.append(
                ops,
                #[cfg(feature = "failpoints")]
                &injected,
            );
            let log_path = self.log.path().to_path_buf();
            return match appended {
                Ok(()) => {
                    self.pending.extend_from_slice(ops);
                    Ok(())
                }
                Err(AppendError::Full) if !switched => {
                    self.switch(true)?;
                    switched = true;
                    if self.log.fits_empty(ops) {
                        continue;
                    }
                    self.commit_direct(ops)
                }
                Err(AppendError::Full) => self.commit_direct(ops),
                // Nothing was logged: the next commit writes the same place.
                Err(AppendError::Write(e)) if is_disk_full(&e) => {
                    Err(StoreError::DiskFull { path: log_path })
                }
                Err(AppendError::Write(e)) => Err(StoreError::Write {
                    path: log_path,
                    detail: e.to_string(),
                }),
                Err(AppendError::Sync(e)) => {
                    self.sync_failed.store(true, Ordering::SeqCst);
                    tracing::error!(
                        file = %log_path.display(),
                        "a sync of the store's log failed: writes are refused until the broker \
                         restarts ({e})"
                    );
                    Err(StoreError::SyncFailed {
                        path: log_path,
                        detail: e.to_string(),
                    })
                }
            };
        }
    }

    /// A record larger than half the log: straight into redb, after every
    /// generation before it (the redb thread takes its jobs in order, and
    /// applies a failed checkpoint first).
    fn commit_direct(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let ops = ops.to_vec();
        self.redb.call(move |redb| {
            redb.retry()?;
            redb.commit(&ops, &[], None, None, false)
        })?
    }

    /// Whether a checkpoint is due: the log's current generation is past
    /// [`CHECKPOINT_BYTES`], or holds something older than
    /// [`CHECKPOINT_INTERVAL`].
    pub fn checkpoint_due(&self) -> bool {
        self.log.used() >= self.options.checkpoint_bytes
            || (!self.pending.is_empty()
                && self.checkpointed.elapsed() >= self.options.checkpoint_interval)
    }

    /// Starts a checkpoint without waiting for it: the log's current
    /// generation is handed to the redb thread and commits go on in the
    /// other half of the log. When that half's generation is still being
    /// applied, nothing is done: the current one goes on (its half has
    /// room past the checkpoint size) and the checkpoint is due again
    /// after the next commit.
    pub fn start_checkpoint(&mut self) -> Result<(), StoreError> {
        if self.sync_failed.load(Ordering::SeqCst) {
            return Err(self.poisoned());
        }
        self.switch(false)
    }

    /// Hands the current generation to the redb thread and moves the log
    /// on to the next one, in the other half. That half held the
    /// generation before the current one: with `wait`, waits until redb
    /// holds it; without, puts the switch off if it does not yet.
    fn switch(&mut self, wait: bool) -> Result<(), StoreError> {
        let generation = self.log.generation();
        let before = generation - 1;
        if self.redb.shared.applied() < before {
            if !wait {
                // It may be put off because that generation failed.
                self.redb.ask_retry();
                self.deferred += 1;
                // Once per generation: it is due again after every commit.
                if self.deferred_in == generation {
                    return Ok(());
                }
                self.deferred_in = generation;
                tracing::debug!(
                    "store checkpoint deferred ({} commits so far): generation {before} is still \
                     being applied, generation {generation} goes on ({} bytes)",
                    self.deferred,
                    self.log.used()
                );
                return Ok(());
            }
            let waiting = Instant::now();
            self.waited += 1;
            self.redb.wait_applied(before)?;
            tracing::debug!(
                "store checkpoint: the log's half was full; waited {:?} for generation {before} \
                 to be applied ({} waits so far)",
                waiting.elapsed(),
                self.waited
            );
        }
        let ops = std::mem::take(&mut self.pending);
        self.redb.send(Job::Apply { generation, ops });
        self.handed = generation;
        self.log.restart(generation + 1);
        self.checkpointed = Instant::now();
        Ok(())
    }

    /// Brings redb up to date with the log: hands over the current
    /// generation and waits until redb holds it (one durable transaction,
    /// which also records the generation as applied). A crash at any
    /// point leaves either the old redb and the whole log, or the new
    /// redb and a log whose records it already holds.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        if self.sync_failed.load(Ordering::SeqCst) {
            return Err(self.poisoned());
        }
        self.switch(true)?;
        self.redb.wait_applied(self.handed)
    }

    /// Reads the history of one resource (see [`HistoryQuery`]), after
    /// every line handed over before: waits for the redb thread.
    pub fn read_history(&self, q: &HistoryQuery) -> Result<Recorded, StoreError> {
        let q = q.clone();
        self.redb.call(move |redb| redb.read_history(&q))?
    }

    /// [`Store::read_history`] without waiting: the answer is sent on
    /// `done` from the redb thread.
    pub fn read_history_then(
        &self,
        q: HistoryQuery,
        done: tokio::sync::oneshot::Sender<Result<Recorded, StoreError>>,
    ) {
        self.redb.send(Job::Run(Box::new(move |redb| {
            let _ = done.send(redb.read_history(&q));
        })));
    }

    fn commit_counter(&self) -> Arc<AtomicU64> {
        self.commits.clone()
    }

    /// Drops the store as a crash would: without the checkpoint of a
    /// clean stop (the log keeps what redb does not have), and with what
    /// the redb thread had yet to do dropped.
    #[cfg(test)]
    fn crash(mut self) {
        self.crashed = true;
    }
}

impl Drop for Store {
    /// A clean stop: redb is brought up to date, so that the next start
    /// has nothing to replay (the redb thread does what it was given,
    /// this last generation included, before it ends).
    fn drop(&mut self) {
        #[cfg(test)]
        if self.crashed {
            self.redb.abort();
            return;
        }
        if self.pending.is_empty() || self.sync_failed.load(Ordering::SeqCst) {
            return;
        }
        let generation = self.log.generation();
        let ops = std::mem::take(&mut self.pending);
        self.redb.send(Job::Apply { generation, ops });
    }
}

impl Redb {
    /// Opens the file again after a failed write.
    fn db(&mut self) -> Result<&Database, StoreError> {
        if self.db.is_none() {
            let path = &self.path;
            let failed = self.sync_failed.clone();
            let db = guarded(path, || {
                let db = (self.opener)(path, false, failed, BytesRead::default())
                    .map_err(|e| classify(path, Doing::Write, e))?;
                prepare(path, &db)?;
                Ok(db)
            })?;
            self.db = Some(db);
        }
        self.db.as_ref().ok_or(StoreError::Closed)
    }

    /// One durable redb transaction: `ops`, history, the log generation
    /// now applied, and the format (when upgrading).
    fn commit(
        &mut self,
        ops: &[StoreOp],
        history: &[StagedHistory],
        bounds: Option<(HistoryBounds, u64, bool)>,
        applied: Option<u64>,
        upgrade: bool,
    ) -> Result<(), StoreError> {
        if self.sync_failed.load(Ordering::SeqCst) {
            self.db = None;
            return Err(StoreError::Poisoned {
                path: self.path.clone(),
            });
        }
        self.db()?;
        let path = &self.path;
        let Some(db) = self.db.as_ref() else {
            return Err(StoreError::Closed);
        };
        let buf = &mut self.buf;
        let spans = &mut self.spans;
        let result = guarded(path, || {
            write(
                path,
                db,
                Changes {
                    ops,
                    applied,
                    upgrade,
                },
                history,
                bounds,
                buf,
                spans,
            )
        })
        .map_err(|e| match e {
            // A panic while writing is a failed write, not a corrupt file.
            StoreError::Corrupt { path, detail } => StoreError::Write { path, detail },
            other => other,
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                // redb refuses everything after an I/O error until the file
                // is reopened; start afresh on the next commit.
                self.db = None;
                self.spans.clear();
                if self.sync_failed.load(Ordering::SeqCst) {
                    tracing::error!(
                        file = %self.path.display(),
                        "a sync of the store failed: writes are refused until the broker \
                         restarts ({e})"
                    );
                    return Err(StoreError::SyncFailed {
                        path: self.path.clone(),
                        detail: e.to_string(),
                    });
                }
                Err(e)
            }
        }
    }

    /// A checkpoint: applies a generation's operations (after those of a
    /// checkpoint that failed, if any) and records the generation as
    /// applied, in one durable transaction; reports the outcome to the
    /// writer. On failure the operations are kept, for the next try.
    fn checkpoint(
        &mut self,
        generation: u64,
        ops: Vec<StoreOp>,
        upgrade: bool,
    ) -> Result<(), StoreError> {
        let ops = match self.unapplied.take() {
            Some((_, mut earlier)) => {
                earlier.extend(ops);
                earlier
            }
            None => ops,
        };
        tracing::debug!(
            "store checkpoint: applying {} operations of log generation {generation}",
            ops.len()
        );
        #[cfg(feature = "failpoints")]
        fail::fail_point!("store-checkpoint-apply");
        let net = net_effect(&ops);
        let result = self.commit(&net, &[], None, Some(generation), upgrade);
        match &result {
            Ok(()) => {
                tracing::debug!("store checkpoint: generation {generation} is in redb");
                #[cfg(feature = "failpoints")]
                fail::fail_point!("store-checkpoint-done");
            }
            Err(e) => {
                tracing::warn!("the store's log could not be checkpointed: {e}");
                self.unapplied = Some((generation, ops));
            }
        }
        self.shared.report(generation, &result);
        result
    }

    /// The checkpoint that failed, once more; `Ok` if there is none.
    fn retry(&mut self) -> Result<(), StoreError> {
        match self.unapplied.take() {
            Some((generation, ops)) => self.checkpoint(generation, ops, false),
            None => Ok(()),
        }
    }

    /// Waits while tests hold checkpoints back; false after a crash.
    #[cfg(test)]
    fn wait_unpaused(&self) -> bool {
        let mut progress = self.shared.lock();
        while progress.paused && !progress.aborted {
            progress = self
                .shared
                .changed
                .wait(progress)
                .unwrap_or_else(|e| e.into_inner());
        }
        !progress.aborted
    }

    fn load(&mut self, counted: Option<&AtomicU64>) -> Result<Loaded, StoreError> {
        self.db()?;
        let path = &self.path;
        let db = self.db.as_ref().ok_or(StoreError::Closed)?;
        guarded(path, || load(path, db, counted))
    }

    fn read_history(&mut self, q: &HistoryQuery) -> Result<Recorded, StoreError> {
        self.db()?;
        let path = &self.path;
        let db = self.db.as_ref().ok_or(StoreError::Closed)?;
        let fail = |e: redb::Error| classify(path, Doing::Read, e);
        guarded(path, || {
            let txn = db.begin_read().map_err(|e| fail(e.into()))?;
            let table = match txn.open_table(history::HISTORY) {
                Ok(t) => t,
                // Made by the first write that records a line.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Recorded::default()),
                Err(e) => return Err(fail(e.into())),
            };
            history::read(&table, q).map_err(fail)
        })
    }
}

/// How often a long open of the store says how far it has got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// An open of the store, for the log. Opening a large store takes seconds
/// (redb's integrity check reads every page, and loading reads every
/// message again: 5 s for 1.1 GB of messages here, 24 s on a slower
/// disk), and an operator must be able to tell a busy broker from a hung
/// one. Its start is logged, naming the files and their sizes; then, every
/// [`PROGRESS_EVERY`] while it lasts, what it is doing and how far it has
/// read, from a thread of its own (a phase is one long call into redb);
/// and its end, with the time each phase took. The first [`Store::load`]
/// ends it; dropped before (an open that failed, whose error is logged by
/// whoever opened), it only stops its thread.
struct Opening {
    shared: Arc<OpeningShared>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

struct OpeningShared {
    path: PathBuf,
    /// The database's size when the open began.
    size: u64,
    started: Instant,
    /// Bytes of the database read (see [`SyncWatched`]).
    read: BytesRead,
    /// Messages read so far by [`load`].
    messages: AtomicU64,
    state: Mutex<OpeningState>,
    changed: Condvar,
}

struct OpeningState {
    /// What the open is doing ("" before the first phase).
    phase: &'static str,
    /// When the phase began, and [`OpeningShared::read`] then.
    since: Instant,
    read_before: u64,
    /// The phases done, with how long each took.
    done: Vec<(&'static str, Duration)>,
    /// Operations found in the log.
    replayed: usize,
    ended: bool,
}

impl Opening {
    /// Logs the start of an open of the database at `path` and its log at
    /// `log_path`, and starts telling its progress every `every`.
    fn start(path: &Path, log_path: &Path, every: Duration) -> Opening {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let log_size = std::fs::metadata(log_path).map_or(0, |m| m.len());
        tracing::info!(
            file = %path.display(),
            bytes = size,
            log_bytes = log_size,
            "opening the store: {} of database, {} of log",
            mib(size),
            mib(log_size)
        );
        let now = Instant::now();
        let shared = Arc::new(OpeningShared {
            path: path.to_path_buf(),
            size,
            started: now,
            read: BytesRead::default(),
            messages: AtomicU64::new(0),
            state: Mutex::new(OpeningState {
                phase: "",
                since: now,
                read_before: 0,
                done: Vec::new(),
                replayed: 0,
                ended: false,
            }),
            changed: Condvar::new(),
        });
        // The thread logs where the open's caller does (a test's
        // subscriber included).
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let ticking = shared.clone();
        let ticker = std::thread::Builder::new()
            .name("turnstile-opening".to_string())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || ticking.tick(every));
            })
            // Without it the open goes on, only without progress.
            .ok();
        Opening { shared, ticker }
    }

    /// Ends the current phase and begins `phase`.
    fn phase(&self, phase: &'static str) {
        let mut state = self.shared.lock();
        let now = Instant::now();
        let previous = std::mem::replace(&mut state.phase, phase);
        if !previous.is_empty() {
            let took = now.duration_since(state.since);
            state.done.push((previous, took));
        }
        state.since = now;
        state.read_before = self.shared.read.load(Ordering::Relaxed);
        drop(state);
        tracing::debug!("store open: {phase}");
    }

    /// `operations` were found in the log, to apply.
    fn replayed(&self, operations: usize) {
        self.shared.lock().replayed = operations;
    }

    /// Logs the end of the open: how long it took in all and per phase,
    /// and what it found.
    fn done(self, loaded: &Loaded) {
        let mut state = self.shared.lock();
        let last = std::mem::take(&mut state.phase);
        let took = state.since.elapsed();
        state.done.push((last, took));
        let phases: Vec<String> = state
            .done
            .iter()
            .map(|(phase, took)| format!("{phase} {took:.1?}"))
            .collect();
        let messages: usize = loaded.queues.iter().map(|(_, list)| list.len()).sum();
        tracing::info!(
            file = %self.shared.path.display(),
            queues = loaded.queues.len(),
            messages,
            "store opened in {:.1?} ({}; {} operations of the log applied)",
            self.shared.started.elapsed(),
            phases.join(", "),
            state.replayed
        );
    }
}

impl OpeningShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpeningState> {
        // Nothing panics while holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs the progress every `every` until the open ends.
    fn tick(&self, every: Duration) {
        let mut state = self.lock();
        let mut next = Instant::now() + every;
        while !state.ended {
            let now = Instant::now();
            if now >= next {
                let read = self.read.load(Ordering::Relaxed) - state.read_before;
                tracing::info!(
                    file = %self.path.display(),
                    "still opening the store after {:.0?}: {} for {:.0?}, {} of the database \
                     ({} in all) read in it; {} messages read so far",
                    self.started.elapsed(),
                    state.phase,
                    now.duration_since(state.since),
                    mib(read),
                    mib(self.size),
                    self.messages.load(Ordering::Relaxed)
                );
                next = now + every;
            }
            let wait = next.saturating_duration_since(now);
            state = self
                .changed
                .wait_timeout(state, wait)
                .map_or_else(|e| e.into_inner().0, |(state, _)| state);
        }
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.shared.lock().ended = true;
        self.shared.changed.notify_all();
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// Bytes as MiB, for the log.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Creates a new, empty store at `path` without ever leaving a partial file
/// there: it is built beside it under a name of this process's own, made
/// durable, and linked into place only when complete (a link never replaces
/// a store another broker put there meanwhile). A broker killed during its
/// very first start thus leaves no store or a whole, empty one, never a
/// half-written file that every later start would refuse as corrupt.
fn create(dir: &Path, path: &Path, opener: &Opener) -> Result<(), StoreError> {
    let building = dir.join(format!("{FILE_NAME}.new-{}", std::process::id()));
    // Left by a killed broker that had this pid: no live process owns it.
    let _ = std::fs::remove_file(&building);
    let built = guarded(path, || {
        let db = opener(&building, true, SyncFailed::default(), BytesRead::default())
            .map_err(|e| classify(path, Doing::Open, e))?;
        prepare(path, &db).map(drop)
    });
    let placed = built.and_then(|()| {
        match std::fs::hard_link(&building, path) {
            Ok(()) => {}
            // Another broker created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // A file system without hard links: a rename, which replaces.
            Err(_) => std::fs::rename(&building, path).map_err(|e| StoreError::Write {
                path: path.to_path_buf(),
                detail: format!("cannot move the new store into place: {e}"),
            })?,
        }
        sync_dir(dir);
        Ok(())
    });
    let _ = std::fs::remove_file(&building);
    placed
}

/// Makes the store's files the broker's user's alone, as a new store's
/// are (mode 0600): those of an older build were made 0644, so any user
/// who could enter the data directory could read every stored message.
/// Said in the log when it changes anything; a file it cannot change is
/// warned about, not refused (the directory may still keep others out).
fn make_private(files: &[&Path]) {
    for file in files {
        match crate::platform::fs::make_private(file) {
            Ok(None) => {}
            Ok(Some(mode)) => tracing::warn!(
                file = %file.display(),
                "other users could read this store file (mode {mode:04o}): it is made the \
                 broker's user's alone (mode {:04o})",
                mode & 0o700
            ),
            Err(e) => tracing::warn!(
                file = %file.display(),
                "other users may read this store file, and its mode cannot be changed ({e}): \
                 chmod 600 it"
            ),
        }
    }
}

/// Refuses a file of zero bytes: redb would take it for a new database and
/// start afresh, losing every stored message and letting fencing tokens and
/// revisions go back. A new store never has zero bytes (it is built aside
/// and linked into place whole, see [`create`]), so an empty file is one
/// that was emptied: corrupt, like any other truncation.
fn refuse_empty(path: &Path) -> Result<(), StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() == 0 => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: "it is empty (0 bytes), so it was truncated: a store is never created empty"
                .to_string(),
        }),
        // Any other problem is reported by opening it.
        _ => Ok(()),
    }
}

/// Creates the tables of a new store and checks the format of an old one:
/// the format it was found in. Format 1 (no log yet) becomes the current
/// one at once; format 2 stays until the checkpoint at open has applied
/// its log (read the old way).
fn prepare(path: &Path, db: &Database) -> Result<u64, StoreError> {
    let fail = |e: redb::Error| classify(path, Doing::Open, e);
    let txn = db.begin_write().map_err(|e| fail(e.into()))?;
    let found = {
        let mut meta = txn.open_table(META).map_err(|e| fail(e.into()))?;
        let format = meta
            .get(META_FORMAT)
            .map_err(|e| fail(e.into()))?
            .map(|v| v.value());
        let found = match format {
            Some(FORMAT | FORMAT_ONE_LOG) => format,
            // Its log is created when it is opened.
            Some(FORMAT_WITHOUT_LOG) | None => {
                meta.insert(META_FORMAT, FORMAT)
                    .map_err(|e| fail(e.into()))?;
                Some(FORMAT)
            }
            Some(other) => {
                return Err(StoreError::Format {
                    path: path.to_path_buf(),
                    detail: format!(
                        "store format {other}, this broker reads formats 1 to {FORMAT}"
                    ),
                });
            }
        };
        txn.open_table(MESSAGES).map_err(|e| fail(e.into()))?;
        // The first history layout, from builds that never shipped.
        txn.delete_table(history::OLD_HISTORY)
            .map_err(|e| fail(e.into()))?;
        found
    };
    txn.commit().map_err(|e| fail(e.into()))?;
    Ok(found.unwrap_or(FORMAT))
}

/// One value of the meta table, if set.
fn read_meta(path: &Path, db: &Database, key: &str) -> Result<Option<u64>, StoreError> {
    let fail = |e: redb::Error| classify(path, Doing::Read, e);
    let txn = db.begin_read().map_err(|e| fail(e.into()))?;
    let meta = txn.open_table(META).map_err(|e| fail(e.into()))?;
    Ok(meta
        .get(key)
        .map_err(|e| fail(e.into()))?
        .map(|v| v.value()))
}

/// Reads everything (see [`Store::load`]), counting the messages read in
/// `counted`, if given, for the progress of a long open.
fn load(path: &Path, db: &Database, counted: Option<&AtomicU64>) -> Result<Loaded, StoreError> {
    let fail = |e: redb::Error| classify(path, Doing::Read, e);
    let txn = db.begin_read().map_err(|e| fail(e.into()))?;
    let meta = txn.open_table(META).map_err(|e| fail(e.into()))?;
    let read_meta = |key: &str| -> Result<u64, StoreError> {
        Ok(meta
            .get(key)
            .map_err(|e| fail(e.into()))?
            .map_or(0, |v| v.value()))
    };
    let mut loaded = Loaded {
        counters: Counters {
            reserved_until: read_meta(META_RESERVED_UNTIL)?,
        },
        last_seq: read_meta(META_LAST_SEQ)?,
        queues: Vec::new(),
    };
    let messages = txn.open_table(MESSAGES).map_err(|e| fail(e.into()))?;
    for entry in messages.iter().map_err(|e| fail(e.into()))? {
        let (key, value) = entry.map_err(|e| fail(e.into()))?;
        let (queue, seq) = key.value();
        let message =
            Record::decode_message(seq, value.value()).map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("message {seq} of queue {queue:?} does not decode: {e}"),
            })?;
        loaded.last_seq = loaded.last_seq.max(seq);
        if let Some(counted) = counted {
            counted.fetch_add(1, Ordering::Relaxed);
        }
        match loaded.queues.last_mut() {
            Some((name, list)) if name == queue => list.push(message),
            _ => loaded.queues.push((queue.to_string(), vec![message])),
        }
    }
    Ok(loaded)
}

/// What one redb transaction applies besides history: operations, the
/// log generation they complete (at a checkpoint), and whether the file
/// becomes [`FORMAT`] (the checkpoint at open of a format 2 file).
#[derive(Clone, Copy)]
struct Changes<'a> {
    ops: &'a [StoreOp],
    applied: Option<u64>,
    upgrade: bool,
}

fn write(
    path: &Path,
    db: &Database,
    Changes {
        ops,
        applied,
        upgrade,
    }: Changes<'_>,
    history: &[StagedHistory],
    bounds: Option<(HistoryBounds, u64, bool)>,
    buf: &mut Vec<u8>,
    spans: &mut history::Spans,
) -> Result<(), StoreError> {
    let fail = |e: redb::Error| classify(path, Doing::Write, e);
    // Durability is redb's default, Immediate: commit() returns after fsync.
    let txn = db.begin_write().map_err(|e| fail(e.into()))?;
    if let Some((bounds, now_ms, sweep)) = bounds {
        let mut table = txn
            .open_table(history::HISTORY)
            .map_err(|e| fail(e.into()))?;
        for staged in history {
            history::append(&mut table, staged, bounds, now_ms, buf, spans).map_err(fail)?;
        }
        if sweep {
            history::sweep(&mut table, bounds, now_ms, spans).map_err(fail)?;
        }
    }
    // A transaction of history alone leaves the other tables unopened:
    // opening one for writing costs as much as the rest of the commit
    // (callgrind).
    if !ops.is_empty() || applied.is_some() || upgrade {
        let mut messages = txn.open_table(MESSAGES).map_err(|e| fail(e.into()))?;
        let mut meta = txn.open_table(META).map_err(|e| fail(e.into()))?;
        let mut last_seq = None;
        let mut reserve = None;
        for op in ops {
            match op {
                StoreOp::Append { queue, message } => {
                    Record::encode_message(message, buf);
                    messages
                        .insert((&**queue, message.seq), buf.as_slice())
                        .map_err(|e| fail(e.into()))?;
                    last_seq = last_seq.max(Some(message.seq));
                }
                StoreOp::Remove { queue, seq } => {
                    messages
                        .remove((&**queue, *seq))
                        .map_err(|e| fail(e.into()))?;
                }
                StoreOp::SetAttempt {
                    queue,
                    seq,
                    attempt,
                } => {
                    let updated =
                        match messages.get((&**queue, *seq)).map_err(|e| fail(e.into()))? {
                            // A record that does not decode is left as it is:
                            // loading reports it, and it must not fail the
                            // publishes sharing this transaction.
                            Some(old) => Record::with_attempt(old.value(), *attempt).ok(),
                            None => None,
                        };
                    if let Some(bytes) = updated {
                        messages
                            .insert((&**queue, *seq), bytes.as_slice())
                            .map_err(|e| fail(e.into()))?;
                    }
                }
                StoreOp::ReserveCounters { reserve_until } => {
                    reserve = reserve.max(Some(*reserve_until));
                }
            }
        }
        raise(&mut meta, META_LAST_SEQ, last_seq).map_err(fail)?;
        raise(&mut meta, META_RESERVED_UNTIL, reserve).map_err(fail)?;
        raise(&mut meta, META_LOG_APPLIED, applied).map_err(fail)?;
        if upgrade {
            meta.insert(META_FORMAT, FORMAT)
                .map_err(|e| fail(e.into()))?;
        }
    }
    txn.commit().map_err(|e| fail(e.into()))
}

/// Operations with the same effect as `ops` applied in order, fewer:
/// only the last write of each message is kept (an attempt folded into
/// the append it follows, a removal replacing what came before it), and
/// one counter reservation, the highest. Operations on different messages
/// are independent and the high-water marks only rise, so order across
/// messages does not matter. A removal is kept even after an append in
/// the same window: it costs little and never depends on the append
/// having been the first write of its message.
fn net_effect(ops: &[StoreOp]) -> Vec<StoreOp> {
    let mut out: Vec<Option<StoreOp>> = Vec::with_capacity(ops.len());
    let mut last: crate::core::Map<(&str, u64), usize> = crate::core::Map::default();
    let mut reserve = None;
    for op in ops {
        match op {
            StoreOp::Append { queue, message } => {
                let key = (&**queue, message.seq);
                if let Some(i) = last.insert(key, out.len()) {
                    out[i] = None;
                }
                out.push(Some(op.clone()));
            }
            StoreOp::Remove { queue, seq } => {
                if let Some(i) = last.insert((&**queue, *seq), out.len()) {
                    out[i] = None;
                }
                out.push(Some(op.clone()));
            }
            StoreOp::SetAttempt {
                queue,
                seq,
                attempt,
            } => match last.get(&(&**queue, *seq)).and_then(|&i| out[i].as_mut()) {
                Some(StoreOp::Append { message, .. }) => message.attempt = *attempt,
                Some(StoreOp::SetAttempt { attempt: a, .. }) => *a = *attempt,
                // Removed: nothing to set, in redb either.
                Some(_) => {}
                None => {
                    last.insert((&**queue, *seq), out.len());
                    out.push(Some(op.clone()));
                }
            },
            StoreOp::ReserveCounters { reserve_until } => {
                reserve = reserve.max(Some(*reserve_until));
            }
        }
    }
    let mut net: Vec<StoreOp> = out.into_iter().flatten().collect();
    if let Some(reserve_until) = reserve {
        net.push(StoreOp::ReserveCounters { reserve_until });
    }
    net
}

/// Sets a high-water mark to `value` unless it is already higher.
fn raise(
    meta: &mut redb::Table<&str, u64>,
    key: &str,
    value: Option<u64>,
) -> Result<(), redb::Error> {
    let Some(value) = value else {
        return Ok(());
    };
    let current = meta.get(key)?.map_or(0, |v| v.value());
    if value > current {
        meta.insert(key, value)?;
    }
    Ok(())
}

/// Failpoints in the real binary (feature `failpoints`), set with the
/// `FAILPOINTS` environment variable of `turnstiled` in the `fail` crate's
/// syntax (`NAME=ACTION;...`; `sleep(MS)` stalls, `return` fails):
///
/// - `store-reservation-write`: a commit carrying a counter reservation
///   fails before anything is written (as on EIO or a full disk);
/// - `store-reservation-fsync`: its sync stalls or fails after the write
///   (a failure poisons the store, as a real one does);
/// - `store-publish-commit`: the same for a commit carrying a publish;
/// - `store-checkpoint-apply`: a checkpoint stalls (`sleep`) before its
///   redb transaction; `store-checkpoint-done`: after it, before the
///   writer learns that redb holds the generation (for killing the broker
///   mid-checkpoint). Both on the redb thread, while commits go on in the
///   log's other half; the first checkpoint, at open, passes them on the
///   opening thread.
///
/// The reservation and publish sites are on the log's write and sync.
#[cfg(feature = "failpoints")]
mod failpoints {
    use crate::core::queues::StoreOp;

    /// Which failpoints a commit passes.
    pub(super) struct Sites {
        reserving: bool,
        publishing: bool,
    }

    impl Sites {
        pub(super) fn of(ops: &[StoreOp]) -> Sites {
            Sites {
                reserving: ops
                    .iter()
                    .any(|op| matches!(op, StoreOp::ReserveCounters { .. })),
                publishing: ops.iter().any(|op| matches!(op, StoreOp::Append { .. })),
            }
        }

        /// An error for the log's write, before it is made.
        pub(super) fn before_write(&self) -> Option<std::io::Error> {
            if self.reserving {
                fail::fail_point!("store-reservation-write", |_| Some(std::io::Error::other(
                    "injected write failure (failpoint store-reservation-write)"
                )));
            }
            None
        }

        /// An error for the log's sync, after the write (a stall with
        /// `sleep`).
        pub(super) fn before_sync(&self) -> Option<std::io::Error> {
            let failed = |name: &str| {
                std::io::Error::other(format!("injected sync failure (failpoint {name})"))
            };
            if self.reserving {
                fail::fail_point!("store-reservation-fsync", |_| Some(failed(
                    "store-reservation-fsync"
                )));
            }
            if self.publishing {
                fail::fail_point!("store-publish-commit", |_| Some(failed(
                    "store-publish-commit"
                )));
            }
            None
        }
    }
}
