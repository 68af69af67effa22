//! Leases from the client's side: a request builder, a pending request that
//! reports its queue position, and a held [`Lease`] that keeps itself alive.

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
            },
        }
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
        let (outcome, pushes) = match (r.result, r.pushes) {
            (
                reply::Result::Acquire(v1::AcquireReply {
                    outcome: Some(outcome),
                }),
                Some(pushes),
            ) => (outcome, pushes),
            (other, _) => return Err(unexpected("AcquireReply", &other)),
        };
        let (lease_id, state) = match outcome {
            Outcome::Granted(g) => (g.lease_id, QueueUpdate::Granted(g)),
            Outcome::Queued(q) => (q.lease_id, QueueUpdate::Queued(q)),
        };
        Ok(Pending {
            client: self.client,
            lease_id,
            resource: self.req.resource,
            state,
            pushes: Some(pushes),
        })
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
}

impl Pending {
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
                None => continue,
            }
            return Ok(&self.state);
        }
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
                    let g = *g;
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
        Lease::start(self.client.clone(), self.resource.clone(), g, pushes)
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
}

impl Lease {
    fn start(
        client: Client,
        resource: String,
        granted: v1::Granted,
        pushes: Option<mpsc::UnboundedReceiver<Push>>,
    ) -> Lease {
        let (lost_tx, lost) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(keep_alive(
            client.clone(),
            granted,
            pushes,
            lost_tx,
            stop_rx,
        ));
        Lease {
            client,
            resource,
            granted,
            lost,
            stop: Some(stop_tx),
        }
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

async fn keep_alive(
    client: Client,
    granted: v1::Granted,
    mut pushes: Option<mpsc::UnboundedReceiver<Push>>,
    lost: watch::Sender<Option<LeaseLost>>,
    mut stop: oneshot::Receiver<()>,
) {
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
