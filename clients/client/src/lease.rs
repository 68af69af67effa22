//! Leases from the client's side: a request builder, a pending request that
//! reports its queue position, and a held [`Lease`] that keeps itself alive,
//! hears yield requests and can be re-attached after a restart
//! ([`ResumeToken`]).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use turnstile_proto::v1::{self, acquire_reply::Outcome, client_frame::Body, lease_update, reply};

use crate::{Client, ClientError, Push, unexpected};

/// Why a lease (or a place in the queue) was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseLost {
    /// The broker's reason; `None` when the connection itself was lost.
    pub reason: Option<v1::LostReason>,
    /// A sentence for humans.
    pub detail: String,
}

/// A lease request being built. EXCLUSIVE and queued unless told otherwise.
#[must_use = "a lease request does nothing until it is started or awaited"]
pub struct AcquireBuilder {
    client: Client,
    req: v1::Acquire,
}

impl AcquireBuilder {
    pub(crate) fn new(client: Client, resource: &str) -> AcquireBuilder {
        AcquireBuilder {
            client,
            req: v1::Acquire {
                resource: resource.to_string(),
                mode: v1::Mode::Exclusive as i32,
                ttl_ms: 0,
                wait: v1::WaitPolicy::Queue as i32,
                max_wait_ms: 0,
                purpose: String::new(),
                ..v1::Acquire::default()
            },
        }
    }

    /// Permits of a counting semaphore this SHARED lease takes (default 1).
    pub fn permits(mut self, permits: u32) -> Self {
        self.req.permits = permits;
        self
    }

    /// The resource's capacity as a counting semaphore: at most this many
    /// permits held at once. Must match the resource's if it has one.
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.req.capacity = capacity;
        self
    }

    /// Keep the lease (or the place in the queue) this long after the
    /// connection closes, for [`Client::reattach`] with its
    /// [`ResumeToken`].
    pub fn detach_grace(mut self, grace: Duration) -> Self {
        self.req.detach_grace_ms = grace.as_millis().clamp(1, u128::from(u32::MAX)) as u32;
        self
    }

    /// Call the holder stalled (stuck) after this long without a progress
    /// report while it keeps the lease alive.
    pub fn stall_after(mut self, after: Duration) -> Self {
        self.req.stall_after_ms = after.as_millis().clamp(1, u128::from(u32::MAX)) as u32;
        self
    }

    /// SHARED: held together with other SHARED holders.
    pub fn shared(mut self) -> Self {
        self.req.mode = v1::Mode::Shared as i32;
        self
    }

    /// EXCLUSIVE (the default).
    pub fn exclusive(mut self) -> Self {
        self.req.mode = v1::Mode::Exclusive as i32;
        self
    }

    /// Time to live; the lease keeps itself alive at a third of it.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.req.ttl_ms = ttl.as_millis().min(u128::from(u32::MAX)) as u32;
        self
    }

    /// Fail with `ERROR_CODE_BUSY` instead of queueing.
    pub fn no_wait(mut self) -> Self {
        self.req.wait = v1::WaitPolicy::NoWait as i32;
        self
    }

    /// Leave the queue after this long (the default is to wait as long as
    /// it takes).
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.req.max_wait_ms = d.as_millis().clamp(1, u128::from(u32::MAX)) as u32;
        self
    }

    /// What the lease is for, shown to everyone who looks.
    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.req.purpose = purpose.into();
        self
    }

    /// Sends the request: granted at once, or queued.
    pub async fn start(self) -> Result<Pending, ClientError> {
        let r = self.client.call(Body::Acquire(self.req.clone())).await?;
        Pending::from_reply(self.client, self.req.resource, r)
    }

    /// Sends the request and waits until it is granted.
    pub async fn wait(self) -> Result<Lease, ClientError> {
        self.start().await?.wait_with(|_| {}).await
    }

    /// Sends the request and waits until it is granted, calling `on_queued`
    /// with every change of the queue position (and what is ahead).
    pub async fn wait_with(self, on_queued: impl FnMut(&v1::Queued)) -> Result<Lease, ClientError> {
        self.start().await?.wait_with(on_queued).await
    }
}

/// What a new process needs to take back a detached lease or queue place
/// ([`Client::reattach`]): the lease id, the resource, and the secret the
/// broker gave its owner. Its `Display` form (`LEASE:HEX:RESOURCE`) parses
/// back with `str::parse`, to be kept somewhere only the owner can read;
/// `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ResumeToken {
    /// The lease id.
    pub lease_id: u64,
    /// The resource (informative: the broker goes by the lease id).
    pub resource: String,
    /// The secret.
    pub secret: bytes::Bytes,
}

