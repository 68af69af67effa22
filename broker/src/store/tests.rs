//! Tests of the store and its group-commit writer, on real files in
//! temporary directories.

use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use bytes::Bytes;
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend, StorageError};

use super::*;

fn message(seq: u64, body: &str) -> Message {
    Message {
        seq,
        payload: Bytes::copy_from_slice(body.as_bytes()),
        headers: Vec::new(),
        attempt: 0,
        publisher: None,
    }
}

fn append(queue: &str, message: Message) -> StoreOp {
    StoreOp::Append {
        queue: Arc::from(queue),
        message,
    }
}

/// The messages of `queue` as (seq, body, attempt).
fn contents(loaded: &Loaded, queue: &str) -> Vec<(u64, String, u32)> {
    loaded
        .queues
        .iter()
        .find(|(name, _)| name == queue)
        .map(|(_, list)| {
            list.iter()
                .map(|m| {
                    (
                        m.seq,
                        String::from_utf8_lossy(&m.payload).into_owned(),
                        m.attempt,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[track_caller]
fn assert_names_file(err: &StoreError, path: &Path) {
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "{text:?} does not name {}",
        path.display()
    );
}

#[test]
fn messages_and_counters_round_trip() {
    // What is committed is loaded back, queues by name, messages by seq.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), Loaded::default());
    let with_headers = Message {
        seq: 2,
        payload: Bytes::from_static(b"\x00\xffbinary"),
        headers: vec![("k".into(), "v".into()), ("a".into(), "é".into())],
        attempt: 3,
        publisher: None,
    };
    store
        .commit(&[
            append("jobs", message(3, "third")),
            append("jobs", message(1, "first")),
            append("alerts", with_headers.clone()),
            StoreOp::ReserveCounters { reserve_until: 42 },
        ])
        .unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.counters, Counters { reserved_until: 42 });
    assert_eq!(loaded.last_seq, 3);
    let names: Vec<&str> = loaded.queues.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["alerts", "jobs"]);
    assert_eq!(loaded.queues[0].1, [with_headers]);
    assert_eq!(
        contents(&loaded, "jobs"),
        [(1, "first".into(), 0), (3, "third".into(), 0)]
    );
    assert_eq!(store.commits(), 1);
}

#[test]
fn a_reopened_store_keeps_messages_and_high_water_marks() {
    // Dropping and reopening loses nothing; the high-water marks never go
    // down, even when every message is gone.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        store
            .commit(&[
                append("q", message(7, "m7")),
                append("q", message(9, "m9")),
                StoreOp::ReserveCounters {
                    reserve_until: 1 << 20,
                },
            ])
            .unwrap();
        // Lower reservations are ignored.
        store
            .commit(&[StoreOp::ReserveCounters { reserve_until: 5 }])
            .unwrap();
    }
    let mut store = Store::open(dir.path()).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.counters.reserved_until, 1 << 20);
    assert_eq!(
        contents(&loaded, "q"),
        [(7, "m7".into(), 0), (9, "m9".into(), 0)]
    );
    store
        .commit(&[
            StoreOp::Remove {
                queue: Arc::from("q"),
                seq: 7,
            },
            StoreOp::Remove {
                queue: Arc::from("q"),
                seq: 9,
            },
        ])
        .unwrap();
    drop(store);
    let loaded = Store::open(dir.path()).unwrap().load().unwrap();
    assert!(loaded.queues.is_empty());
    assert_eq!(loaded.last_seq, 9, "the sequence high-water mark survives");
    assert_eq!(loaded.counters.reserved_until, 1 << 20);
}

#[test]
fn remove_and_set_attempt() {
    // SetAttempt rewrites only the attempt; on a removed message it does
    // nothing (it must not bring it back); removing twice is harmless.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .commit(&[append("q", message(1, "a")), append("q", message(2, "b"))])
        .unwrap();
    let q = || Arc::<str>::from("q");
    store
        .commit(&[
            StoreOp::SetAttempt {
                queue: q(),
                seq: 2,
                attempt: 4,
            },
            StoreOp::Remove { queue: q(), seq: 1 },
        ])
        .unwrap();
    store
        .commit(&[
            StoreOp::SetAttempt {
                queue: q(),
                seq: 1,
                attempt: 9,
            },
            StoreOp::Remove { queue: q(), seq: 1 },
            StoreOp::SetAttempt {
                queue: Arc::from("nowhere"),
                seq: 2,
                attempt: 1,
            },
        ])
        .unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(contents(&loaded, "q"), [(2, "b".into(), 4)]);
    assert_eq!(loaded.queues.len(), 1);
}

#[test]
fn a_dead_letter_move_is_one_transaction() {
    // Remove from the queue and append to its dead-letter queue commit together.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[append("q", message(1, "poison"))]).unwrap();
    store
        .commit(&[
            StoreOp::Remove {
                queue: Arc::from("q"),
                seq: 1,
            },
            append("q.dead", message(2, "poison")),
        ])
        .unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(contents(&loaded, "q"), []);
    assert_eq!(contents(&loaded, "q.dead"), [(2, "poison".into(), 0)]);
}

#[test]
fn the_data_directory_is_created_private() {
    // A missing data directory is created, readable by its owner only
    // (where the platform has mode bits: Unix).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a/b");
    let store = Store::open(&data).unwrap();
    assert_eq!(store.path(), data.join(FILE_NAME));
    if let Some(mode) = crate::platform::fs::mode_bits(&data) {
        assert_eq!(mode, 0o700);
    }
}

#[test]
fn the_stores_files_are_readable_by_the_brokers_user_only() {
    // A new store's files are mode 0600 whatever the umask leaves (it
    // holds every stored message); those of an older build, made 0644,
    // are made so when the store opens (where the platform has mode bits).
    let dir = tempfile::tempdir().unwrap();
    // Made so, not changed after: a user who opened a file while it was
    // readable would keep reading it.
    let made = dir.path().join("made");
    drop(
        crate::platform::fs::private_file()
            .create_new(true)
            .open(&made)
            .unwrap(),
    );
    if let Some(mode) = crate::platform::fs::mode_bits(&made) {
        assert_eq!(mode, 0o600);
    }
    std::fs::remove_file(&made).unwrap();
    let files = [dir.path().join(FILE_NAME), dir.path().join(log::FILE_NAME)];
    drop(Store::open(dir.path()).unwrap());
    for file in &files {
        if let Some(mode) = crate::platform::fs::mode_bits(file) {
            assert_eq!(mode, 0o600, "{}", file.display());
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for (file, mode) in files.iter().zip([0o644, 0o666]) {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        drop(Store::open(dir.path()).unwrap());
        for file in &files {
            assert_eq!(crate::platform::fs::mode_bits(file), Some(0o600));
        }
    }
}

#[test]
fn a_new_store_appears_whole_or_not_at_all() {
    // A store is built under a name of its own and linked into place when
    // complete: a partial one left by a broker killed while creating it is
    // not the store, and is replaced; nothing else is left behind.
    let dir = tempfile::tempdir().unwrap();
    let leftover = dir
        .path()
        .join(format!("{FILE_NAME}.new-{}", std::process::id()));
    std::fs::write(&leftover, b"half a header").unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[append("q", message(1, "m"))]).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut expected = [FILE_NAME, log::FILE_NAME];
    let mut names = names;
    names.sort();
    expected.sort();
    assert_eq!(names, expected);
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(contents(&store.load().unwrap(), "q").len(), 1);
}

#[test]
fn a_data_directory_that_cannot_be_created_is_an_error() {
    // A file where the directory should be: an error naming it.
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = Store::open(&blocker.join("data")).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("file"), "{err}");
}

#[test]
fn a_file_of_garbage_is_refused_and_kept() {
    // Random bytes: a clear error naming the file, no panic, and the file
    // is left as it was (never a silent fresh start).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut garbage = vec![0u8; 64 * 1024];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in garbage.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&path, &garbage).unwrap();
    assert_refused_as_corrupt(dir.path(), &path, "move both aside");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn a_corrupt_log_is_never_said_to_be_movable_aside_alone() {
    // The database's advice ("move it aside to start with empty queues")
    // is wrong for the log: a missing log is refused once redb has
    // applied one. Whatever is wrong with the log (missing, its header
    // damaged, cut short, a record damaged), the advice is to restore it
    // with the database of the same moment or move both aside, and never
    // contradicts what the message said before it (a cut log can be
    // extended back).
    let path_of = |dir: &Path| dir.join(log::FILE_NAME);
    type Damage = fn(&Path, &[u64]);
    let damages: [(&str, Damage); 4] = [
        ("missing", |dir, _| {
            std::fs::remove_file(dir.join(log::FILE_NAME)).unwrap()
        }),
        ("does not check", |dir, _| {
            let path = dir.join(log::FILE_NAME);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[14] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
        }),
        ("truncate -s", |dir, _| {
            cut_log(dir, |n| n / 2);
        }),
        ("damaged", |dir, starts| {
            let path = dir.join(log::FILE_NAME);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[starts[1] as usize + 6] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
        }),
    ];
    for (says, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        let starts = three_records_then_crash(dir.path());
        damage(dir.path(), &starts);
        assert_refused_as_corrupt(dir.path(), &path_of(dir.path()), says);
        let err = Store::open(dir.path()).unwrap_err().to_string();
        assert!(!err.contains("move it aside"), "{err}");
        assert!(err.contains("the log cannot be moved aside alone"), "{err}");
        assert!(
            err.contains("restore both") && err.contains("move both aside"),
            "{err}"
        );
    }
}

#[test]
fn a_truncated_file_is_refused() {
    // The real file cut in half: a clear error, no panic.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        for chunk in 0..20u64 {
            let ops: Vec<StoreOp> = (0..50)
                .map(|i| append("q", message(chunk * 50 + i + 1, &"payload ".repeat(40))))
                .collect();
            store.commit(&ops).unwrap();
        }
    }
    let path = dir.path().join(FILE_NAME);
    let len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let result = Store::open(dir.path()).and_then(|mut store| store.load());
    let err = result.expect_err("a truncated store must not load");
    assert!(
        matches!(err, StoreError::Corrupt { .. } | StoreError::Read { .. }),
        "{err:?}"
    );
    assert_names_file(&err, &path);
}

