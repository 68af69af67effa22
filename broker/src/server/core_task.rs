//! The core task's loop: it owns the [`Dispatcher`] (and so the core),
//! takes what the connection tasks send in batches, applies the deadlines
//! that are due before anything else, and sleeps until the next one.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ToCore;
use super::dispatch::Dispatcher;

/// Runs the core task until every connection task and the accept loop are
/// gone or `stop` is cancelled.
pub(super) async fn run(
    mut d: Dispatcher,
    mut inbox: mpsc::Receiver<ToCore>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(256);
    loop {
        let deadline = d.next_deadline();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            n = inbox.recv_many(&mut batch, 256) => {
                if n == 0 {
                    break;
                }
                // Deadlines already due are applied first: a KeepAlive that
                // arrives after the TTL ran out must find the lease expired.
                d.expire(false);
                for msg in batch.drain(..) {
                    d.handle(msg);
                }
            }
            _ = sleep => d.expire(true),
        }
    }
    d.close_all();
}
