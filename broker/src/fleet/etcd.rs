//! The fleet task: the broker's registration with etcd, its keep-alive
//! and the one rule that makes `global/` resources safe across hosts.
//!
//! A registration (an *epoch*) is one etcd lease: the host's key, its
//! mirrored resources and its requests in global queues are all bound to
//! it. The keep-alive loop remembers when the last keep-alive that etcd
//! answered was **sent**: etcd renewed the lease no earlier than that, so
//! the lease cannot run out at etcd before `sent + TTL`. At
//! `sent + TTL - margin` without a newer answer, the task tells the core
//! the epoch is lost: every local holder of a `global/` resource is told
//! `Lost` before any other host can be granted it. Then it registers
//! again (a new lease; the old one is revoked if etcd still has it) and
//! the local waiters join their queues again, in their local order.
//!
//! Admissions: the task keeps every global queue (a get, then a watch of
//! `PREFIX/global/`), and admits a local waiter once its key is among the
//! first of its queue that fit together ([`super::admission`]), with its
//! key's create revision as fencing token. An admission is only sent while
//! the epoch is vouched for.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, PutOptions, SortOrder, SortTarget, WatchOptions,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::admission::{self, Request};
use super::keys::Keys;
use super::records::{HostRecord, QueueRecord, ResourceRecord, mode_name, wall_ms};
use super::{FleetConfig, FleetEvent, Inbox};
use crate::core::{
    FencingToken, GLOBAL_PREFIX, LeaseId, LeaseView, MAX_AHEAD, Mode, Peer, SessionId, StateEvent,
};

/// Longest pause between two registration attempts while etcd is away.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a registration ended, for the log and the holders.
type Ended = String;

/// How much one registration is worth: until when it is vouched for, and
/// a token cancelled once it is not.
struct Health {
    valid_until: Mutex<Instant>,
    lost: CancellationToken,
}

impl Health {
    fn valid(&self) -> bool {
        !self.lost.is_cancelled()
            && self
                .valid_until
                .lock()
                .map(|v| Instant::now() < *v)
                .unwrap_or(false)
    }

    fn extend(&self, until: Instant) {
        if let Ok(mut v) = self.valid_until.lock()
            && until > *v
        {
            *v = until;
        }
    }
}

/// One request of a global queue, as the watch shows it.
#[derive(Clone, Debug)]
struct Entry {
    key: String,
    request: Request,
    record: QueueRecord,
}

/// What the task knows of the fleet and of this host.
#[derive(Default)]
struct State {
    /// The newest state of every local resource in use.
    local: HashMap<Arc<str>, Arc<StateEvent>>,
    /// Local states not yet mirrored.
    dirty: HashMap<Arc<str>, Arc<StateEvent>>,
    /// Every global queue: resource -> create revision -> request.
    queues: HashMap<String, BTreeMap<i64, Entry>>,
    /// Key -> (resource, create revision), to apply deletes.
    by_key: HashMap<String, (String, i64)>,
    /// Local waiters with a key in this epoch: lease -> (resource, key).
    joined: HashMap<LeaseId, (String, String)>,
    /// Key -> local lease, for this host's keys.
    mine: HashMap<String, LeaseId>,
    /// Leases admitted in this epoch.
    admitted: HashSet<LeaseId>,
    /// The global place last told for each waiting local lease: position
    /// and the create revisions ahead.
    places: HashMap<LeaseId, (u32, Vec<i64>)>,
}

impl State {
    /// Forgets what belonged to the last epoch (its keys die with it).
    fn new_epoch(&mut self) {
        self.queues.clear();
        self.by_key.clear();
        self.joined.clear();
        self.mine.clear();
        self.admitted.clear();
        self.places.clear();
        self.dirty = self.local.clone();
    }

    fn insert(&mut self, resource: String, rev: i64, entry: Entry) {
        self.by_key
            .insert(entry.key.clone(), (resource.clone(), rev));
        self.queues.entry(resource).or_default().insert(rev, entry);
    }