#[test]
fn a_file_damaged_in_the_middle_is_refused() {
    // Pages overwritten with garbage, wherever they are: a clear error
    // naming the file, never a panic and never a silent fresh start.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        for chunk in 0..20u64 {
            let ops: Vec<StoreOp> = (0..50)
                .map(|i| append("q", message(chunk * 50 + i + 1, &"payload ".repeat(40))))
                .collect();
            store.commit(&ops).unwrap();
        }
    }
    let path = dir.path().join(FILE_NAME);
    let pristine = std::fs::read(&path).unwrap();
    let mut refused = 0;
    for offset in (4096..pristine.len()).step_by(pristine.len() / 16) {
        let mut damaged = pristine.clone();
        let end = (offset + 4096).min(damaged.len());
        for (i, b) in damaged[offset..end].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(7);
        }
        std::fs::write(&path, &damaged).unwrap();
        match Store::open(dir.path()).and_then(|mut store| store.load()) {
            Err(err) => {
                assert_names_file(&err, &path);
                refused += 1;
            }
            // A page no longer in use may be overwritten harmlessly.
            Ok(loaded) => assert_eq!(
                contents(&loaded, "q").len(),
                1000,
                "damage at {offset} lost data silently"
            ),
        }
    }
    assert!(refused > 0, "no damage was noticed");
}

#[test]
fn a_record_that_does_not_decode_is_corrupt() {
    // A value that is not a record: Corrupt, naming the file and the message.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    with_db(&store, |db| {
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(MESSAGES).unwrap();
            // Field 2 (payload) claims 100 bytes and has 1.
            table.insert(("q", 5), [0x12u8, 100, 1].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    });
    let err = store.load().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_names_file(&err, store.path());
    assert!(
        err.to_string().contains("message 5 of queue \"q\""),
        "{err}"
    );
}

#[test]
fn a_store_of_another_format_is_refused() {
    // A future format number: refused with a message, not misread.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    write_meta(&Database::create(&path).unwrap(), &[(META_FORMAT, 99)]);
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Format { .. }), "{err:?}");
    assert_names_file(&err, &path);
}

#[test]
fn a_store_in_use_is_refused() {
    // The file is locked while open: a second open says so.
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert_names_file(&err, &dir.path().join(FILE_NAME));
}

/// Faults a [`FaultyDisk`] injects, switched on and off by the test, and
/// the syncs it and the log saw.
#[derive(Debug, Default)]
struct Faults {
    /// Syncs of the redb file that reached the disk.
    redb_syncs: AtomicU64,
    /// Syncs of the log that reached the disk.
    log_syncs: AtomicU64,
    /// Writes, resizes and syncs fail with "disk full".
    full: AtomicBool,
    /// Syncs fail with EIO (the write itself went through).
    sync_eio: AtomicBool,
    /// Writes of the log fail with EIO, half done.
    log_write_eio: AtomicBool,
    /// Writes of redb alone fail with "disk full".
    redb_full: AtomicBool,
}

/// A file backend that fails as [`Faults`] says.
#[derive(Debug)]
struct FaultyDisk {
    file: FileBackend,
    faults: Arc<Faults>,
}

impl FaultyDisk {
    fn check(&self) -> std::io::Result<()> {
        if self.faults.full.load(Ordering::SeqCst) || self.faults.redb_full.load(Ordering::SeqCst) {
            Err(std::io::ErrorKind::StorageFull.into())
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for FaultyDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        if self.faults.sync_eio.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("input/output error (injected)"));
        }
        self.faults.redb_syncs.fetch_add(1, Ordering::SeqCst);
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// The log's file, failing as [`Faults`] says.
#[derive(Debug)]
struct FaultyLog {
    file: File,
    faults: Arc<Faults>,
}

impl log::LogFile for FaultyLog {
    fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        log::LogFile::read_at(&self.file, offset, out)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if self.faults.full.load(Ordering::SeqCst) {
            return Err(std::io::ErrorKind::StorageFull.into());
        }
        if self.faults.log_write_eio.load(Ordering::SeqCst) {
            // Half of it reaches the file, as a write cut short can.
            let _ = log::LogFile::write_at(&self.file, offset, &data[..data.len() / 2]);
            return Err(std::io::Error::other("input/output error (injected)"));
        }
        log::LogFile::write_at(&self.file, offset, data)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        if self.faults.sync_eio.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("input/output error (injected)"));
        }
        self.faults.log_syncs.fetch_add(1, Ordering::SeqCst);
        log::LogFile::sync_data(&self.file)
    }
    fn len(&self) -> std::io::Result<u64> {
        log::LogFile::len(&self.file)
    }
}

/// Opens a store on a [`FaultyDisk`], wrapped as production wraps its file.
fn open_faulty(dir: &Path) -> (Store, Arc<Faults>) {
    open_faulty_with(dir, LogOptions::default())
}

/// [`open_faulty`] with the log's sizes given.
fn open_faulty_with(dir: &Path, options: LogOptions) -> (Store, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let shared = faults.clone();
    let opener: Opener = Box::new(
        move |path: &Path, first: bool, sync_failed: SyncFailed, read: BytesRead| {
            let file: File = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| DatabaseError::Storage(StorageError::Io(e)))?;
            let disk = SyncWatched {
                inner: FaultyDisk {
                    file: FileBackend::new(file)?,
                    faults: shared.clone(),
                },
                failed: sync_failed,
                read,
            };
            let mut builder = Database::builder();
            builder.set_check_integrity_on_open(first);
            builder.create_with_backend(disk)
        },
    );
    let shared = faults.clone();
    let log_opener: LogOpener = Box::new(move |path: &Path| {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(FaultyLog {
            file,
            faults: shared.clone(),
        }) as Box<dyn log::LogFile>)
    });
    (
        Store::open_with(dir, opener, log_opener, options).unwrap(),
        faults,
    )
}

#[test]
fn a_full_disk_fails_the_commit_and_the_store_recovers() {
    // While the disk is full, commits fail with DiskFull and change nothing;
    // once there is room again, the next commit succeeds.
    let dir = tempfile::tempdir().unwrap();
    let (mut store, faults) = open_faulty(dir.path());
    let full = &faults.full;
    store.commit(&[append("q", message(1, "before"))]).unwrap();
    full.store(true, Ordering::SeqCst);
    let err = store
        .commit(&[append("q", message(2, "lost"))])
        .unwrap_err();
    assert!(err.is_disk_full(), "{err:?}");
    assert_names_file(&err, store.log_path());
    let err = store
        .commit(&[append("q", message(3, "lost too"))])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DiskFull { .. } | StoreError::Write { .. }),
        "{err:?}"
    );
    full.store(false, Ordering::SeqCst);
    store.commit(&[append("q", message(4, "after"))]).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(
        contents(&loaded, "q"),
        [(1, "before".into(), 0), (4, "after".into(), 0)]
    );
    drop(store);
    let loaded = Store::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(contents(&loaded, "q").len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_submits_share_commits() {
    // Eight tasks submit at once: all succeed, in fewer transactions than
    // submissions, and everything is there after the writer is dropped.
    let dir = tempfile::tempdir().unwrap();
    let writer = StoreWriter::spawn(Store::open(dir.path()).unwrap()).unwrap();
    let tasks: Vec<_> = (1..=8u64)
        .map(|seq| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.submit(vec![append("q", message(seq, "m"))]).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let commits = writer.commits();
    assert!(
        (1..8).contains(&commits),
        "{commits} transactions for 8 submits"
    );
    drop(writer);
    let loaded = Store::open(dir.path()).unwrap().load().unwrap();
    let seqs: Vec<u64> = contents(&loaded, "q").iter().map(|m| m.0).collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_transaction_is_reported_to_each_submitter() {
    // Disk full: every submitter of the failed transaction gets the error;
    // the writer keeps going once there is room.
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = open_faulty(dir.path());
    let full = &faults.full;
    let writer = StoreWriter::spawn(store).unwrap();
    full.store(true, Ordering::SeqCst);
    let results = futures::future::join_all(
        (1..=4u64).map(|seq| writer.submit(vec![append("q", message(seq, "m"))])),
    )
    .await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(StoreError::is_disk_full)),
        "{results:?}"
    );
    full.store(false, Ordering::SeqCst);
    writer
        .submit(vec![append("q", message(5, "m"))])
        .await
        .unwrap();
}

#[test]
fn answers_handed_to_a_callback_come_once_each_in_order() {
    // `enqueue_then` (the publish path): each callback is called once, on
    // the writer thread, with its transaction's outcome (a failed one
    // included), in the order the batches were enqueued.
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = open_faulty(dir.path());
    let writer = StoreWriter::spawn(store).unwrap();
    let (answers, answered) = std::sync::mpsc::channel();
    let enqueue = |seq: u64| {
        let answers = answers.clone();
        writer.enqueue_then(vec![append("q", message(seq, "m"))], move |result| {
            answers.send((seq, result)).unwrap();
        });
    };
    faults.full.store(true, Ordering::SeqCst);
    (1..=3).for_each(enqueue);
    let failed: Vec<_> = (0..3).map(|_| answered.recv().unwrap()).collect();
    assert_eq!(failed.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        failed
            .iter()
            .all(|a| a.1.as_ref().is_err_and(StoreError::is_disk_full)),
        "{failed:?}"
    );
    faults.full.store(false, Ordering::SeqCst);
    (4..=6).for_each(enqueue);
    let stored: Vec<_> = (0..3).map(|_| answered.recv().unwrap()).collect();
    assert_eq!(stored.iter().map(|a| a.0).collect::<Vec<_>>(), [4, 5, 6]);
    assert!(stored.iter().all(|a| a.1.is_ok()), "{stored:?}");
    drop(writer);
    drop(answers);
    assert!(answered.recv().is_err(), "a callback was called twice");
    let loaded = Store::open(dir.path()).unwrap().load().unwrap();
    let seqs: Vec<u64> = contents(&loaded, "q").iter().map(|m| m.0).collect();
    assert_eq!(seqs, [4, 5, 6]);
}

#[test]
fn work_left_for_after_the_answers_runs_once_after_every_answer_of_its_commit() {
    // `after_answers` from a callback waits until the transaction's last
    // callback has run (publish answers leave together); outside one it
    // runs at once.
    let ran = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = ran.clone();
    crate::store::after_answers(move || seen.set(true));
    assert!(ran.get(), "outside a transaction it runs at once");

    let dir = tempfile::tempdir().unwrap();
    let writer = StoreWriter::spawn(Store::open(dir.path()).unwrap()).unwrap();
    let (events, seen) = std::sync::mpsc::channel();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    // The first callback holds the writer thread until all eight others
    // are queued, so that they share the next transaction.
    let hold = events.clone();
    writer.enqueue_then(vec![append("q", message(1, "m"))], move |_| {
        wait.recv().unwrap();
        hold.send("held".to_string()).unwrap();
    });
    for seq in 2..=9u64 {
        let events = events.clone();
        writer.enqueue_then(vec![append("q", message(seq, "m"))], move |result| {
            result.unwrap();
            events.send(format!("answer {seq}")).unwrap();
            let events = events.clone();
            crate::store::after_answers(move || events.send(format!("after {seq}")).unwrap());
        });
    }
    go.send(()).unwrap();
    drop(events);
    drop(writer);
    let order: Vec<String> = seen.iter().collect();
    let answers = order.iter().filter(|e| e.starts_with("answer")).count();
    let afters: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, e)| e.starts_with("after"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!((answers, afters.len()), (8, 8), "{order:?}");
    assert!(
        afters
            .iter()
            .all(|&i| i > order.iter().rposition(|e| e.starts_with("answer")).unwrap()),
        "every answer came before any work left for after them: {order:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn group_commit_timing() {
    // Not an assertion: how long 1000 single-message publishes from 8
    // tasks take, against 50 one at a time.
    let dir = tempfile::tempdir().unwrap();
    let writer = StoreWriter::spawn(Store::open(dir.path()).unwrap()).unwrap();
    let start = Instant::now();
    for seq in 1..=50u64 {
        writer
            .submit(vec![append("solo", message(seq, "m"))])
            .await
            .unwrap();
    }
    let solo = start.elapsed();
    let before = writer.commits();
    let start = Instant::now();
    let tasks: Vec<_> = (0..8u64)
        .map(|task| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for i in 0..125u64 {
                    let seq = 1000 + task * 125 + i;
                    writer
                        .submit(vec![append("q", message(seq, "payload"))])
                        .await?;
                }
                Ok::<(), StoreError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let grouped = start.elapsed();
    let commits = writer.commits() - before;
    println!(
        "store timing: 50 sequential submits {:?} ({:?} each); 1000 submits from 8 tasks {:?} \
         in {commits} transactions ({:.1} submits per transaction, {:?} per submit)",
        solo,
        solo / 50,
        grouped,
        1000.0 / commits as f64,
        grouped / 1000,
    );
}

#[test]
fn a_zero_length_file_is_refused_and_kept() {
    // `truncate -s 0 turnstile.redb`: redb alone would take it for a new
    // database and start afresh (messages gone, fencing tokens from 1).
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        store.commit(&[append("q", message(1, "kept"))]).unwrap();
    }
    let path = dir.path().join(FILE_NAME);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_refused_as_corrupt(dir.path(), &path, "empty");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "the file is kept"
    );
}

#[test]
fn a_failed_sync_poisons_the_store_until_it_is_reopened() {
    // fsyncgate: after a failed sync the transaction's outcome is unknown
    // (here it did reach the file), and no later write is tried, even once
    // syncs work again; a fresh open reads what is really there.
    let dir = tempfile::tempdir().unwrap();
    let (mut store, faults) = open_faulty(dir.path());
    store.commit(&[append("q", message(1, "before"))]).unwrap();
    faults.sync_eio.store(true, Ordering::SeqCst);
    let err = store
        .commit(&[append("q", message(2, "unknown"))])
        .unwrap_err();
    assert!(err.outcome_unknown() && err.is_poisoned(), "{err:?}");
    assert_names_file(&err, store.log_path());
    assert!(err.to_string().contains("unknown"), "{err}");
    faults.sync_eio.store(false, Ordering::SeqCst);
    let err = store
        .commit(&[append("q", message(3, "refused"))])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Poisoned { .. }) && !err.outcome_unknown(),
        "{err:?}"
    );
    assert!(err.to_string().contains("restart"), "{err}");
    drop(store);
    let loaded = Store::open(dir.path()).unwrap().load().unwrap();
    let seqs: Vec<u64> = contents(&loaded, "q").iter().map(|m| m.0).collect();
    assert!(
        seqs == [1] || seqs == [1, 2],
        "message 3 was never written, 2 may be: {seqs:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_sync_is_reported_as_unknown_then_writes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = open_faulty(dir.path());
    let writer = StoreWriter::spawn(store).unwrap();
    faults.sync_eio.store(true, Ordering::SeqCst);
    let results = futures::future::join_all(
        (1..=4u64).map(|seq| writer.submit(vec![append("q", message(seq, "m"))])),
    )
    .await;
    // The first transaction's submitters hear "unknown"; any later one,
    // "refused".
    assert!(
        results[0].as_ref().is_err_and(StoreError::outcome_unknown),
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(StoreError::is_poisoned)),
        "{results:?}"
    );
    faults.sync_eio.store(false, Ordering::SeqCst);
    let err = writer
        .submit(vec![append("q", message(5, "m"))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Poisoned { .. }), "{err:?}");
}

