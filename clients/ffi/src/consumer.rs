//! `ts_consumer`: deliveries of one queue, taken one by one and settled
//! with ack or nack. Delivery is at least once: a delivery neither acked
//! nor nacked is given back (requeued) when the consumer is closed, and one
//! in flight when the connection drops is delivered again later.

use std::collections::HashMap;
use std::ffi::{CString, c_char, c_void};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::task::JoinHandle;
use turnstile_client::Delivery;

use crate::error::{Failure, guard, ts_error};
use crate::events::{EventQueue, ts_notify_fn};
use crate::handles::{self, Entry};
use crate::runtime::{block, runtime};
use crate::strings;

/// A subscription to a queue. Opaque: created by `ts_consume`, freed by
/// `ts_consumer_close`.
pub struct ts_consumer {
    _opaque: [u8; 0],
}

/// One message. Every pointer belongs to the consumer handle: valid until
/// the next `ts_consumer_next` on it, or `ts_consumer_close`. Settle it by
/// `delivery_id` with `ts_consumer_ack` or `ts_consumer_nack`.
#[repr(C)]
pub struct ts_delivery {
    /// This delivery's id (a redelivery gets a new one).
    pub delivery_id: u64,
    /// The message's sequence number in its queue (what publish returned).
    pub seq: u64,
    /// 1 for the first delivery, 2 and up for redeliveries.
    pub attempt: u32,
    /// The queue, UTF-8.
    pub queue: *const c_char,
    /// The body, `payload_len` bytes (not NUL-terminated; NULL when empty).
    pub payload: *const u8,
    /// See `payload`.
    pub payload_len: usize,
    /// How many headers: `header_names[i]` = `header_values[i]`.
    pub header_count: usize,
    /// Header names, UTF-8.
    pub header_names: *const *const c_char,
    /// Header values, UTF-8.
    pub header_values: *const *const c_char,
}

#[derive(Default)]
struct Current {
    queue: CString,
    payload: Bytes,
    _strings: Vec<CString>,
    names: Vec<*const c_char>,
    values: Vec<*const c_char>,
}

// SAFETY: the raw pointers point into `strings`, owned by the same value.
unsafe impl Send for Current {}

pub(crate) struct ConsumerHandle {
    queue: Arc<EventQueue<Delivery>>,
    task: Mutex<Option<JoinHandle<()>>>,
    current: Mutex<Current>,
    /// Taken, not yet settled: by delivery id.
    unsettled: Mutex<HashMap<u64, Delivery>>,
    cancel: tokio_util::sync::CancellationToken,
}

/// Starts consuming `queue`: the broker sends its messages, oldest first,
/// at most `prefetch` unsettled at a time (0 = the broker's default, 16).
/// `notify` and `user_data` as for `ts_watch_open`. The subscription lives
/// on the client's connection.
///
/// # Safety
/// `queue` is a NUL-terminated string; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_consume(
    client: *mut crate::client::ts_client,
    queue: *const c_char,
    prefetch: u32,
    notify: ts_notify_fn,
    user_data: *mut c_void,
    out: *mut *mut ts_consumer,
) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(out, "out") }?;
        *out = std::ptr::null_mut();
        let h = handles::client(client as usize)?;
        // SAFETY: per this function's contract.
        let name = unsafe { strings::required(queue, "queue") }?.to_string();
        let c = h.client.clone();
        let mut consumer = block("consume", &h.cancel, crate::TS_WAIT_FOREVER, async move {
            c.consume(&name, prefetch).await.map_err(Failure::from)
        })?;
        let events = Arc::new(EventQueue::new(notify, user_data)?);
        let sink = Arc::clone(&events);
        let task = runtime()?.spawn(async move {
            while let Some(d) = consumer.next().await {
                sink.push(d);
            }
            sink.end(
                ts_error::TS_ERR_DISCONNECTED,
                "the connection to the broker was lost; unsettled deliveries will be delivered again".into(),
                false,
            );
        });
        let id = handles::insert(Entry::Consumer(Arc::new(ConsumerHandle {
            queue: events,
            task: Mutex::new(Some(task)),
            current: Mutex::new(Current::default()),
            unsettled: Mutex::new(HashMap::new()),
            cancel: tokio_util::sync::CancellationToken::new(),
        })));
        *out = id as *mut ts_consumer;
        Ok(())
    })
}