impl std::fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ResumeToken({} on {:?}, <secret>)",
            self.lease_id, self.resource
        )
    }
}

impl std::fmt::Display for ResumeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.lease_id)?;
        for b in self.secret.iter() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ":{}", self.resource)
    }
}

impl std::str::FromStr for ResumeToken {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ClientError::Protocol(format!("not a resume token: {s:?}"));
        let mut parts = s.trim_end_matches(['\r', '\n']).splitn(3, ':');
        let lease_id = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let hex = parts.next().ok_or_else(bad)?;
        let resource = parts.next().ok_or_else(bad)?.to_string();
        if hex.len() % 2 != 0 || hex.len() > 128 {
            return Err(bad());
        }
        let secret = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad())?;
        Ok(ResumeToken {
            lease_id,
            resource,
            secret: secret.into(),
        })
    }
}

impl Pending {
    /// A pending request (or a grant) from an `AcquireReply`.
    pub(crate) fn from_reply(
        client: Client,
        resource: String,
        r: crate::connection::Response,
    ) -> Result<Pending, ClientError> {
        let (outcome, pushes) = match (r.result, r.pushes) {
            (
                reply::Result::Acquire(v1::AcquireReply {
                    outcome: Some(outcome),
                }),
                Some(pushes),
            ) => (outcome, pushes),
            (other, _) => return Err(unexpected("AcquireReply", &other)),
        };
        let (lease_id, secret, state) = match outcome {
            Outcome::Granted(g) => (g.lease_id, g.resume_token.clone(), QueueUpdate::Granted(g)),
            Outcome::Queued(q) => (q.lease_id, q.resume_token.clone(), QueueUpdate::Queued(q)),
        };
        let resume = (!secret.is_empty()).then(|| ResumeToken {
            lease_id,
            resource: resource.clone(),
            secret,
        });
        Ok(Pending {
            client,
            lease_id,
            resource,
            state,
            pushes: Some(pushes),
            resume,
        })
    }
}

/// Where a request stands.
#[derive(Clone, Debug, PartialEq)]
pub enum QueueUpdate {
    /// Waiting: the position, who is ahead, the estimate.
    Queued(v1::Queued),
    /// Granted.
    Granted(v1::Granted),
}

/// A request that was sent. Dropping it leaves the queue (or releases the
/// lease if it was granted meanwhile).
pub struct Pending {
    client: Client,
    lease_id: u64,
    resource: String,
    state: QueueUpdate,
    pushes: Option<mpsc::UnboundedReceiver<Push>>,
    resume: Option<ResumeToken>,
}

impl Pending {
    /// The secret for [`Client::reattach`], when the request has a detach
    /// grace.
    pub fn resume_token(&self) -> Option<&ResumeToken> {
        self.resume.as_ref()
    }

    /// The lease id the broker gave the request.
    pub fn lease_id(&self) -> u64 {
        self.lease_id
    }

    /// Where it stands now.
    pub fn state(&self) -> &QueueUpdate {
        &self.state
    }

    /// Waits for the next change of where it stands. A request that left the
    /// queue without being granted (its `max_wait` ran out) is
    /// [`ClientError::Lost`].
    pub async fn next_update(&mut self) -> Result<&QueueUpdate, ClientError> {
        if let QueueUpdate::Granted(_) = self.state {
            return Ok(&self.state);
        }
        let Some(pushes) = self.pushes.as_mut() else {
            return Err(ClientError::Disconnected("the request is closed".into()));
        };
        loop {
            let Some(push) = pushes.recv().await else {
                return Err(ClientError::Disconnected(
                    "the connection closed while queued".into(),
                ));
            };
            let Push::Lease(update) = push else { continue };
            match update.change {
                Some(lease_update::Change::Queued(q)) => self.state = QueueUpdate::Queued(q),
                Some(lease_update::Change::Granted(g)) => self.state = QueueUpdate::Granted(g),
                Some(lease_update::Change::Lost(l)) => {
                    return Err(ClientError::Lost(lost_of(&l)));
                }
                // Only holders are asked to yield.
                Some(lease_update::Change::YieldRequested(_)) | None => continue,
            }
            return Ok(&self.state);
        }
    }

