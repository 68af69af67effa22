//! Group commit: one thread owns the [`Store`] and turns every batch of
//! [`StoreOp`]s submitted while it was busy into one transaction (one
//! record appended to the store's log), so that concurrent publishes share
//! one fsync instead of paying one each. When the log is due, the thread
//! hands its generation to the store's redb thread after answering the
//! batch that made it due, and goes on at once in the log's other half
//! ([`Store::start_checkpoint`]); when it stops, dropping the store
//! checkpoints what is left.
//!
//! It owns the thread and the submission queue; it does not decide what to
//! write, nor retry: a failed transaction is reported to each of its
//! submitters, and the next one is tried afresh.
//!
//! History lines ([`StoreWriter::record_history`], a journal of the leases
//! that ended, in the order they ended) are grouped per resource and
//! encoded here, and ride along: they join the next transaction, whatever
//! else it carries, and nobody waits for them (a failed one is logged): the store hands them to its redb thread, which commits them
//! in order with its checkpoints. Reads of the history are handed to the
//! redb thread after the transaction they arrived with, and answered
//! there, so a read sees every line recorded before it, and this thread
//! does not wait for it.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::{
    HistoryBounds, HistoryJournal, HistoryQuery, Recorded, StagedHistory, Store, StoreError,
};
use crate::core::queues::StoreOp;

/// Most submissions shared by one transaction, so that a flood of them
/// does not keep the first submitter waiting for one huge commit.
const MAX_BATCH: usize = 1024;

/// The longest the writer waits for more submitters when the previous
/// transaction had more of them than it has yet. Submitters answered
/// together resubmit one by one; without the wait the first one would be
/// committed alone and the rest would wait for a second sync. It waits at
/// most as long as the last commit took (its sync, mostly): past that, a
/// second commit for the latecomers costs less than the wait. So on a
/// disk whose sync is ~150 µs it waits up to ~150 µs (the fixed 200 µs
/// measured in the redb days: 4.1 submits per transaction without a wait,
/// 8.0 with it, with 8 submitters), on a fast one (tmpfs) not at all, and
/// on a disk slowed down by others' writes up to this bound. A lone
/// submitter never waits.
const LINGER: Duration = Duration::from_millis(1);

/// How a submitter learns its transaction's outcome.
enum Answer {
    /// A future waits on it ([`StoreWriter::enqueue`]).
    Channel(oneshot::Sender<Result<(), StoreError>>),
    /// Called on the writer thread ([`StoreWriter::enqueue_then`]).
    Call(CallOnce),
}

impl Answer {
    fn send(self, result: Result<(), StoreError>) {
        match self {
            // A submitter that stopped waiting does not need the answer.
            Answer::Channel(done) => {
                let _ = done.send(result);
            }
            Answer::Call(mut then) => then.call(result),
        }
    }
}

thread_local! {
    /// Set on the writer thread while it hands out one transaction's answers.
    static ANSWERING: Cell<bool> = const { Cell::new(false) };
    /// What [`after_answers`] was given meanwhile.
    static AFTER_ANSWERS: RefCell<Vec<Box<dyn FnOnce()>>> = const { RefCell::new(Vec::new()) };
}

/// Called from a [`StoreWriter::enqueue_then`] callback: runs `f` on the
/// writer thread once every callback of the same transaction has been
/// called, so that answers the callbacks gathered can leave together.
/// Anywhere else (a callback called with `Closed` as it is dropped, say),
/// runs `f` at once.
///
/// Why: every answer sent on its own wakes its receiver, and on a shared
/// CPU the woken thread takes the CPU at once: measured (issue 14, fourth
/// session, `perf sched` trace of 8 publishers), the writer thread was
/// preempted after each answer, so that 8 answers cost 8 round trips
/// writer -> runtime thread -> client -> runtime thread -> writer
/// (~50 us each) before the next commit could gather its 8 publishes.
pub fn after_answers(f: impl FnOnce() + 'static) {
    if ANSWERING.get() {
        AFTER_ANSWERS.with_borrow_mut(|after| after.push(Box::new(f)));
    } else {
        f();
    }
}

/// Hands one transaction's outcome to each of its submitters, then runs
/// what their callbacks left for afterwards ([`after_answers`]).
fn answer_all(answers: Vec<Answer>, result: &Result<(), StoreError>) {
    ANSWERING.set(true);
    for done in answers {
        done.send(result.clone());
    }
    ANSWERING.set(false);
    for f in AFTER_ANSWERS.take() {
        f();
    }
}

/// A callback called exactly once: with the outcome, or with
/// [`StoreError::Closed`] when it is dropped unanswered (the writer thread
/// ended without reaching it), as a oneshot's receiver would learn.
struct CallOnce(Option<Then>);