/// Takes the next delivery, waiting up to `timeout_ms` (0: do not wait).
/// `TS_ERR_TIMED_OUT` when none came, `TS_ERR_DISCONNECTED` once the
/// connection is gone, `TS_ERR_CLOSED` when closed by another thread.
/// One thread at a time should take deliveries from a given consumer.
///
/// # Safety
/// `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_consumer_next(
    consumer: *mut ts_consumer,
    timeout_ms: u32,
    out: *mut ts_delivery,
) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(out, "out") }?;
        let h = handles::consumer(consumer as usize)?;
        let d = h.queue.pop(timeout_ms)?;
        let mut cur = h.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut strings = Vec::new();
        let mut names = Vec::new();
        let mut values = Vec::new();
        for (k, v) in d.headers() {
            let (k, v) = (strings::c_string(k), strings::c_string(v));
            names.push(k.as_ptr());
            values.push(v.as_ptr());
            strings.push(k);
            strings.push(v);
        }
        *cur = Current {
            queue: strings::c_string(d.queue()),
            payload: d.payload().clone(),
            _strings: strings,
            names,
            values,
        };
        *out = ts_delivery {
            delivery_id: d.delivery_id(),
            seq: d.seq(),
            attempt: d.attempt(),
            queue: cur.queue.as_ptr(),
            payload: if cur.payload.is_empty() {
                std::ptr::null()
            } else {
                cur.payload.as_ptr()
            },
            payload_len: cur.payload.len(),
            header_count: cur.names.len(),
            header_names: if cur.names.is_empty() {
                std::ptr::null()
            } else {
                cur.names.as_ptr()
            },
            header_values: if cur.values.is_empty() {
                std::ptr::null()
            } else {
                cur.values.as_ptr()
            },
        };
        h.unsettled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.delivery_id(), d);
        Ok(())
    })
}

fn settle(
    consumer: *mut ts_consumer,
    delivery_id: u64,
    timeout_ms: u32,
    ack: Option<bool>,
) -> Result<(), Failure> {
    let h = handles::consumer(consumer as usize)?;
    let d = h
        .unsettled
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&delivery_id)
        .ok_or_else(|| {
            Failure::new(
                ts_error::TS_ERR_NOT_FOUND,
                format!(
                    "delivery {delivery_id} was not taken from this consumer, or is settled already"
                ),
            )
        })?;
    block("settle", &h.cancel, timeout_ms, async move {
        match ack {
            None => d.ack().await,
            Some(requeue) => d.nack(requeue).await,
        }
        .map_err(Failure::from)
    })
}

/// The message was handled: the broker forgets it. Waits up to
/// `timeout_ms` for the broker's answer. `TS_ERR_NOT_FOUND` for an id not
/// taken from this consumer, or settled already.
#[unsafe(no_mangle)]
pub extern "C" fn ts_consumer_ack(
    consumer: *mut ts_consumer,
    delivery_id: u64,
    timeout_ms: u32,
) -> ts_error {
    guard(|| settle(consumer, delivery_id, timeout_ms, None))
}

/// Gives the message back: `requeue` non-zero delivers it again (after the
/// broker's attempt limit it moves to `QUEUE.dead`); 0 drops it.
#[unsafe(no_mangle)]
pub extern "C" fn ts_consumer_nack(
    consumer: *mut ts_consumer,
    delivery_id: u64,
    requeue: i32,
    timeout_ms: u32,
) -> ts_error {
    guard(|| settle(consumer, delivery_id, timeout_ms, Some(requeue != 0)))
}

/// As `ts_watch_fd`, for a consumer.
///
/// # Safety
/// `fd_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ts_consumer_fd(consumer: *mut ts_consumer, fd_out: *mut i32) -> ts_error {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { strings::out(fd_out, "fd_out") }?;
        *out = -1;
        let h = handles::consumer(consumer as usize)?;
        crate::watch::fd_of(h.queue.fd(), out)
    })
}

/// Stops taking deliveries and frees the handle. Deliveries taken and not
/// settled, and those not yet taken, are given back (requeued). A thread
/// blocked in `ts_consumer_next` returns `TS_ERR_CLOSED`; no notify
/// callback runs after this returns. A second close returns
/// `TS_ERR_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn ts_consumer_close(consumer: *mut ts_consumer) -> ts_error {
    guard(|| {
        let h = handles::take_consumer(consumer as usize)?;
        h.cancel.cancel();
        h.queue.gate.close();
        h.queue.end(
            ts_error::TS_ERR_CLOSED,
            "the consumer was closed".into(),
            true,
        );
        if let Some(t) = h.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        h.unsettled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    })
}