    /// Lets go of the request without leaving the queue: with a detach
    /// grace, the place is kept for [`Client::reattach`] once this
    /// connection closes (a process handing over to its successor).
    /// Without one, it ends when the connection closes.
    pub fn detach(mut self) -> Option<ResumeToken> {
        self.pushes = None;
        self.resume.take()
    }

    /// Waits until granted.
    pub async fn wait(self) -> Result<Lease, ClientError> {
        self.wait_with(|_| {}).await
    }

    /// Waits until granted, calling `on_queued` with each queue change
    /// (also once at the start when queued).
    pub async fn wait_with(
        mut self,
        mut on_queued: impl FnMut(&v1::Queued),
    ) -> Result<Lease, ClientError> {
        if let QueueUpdate::Queued(q) = &self.state {
            on_queued(q);
        }
        loop {
            match &self.state {
                QueueUpdate::Granted(g) => {
                    let g = g.clone();
                    return Ok(self.into_lease(g));
                }
                QueueUpdate::Queued(_) => {
                    if let QueueUpdate::Queued(q) = self.next_update().await? {
                        on_queued(q);
                    }
                }
            }
        }
    }

    /// Leaves the queue. If the request was granted meanwhile the broker
    /// refuses; the lease is then released.
    pub async fn cancel(mut self) -> Result<(), ClientError> {
        self.pushes = None;
        let id = self.lease_id;
        match self
            .client
            .call(Body::Cancel(v1::Cancel { lease_id: id }))
            .await
        {
            Ok(_) => Ok(()),
            Err(ClientError::Broker { .. }) => self
                .client
                .call(Body::Release(v1::Release { lease_id: id }))
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        }
    }

    fn into_lease(mut self, g: v1::Granted) -> Lease {
        let pushes = self.pushes.take();
        let resume = self.resume.take();
        Lease::start(
            self.client.clone(),
            self.resource.clone(),
            g,
            pushes,
            resume,
        )
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.pushes.is_some() {
            // Not turned into a Lease: give the place (or the lease) back.
            self.client.send_and_forget(Body::Release(v1::Release {
                lease_id: self.lease_id,
            }));
        }
    }
}

fn lost_of(l: &v1::Lost) -> LeaseLost {
    LeaseLost {
        reason: crate::kinds::lost_reason(l),
        detail: l.detail.clone(),
    }
}

/// A granted lease. It keeps itself alive (KeepAlive at a third of its TTL)
/// until released, dropped or lost. Dropping it releases it, best effort;
/// [`Lease::release`] waits for the broker's answer.
pub struct Lease {
    client: Client,
    resource: String,
    granted: v1::Granted,
    lost: watch::Receiver<Option<LeaseLost>>,
    stop: Option<oneshot::Sender<()>>,
    /// Behind an async lock so that waiting for one takes `&self`: a
    /// holder waits for a yield request, its loss and its work at once.
    yields: tokio::sync::Mutex<mpsc::UnboundedReceiver<v1::YieldRequested>>,
    resume: Option<ResumeToken>,
}

impl Lease {
    fn start(
        client: Client,
        resource: String,
        granted: v1::Granted,
        pushes: Option<mpsc::UnboundedReceiver<Push>>,
        resume: Option<ResumeToken>,
    ) -> Lease {
        let (lost_tx, lost) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (yields_tx, yields) = mpsc::unbounded_channel();
        tokio::spawn(keep_alive(
            client.clone(),
            granted.clone(),
            pushes,
            Signals {
                lost: lost_tx,
                yields: yields_tx,
            },
            stop_rx,
        ));
        Lease {
            client,
            resource,
            granted,
            lost,
            stop: Some(stop_tx),
            yields: tokio::sync::Mutex::new(yields),
            resume,
        }
    }

    /// The secret for [`Client::reattach`], when the lease has a detach
    /// grace. Keep it where only its owner can read it.
    pub fn resume_token(&self) -> Option<&ResumeToken> {
        self.resume.as_ref()
    }

    /// The next request that this holder make way (`turnstile yield`,
    /// [`Client::request_yield`]); waits for one. `None` once the lease is
    /// no longer tracked. (Two waiting at once get successive requests.)
    pub async fn next_yield_request(&self) -> Option<v1::YieldRequested> {
        self.yields.lock().await.recv().await
    }

    /// A yield request received since the last call, without waiting: for
    /// a job that looks at its checkpoints.
    pub fn yield_requested(&mut self) -> Option<v1::YieldRequested> {
        self.yields.get_mut().try_recv().ok()
    }