/// What [`StoreWriter::enqueue_then`] calls with the outcome.
type Then = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

impl CallOnce {
    fn call(&mut self, result: Result<(), StoreError>) {
        if let Some(then) = self.0.take() {
            then(result);
        }
    }
}

impl Drop for CallOnce {
    fn drop(&mut self) {
        self.call(Err(StoreError::Closed));
    }
}

enum Request {
    Commit {
        ops: Vec<StoreOp>,
        done: Answer,
    },
    /// Lines for the history table: committed with the next transaction.
    History {
        journal: HistoryJournal,
        bounds: HistoryBounds,
    },
    /// A read of the history, answered after the transaction in progress.
    ReadHistory {
        query: HistoryQuery,
        done: oneshot::Sender<Result<Recorded, StoreError>>,
    },
    /// Sent when the last handle goes: everything queued before it is
    /// committed first.
    Stop,
}

/// How often every resource's history is bounded, besides those written to.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

struct Inner {
    requests: mpsc::UnboundedSender<Request>,
    thread: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Stop);
        if let Some(thread) = self.thread.take() {
            // The thread only commits what was queued, then closes the file.
            let _ = thread.join();
        }
    }
}

/// A handle on the store's writer thread. Clones share the thread; when the
/// last one is dropped, the thread commits what was already submitted,
/// closes the file and ends (the drop waits for that).
///
/// The submission queue is unbounded: what waits in it is bounded by the
/// queue limits, since every publish holds its reservation until answered.
#[derive(Clone)]
pub struct StoreWriter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("commits", &self.commits())
            .finish()
    }
}

impl StoreWriter {
    /// Starts the writer thread, which owns `store` from now on.
    pub fn spawn(store: Store) -> std::io::Result<StoreWriter> {
        let (requests, receiver) = mpsc::unbounded_channel();
        let commits = store.commit_counter();
        let thread = std::thread::Builder::new()
            .name("turnstile-store".to_string())
            .spawn(move || run(store, receiver))?;
        Ok(StoreWriter {
            inner: Arc::new(Inner {
                requests,
                thread: Some(thread),
                commits,
            }),
        })
    }

    /// Commits `ops` durably, in one transaction with whatever else was
    /// submitted meanwhile. `Ok` means they survive a crash.
    pub async fn submit(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        self.enqueue(ops).await
    }

    /// Like [`StoreWriter::submit`], but `ops` join the submission queue
    /// now, when this is called, rather than when the returned future is
    /// first polled: batches enqueued one after the other from one task are
    /// committed in that order (in the same transaction or a later one)
    /// even when the futures are awaited by different tasks. The dispatch
    /// layer relies on it: a message moved to a dead-letter queue must not
    /// be removed there by an `Ack` committed before the move.
    pub fn enqueue(
        &self,
        ops: Vec<StoreOp>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (done, answer) = oneshot::channel();
        let sent = self
            .inner
            .requests
            .send(Request::Commit {
                ops,
                done: Answer::Channel(done),
            })
            .is_ok();
        async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            answer.await.unwrap_or(Err(StoreError::Closed))
        }
    }

    /// Like [`StoreWriter::enqueue`] (the same order), but the outcome is
    /// handed to `then`, called on the writer thread as soon as the
    /// transaction ends: no future, no task to wake. `then` must be quick
    /// and must not block (every submitter of the transaction waits behind
    /// it): a send on a channel, not a wait. It is called exactly once;
    /// with [`StoreError::Closed`], at once, if the writer has stopped.
    ///
    /// Measured (issue 14, fourth session, callgrind of 200 publishes):
    /// 3.2 k fewer instructions per publish on the runtime thread than an
    /// answer through a oneshot awaited by a spawned task.
    pub fn enqueue_then(
        &self,
        ops: Vec<StoreOp>,
        then: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) {
        let request = Request::Commit {
            ops,
            done: Answer::Call(CallOnce(Some(Box::new(then)))),
        };
        // A refused request is dropped here, and its callback with it:
        // called with `Closed`.
        let _ = self.inner.requests.send(request);
    }

    /// Records history lines with the next transaction, bounded by
    /// `bounds`; nobody waits for them (a failed write is logged).
    pub fn record_history(&self, journal: HistoryJournal, bounds: HistoryBounds) {
        let _ = self
            .inner
            .requests
            .send(Request::History { journal, bounds });
    }

    /// Reads history, after every line recorded before this call.
    pub fn read_history(
        &self,
        query: HistoryQuery,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send + 'static {
        let (done, answer) = oneshot::channel();
        let sent = self
            .inner
            .requests
            .send(Request::ReadHistory { query, done })
            .is_ok();
        async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            answer.await.unwrap_or(Err(StoreError::Closed))
        }
    }

    /// Transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }
}