/// Commits message 2 while the log's writes fail half done (its bytes
/// partly on disk): its error, with the writes failing still.
fn a_log_write_failing_half_done(store: &mut Store, faults: &Faults) -> StoreError {
    faults.log_write_eio.store(true, Ordering::SeqCst);
    store
        .commit(&[append("q", message(2, &"lost".repeat(50)))])
        .unwrap_err()
}

/// Opening the store in `dir` is refused as corrupt, naming `file` and
/// saying `says`.
fn assert_refused_as_corrupt(dir: &Path, file: &Path, says: &str) {
    let err = Store::open(dir).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_names_file(&err, file);
    assert!(err.to_string().contains(says), "{err}");
}

/// Sets `entries` in the meta table of `db`, in one transaction: a file
/// as another build (or a crafted one) would have left it.
fn write_meta(db: &Database, entries: &[(&str, u64)]) {
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        for &(key, value) in entries {
            meta.insert(key, value).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// A line for the history of `resource`: lease `id`, ended at `ended_ms`.
pub(super) fn history_line(resource: &str, id: u64, ended_ms: u64) -> HistoryLine {
    use crate::core::{Cause, Ended, EventKind, LeaseId, LeaseView, Mode, Peer, SessionId};
    let peer = Arc::new(Peer {
        session: SessionId(1),
        client_name: "svc".into(),
        uid: 0,
        pid: 42,
        user: "root".into(),
        login_session: String::new(),
    });
    HistoryLine {
        ended: Ended {
            lease: LeaseView {
                lease_id: LeaseId(id),
                resource: Arc::from(resource),
                mode: Mode::Exclusive,
                purpose: Arc::from(format!("job {id}").as_str()),
                holder: peer.clone(),
                fencing: None,
                progress: None,
                granted_at: None,
                queued_at: Some(0),
                expires_at: None,
                position: 0,
                permits: 0,
                detached: false,
                stalled: false,
                estimated_wait_ms: None,
            },
            at: 0,
            kind: EventKind::Released,
            cause: Cause::None,
        },
        queued_at_ms: ended_ms,
        granted_at_ms: 0,
        ended_at_ms: ended_ms,
    }
}

/// Runs `f` on the store's database, on the redb thread, after everything
/// asked of it before.
fn with_db<T: Send + 'static>(store: &Store, f: impl FnOnce(&Database) -> T + Send + 'static) -> T {
    store
        .redb
        .call(move |redb| f(redb.db.as_ref().unwrap()))
        .unwrap()
}

fn history_ids(
    store: &Store,
    resource: &str,
    since_ms: u64,
    limit: u32,
    now_ms: u64,
    bounds: HistoryBounds,
) -> (Vec<u64>, bool) {
    let found = store
        .read_history(&HistoryQuery {
            resource: resource.into(),
            since_ms,
            limit,
            max_bytes: 1 << 20,
            now_ms,
            bounds,
        })
        .unwrap();
    (
        found.lines.iter().map(|l| l.lease_id).collect(),
        found.truncated,
    )
}

#[test]
fn history_is_kept_per_resource_within_its_bounds_across_commits() {
    // Lines added over several transactions: a resource keeps its newest
    // `max_entries`, in order, whatever the other resources hold; lines
    // older than `max_age` leave when the resource records again; a read
    // selects by `since` and `limit`; the store reopened has the same.
    let dir = tempfile::tempdir().unwrap();
    let bounds = HistoryBounds {
        max_entries: 4,
        max_age_ms: 1_000_000,
        ..HistoryBounds::default()
    };
    let now = 10_000_000;
    let mut store = Store::open(dir.path()).unwrap();
    for batch in 0..3u64 {
        let lines: Vec<HistoryLine> = (1..=3)
            .map(|i| history_line("pcm", batch * 3 + i, now + batch * 3 + i))
            .chain([history_line("spool", 100 + batch, now)])
            .collect();
        store
            .commit_with_history(&[], &lines, Some((bounds, now, batch == 0)))
            .unwrap();
    }
    assert_eq!(
        history_ids(&store, "pcm", 0, 0, now, bounds),
        (vec![6, 7, 8, 9], false)
    );
    assert_eq!(
        history_ids(&store, "spool", 0, 0, now, bounds).0,
        vec![100, 101, 102]
    );
    assert_eq!(
        history_ids(&store, "pcm", 0, 2, now, bounds),
        (vec![8, 9], true)
    );
    assert_eq!(
        history_ids(&store, "pcm", now + 8, 0, now, bounds).0,
        vec![8, 9]
    );
    // Later, lines of pcm older than the age bound are hidden, and gone
    // once pcm records again.
    let later = now + 9 + bounds.max_age_ms + 1;
    assert_eq!(
        history_ids(&store, "pcm", 0, 0, later, bounds).0,
        Vec::<u64>::new()
    );
    store
        .commit_with_history(
            &[],
            &[history_line("pcm", 10, later)],
            Some((bounds, later, false)),
        )
        .unwrap();
    let no_age = HistoryBounds {
        max_age_ms: 0,
        ..bounds
    };
    assert_eq!(history_ids(&store, "pcm", 0, 0, later, no_age).0, vec![10]);
    assert_eq!(
        history_ids(&store, "spool", 0, 0, later, no_age).0,
        vec![100, 101, 102]
    );
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(history_ids(&store, "pcm", 0, 0, later, no_age).0, vec![10]);
}

#[test]
fn a_history_line_reads_back_as_it_was_recorded() {
    // Every field survives the batch encoding: holders and purposes that
    // repeat (left out of the file) or change within a batch, times,
    // mode, permits, fencing, and the detail, written on reading for an
    // ordinary end and kept as text for another cause; lease ids, ends
    // and fencing tokens that go down as well as up from one line to the
    // next (stored as differences), and TTLs that repeat (left out).
    use crate::core::{Cause, Ending, EventKind, FencingToken, LeaseId, Mode, Peer, SessionId};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let other = Arc::new(Peer {
        session: SessionId(7),
        client_name: "pcm-agent".into(),
        uid: 1000,
        pid: 4242,
        user: String::new(),
        login_session: "c2".into(),
    });
    let now = 50_000_000;
    let mut lines = Vec::new();
    let ids = [40, 2, 1 << 40, 7, u64::MAX, 3];
    let ends = [now + 5, now + 2, now + 90, now + 90, now + 1, now + 30];
    for i in 0..6u64 {
        let (id, ended) = (ids[i as usize], ends[i as usize]);
        let mut h = history_line("pcm", id, ended);
        if i % 3 == 1 {
            h.ended.lease.holder = other.clone();
            h.ended.lease.purpose = Arc::from("same");
        }
        if i % 2 == 0 {
            h.ended.lease.mode = Mode::Shared;
            h.ended.lease.permits = 3;
            h.ended.lease.fencing = Some(FencingToken(900 - 100 * i));
            h.granted_at_ms = ended - 5;
            h.queued_at_ms = ended - 20;
        }
        let peer = h.ended.lease.holder.clone();
        let lease = LeaseId(id);
        (h.ended.kind, h.ended.cause) = match i {
            0 => (EventKind::Released, Cause::None),
            1 => (
                EventKind::Expired,
                Cause::Ended {
                    lease,
                    peer,
                    ending: Ending::Expired,
                    was_holder: true,
                    ttl_ms: 1500,
                },
            ),
            2 => (
                EventKind::Disconnected,
                Cause::Ended {
                    lease,
                    peer,
                    ending: Ending::Disconnected,
                    was_holder: false,
                    ttl_ms: 0,
                },
            ),
            3 => (
                EventKind::Revoked,
                Cause::FleetLost {
                    lease,
                    peer,
                    detail: Arc::from("etcd unreachable"),
                },
            ),
            _ => (
                EventKind::Cancelled,
                Cause::Ended {
                    lease,
                    peer,
                    ending: Ending::TimedOut,
                    was_holder: false,
                    ttl_ms: 0,
                },
            ),
        };
        lines.push(h);
    }
    let bounds = HistoryBounds::default();
    store
        .commit_with_history(&[], &lines, Some((bounds, now, true)))
        .unwrap();
    let found = store
        .read_history(&HistoryQuery {
            resource: "pcm".into(),
            since_ms: 0,
            limit: 0,
            max_bytes: 1 << 20,
            now_ms: now,
            bounds,
        })
        .unwrap();
    let expected: Vec<RecordedLease> = lines
        .iter()
        .map(|h| {
            let l = &h.ended.lease;
            RecordedLease {
                lease_id: l.lease_id.0,
                resource: l.resource.to_string(),
                mode: Some(l.mode),
                permits: l.permits,
                purpose: l.purpose.to_string(),
                client_name: l.holder.client_name.clone(),
                uid: l.holder.uid,
                pid: l.holder.pid,
                session_id: l.holder.session.0,
                user: l.holder.user.clone(),
                login_session: l.holder.login_session.clone(),
                queued_at_ms: h.queued_at_ms,
                granted_at_ms: h.granted_at_ms,
                ended_at_ms: h.ended_at_ms,
                ended_by: Some(h.ended.kind),
                detail: h.ended.cause.to_string(),
                fencing_token: l.fencing.map_or(0, |f| f.0),
                timed_out: matches!(
                    h.ended.cause,
                    Cause::Ended {
                        ending: Ending::TimedOut,
                        ..
                    }
                ),
            }
        })
        .collect();
    assert!(expected[1].detail.contains("expired"), "{expected:#?}");
    // Only the wait whose max_wait ran out says so.
    assert_eq!(
        expected.iter().filter(|l| l.timed_out).count(),
        lines.len() - 4,
        "{expected:#?}"
    );
    assert_eq!(found.lines, expected);
    assert!(!found.truncated);
}

#[test]
fn history_past_its_count_is_never_shown_however_it_was_batched() {
    // Lines arrive in transactions of very different sizes (one at a time,
    // hundreds at once): a read shows exactly the newest `max_entries`, in
    // order, and the file keeps at most one batch more than that.
    let dir = tempfile::tempdir().unwrap();
    let bounds = HistoryBounds {
        max_entries: 300,
        max_age_ms: 0,
        ..HistoryBounds::default()
    };
    let now = 10_000_000;
    let mut store = Store::open(dir.path()).unwrap();
    let mut id = 0u64;
    for size in [1usize, 2, 700, 1, 90, 3, 400, 1, 1] {
        let lines: Vec<HistoryLine> = (0..size)
            .map(|_| {
                id += 1;
                history_line("pcm", id, now + id)
            })
            .collect();
        store
            .commit_with_history(&[], &lines, Some((bounds, now, false)))
            .unwrap();
        let (ids, truncated) = history_ids(&store, "pcm", 0, 0, now, bounds);
        let from = id.saturating_sub(300) + 1;
        assert_eq!(ids, (from..=id).collect::<Vec<_>>(), "after {size}");
        assert!(!truncated);
        let kept = with_db(&store, |db| {
            db.begin_read()
                .unwrap()
                .open_table(history::HISTORY)
                .unwrap()
                .range(("pcm", 0)..=("pcm", u64::MAX))
                .unwrap()
                .map(|e| {
                    let (_, v) = e.unwrap();
                    history::lines_in(v.value())
                })
                .sum::<u64>()
        });
        assert!(
            kept >= ids.len() as u64 && kept < 300 + 256,
            "{kept} lines kept after {size}"
        );
    }
    // The limit keeps the newest, and says that older ones were left out.
    assert_eq!(
        history_ids(&store, "pcm", 0, 2, now, bounds),
        (vec![id - 1, id], true)
    );
    // So does the room of a frame: the newest that fit in it.
    let small = store
        .read_history(&HistoryQuery {
            resource: "pcm".into(),
            since_ms: 0,
            limit: 0,
            max_bytes: 1000,
            now_ms: now,
            bounds,
        })
        .unwrap();
    let ids: Vec<u64> = small.lines.iter().map(|l| l.lease_id).collect();
    assert!(
        small.truncated && ids.len() > 5 && ids.len() < 30,
        "{ids:?}"
    );
    assert_eq!(ids, (id + 1 - ids.len() as u64..=id).collect::<Vec<_>>());
}

#[tokio::test(flavor = "current_thread")]
async fn staged_history_is_seen_by_a_read_and_kept_at_the_stop() {
    // Lines staged (encoded) and handed to the writer in several parts,
    // before and after a publish, are all seen by a read that follows
    // them, in order; lines handed over after that read are in the file
    // once the writer has stopped.
    let dir = tempfile::tempdir().unwrap();
    let bounds = HistoryBounds {
        max_entries: 100,
        max_age_ms: 0,
        ..HistoryBounds::default()
    };
    let now = 10_000_000;
    let staged = |lines: &[(&str, u64)]| -> HistoryJournal {
        let mut journal = HistoryJournal::default();
        for &(resource, id) in lines {
            journal.record_line(&history_line(resource, id, now + id));
        }
        journal
    };
    let writer = StoreWriter::spawn(Store::open(dir.path()).unwrap()).unwrap();
    writer.record_history(staged(&[("pcm", 1), ("pcm", 2), ("pcm", 3)]), bounds);
    writer
        .submit(vec![append("q", message(1, "m"))])
        .await
        .unwrap();
    writer.record_history(staged(&[("pcm", 4), ("gpu", 50), ("pcm", 5)]), bounds);
    let query = |resource: &str| HistoryQuery {
        resource: resource.into(),
        since_ms: 0,
        limit: 0,
        max_bytes: 1 << 20,
        now_ms: now,
        bounds,
    };
    let ids = |found: Recorded| -> Vec<u64> { found.lines.iter().map(|l| l.lease_id).collect() };
    let found = writer.read_history(query("pcm")).await.unwrap();
    assert_eq!(ids(found), (1..=5).collect::<Vec<_>>());
    let found = writer.read_history(query("gpu")).await.unwrap();
    assert_eq!(ids(found), vec![50]);
    writer.record_history(staged(&[("pcm", 6), ("pcm", 7)]), bounds);
    drop(writer);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        history_ids(&store, "pcm", 0, 0, now, bounds),
        ((1..=7).collect::<Vec<_>>(), false)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_commit_without_lines_after_history_was_recorded_syncs_only_the_log() {
    // Once history has been handed over, the writer knows its bounds. A
    // later commit that carries no lines (a publish, an ack) must be one
    // sync of the log, as before any lease ended: taking the known bounds
    // for work added an empty redb transaction, a second sync, to every
    // publish for as long as the broker ran.
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = open_faulty(dir.path());
    let writer = StoreWriter::spawn(store).unwrap();
    let bounds = HistoryBounds {
        max_entries: 100,
        max_age_ms: 0,
        ..HistoryBounds::default()
    };
    let mut journal = HistoryJournal::default();
    journal.record_line(&history_line("pcm", 1, 10_000));
    writer.record_history(journal, bounds);
    writer
        .submit(vec![append("q", message(1, "m"))])
        .await
        .unwrap();
    let syncs = || {
        (
            faults.log_syncs.load(Ordering::SeqCst),
            faults.redb_syncs.load(Ordering::SeqCst),
        )
    };
    // A read comes after the line's transaction on the redb thread.
    let found = writer
        .read_history(HistoryQuery {
            resource: "pcm".into(),
            since_ms: 0,
            limit: 0,
            max_bytes: 1 << 20,
            now_ms: 10_000,
            bounds,
        })
        .await
        .unwrap();
    assert_eq!(found.lines.len(), 1);
    let (log_before, redb_before) = syncs();
    assert!(redb_before > 0, "the line went to redb");
    for seq in 2..=5 {
        writer
            .submit(vec![append("q", message(seq, "m"))])
            .await
            .unwrap();
    }
    let (log_after, redb_after) = syncs();
    assert_eq!(log_after - log_before, 4, "one sync of the log a commit");
    assert_eq!(redb_after, redb_before, "nothing for redb to commit");
}

#[test]
fn lines_recorded_interleaved_are_grouped_and_a_repeated_holder_is_stored_once() {
    // The journal holds every line, resources interleaved as their
    // leases ended; grouped per resource, a line whose holder and purpose
    // are the previous line's in its batch leaves them out, and every
    // line reads back in order under its own resource.
    let mut journal = HistoryJournal::default();
    for id in 1..=200 {
        let resource = if id % 2 == 0 { "pcm" } else { "gpu" };
        journal.record_line(&history_line(resource, id, 10_000 + id));
    }
    let staged = StagedHistory::from_journal(&journal, 1000);
    assert_eq!(staged.lines(), 200);
    // The same lines, each of another holder (its pid): every line but
    // each batch's first then carries its holder.
    let mut other_holders = HistoryJournal::default();
    for id in 1..=200 {
        let resource = if id % 2 == 0 { "pcm" } else { "gpu" };
        let mut line = history_line(resource, id, 10_000 + id);
        let mut holder = (*line.ended.lease.holder).clone();
        holder.pid = id as u32;
        line.ended.lease.holder = Arc::new(holder);
        other_holders.record_line(&line);
    }
    let unshared = StagedHistory::from_journal(&other_holders, 1000);
    assert!(
        staged.bytes() + 198 * 8 < unshared.bytes(),
        "grouped {} bytes, {} with a holder a line",
        staged.bytes(),
        unshared.bytes()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let bounds = HistoryBounds {
        max_entries: 1000,
        max_age_ms: 0,
        ..HistoryBounds::default()
    };
    store
        .commit_staged(&[], &mut vec![staged], Some((bounds, 20_000, false)))
        .unwrap();
    assert_eq!(
        history_ids(&store, "pcm", 0, 0, 20_000, bounds).0,
        (1..=100).map(|i| 2 * i).collect::<Vec<_>>()
    );
    assert_eq!(
        history_ids(&store, "gpu", 0, 0, 20_000, bounds).0,
        (1..=100).map(|i| 2 * i - 1).collect::<Vec<_>>()
    );
}

#[test]
fn staged_history_keeps_a_resource_within_its_count() {
    // Staging more lines of one resource than the count bound keeps only
    // what a commit would keep (the newest, in whole batches), and what
    // the other resources staged in between is untouched.
    let mut journal = HistoryJournal::default();
    for id in 1..=1000 {
        journal.record_line(&history_line("pcm", id, id));
        if id % 100 == 0 {
            journal.record_line(&history_line("gpu", id, id));
        }
    }
    let staged = StagedHistory::from_journal(&journal, 300);
    // 1000 lines of pcm in batches of 256: the first two are dropped
    // (488 lines after them are enough), the third is kept (232 after it
    // are not); the ten lines of gpu are all kept.
    assert_eq!(staged.lines(), 1000 - 512 + 10);
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let bounds = HistoryBounds {
        max_entries: 300,
        max_age_ms: 0,
        ..HistoryBounds::default()
    };
    store
        .commit_staged(&[], &mut vec![staged], Some((bounds, 10_000, false)))
        .unwrap();
    assert_eq!(
        history_ids(&store, "pcm", 0, 0, 10_000, bounds),
        ((701..=1000).collect::<Vec<_>>(), false)
    );
    assert_eq!(
        history_ids(&store, "gpu", 0, 0, 10_000, bounds).0,
        (1..=10).map(|i| i * 100).collect::<Vec<_>>()
    );
}

/// The `(queue, seq)` of every message loaded from the store in `dir`.
fn stored(dir: &Path) -> Vec<(String, u64)> {
    let loaded = Store::open(dir).unwrap().load().unwrap();
    loaded
        .queues
        .iter()
        .flat_map(|(q, list)| list.iter().map(move |m| (q.clone(), m.seq)))
        .collect()
}

fn remove(queue: &str, seq: u64) -> StoreOp {
    StoreOp::Remove {
        queue: Arc::from(queue),
        seq,
    }
}

/// Three commits into the log, then a crash: where each record starts in
/// the log file.
fn three_records_then_crash(dir: &Path) -> Vec<u64> {
    let mut store = Store::open(dir).unwrap();
    let mut starts = Vec::new();
    for seq in 1..=3u64 {
        starts.push(store.log.offset());
        store
            .commit(&[append("q", message(seq, &"x".repeat(100)))])
            .unwrap();
    }
    assert_eq!(store.pending.len(), 3, "the commits are in the log only");
    store.crash();
    starts
}

#[test]
fn a_crash_loses_nothing_the_log_holds() {
    // Commits reach only the log; after a crash (no checkpoint), the next
    // open replays them, removals and attempts and high-water marks
    // included, and checkpoints them into redb.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .commit(&[
            append("q", message(1, "one")),
            append("q", message(2, "two")),
            StoreOp::ReserveCounters { reserve_until: 77 },
        ])
        .unwrap();
    store
        .commit(&[
            remove("q", 1),
            StoreOp::SetAttempt {
                queue: Arc::from("q"),
                seq: 2,
                attempt: 5,
            },
        ])
        .unwrap();
    assert_eq!(store.commits(), 2);
    store.crash();
    let mut store = Store::open(dir.path()).unwrap();
    assert!(store.pending.is_empty(), "replayed into redb at open");
    let loaded = store.load().unwrap();
    assert_eq!(contents(&loaded, "q"), [(2, "two".into(), 5)]);
    assert_eq!(loaded.counters.reserved_until, 77);
    assert_eq!(loaded.last_seq, 2);
    // A second crash right after: nothing is applied twice (message 1
    // stays removed), nothing is lost.
    store.commit(&[append("q", message(3, "three"))]).unwrap();
    store.crash();
    let mut store = Store::open(dir.path()).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(
        contents(&loaded, "q"),
        [(2, "two".into(), 5), (3, "three".into(), 0)]
    );
}

#[test]
fn a_crash_between_a_checkpoint_and_the_fresh_log_applies_nothing_twice() {
    // redb has applied the log's generation, but the log still holds its
    // records: they are not replayed again (message 1, removed after it
    // was appended, must not come back even so).
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[append("q", message(1, "a"))]).unwrap();
    store.commit(&[remove("q", 1)]).unwrap();
    store.commit(&[append("q", message(2, "b"))]).unwrap();
    let generation = store.log.generation();
    let pending = store.pending.clone();
    store
        .redb
        .call(move |redb| redb.commit(&pending, &[], None, Some(generation), false))
        .unwrap()
        .unwrap();
    store.crash();
    assert_eq!(stored(dir.path()), [("q".to_string(), 2)]);
}