    /// Answers a yield request: this holder will not make way now (watchers
    /// see why). A pending revoke still stands.
    pub async fn decline_yield(&self, reason: impl Into<String>) -> Result<(), ClientError> {
        self.client
            .call(Body::DeclineYield(v1::DeclineYield {
                lease_id: self.id(),
                reason: reason.into(),
            }))
            .await
            .map(|_| ())
    }

    /// The lease id.
    pub fn id(&self) -> u64 {
        self.granted.lease_id
    }

    /// The resource.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The fencing token: strictly increasing per resource, never reused.
    /// Pass it to whatever the lease protects so it can refuse stale holders.
    pub fn fencing_token(&self) -> u64 {
        self.granted.fencing_token
    }

    /// The TTL in force.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(u64::from(self.granted.ttl_ms))
    }

    /// Reports how far the job under this lease has got; waiters and
    /// watchers see it.
    pub async fn progress(
        &self,
        done: u32,
        total: u32,
        message: impl Into<String>,
    ) -> Result<(), ClientError> {
        self.client
            .call(Body::ReportProgress(v1::ReportProgress {
                lease_id: self.id(),
                done,
                total,
                message: message.into(),
            }))
            .await
            .map(|_| ())
    }

    /// Lets go of the lease without releasing it: with a detach grace, it
    /// is kept for [`Client::reattach`] once this connection closes; it is
    /// no longer kept alive from here.
    pub fn detach(mut self) -> Option<ResumeToken> {
        self.stop.take();
        self.resume.take()
    }

    /// Releases the lease and waits for the broker to confirm.
    pub async fn release(mut self) -> Result<(), ClientError> {
        self.stop.take();
        self.client
            .call(Body::Release(v1::Release {
                lease_id: self.id(),
            }))
            .await
            .map(|_| ())
    }

    /// Whether the lease was lost (expired, or the connection dropped).
    pub fn lost_reason(&self) -> Option<LeaseLost> {
        self.lost.borrow().clone()
    }

    /// Resolves when the lease is lost.
    pub async fn lost(&self) -> LeaseLost {
        let mut rx = self.lost.clone();
        loop {
            if let Some(l) = rx.borrow_and_update().clone() {
                return l;
            }
            if rx.changed().await.is_err() {
                return LeaseLost {
                    reason: None,
                    detail: "the lease is no longer tracked".into(),
                };
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.stop.take().is_some() {
            self.client.send_and_forget(Body::Release(v1::Release {
                lease_id: self.granted.lease_id,
            }));
        }
    }
}

/// Where the keep-alive task tells the [`Lease`] what it heard.
struct Signals {
    lost: watch::Sender<Option<LeaseLost>>,
    yields: mpsc::UnboundedSender<v1::YieldRequested>,
}

async fn keep_alive(
    client: Client,
    granted: v1::Granted,
    mut pushes: Option<mpsc::UnboundedReceiver<Push>>,
    signals: Signals,
    mut stop: oneshot::Receiver<()>,
) {
    let Signals { lost, yields } = signals;
    let period = Duration::from_millis(u64::from(granted.ttl_ms / 3).max(20));
    let mut next = tokio::time::Instant::now() + period;
    loop {
        let push = async {
            match pushes.as_mut() {
                Some(p) => p.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep_until(next) => {
                next += period;
                let r = client
                    .call(Body::KeepAlive(v1::KeepAlive { lease_id: granted.lease_id }))
                    .await;
                match r {
                    Ok(_) => {}
                    Err(e) => {
                        let reason = match &e {
                            ClientError::Broker { .. } => Some(v1::LostReason::Expired),
                            _ => None,
                        };
                        let _ = lost.send(Some(LeaseLost { reason, detail: e.to_string() }));
                        return;
                    }
                }
            }
            p = push => match p {
                Some(Push::Lease(v1::LeaseUpdate { change: Some(lease_update::Change::Lost(l)), .. })) => {
                    let _ = lost.send(Some(lost_of(&l)));
                    return;
                }
                Some(Push::Lease(v1::LeaseUpdate { change: Some(lease_update::Change::YieldRequested(y)), .. })) => {
                    let _ = yields.send(y);
                }
                Some(_) => {}
                None => {
                    let _ = lost.send(Some(LeaseLost {
                        reason: None,
                        detail: "the connection to the broker was lost".into(),
                    }));
                    return;
                }
            }
        }
    }
}