/// The writer thread: wait for one request, take every other one already
/// queued (lingering briefly if the last transaction was fuller), commit
/// them together, answer each.
fn run(mut store: Store, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut batch: Vec<(Vec<StoreOp>, Answer)> = Vec::new();
    let mut ops: Vec<StoreOp> = Vec::new();
    let mut history = Pending::default();
    let mut stopping = false;
    let mut last_batch = 0usize;
    // How long the last commit took: lingering longer than one commit
    // would cost more than committing the latecomers in a second one.
    let mut last_commit = Duration::ZERO;
    while !stopping {
        match requests.blocking_recv() {
            None | Some(Request::Stop) => break,
            Some(other) => history.take(other, &mut batch),
        }
        let started = Instant::now();
        let linger = last_commit.min(LINGER);
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(Request::Stop) => {
                    stopping = true;
                    break;
                }
                Ok(other) => history.take(other, &mut batch),
                Err(TryRecvError::Empty)
                    if batch.len() < last_batch && started.elapsed() < linger =>
                {
                    std::thread::yield_now();
                }
                Err(_) => break,
            }
        }
        last_batch = batch.len();
        if batch.is_empty() && history.staged.is_empty() {
            history.answer_reads(&store);
            continue;
        }
        let mut answers = Vec::with_capacity(batch.len());
        for (mut submitted, done) in batch.drain(..) {
            ops.append(&mut submitted);
            answers.push(done);
        }
        // The sweep is done on the redb thread, after the commit: one that
        // failed there is asked for again now, not an hour later.
        if store.take_sweep_failed() {
            history.swept = None;
        }
        let bounds = history.bounds();
        let committing = Instant::now();
        let result = store.commit_staged(&ops, &mut history.staged, bounds);
        if !ops.is_empty() {
            last_commit = committing.elapsed();
        }
        ops.clear();
        if let Err(e) = &result
            && !history.staged.is_empty()
        {
            tracing::warn!(
                "{} lines of lease history were not stored: {e}",
                history
                    .staged
                    .iter()
                    .map(StagedHistory::lines)
                    .sum::<usize>()
            );
        }
        if result.is_ok() && bounds.is_some_and(|(_, _, swept)| swept) {
            history.swept = Some(Instant::now());
        }
        history.staged.clear();
        answer_all(answers, &result);
        history.answer_reads(&store);
        // After the answers. Only handed to the redb thread: the next
        // commit goes on in the log's other half meanwhile.
        if store.checkpoint_due()
            && let Err(e) = store.start_checkpoint()
        {
            tracing::warn!("the store's log could not be checkpointed: {e}");
        }
    }
    // What was recorded before the stop is kept.
    if !history.staged.is_empty() {
        let bounds = history.bounds();
        if let Err(e) = store.commit_staged(&[], &mut history.staged, bounds) {
            tracing::warn!("lease history not stored at shutdown: {e}");
        }
    }
}

/// The history lines and reads of the transaction being gathered.
#[derive(Default)]
struct Pending {
    /// Usually one hand-over per transaction; committed in order.
    staged: Vec<StagedHistory>,
    bounds: Option<HistoryBounds>,
    reads: Vec<(HistoryQuery, oneshot::Sender<Result<Recorded, StoreError>>)>,
    /// When every resource was last handed over to be bounded; `None`
    /// again once that sweep is known to have failed.
    swept: Option<Instant>,
}

impl Pending {
    /// Files a request away: a commit into `batch`, history here.
    fn take(&mut self, request: Request, batch: &mut Vec<(Vec<StoreOp>, Answer)>) {
        match request {
            Request::Commit { ops, done } => batch.push((ops, done)),
            Request::History { journal, bounds } => {
                self.staged
                    .push(StagedHistory::from_journal(&journal, bounds.max_entries));
                self.bounds = Some(bounds);
            }
            Request::ReadHistory { query, done } => self.reads.push((query, done)),
            Request::Stop => {}
        }
    }

    /// The bounds to apply with this transaction, wall-clock now, and
    /// whether every resource is due to be bounded.
    fn bounds(&self) -> Option<(HistoryBounds, u64, bool)> {
        let bounds = self.bounds?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let sweep = self.swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY);
        Some((bounds, now_ms, sweep))
    }

    /// Hands the reads to the redb thread, which answers them after the
    /// lines handed to it before.
    fn answer_reads(&mut self, store: &Store) {
        for (query, done) in self.reads.drain(..) {
            store.read_history_then(query, done);
        }
    }
}