#[test]
fn a_torn_tail_is_dropped_and_the_rest_kept() {
    // The last record half written (a crash during its write, before its
    // submitters were answered): it is ignored, the ones before are kept.
    let dir = tempfile::tempdir().unwrap();
    let starts = three_records_then_crash(dir.path());
    let path = dir.path().join(log::FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = starts[2] as usize;
    for b in &mut bytes[last + 40..last + 140] {
        *b = 0;
    }
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(
        stored(dir.path()),
        [("q".to_string(), 1), ("q".to_string(), 2)]
    );
    // And the log goes on from there.
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[append("q", message(4, "d"))]).unwrap();
    store.crash();
    let seqs: Vec<u64> = stored(dir.path()).iter().map(|m| m.1).collect();
    assert_eq!(seqs, [1, 2, 4]);
}

#[test]
fn a_flipped_bit_mid_log_is_refused() {
    // A record that does not check followed by one that does: the file
    // was damaged, not torn. Refused, naming the log, and kept as it is;
    // wherever the bit is (length, generation, body).
    let dir = tempfile::tempdir().unwrap();
    let starts = three_records_then_crash(dir.path());
    let path = dir.path().join(log::FILE_NAME);
    let pristine = std::fs::read(&path).unwrap();
    for at in [starts[0] + 1, starts[1] + 6, starts[1] + 70] {
        let mut bytes = pristine.clone();
        bytes[at as usize] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        assert_refused_as_corrupt(dir.path(), &path, "damaged");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the log is kept");
    }
}