    fn remove_key(&mut self, key: &str) -> Option<String> {
        let (resource, rev) = self.by_key.remove(key)?;
        if let Some(q) = self.queues.get_mut(&resource) {
            q.remove(&rev);
            if q.is_empty() {
                self.queues.remove(&resource);
            }
        }
        Some(resource)
    }
}

/// Runs registrations one after the other until `stop`.
pub(super) async fn run<T: From<FleetEvent> + Send + 'static>(
    config: FleetConfig,
    inbox: Arc<Inbox>,
    tell: mpsc::Sender<T>,
    stop: CancellationToken,
) {
    let keys = Keys::new(&config.prefix);
    let mut state = State::default();
    let mut epoch = 0u64;
    let mut backoff = Duration::from_millis(100);
    loop {
        epoch += 1;
        state.new_epoch();
        let mut attempt = Attempt::default();
        let ended = tokio::select! {
            _ = stop.cancelled() => None,
            e = registration(&config, &keys, epoch, &inbox, &mut state, &tell, &mut attempt) => Some(e),
        };
        let Some(ended) = ended else {
            // A clean stop: the keys go now rather than at the TTL.
            if let Some((mut client, lease)) = attempt.lease {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
            }
            return;
        };
        tracing::warn!(epoch, "fleet: registration with etcd ended: {ended}");
        let _ = tell
            .send(T::from(FleetEvent::Lost {
                epoch,
                detail: ended,
            }))
            .await;
        if let Some((mut client, lease)) = attempt.lease {
            // Our keys must not keep old places in the queues.
            let _ =
                tokio::time::timeout(Duration::from_millis(500), client.lease_revoke(lease)).await;
        }
        if attempt.registered {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// An etcd call bounded by `limit` and by the registration's health.
async fn call<R>(
    health: &Health,
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<R, etcd_client::Error>>,
) -> Result<R, Ended> {
    tokio::select! {
        _ = health.lost.cancelled() => Err(format!("{what}: the etcd lease is lost")),
        r = tokio::time::timeout(limit, fut) => match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => Err(format!("{what}: etcd did not answer within {} ms", limit.as_millis())),
        },
    }
}

/// One registration's link to etcd: its client, its lease, and what
/// bounds every call (the TTL, and the registration's health).
struct Link<'a> {
    config: &'a FleetConfig,
    keys: &'a Keys,
    client: Client,
    lease: i64,
    health: Arc<Health>,
    limit: Duration,
}

impl Link<'_> {
    /// Puts `key`, bound to the registration's lease.
    async fn put(&mut self, what: &str, key: String, value: Vec<u8>) -> Result<(), Ended> {
        let options = Some(PutOptions::new().with_lease(self.lease));
        let put = self.client.put(key, value, options);
        call(&self.health, self.limit, what, put).await.map(drop)
    }

    /// Deletes `key`.
    async fn delete(&mut self, what: &str, key: String) -> Result<(), Ended> {
        let delete = self.client.delete(key, None);
        call(&self.health, self.limit, what, delete).await.map(drop)
    }
}

/// What became of one registration attempt: whether it got as far as
/// serving, and its etcd lease (to revoke when it ends).
#[derive(Default)]
struct Attempt {
    registered: bool,
    lease: Option<(Client, i64)>,
}