#[test]
fn a_failed_log_write_commits_nothing_and_the_next_one_retries() {
    // The write fails half done: nothing is committed; the next commit
    // writes the same place, and a crash then keeps exactly what was
    // answered Ok.
    let dir = tempfile::tempdir().unwrap();
    let (mut store, faults) = open_faulty(dir.path());
    store.commit(&[append("q", message(1, "ok"))]).unwrap();
    let err = a_log_write_failing_half_done(&mut store, &faults);
    assert!(
        matches!(err, StoreError::Write { .. }) && !err.is_poisoned(),
        "{err:?}"
    );
    assert_names_file(&err, store.log_path());
    faults.log_write_eio.store(false, Ordering::SeqCst);
    store.commit(&[append("q", message(3, "ok"))]).unwrap();
    store.crash();
    let seqs: Vec<u64> = stored(dir.path()).iter().map(|m| m.1).collect();
    assert_eq!(seqs, [1, 3]);
}

#[test]
fn a_full_log_is_checkpointed_and_a_huge_batch_goes_to_redb() {
    // Records that do not fit in what is left of the log make a checkpoint
    // first; a batch larger than the whole log goes straight to redb.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let big = "m".repeat((LOG_CAPACITY / 3) as usize);
    for seq in 1..=4u64 {
        store.commit(&[append("q", message(seq, &big))]).unwrap();
        assert!(store.log.used() <= store.log.capacity());
    }
    assert!(store.pending.len() < 4, "a checkpoint made room");
    let huge: Vec<StoreOp> = (5..=8u64)
        .map(|seq| append("q", message(seq, &big)))
        .collect();
    store.commit(&huge).unwrap();
    store.commit(&[append("q", message(9, "small"))]).unwrap();
    store.crash();
    let seqs: Vec<u64> = stored(dir.path()).iter().map(|m| m.1).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
}

#[test]
fn a_checkpoint_is_due_past_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    assert!(!store.checkpoint_due());
    let body = "p".repeat(64 * 1024);
    let mut seq = 0;
    while !store.checkpoint_due() {
        seq += 1;
        store.commit(&[append("q", message(seq, &body))]).unwrap();
    }
    assert!(store.log.used() >= CHECKPOINT_BYTES);
    store.checkpoint().unwrap();
    assert!(!store.checkpoint_due() && store.log.used() == 0);
    store.crash();
    assert_eq!(stored(dir.path()).len(), seq as usize);
}

#[test]
fn a_store_from_before_the_log_opens_and_is_upgraded() {
    // Format 1 (no log): its messages load, a log is made beside it, and
    // the file says format 2 from then on.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(META_FORMAT, FORMAT_WITHOUT_LOG).unwrap();
            meta.insert(META_LAST_SEQ, 8).unwrap();
            let mut messages = txn.open_table(MESSAGES).unwrap();
            let mut buf = Vec::new();
            Record::encode_message(&message(8, "old"), &mut buf);
            messages.insert(("q", 8), buf.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        contents(&store.load().unwrap(), "q"),
        [(8, "old".into(), 0)]
    );
    store.commit(&[append("q", message(9, "new"))]).unwrap();
    store.crash();
    assert!(dir.path().join(log::FILE_NAME).exists());
    let seqs: Vec<u64> = stored(dir.path()).iter().map(|m| m.1).collect();
    assert_eq!(seqs, [8, 9]);
    let store = Store::open(dir.path()).unwrap();
    let format = with_db(&store, move |db| read_meta(&path, db, META_FORMAT).unwrap());
    assert_eq!(format, Some(FORMAT));
}

#[test]
fn a_missing_log_is_refused() {
    // Once a store has a log, losing it may lose what it held: refused,
    // naming it.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[append("q", message(1, "m"))]).unwrap();
    store.crash();
    let path = dir.path().join(log::FILE_NAME);
    std::fs::remove_file(&path).unwrap();
    assert_refused_as_corrupt(dir.path(), &path, "missing");
}

#[test]
fn a_log_left_beside_a_new_database_is_made_anew_and_its_records_never_come_back() {
    // turnstile.redb moved aside to start afresh, turnstile.wal left
    // (as the advice for a corrupt database said until it named both):
    // the old log's records, generations 3 and 4 under the old salt,
    // are those the new store replays at its second start. They must
    // not come back then, nor after a crash of the new store.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[append("q", message(1, "one"))]).unwrap();
    store.checkpoint().unwrap();
    store.commit(&[append("q", message(2, "two"))]).unwrap();
    store.crash();
    std::fs::rename(dir.path().join(FILE_NAME), dir.path().join("aside")).unwrap();
    assert_eq!(stored(dir.path()), []);
    assert_eq!(stored(dir.path()), [], "the old log's records came back");
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[append("new", message(1, "n"))]).unwrap();
    store.crash();
    assert_eq!(stored(dir.path()), [("new".to_string(), 1)]);
}