/// One registration: from the lease grant until it is lost. Returns why
/// it ended.
async fn registration<T: From<FleetEvent> + Send + 'static>(
    config: &FleetConfig,
    keys: &Keys,
    epoch: u64,
    inbox: &Inbox,
    state: &mut State,
    tell: &mpsc::Sender<T>,
    attempt: &mut Attempt,
) -> Ended {
    let limit = config.ttl;
    let options = ConnectOptions::new()
        .with_connect_timeout(limit)
        .with_timeout(limit)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    let mut client = match tokio::time::timeout(
        limit,
        Client::connect(config.endpoints.clone(), Some(options)),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return format!("cannot connect to etcd {:?}: {e}", config.endpoints),
        Err(_) => return format!("cannot connect to etcd {:?}: timed out", config.endpoints),
    };
    let sent = Instant::now();
    let ttl_secs = config.ttl.as_secs().max(1) as i64;
    let grant = match tokio::time::timeout(limit, client.lease_grant(ttl_secs, None)).await {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return format!("etcd refused a lease: {e}"),
        Err(_) => return "etcd did not grant a lease in time".to_string(),
    };
    // etcd may raise a short TTL to its minimum: the answer is the truth.
    let ttl = Duration::from_secs(grant.ttl().max(1) as u64);
    let lease = grant.id();
    attempt.lease = Some((client.clone(), lease));
    let margin = config.margin(ttl);
    let health = Arc::new(Health {
        valid_until: Mutex::new(sent + ttl - margin),
        lost: CancellationToken::new(),
    });
    let keeper = tokio::spawn(keep_alive(
        Keeper {
            client: client.clone(),
            lease,
            ttl,
            margin,
            granted_sent: sent,
            health: health.clone(),
            epoch,
        },
        tell.clone(),
    ));
    let _abort = AbortOnDrop(keeper);

    let host = HostRecord {
        host: config.host.clone(),
        broker_version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        registered_at_ms: wall_ms(),
        ttl_ms: ttl.as_millis() as u64,
        etcd_lease: format!("{lease:x}"),
    };
    let mut link = Link {
        config,
        keys,
        client: client.clone(),
        lease,
        health: health.clone(),
        limit,
    };
    let record = serde_json::to_vec(&host).unwrap_or_default();
    if let Err(e) = link
        .put("registering the host", keys.host(&config.host), record)
        .await
    {
        return e;
    }

    // Every global queue as it stands, then every change after it.
    let listing = match call(
        &health,
        limit,
        "reading the global queues",
        client.get(
            keys.global(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Ascend),
            ),
        ),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => return e,
    };
    let start = listing.header().map_or(0, |h| h.revision()) + 1;
    for kv in listing.kvs() {
        apply_put(keys, state, kv);
    }
    let mut watch = match call(
        &health,
        limit,
        "watching the global queues",
        client.watch(
            keys.global(),
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        ),
    )
    .await
    {
        Ok(w) => w,
        Err(e) => return e,
    };
    attempt.registered = true;
    tracing::info!(
        epoch,
        host = %config.host,
        lease = %format!("{lease:x}"),
        ttl_ms = ttl.as_millis() as u64,
        "fleet: registered with etcd"
    );

    // Local waiters (back) in their queues, in their local order.
    let mut touched: HashSet<String> = state
        .local
        .keys()
        .filter(|n| n.starts_with(GLOBAL_PREFIX))
        .map(|n| n.to_string())
        .collect();
    let mut mirror = tokio::time::interval(config.mirror_interval);
    mirror.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        for name in std::mem::take(&mut touched) {
            if let Err(e) = sync_queue(&mut link, state, &name).await {
                return e;
            }
            if let Err(e) = admit(epoch, &health, state, &name, tell).await {
                return e;
            }
        }
        tokio::select! {
            _ = health.lost.cancelled() => {
                return "the etcd lease could not be kept alive".to_string();
            }
            _ = inbox.changed() => {
                for event in inbox.take() {
                    let name = event.state.resource.clone();
                    if name.starts_with(GLOBAL_PREFIX) {
                        touched.insert(name.to_string());
                    }
                    if event.state.holders.is_empty() && event.state.waiters.is_empty() {
                        state.local.remove(&name);
                    } else {
                        state.local.insert(name.clone(), event.clone());
                    }
                    state.dirty.insert(name, event);
                }
            }
            m = watch.message() => match m {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        return format!(
                            "etcd cancelled the watch of the global queues (compacted at {}): {}",
                            resp.compact_revision(),
                            resp.cancel_reason()
                        );
                    }
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        match event.event_type() {
                            EventType::Put => {
                                if let Some(r) = apply_put(keys, state, kv) {
                                    touched.insert(r);
                                }
                            }
                            EventType::Delete => {
                                let key = String::from_utf8_lossy(kv.key()).into_owned();
                                if state.mine.contains_key(&key) {
                                    // Not by us: we forget a key before we delete it.
                                    // Its place is gone (our lease expired at etcd, or
                                    // someone deleted it): this registration can vouch
                                    // for nothing any more.
                                    return format!(
                                        "this broker's request {key} vanished from etcd \
                                         (its etcd lease expired, or it was deleted)"
                                    );
                                }
                                if let Some(r) = state.remove_key(&key) {
                                    touched.insert(r);
                                }
                            }
                        }
                    }
                }
                Ok(None) => return "etcd closed the watch of the global queues".to_string(),
                Err(e) => return format!("the watch of the global queues failed: {e}"),
            },
            _ = mirror.tick(), if !state.dirty.is_empty() => {
                if let Err(e) = write_mirror(&mut link, state).await {
                    return e;
                }
            }
        }
    }
}