#[test]
fn a_truncated_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    three_records_then_crash(dir.path());
    let path = dir.path().join(log::FILE_NAME);
    for len in [0, 10] {
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len)
            .unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert_names_file(&err, &path);
    }
}

/// Applies `ops` in order to a model of the messages table: (queue, seq)
/// → attempt, plus the highest reservation.
fn model(ops: &[StoreOp]) -> (std::collections::BTreeMap<(String, u64), u32>, u64) {
    let mut table = std::collections::BTreeMap::new();
    let mut reserve = 0;
    for op in ops {
        match op {
            StoreOp::Append { queue, message } => {
                table.insert((queue.to_string(), message.seq), message.attempt);
            }
            StoreOp::Remove { queue, seq } => {
                table.remove(&(queue.to_string(), *seq));
            }
            StoreOp::SetAttempt {
                queue,
                seq,
                attempt,
            } => {
                if let Some(a) = table.get_mut(&(queue.to_string(), *seq)) {
                    *a = *attempt;
                }
            }
            StoreOp::ReserveCounters { reserve_until } => reserve = reserve.max(*reserve_until),
        }
    }
    (table, reserve)
}

proptest::proptest! {
    /// A checkpoint's net operations leave any starting table as the
    /// logged ones applied in order would.
    #[test]
    fn the_net_effect_of_a_log_is_the_log(
        before in proptest::collection::vec((0u8..2, 0u64..6, 0u32..4), 0..8),
        steps in proptest::collection::vec((0u8..4, 0u8..2, 0u64..6, 0u32..4), 0..40),
    ) {
        let q = |n: u8| Arc::<str>::from(if n == 0 { "a" } else { "b" });
        let op = |kind: u8, queue: u8, seq: u64, n: u32| match kind {
            0 => StoreOp::Append {
                queue: q(queue),
                message: Message { attempt: n, ..message(seq, "m") },
            },
            1 => StoreOp::Remove { queue: q(queue), seq },
            2 => StoreOp::SetAttempt { queue: q(queue), seq, attempt: n },
            _ => StoreOp::ReserveCounters { reserve_until: u64::from(n) },
        };
        let start: Vec<StoreOp> = before.iter().map(|&(qn, seq, n)| op(0, qn, seq, n)).collect();
        let logged: Vec<StoreOp> =
            steps.iter().map(|&(kind, qn, seq, n)| op(kind, qn, seq, n)).collect();
        let net = net_effect(&logged);
        proptest::prop_assert!(net.len() <= logged.len());
        let in_order = model(&[start.clone(), logged].concat());
        let netted = model(&[start, net].concat());
        proptest::prop_assert_eq!(in_order, netted);
    }
}

#[test]
fn a_log_of_another_size_is_made_anew_once_applied() {
    // The configured size changed: what the old log held is applied to
    // redb first, then the log is made at the new size; nothing is lost.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[append("q", message(1, "kept"))]).unwrap();
    store.crash();
    let small = LogOptions {
        capacity: 256 << 10,
        checkpoint_bytes: 64 << 10,
        ..LogOptions::default()
    };
    let mut store = Store::open_with_options(dir.path(), small).unwrap();
    assert_eq!(store.log.capacity(), small.capacity);
    let len = std::fs::metadata(store.log_path()).unwrap().len();
    assert_eq!(len, log::HEADER + small.capacity);
    store.commit(&[append("q", message(2, "after"))]).unwrap();
    store.crash();
    let seqs: Vec<u64> = stored(dir.path()).iter().map(|m| m.1).collect();
    assert_eq!(seqs, [1, 2]);
}

/// The sequence numbers of every message stored in `dir`, in order.
fn stored_seqs(dir: &Path) -> Vec<u64> {
    stored(dir).iter().map(|m| m.1).collect()
}

/// A log of 256 KiB (two halves of 128 KiB), checkpointed past 32 KiB.
const SMALL: LogOptions = LogOptions {
    capacity: 256 << 10,
    checkpoint_bytes: 32 << 10,
    checkpoint_interval: CHECKPOINT_INTERVAL,
};

fn set_attempt(queue: &str, seq: u64, attempt: u32) -> StoreOp {
    StoreOp::SetAttempt {
        queue: Arc::from(queue),
        seq,
        attempt,
    }
}

#[test]
fn a_crash_while_a_generation_is_applied_and_the_next_appended_loses_nothing() {
    // The checkpoint of generation g is under way (held back) while the
    // commits after it go to the log's other half as g + 1, and the
    // broker crashes: the next open replays g, then g + 1, in that order
    // (message 1, removed in g + 1, stays removed).
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .commit(&[append("q", message(1, "a")), append("q", message(2, "b"))])
        .unwrap();
    store.redb.pause(true);
    let first = store.log.generation();
    store.start_checkpoint().unwrap();
    assert_eq!(store.log.generation(), first + 1, "the log went on at once");
    store
        .commit(&[remove("q", 1), append("q", message(3, "c"))])
        .unwrap();
    store.commit(&[set_attempt("q", 2, 4)]).unwrap();
    // Due again, but the other half is still being applied: the
    // generation goes on, nobody waits.
    store.start_checkpoint().unwrap();
    assert_eq!((store.log.generation(), store.deferred), (first + 1, 1));
    store.commit(&[append("q", message(4, "d"))]).unwrap();
    assert!(store.redb.shared.applied() < first, "nothing applied yet");
    store.crash();
    let loaded = Store::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(
        contents(&loaded, "q"),
        [(2, "b".into(), 4), (3, "c".into(), 0), (4, "d".into(), 0)]
    );
}

/// What the log in `dir` hands back to replay over the redb file there
/// (its `log.applied`, read first), as the open would replay it.
fn to_replay(dir: &Path) -> (u64, Vec<StoreOp>) {
    let path = dir.join(FILE_NAME);
    let applied = {
        let db = Database::open(&path).unwrap();
        read_meta(&path, &db, META_LOG_APPLIED).unwrap().unwrap()
    };
    let log_path = dir.join(log::FILE_NAME);
    let file = log::open_log_file(&log_path).unwrap();
    let (_, replay) = Log::open(&log_path, file, applied, Layout::Halves).unwrap();
    (applied, replay)
}

#[test]
fn a_crash_after_a_generation_is_applied_replays_only_the_next() {
    // Generation g is in redb; the writer is still in g + 1 (it has not
    // moved back to g's half) when the broker crashes: g + 1 is replayed,
    // g is not (its records are still in its half), nothing is lost.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[append("q", message(1, "a"))]).unwrap();
    store.commit(&[append("q", message(2, "b"))]).unwrap();
    let first = store.log.generation();
    store.start_checkpoint().unwrap();
    store.commit(&[remove("q", 1)]).unwrap();
    store.redb.wait_applied(first).unwrap();
    store.commit(&[append("q", message(3, "c"))]).unwrap();
    store.crash();
    // Operations are idempotent, so what is stored cannot tell whether g
    // was replayed too: what the log hands back can.
    assert_eq!(
        to_replay(dir.path()),
        (first, vec![remove("q", 1), append("q", message(3, "c"))])
    );
    assert_eq!(
        stored(dir.path()),
        [("q".to_string(), 2), ("q".to_string(), 3)]
    );
}

#[test]
fn leftovers_of_an_older_generation_in_a_reused_half_are_never_replayed() {
    // g appends message 1 in one long record, then message 2; g + 1 (the
    // other half) removes message 1; both are applied. g + 2 writes a short record in g's
    // half, over the start of g's long one, and the broker crashes: the
    // rest of g's record is not g + 2's (nor damage), and message 1 does
    // not come back.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let g = store.log.generation();
    store
        .commit(&[append("q", message(1, &"long".repeat(500)))])
        .unwrap();
    let long_end = store.log.offset();
    store.commit(&[append("q", message(2, "b"))]).unwrap();
    store.checkpoint().unwrap();
    store.commit(&[remove("q", 1)]).unwrap();
    store.checkpoint().unwrap();
    assert_eq!(store.log.generation(), g + 2);
    assert_eq!(store.redb.shared.applied(), g + 1);
    store.commit(&[append("q", message(3, "c"))]).unwrap();
    assert!(store.log.offset() < long_end, "the new record is shorter");
    store.crash();
    assert_eq!(
        to_replay(dir.path()),
        (g + 1, vec![append("q", message(3, "c"))])
    );
    assert_eq!(stored_seqs(dir.path()), [2, 3]);
}

/// Two records in one generation, the checkpoint held back, three in the
/// next (the other half), then a crash: where each of the three starts.
fn two_halves_then_crash(dir: &Path) -> Vec<u64> {
    let mut store = Store::open(dir).unwrap();
    for seq in 1..=2u64 {
        store
            .commit(&[append("q", message(seq, &"x".repeat(100)))])
            .unwrap();
    }
    store.redb.pause(true);
    store.start_checkpoint().unwrap();
    let mut starts = Vec::new();
    for seq in 3..=5u64 {
        starts.push(store.log.offset());
        store
            .commit(&[append("q", message(seq, &"y".repeat(100)))])
            .unwrap();
    }
    store.crash();
    starts
}