/// Records a put seen in a global queue; answers its resource.
fn apply_put(keys: &Keys, state: &mut State, kv: &etcd_client::KeyValue) -> Option<String> {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let resource = keys.waiter_resource(&key)?;
    let record: QueueRecord = serde_json::from_slice(kv.value()).ok()?;
    let entry = Entry {
        key: key.clone(),
        request: Request {
            exclusive: record.mode == mode_name(Mode::Exclusive),
            permits: record.permits,
            capacity: record.capacity,
        },
        record,
    };
    state.remove_key(&key);
    state.insert(resource.clone(), kv.create_revision(), entry);
    Some(resource)
}

/// Puts a key for every local request of `name` that has none yet (in
/// local order, so their create revisions keep that order) and deletes
/// the keys of requests that ended.
async fn sync_queue(link: &mut Link<'_>, state: &mut State, name: &str) -> Result<(), Ended> {
    let (config, keys, lease) = (link.config, link.keys, link.lease);
    let event = state.local.get(name).cloned();
    let view = event.as_ref().map(|e| &e.state);
    let live: HashSet<LeaseId> = view
        .iter()
        .flat_map(|v| v.holders.iter().chain(v.waiters.iter()))
        .map(|l| l.lease_id)
        .collect();
    let gone: Vec<(LeaseId, String)> = state
        .joined
        .iter()
        .filter(|(l, (r, _))| r == name && !live.contains(l))
        .map(|(l, (_, k))| (*l, k.clone()))
        .collect();
    for (l, key) in gone {
        // Forgotten first: the watch's delete of it is then not a surprise.
        state.mine.remove(&key);
        link.delete("leaving a global queue", key.clone()).await?;
        state.joined.remove(&l);
        state.admitted.remove(&l);
        state.places.remove(&l);
        state.remove_key(&key);
    }
    let Some(view) = view else {
        return Ok(());
    };
    for w in &view.waiters {
        if state.joined.contains_key(&w.lease_id) {
            continue;
        }
        let key = keys.waiter(name, &config.host, lease, w.lease_id.0);
        let record = QueueRecord {
            host: config.host.clone(),
            lease_id: w.lease_id.0,
            mode: mode_name(w.mode).to_string(),
            permits: w.permits,
            capacity: view.capacity,
            purpose: w.purpose.to_string(),
            client: w.holder.client_name.clone(),
            pid: w.holder.pid,
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        link.put("joining a global queue", key.clone(), value)
            .await?;
        // Not put in `queues` here: the watch shows it, after every
        // change before it, so that its admission is decided on a queue
        // complete up to its own revision (deciding on this answer, another
        // host's older key not yet seen, granted both at once).
        state
            .joined
            .insert(w.lease_id, (name.to_string(), key.clone()));
        state.mine.insert(key, w.lease_id);
    }
    Ok(())
}

/// Admits this host's requests among the head of `name`'s queue.
async fn admit<T: From<FleetEvent>>(
    epoch: u64,
    health: &Health,
    state: &mut State,
    name: &str,
    tell: &mpsc::Sender<T>,
) -> Result<(), Ended> {
    let Some(queue) = state.queues.get(name) else {
        return Ok(());
    };
    let requests: Vec<Request> = queue.values().map(|e| e.request).collect();
    let n = admission::admitted(&requests);
    let mut admits = Vec::new();
    for (rev, entry) in queue.iter().take(n) {
        if let Some(&lease) = state.mine.get(&entry.key)
            && !state.admitted.contains(&lease)
        {
            admits.push((lease, *rev));
        }
    }
    // Where each local waiter stands across hosts, told when it moved.
    let entries: Vec<(i64, &Entry)> = queue.iter().map(|(r, e)| (*r, e)).collect();
    let mut places = Vec::new();
    for (i, (_, e)) in entries.iter().enumerate().skip(n) {
        let Some(&lease) = state.mine.get(&e.key) else {
            continue;
        };
        let position = (i - n + 1) as u32;
        let shown = &entries[..i.min(MAX_AHEAD)];
        let revs: Vec<i64> = shown.iter().map(|(r, _)| *r).collect();
        if state.places.get(&lease) == Some(&(position, revs.clone())) {
            continue;
        }
        let ahead = shown
            .iter()
            .enumerate()
            .map(|(j, (rev, a))| remote_view(name, *rev, &a.record, j, n))
            .collect();
        state.places.insert(lease, (position, revs));
        places.push(FleetEvent::Place {
            epoch,
            lease,
            position,
            ahead,
        });
    }
    for place in places {
        if tell.send(T::from(place)).await.is_err() {
            return Err("the core task is gone".to_string());
        }
    }
    for (lease, rev) in admits {
        if !health.valid() {
            return Err("the etcd lease is no longer vouched for".to_string());
        }
        state.admitted.insert(lease);
        let event = FleetEvent::Admit {
            epoch,
            lease,
            token: FencingToken(rev.max(0) as u64),
        };
        if tell.send(T::from(event)).await.is_err() {
            return Err("the core task is gone".to_string());
        }
    }
    Ok(())
}

/// A request of another host (or of this one), as a waiter's `ahead`
/// shows it: `client on host`, its fencing token once admitted.
fn remote_view(name: &str, rev: i64, r: &QueueRecord, index: usize, admitted: usize) -> LeaseView {
    let held = index < admitted;
    LeaseView {
        lease_id: LeaseId(r.lease_id),
        resource: Arc::from(name),
        mode: if r.mode == mode_name(Mode::Exclusive) {
            Mode::Exclusive
        } else {
            Mode::Shared
        },
        purpose: Arc::from(r.purpose.as_str()),
        holder: Arc::new(Peer {
            session: SessionId(0),
            client_name: format!("{} on {}", r.client, r.host),
            uid: 0,
            pid: r.pid,
            user: String::new(),
            login_session: String::new(),
        }),
        fencing: held.then_some(FencingToken(rev.max(0) as u64)),
        progress: None,
        granted_at: None,
        queued_at: None,
        expires_at: None,
        position: if held {
            0
        } else {
            (index - admitted + 1) as u32
        },
        permits: r.permits,
        detached: false,
        stalled: false,
        // Another host's wait is not this broker's to estimate.
        estimated_wait_ms: None,
    }
}

/// Writes the newest state of every resource that changed (one write per
/// resource per round: the coalescing that keeps a busy host from
/// flooding etcd).
async fn write_mirror(link: &mut Link<'_>, state: &mut State) -> Result<(), Ended> {
    let dirty = std::mem::take(&mut state.dirty);
    for (name, event) in dirty {
        let view = &event.state;
        let key = link.keys.resource(&link.config.host, &name);
        if view.holders.is_empty() && view.waiters.is_empty() {
            link.delete("mirroring a resource", key).await?;
        } else {
            let record = ResourceRecord::of(view, wall_ms());
            let value = serde_json::to_vec(&record).unwrap_or_default();
            link.put("mirroring a resource", key, value).await?;
        }
    }
    Ok(())
}

/// What the keep-alive loop of one registration needs.
struct Keeper {
    client: Client,
    lease: i64,
    /// The lease's TTL, as etcd granted it.
    ttl: Duration,
    /// How long before `sent + TTL` the registration is given up.
    margin: Duration,
    /// When the lease grant was sent.
    granted_sent: Instant,
    health: Arc<Health>,
    epoch: u64,
}

/// Keeps the etcd lease alive; tells the core the epoch is lost at
/// `last answered keep-alive sent + TTL - margin`, or at once if etcd says
/// the lease is gone.
async fn keep_alive<T: From<FleetEvent>>(keeper: Keeper, tell: mpsc::Sender<T>) {
    let Keeper {
        mut client,
        lease,
        ttl,
        margin,
        granted_sent,
        health,
        epoch,
    } = keeper;
    let interval = (ttl / 4).max(Duration::from_millis(100));
    let mut last_ok = granted_sent;
    let mut stream = None;
    let mut sent: VecDeque<Instant> = VecDeque::new();
    let mut next_send = Instant::now() + interval;
    let lost = |detail: String| {
        let tell = tell.clone();
        let health = health.clone();
        async move {
            health.lost.cancel();
            let _ = tell.send(T::from(FleetEvent::Lost { epoch, detail })).await;
        }
    };
    loop {
        let deadline = last_ok + ttl - margin;
        if stream.is_none() {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(interval);
            // Opening the stream sends a keep-alive and waits for its
            // answer: an answered renewal like any other.
            let opened = Instant::now();
            match tokio::time::timeout(wait, client.lease_keep_alive(lease)).await {
                Ok(Ok(s)) => {
                    stream = Some(s);
                    sent.clear();
                    last_ok = last_ok.max(opened);
                    health.extend(last_ok + ttl - margin);
                }
                Ok(Err(e)) => tracing::debug!("fleet: keep-alive stream: {e}"),
                Err(_) => {}
            }
        }
        if Instant::now() >= deadline {
            lost(format!(
                "this broker could not keep its place in the fleet: etcd answered no keep-alive \
                 sent in the last {} ms (lease TTL {} ms); global leases are given up before \
                 the lease can run out at etcd, so that no other host holds them at once",
                (Instant::now() - last_ok).as_millis(),
                ttl.as_millis()
            ))
            .await;
            return;
        }
        let Some((keeper, responses)) = stream.as_mut() else {
            tokio::time::sleep(interval.min(deadline - Instant::now())).await;
            continue;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = tokio::time::sleep_until(next_send) => {
                let now = Instant::now();
                next_send = now + interval;
                if keeper.keep_alive().await.is_ok() {
                    sent.push_back(now);
                } else {
                    stream = None;
                }
            }
            m = responses.message() => match m {
                Ok(Some(r)) => {
                    let at = sent.pop_front();
                    if r.ttl() <= 0 {
                        lost(format!(
                            "etcd says this broker's lease {lease:x} is gone (it expired or was revoked)"
                        ))
                        .await;
                        return;
                    }
                    if let Some(at) = at {
                        last_ok = last_ok.max(at);
                        health.extend(last_ok + ttl - margin);
                    }
                }
                Ok(None) | Err(_) => stream = None,
            },
        }
    }
}

/// Aborts the keep-alive task when its registration ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