#[test]
fn a_torn_tail_in_the_second_half_keeps_both_generations() {
    let dir = tempfile::tempdir().unwrap();
    let starts = two_halves_then_crash(dir.path());
    let path = dir.path().join(log::FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = starts[2] as usize;
    for b in &mut bytes[last + 40..last + 140] {
        *b = 0;
    }
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(stored_seqs(dir.path()), [1, 2, 3, 4]);
    // And the log goes on from there.
    let mut store = Store::open(dir.path()).unwrap();
    store.commit(&[append("q", message(6, "f"))]).unwrap();
    store.crash();
    assert_eq!(stored_seqs(dir.path()), [1, 2, 3, 4, 6]);
}

#[test]
fn a_flipped_bit_in_the_first_half_is_refused_though_the_second_checks() {
    let dir = tempfile::tempdir().unwrap();
    two_halves_then_crash(dir.path());
    let path = dir.path().join(log::FILE_NAME);
    let pristine = std::fs::read(&path).unwrap();
    // The first record of the held-back generation, wherever its half is.
    let mut bytes = pristine.clone();
    let needle = "x".repeat(100);
    let at = memchr::memmem::find(&bytes, needle.as_bytes()).unwrap();
    bytes[at + 10] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    assert_refused_as_corrupt(dir.path(), &path, "damaged");
}

#[test]
fn a_torn_tail_in_the_first_half_is_dropped_and_the_second_kept() {
    // A log write fails half done at the end of generation g (its
    // submitter hears so); the log moves on to g + 1 in the other half;
    // a crash while g is being applied. g's half ends in the broken
    // record, which is dropped as a torn tail; g + 1 is kept whole.
    let dir = tempfile::tempdir().unwrap();
    let (mut store, faults) = open_faulty(dir.path());
    store.commit(&[append("q", message(1, "ok"))]).unwrap();
    let err = a_log_write_failing_half_done(&mut store, &faults);
    assert!(matches!(err, StoreError::Write { .. }), "{err:?}");
    faults.log_write_eio.store(false, Ordering::SeqCst);
    store.redb.pause(true);
    store.start_checkpoint().unwrap();
    store.commit(&[append("q", message(3, "ok"))]).unwrap();
    store.crash();
    assert_eq!(stored_seqs(dir.path()), [1, 3]);
}

#[test]
fn a_store_of_format_2_replays_its_log_and_is_upgraded() {
    // Format 2 kept every generation from the start of the log: its
    // records (here of generation 5, which format 3 would look for in the
    // second half) are replayed at open, and the file says format 3 once
    // they are in redb.
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().crash();
    let path = dir.path().join(FILE_NAME);
    write_meta(
        &Database::open(&path).unwrap(),
        &[(META_FORMAT, FORMAT_ONE_LOG), (META_LOG_APPLIED, 4)],
    );
    let log_path = dir.path().join(log::FILE_NAME);
    {
        let file = log::open_log_file(&log_path).unwrap();
        let (mut log, replay) = Log::open(&log_path, file, 4, Layout::Whole).unwrap();
        assert!(replay.is_empty());
        let mut at = 0;
        at += log.write_record_at(
            at,
            5,
            &[append("q", message(1, "a")), append("q", message(2, "b"))],
        );
        log.write_record_at(at, 5, &[remove("q", 1)]);
    }
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(contents(&store.load().unwrap(), "q"), [(2, "b".into(), 0)]);
    let format = with_db(&store, move |db| read_meta(&path, db, META_FORMAT).unwrap());
    assert_eq!(format, Some(FORMAT));
    store.commit(&[append("q", message(3, "c"))]).unwrap();
    store.crash();
    assert_eq!(stored_seqs(dir.path()), [2, 3]);
}

#[test]
fn a_failed_checkpoint_fails_commits_only_once_the_log_is_full() {
    // redb's disk is full: the checkpoint fails on the redb thread, and
    // commits go on in the log's other half; only when that is full too
    // does a commit fail (after one more try of the checkpoint). Once
    // there is room, the next commit applies what was held and goes on;
    // nothing answered Ok is lost.
    let dir = tempfile::tempdir().unwrap();
    let (mut store, faults) = open_faulty_with(dir.path(), SMALL);
    store.commit(&[append("q", message(1, "a"))]).unwrap();
    faults.redb_full.store(true, Ordering::SeqCst);
    store.start_checkpoint().unwrap();
    let body = "p".repeat(8 << 10);
    let mut seq = 1;
    let mut ok = vec![1];
    let err = loop {
        seq += 1;
        match store.commit(&[append("q", message(seq, &body))]) {
            Ok(()) => ok.push(seq),
            Err(e) => break e,
        }
        assert!(seq < 100, "the log never filled");
    };
    assert!(err.is_disk_full(), "{err:?}");
    assert_names_file(&err, store.path());
    assert!(
        ok.len() * body.len() > (SMALL.capacity / 2 * 3 / 4) as usize,
        "{} commits went on while the checkpoint failed",
        ok.len()
    );
    faults.redb_full.store(false, Ordering::SeqCst);
    seq += 1;
    store.commit(&[append("q", message(seq, &body))]).unwrap();
    ok.push(seq);
    store.crash();
    assert_eq!(stored_seqs(dir.path()), ok);
}

#[test]
fn a_huge_batch_waits_for_the_generations_before_it() {
    // A batch larger than half the log goes straight to redb, after the
    // generation being applied (message 1 is removed there before the
    // batch sets it again).
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with_options(dir.path(), SMALL).unwrap();
    store.commit(&[append("q", message(1, "a"))]).unwrap();
    store.commit(&[remove("q", 1)]).unwrap();
    store.start_checkpoint().unwrap();
    let big = "h".repeat((SMALL.capacity / 4) as usize);
    let huge: Vec<StoreOp> = (1..=3u64)
        .map(|seq| append("q", message(seq, &big)))
        .collect();
    store.commit(&huge).unwrap();
    store.commit(&[remove("q", 2)]).unwrap();
    store.crash();
    assert_eq!(stored_seqs(dir.path()), [1, 3]);
}

#[test]
fn a_log_generation_at_the_end_of_its_range_is_refused_as_corrupt() {
    // A redb file whose checksums hold but whose `log.applied` is one no
    // broker could have written (so near u64::MAX that the next
    // generations overflow): refused as corrupt, naming the file, never a
    // panic.
    for applied in [u64::MAX, u64::MAX - 1, u64::MAX - 2] {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap();
        let path = dir.path().join(FILE_NAME);
        write_meta(
            &Database::open(&path).unwrap(),
            &[(META_LOG_APPLIED, applied)],
        );
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert_names_file(&err, &path);
    }
}

#[test]
fn a_wait_for_the_redb_thread_ends_when_the_thread_dies() {
    // The redb thread panics (outside the guard of redb's own calls)
    // while the writer waits for a generation it was to apply: the wait
    // ends with an error instead of lasting forever.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let shared = store.redb.shared.clone();
    // Panics once someone waits (observed, not guessed at).
    store.redb.send(Job::Run(Box::new(move |_| {
        while shared.lock().waiting == 0 {
            std::thread::yield_now();
        }
        panic!("the redb thread dies (injected)");
    })));
    let (done, outcome) = std::sync::mpsc::channel();
    // Its own thread, so that a wait that never ends fails the test
    // instead of hanging it.
    std::thread::spawn(move || {
        let never_handed = store.log.generation();
        let _ = done.send(store.redb.wait_applied(never_handed));
    });
    let result = outcome
        .recv_timeout(Duration::from_secs(60))
        .expect("the wait outlived the redb thread");
    assert!(matches!(result, Err(StoreError::Closed)), "{result:?}");
}

/// Whether redb comes to hold `generation` within a generous bound,
/// without this wait asking for anything (unlike `wait_applied`).
fn applied_without_asking(store: &Store, generation: u64) -> bool {
    let shared = &store.redb.shared;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut progress = shared.lock();
    while progress.applied < generation {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        progress = shared
            .changed
            .wait_timeout(progress, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}

/// A store whose checkpoint of generation g failed (redb's disk full)
/// and whose disk has room again; g.
fn a_failed_checkpoint_then_room(dir: &Path) -> (Store, u64) {
    let (mut store, faults) = open_faulty_with(dir, SMALL);
    store.commit(&[append("q", message(1, "a"))]).unwrap();
    let g = store.log.generation();
    faults.redb_full.store(true, Ordering::SeqCst);
    store.start_checkpoint().unwrap();
    // The checkpoint's failure is known (a job after it has run).
    store.redb.call(|_| ()).unwrap();
    assert!(store.redb.shared.lock().failed.is_some());
    faults.redb_full.store(false, Ordering::SeqCst);
    (store, g)
}

#[test]
fn a_history_read_after_a_failed_checkpoint_reopens_redb() {
    // The checkpoint failed and the disk has room again, with the log far
    // from full: a read of the history is answered (the failed checkpoint
    // is tried first and redb reopened), not refused until the log fills.
    let dir = tempfile::tempdir().unwrap();
    let (store, g) = a_failed_checkpoint_then_room(dir.path());
    let found = store
        .read_history(&HistoryQuery {
            resource: "r".into(),
            since_ms: 0,
            limit: 0,
            max_bytes: 1 << 20,
            now_ms: 1,
            bounds: HistoryBounds::default(),
        })
        .unwrap();
    assert!(found.lines.is_empty());
    assert!(store.redb.shared.applied() >= g, "tried before the read");
    store.crash();
    assert_eq!(stored_seqs(dir.path()), [1]);
}

#[test]
fn a_commit_after_a_failed_checkpoint_has_it_tried_again() {
    // The checkpoint failed and the disk has room again: the next commit
    // (tiny, the log far from full) has it tried again without waiting,
    // as every commit did when each was a redb transaction.
    let dir = tempfile::tempdir().unwrap();
    let (mut store, g) = a_failed_checkpoint_then_room(dir.path());
    store.commit(&[append("q", message(2, "b"))]).unwrap();
    assert!(applied_without_asking(&store, g), "never tried again");
    store.crash();
    assert_eq!(stored_seqs(dir.path()), [1, 2]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_sweep_of_the_history_is_tried_again_at_the_next_commit() {
    // The first transaction with history sweeps every resource; it fails
    // (redb's disk full). The sweep runs on the redb thread after the
    // commit: the next commit, even one without lines, asks for it again
    // (a redb transaction), instead of an hour later.
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = open_faulty(dir.path());
    let writer = StoreWriter::spawn(store).unwrap();
    let bounds = HistoryBounds {
        max_entries: 100,
        max_age_ms: 0,
        ..HistoryBounds::default()
    };
    let query = HistoryQuery {
        resource: "pcm".into(),
        since_ms: 0,
        limit: 0,
        max_bytes: 1 << 20,
        now_ms: 10_000,
        bounds,
    };
    faults.redb_full.store(true, Ordering::SeqCst);
    let mut journal = HistoryJournal::default();
    journal.record_line(&history_line("pcm", 1, 10_000));
    writer.record_history(journal, bounds);
    writer
        .submit(vec![append("q", message(1, "m"))])
        .await
        .unwrap();
    // The submit is answered once the log has it; the sweep runs on the
    // redb thread after that. A read is answered there after it: only
    // then has the sweep failed (clearing the fault any sooner lets it
    // succeed, as it did under Wine).
    let _ = writer.read_history(query.clone()).await;
    faults.redb_full.store(false, Ordering::SeqCst);
    // redb reopened.
    writer.read_history(query.clone()).await.unwrap();
    let before = faults.redb_syncs.load(Ordering::SeqCst);
    writer
        .submit(vec![append("q", message(2, "m"))])
        .await
        .unwrap();
    writer.read_history(query).await.unwrap();
    assert!(
        faults.redb_syncs.load(Ordering::SeqCst) > before,
        "the sweep was not tried again"
    );
}

/// Cuts the log in `dir` to `len(made)` bytes: its length before and after.
fn cut_log(dir: &Path, len: impl Fn(u64) -> u64) -> (u64, u64) {
    let path = dir.join(log::FILE_NAME);
    let made = std::fs::metadata(&path).unwrap().len();
    let cut = len(made);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    (made, cut)
}

#[test]
fn a_log_cut_short_is_refused_naming_both_lengths() {
    // The halves lie where the size the log was made at puts them, not
    // where its length does: a log cut short (to half, by a block, by a
    // length of no whole blocks, by a byte) is refused as truncated,
    // naming both lengths, and left as it is; the records of generation 3,
    // in the second half, were not yet applied.
    let cuts: [fn(u64) -> u64; 4] = [|n| n / 2, |n| n - 4096, |n| n - 1000, |n| n - 1];
    for cut in cuts {
        let dir = tempfile::tempdir().unwrap();
        three_records_then_crash(dir.path());
        let (made, len) = cut_log(dir.path(), cut);
        let path = dir.path().join(log::FILE_NAME);
        assert_refused_as_corrupt(dir.path(), &path, "truncated");
        let err = Store::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("{len} bytes long")), "{err}");
        assert!(err.contains(&format!("made at {made} bytes")), "{err}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            len,
            "left as it is"
        );
    }
}

#[test]
fn a_log_cut_to_the_configured_size_is_refused_not_made_anew() {
    // The configured size changed to what the cut log's length says: the
    // log is still the one made at the old size, cut short, and is refused
    // rather than taken for a log of the new size.
    let dir = tempfile::tempdir().unwrap();
    three_records_then_crash(dir.path());
    let (_, len) = cut_log(dir.path(), |_| log::HEADER + SMALL.capacity);
    let err = Store::open_with_options(dir.path(), SMALL).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
    let path = dir.path().join(log::FILE_NAME);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len,
        "left as it is"
    );
}

#[test]
fn a_log_cut_short_and_extended_back_gives_what_is_left_before_the_cut() {
    // The way out the refusal offers without a backup: the log extended
    // back to its size (zeros where the cut was) opens, with the records
    // before the cut, the one it cut through dropped as a torn tail.
    let dir = tempfile::tempdir().unwrap();
    let starts = three_records_then_crash(dir.path());
    let (made, _) = cut_log(dir.path(), |_| starts[1] + 10);
    let path = dir.path().join(log::FILE_NAME);
    assert_refused_as_corrupt(dir.path(), &path, "truncated");
    cut_log(dir.path(), |_| made);
    assert_eq!(stored_seqs(dir.path()), [1]);
}

#[test]
fn a_log_grown_past_its_size_is_read_at_its_size() {
    // Bytes past the size the log was made at (a copy that padded it)
    // hold nothing of it: its records are read where its size puts them.
    let dir = tempfile::tempdir().unwrap();
    three_records_then_crash(dir.path());
    cut_log(dir.path(), |n| n + 3 * 4096 + 7);
    assert_eq!(stored_seqs(dir.path()), [1, 2, 3]);
}

#[test]
fn a_log_header_that_does_not_check_is_refused() {
    // The size in the header is covered by its CRC: a changed one is
    // damage, not a log of another size.
    let dir = tempfile::tempdir().unwrap();
    three_records_then_crash(dir.path());
    let path = dir.path().join(log::FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[14] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert_refused_as_corrupt(dir.path(), &path, "does not check");
}

#[test]
fn a_log_of_an_earlier_build_replays_and_is_made_anew_with_its_size() {
    // A log whose header is of version 1 (no size in it), as earlier
    // builds left it after a crash: its records are replayed where its
    // length puts them, then it is made anew at the configured size with
    // a header that records it, so that a later cut is noticed.
    let dir = tempfile::tempdir().unwrap();
    three_records_then_crash(dir.path());
    let path = dir.path().join(log::FILE_NAME);
    {
        let file = log::open_log_file(&path).unwrap();
        let (mut log, replay) = Log::open(&path, file, 2, Layout::Halves).unwrap();
        assert_eq!(replay.len(), 3);
        log.write_header_v1();
        let file = log::open_log_file(&path).unwrap();
        let (log, replay) = Log::open(&path, file, 2, Layout::Halves).unwrap();
        assert!(!log.records_capacity());
        assert_eq!(replay.len(), 3, "read as version 1");
    }
    let made = std::fs::metadata(&path).unwrap().len();
    let mut store = Store::open(dir.path()).unwrap();
    assert!(store.log.records_capacity(), "made anew");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), made);
    assert_eq!(contents(&store.load().unwrap(), "q").len(), 3);
    store.commit(&[append("q", message(4, "after"))]).unwrap();
    store.crash();
    cut_log(dir.path(), |n| n / 2);
    assert_refused_as_corrupt(dir.path(), &path, "truncated");
}

#[test]
fn a_log_of_an_earlier_build_and_another_size_is_made_anew_at_the_configured_size() {
    // Both at once: version 1, and a size change.
    let dir = tempfile::tempdir().unwrap();
    three_records_then_crash(dir.path());
    let path = dir.path().join(log::FILE_NAME);
    {
        let file = log::open_log_file(&path).unwrap();
        Log::open(&path, file, 2, Layout::Halves)
            .unwrap()
            .0
            .write_header_v1();
    }
    let mut store = Store::open_with_options(dir.path(), SMALL).unwrap();
    assert!(store.log.records_capacity());
    assert_eq!(store.log.capacity(), SMALL.capacity);
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(len, log::HEADER + SMALL.capacity);
    store.commit(&[append("q", message(4, "after"))]).unwrap();
    store.crash();
    assert_eq!(stored_seqs(dir.path()), [1, 2, 3, 4]);
}

#[test]
fn a_resource_s_lines_from_two_journals_keep_their_holders_and_purposes() {
    // Two hand-overs staged before one commit: a journal's holders are
    // its own (indices), so the first line of the second journal is told
    // from the batch's last by its fields; a holder that changes and
    // comes back, with and without a purpose, reads back as recorded.
    use crate::core::{Peer, SessionId};
    let peer = |name: &str, session| {
        Arc::new(Peer {
            session: SessionId(session),
            client_name: name.into(),
            uid: 1000,
            pid: 7,
            user: "u".into(),
            login_session: String::new(),
        })
    };
    let (a, b) = (peer("a", 1), peer("b", 2));
    let holders = [&a, &a, &a, &a, &b, &a, &a];
    let purposes = ["", "", "x", "x", "x", "", "y"];
    let mut first = HistoryJournal::default();
    let mut second = HistoryJournal::default();
    for (i, (holder, purpose)) in holders.iter().zip(purposes).enumerate() {
        let id = i as u64 + 1;
        let mut line = history_line("pcm", id, 10_000 + id);
        line.ended.lease.holder = Arc::clone(holder);
        line.ended.lease.purpose = Arc::from(purpose);
        if i < 3 { &mut first } else { &mut second }.record_line(&line);
    }
    let mut staged = StagedHistory::from_journal(&first, 1000);
    staged.add(&second, 1000);
    assert_eq!(staged.lines(), 7);
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let bounds = HistoryBounds {
        max_entries: 1000,
        max_age_ms: 0,
        ..HistoryBounds::default()
    };
    store
        .commit_staged(&[], &mut vec![staged], Some((bounds, 20_000, false)))
        .unwrap();
    let found = store
        .read_history(&HistoryQuery {
            resource: "pcm".into(),
            since_ms: 0,
            limit: 0,
            max_bytes: 1 << 20,
            now_ms: 20_000,
            bounds,
        })
        .unwrap();
    let read: Vec<(u64, String, u64, String)> = found
        .lines
        .iter()
        .map(|l| {
            (
                l.lease_id,
                l.client_name.clone(),
                l.session_id,
                l.purpose.clone(),
            )
        })
        .collect();
    let expected: Vec<(u64, String, u64, String)> = holders
        .iter()
        .zip(purposes)
        .enumerate()
        .map(|(i, (h, p))| {
            (
                i as u64 + 1,
                h.client_name.clone(),
                h.session.0,
                p.to_string(),
            )
        })
        .collect();
    assert_eq!(read, expected);
}

/// What is logged (debug and above) while the returned dispatch is the
/// default, by every thread that takes it up (the open's progress thread
/// does).
fn captured_log() -> (tracing::Dispatch, Arc<Mutex<Vec<u8>>>) {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let text = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(text.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    (tracing::Dispatch::new(subscriber), text)
}

fn text_of(log: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&log.lock().unwrap()).into_owned()
}

#[test]
fn an_open_is_logged_when_it_starts_and_when_it_ends_with_its_phases() {
    // A large store takes seconds to open (24 s for 1.1 GB, with nothing
    // logged): its start is logged with the files' sizes, and its end,
    // after the messages are read, with how long it took and each phase.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        store.commit(&[append("q", message(1, "one"))]).unwrap();
        store.commit(&[append("q", message(2, "two"))]).unwrap();
        store.crash();
    }
    let (dispatch, log) = captured_log();
    tracing::dispatcher::with_default(&dispatch, || {
        let mut store = Store::open(dir.path()).unwrap();
        assert!(!text_of(&log).contains("store opened"), "ended by the load");
        assert_eq!(store.load().unwrap().queues[0].1.len(), 2);
    });
    let text = text_of(&log);
    let path = dir.path().join(FILE_NAME).display().to_string();
    let size = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
    let start = text
        .lines()
        .find(|l| l.contains("opening the store"))
        .unwrap_or_else(|| panic!("no start:\n{text}"));
    assert!(start.contains(" INFO "), "{start}");
    assert!(start.contains(&path), "{start}");
    assert!(start.contains(&format!("bytes={size}")), "{start}");
    let end = text
        .lines()
        .find(|l| l.contains("store opened in"))
        .unwrap_or_else(|| panic!("no end:\n{text}"));
    assert!(end.contains(" INFO "), "{end}");
    for phase in [
        "checking and opening the database",
        "reading the log",
        "applying the log to the database",
        "reading the messages",
    ] {
        assert!(end.contains(phase), "{phase} missing: {end}");
    }
    assert!(end.contains("2 operations of the log applied"), "{end}");
    assert!(end.contains("messages=2"), "{end}");
}

#[test]
fn a_long_open_tells_how_far_it_has_got_until_it_ends() {
    // A phase is one long call into redb: its progress is told from a
    // thread of its own, every so often, until the open ends.
    let dir = tempfile::tempdir().unwrap();
    let (dispatch, log) = captured_log();
    let path = dir.path().join(FILE_NAME);
    tracing::dispatcher::with_default(&dispatch, || {
        let opening = Opening::start(
            &path,
            &dir.path().join(log::FILE_NAME),
            Duration::from_millis(10),
        );
        opening.phase("checking and opening the database");
        opening.shared.read.fetch_add(3 << 20, Ordering::Relaxed);
        let start = Instant::now();
        while !text_of(&log).contains("still opening the store") {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{}",
                text_of(&log)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(opening);
    });
    let text = text_of(&log);
    let line = text
        .lines()
        .find(|l| l.contains("still opening the store"))
        .unwrap();
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("checking and opening the database"), "{line}");
    assert!(line.contains("3.0 MiB of the database"), "{line}");
    // Dropped: the thread has stopped, nothing more comes.
    let after = text_of(&log);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(text_of(&log), after);
}
