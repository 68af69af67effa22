//! The C ABI called the way a C program calls it (through the extern fns),
//! against the real `turnstiled`: every verb, the ownership rules (close
//! and release free, a second one is detected), invalid handles, callbacks
//! and their threads, the event queues and their descriptor, and handles
//! shared by several threads.

mod support;

use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr::{null, null_mut};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::*;
use turnstile::*;

fn cstr(p: *const c_char) -> String {
    assert!(!p.is_null());
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[test]
fn connect_ping_info_status() {
    let b = spawn_broker();
    let c = b.connect("abi-basics");
    ok(unsafe { ts_ping(c, b"hello".as_ptr(), 5, PATIENCE_MS) });
    ok(unsafe { ts_ping(c, null(), 0, PATIENCE_MS) });

    let mut info = std::mem::MaybeUninit::<ts_client_info>::uninit();
    ok(unsafe { ts_client_get_info(c, info.as_mut_ptr()) });
    let info = unsafe { info.assume_init() };
    assert_eq!(info.protocol_version, 1);
    assert_eq!(info.pid, std::process::id());
    assert!(!cstr(info.broker_version).is_empty());

    let mut json = null();
    ok(unsafe { ts_status(c, null(), 0, PATIENCE_MS, &mut json) });
    let status: serde_json::Value = serde_json::from_str(&cstr(json)).unwrap();
    assert!(
        status["resources"].as_array().unwrap().is_empty(),
        "{status}"
    );
    close_client(c);
}

#[test]
fn nothing_listening_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let socket = CString::new(dir.path().join("none.sock").to_string_lossy().as_bytes()).unwrap();
    let mut c = std::ptr::dangling_mut::<ts_client>();
    let e = unsafe { ts_connect(socket.as_ptr(), null(), 0, &mut c) };
    assert_eq!(e, ts_error::TS_ERR_UNAVAILABLE);
    assert!(c.is_null(), "the out-pointer is NULL on failure");
    assert!(last_error().contains("none.sock"), "{}", last_error());
}

#[test]
fn invalid_handles_are_errors_not_crashes() {
    use ts_error::*;
    let b = spawn_broker();
    // NULL and forged handles of every kind.
    for forged in [0usize, 0x10, 0xdead_bee0, usize::MAX] {
        unsafe {
            assert_eq!(ts_client_close(forged as *mut _), TS_ERR_INVALID_HANDLE);
            assert_eq!(
                ts_ping(forged as *mut _, null(), 0, 10),
                TS_ERR_INVALID_HANDLE
            );
            assert_eq!(
                ts_lease_release(forged as *mut _, 10),
                TS_ERR_INVALID_HANDLE
            );
            assert_eq!(
                ts_lease_check(forged as *mut _, null_mut()),
                TS_ERR_INVALID_HANDLE
            );
            assert_eq!(ts_watch_close(forged as *mut _), TS_ERR_INVALID_HANDLE);
            assert_eq!(ts_consumer_close(forged as *mut _), TS_ERR_INVALID_HANDLE);
            assert_eq!(
                ts_consumer_ack(forged as *mut _, 1, 10),
                TS_ERR_INVALID_HANDLE
            );
        }
    }
    // Double close: detected.
    let c = b.connect("double-close");
    ok(unsafe { ts_client_close(c) });
    assert_eq!(unsafe { ts_client_close(c) }, TS_ERR_INVALID_HANDLE);
    assert!(
        last_error().contains("not a live ts_client"),
        "{}",
        last_error()
    );
    assert_eq!(unsafe { ts_ping(c, null(), 0, 10) }, TS_ERR_INVALID_HANDLE);

    // Double release, and a handle of the wrong kind.
    let c = b.connect("double-release");
    let res = CString::new("double").unwrap();
    let mut lease = null_mut();
    ok(unsafe { ts_acquire(c, res.as_ptr(), null(), PATIENCE_MS, &mut lease) });
    assert_eq!(
        unsafe { ts_client_close(lease.cast()) },
        TS_ERR_INVALID_HANDLE
    );
    assert!(
        last_error().contains("ts_lease handle was passed where a ts_client"),
        "{}",
        last_error()
    );
    ok(ts_lease_release(lease, PATIENCE_MS));
    assert_eq!(ts_lease_release(lease, PATIENCE_MS), TS_ERR_INVALID_HANDLE);

    // NULL arguments and bad strings.
    let mut out = null_mut();
    assert_eq!(
        unsafe { ts_acquire(c, null(), null(), 10, &mut out) },
        TS_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        unsafe { ts_acquire(c, res.as_ptr(), null(), 10, null_mut()) },
        TS_ERR_INVALID_ARGUMENT
    );
    let bad = [0xffu8, 0xfe, 0];
    assert_eq!(
        unsafe { ts_acquire(c, bad.as_ptr().cast(), null(), 10, &mut out) },
        TS_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("not UTF-8"), "{}", last_error());
    assert_eq!(
        unsafe { ts_ping(c, null(), 3, 10) },
        TS_ERR_INVALID_ARGUMENT
    );
    // Options not set up by ts_acquire_options_init, or unknown flags.
    let mut opts = std::mem::MaybeUninit::<ts_acquire_options>::zeroed();
    assert_eq!(
        unsafe { ts_acquire(c, res.as_ptr(), opts.as_ptr(), 10, &mut out) },
        TS_ERR_INVALID_ARGUMENT
    );
    ok(unsafe {
        ts_acquire_options_init(opts.as_mut_ptr(), std::mem::size_of::<ts_acquire_options>())
    });
    // A size between two versions is no version's: refused here as
    // ts_acquire would refuse it.
    let between = std::mem::size_of::<ts_acquire_options>() - 4;
    assert_eq!(
        unsafe { ts_acquire_options_init(opts.as_mut_ptr(), between) },
        TS_ERR_INVALID_ARGUMENT
    );
    ok(unsafe {
        ts_acquire_options_init(opts.as_mut_ptr(), std::mem::size_of::<ts_acquire_options>())
    });
    unsafe { (*opts.as_mut_ptr()).flags = 0x80 };
    assert_eq!(
        unsafe { ts_acquire(c, res.as_ptr(), opts.as_ptr(), 10, &mut out) },
        TS_ERR_INVALID_ARGUMENT
    );
    // The broker's own refusal keeps its wire code.
    let empty = CString::new("").unwrap();
    assert_eq!(
        unsafe { ts_acquire(c, empty.as_ptr(), null(), PATIENCE_MS, &mut out) },
        TS_ERR_INVALID_ARGUMENT
    );
    close_client(c);
    assert_eq!(cstr(ts_error_name(104)), "TS_ERR_INVALID_HANDLE");
    assert_eq!(cstr(ts_error_name(-1)), "TS_ERR_UNKNOWN");
}

/// One queue update as the callback saw it: position, how many ahead, and
/// the first one ahead's purpose, holder name and progress.
type Update = (u32, u32, String, String, Option<(u32, u32, String)>);

/// What the queue callback saw.
#[derive(Default)]
struct Seen {
    updates: Vec<Update>,
    thread: Option<std::thread::ThreadId>,
    give_up_after: usize,
}

unsafe extern "C" fn record_queue(data: *mut c_void, q: *const ts_queue_update) -> i32 {
    let seen = unsafe { &*(data as *const Mutex<Seen>) };
    let q = unsafe { &*q };
    let mut s = seen.lock().unwrap();
    s.thread = Some(std::thread::current().id());
    let ahead = unsafe { std::slice::from_raw_parts(q.ahead, q.ahead_count) };
    let first = &ahead[0];
    s.updates.push((
        q.position,
        q.ahead_count as u32,
        cstr(first.purpose),
        cstr(first.holder_name),
        first.has_progress.then(|| {
            (
                first.progress_done,
                first.progress_total,
                cstr(first.progress_message),
            )
        }),
    ));
    i32::from(s.give_up_after != 0 && s.updates.len() >= s.give_up_after)
}

#[test]
fn queued_acquire_calls_back_on_the_calling_thread_then_is_granted() {
    let b = spawn_broker();
    let mut holder = Holder::take(&b, "pcm");
    holder.progress(1, 4, "copying");
    let c = b.connect("abi-agent");
    let seen = Mutex::new(Seen::default());
    let mut opts = std::mem::MaybeUninit::<ts_acquire_options>::uninit();
    ok(unsafe {
        ts_acquire_options_init(opts.as_mut_ptr(), std::mem::size_of::<ts_acquire_options>())
    });
    let mut opts = unsafe { opts.assume_init() };
    let purpose = CString::new("initialise").unwrap();
    opts.flags = TS_ACQUIRE_SHARED;
    opts.purpose = purpose.as_ptr();
    opts.on_queue = Some(record_queue);
    opts.on_queue_data = &seen as *const _ as *mut c_void;

    let res = CString::new("pcm").unwrap();
    let lease = std::thread::scope(|s| {
        let (c, opts) = (c as usize, &opts as *const ts_acquire_options as usize);
        let res = &res;
        let waiter = s.spawn(move || {
            let mut lease = null_mut();
            let opts = opts as *const ts_acquire_options;
            let e = unsafe { ts_acquire(c as *mut _, res.as_ptr(), opts, PATIENCE_MS, &mut lease) };
            (e, lease as usize, std::thread::current().id())
        });
        wait_until("the agent to be queued", || {
            !seen.lock().unwrap().updates.is_empty()
        });
        holder.progress(2, 4, "registering");
        wait_until("the progress to reach the agent", || {
            seen.lock().unwrap().updates.len() >= 2
        });
        holder.release();
        let (e, lease, tid) = waiter.join().unwrap();
        ok(e);
        assert_eq!(
            seen.lock().unwrap().thread,
            Some(tid),
            "on_queue runs on the acquiring thread"
        );
        lease as *mut ts_lease
    });
    let s = seen.lock().unwrap();
    assert_eq!(
        s.updates[0],
        (
            1,
            1,
            "job".into(),
            "holder".into(),
            Some((1, 4, "copying".into()))
        )
    );
    assert_eq!(s.updates[1].4, Some((2, 4, "registering".into())));

    let mut d = std::mem::MaybeUninit::<ts_lease_details>::uninit();
    ok(unsafe { ts_lease_get_details(lease, d.as_mut_ptr()) });
    let d = unsafe { d.assume_init() };
    assert_eq!(cstr(d.resource), "pcm");
    assert!(d.fencing_token > 0 && d.ttl_ms > 0);
    ok(unsafe { ts_lease_report_progress(lease, 1, 1, null(), PATIENCE_MS) });
    ok(unsafe { ts_lease_check(lease, null_mut()) });
    ok(ts_lease_release(lease, PATIENCE_MS));
    close_client(c);
}

#[test]
fn a_queue_callback_can_give_up_and_timeouts_leave_the_queue() {
    let b = spawn_broker();
    let _holder = Holder::take(&b, "busy");
    let c = b.connect("abi-giver-up");
    let res = CString::new("busy").unwrap();
    let mut lease = null_mut();

    // TS_ACQUIRE_NO_WAIT: busy, naming the holder.
    let mut opts = std::mem::MaybeUninit::<ts_acquire_options>::uninit();
    ok(unsafe {
        ts_acquire_options_init(opts.as_mut_ptr(), std::mem::size_of::<ts_acquire_options>())
    });
    let mut opts = unsafe { opts.assume_init() };
    opts.flags = TS_ACQUIRE_NO_WAIT;
    let e = unsafe { ts_acquire(c, res.as_ptr(), &opts, PATIENCE_MS, &mut lease) };
    assert_eq!(e, ts_error::TS_ERR_BUSY, "{}", last_error());
    assert!(last_error().contains("holder"), "{}", last_error());

    // The callback gives up at the first update.
    let seen = Mutex::new(Seen {
        give_up_after: 1,
        ..Default::default()
    });
    opts.flags = 0;
    opts.on_queue = Some(record_queue);
    opts.on_queue_data = &seen as *const _ as *mut c_void;
    let e = unsafe { ts_acquire(c, res.as_ptr(), &opts, PATIENCE_MS, &mut lease) };
    assert_eq!(e, ts_error::TS_ERR_CANCELLED, "{}", last_error());
    assert!(lease.is_null());

    // The call's own timeout, and the broker's max_wait.
    let e = unsafe { ts_acquire(c, res.as_ptr(), null(), 200, &mut lease) };
    assert_eq!(e, ts_error::TS_ERR_TIMED_OUT, "{}", last_error());
    opts.on_queue = None;
    opts.max_wait_ms = 200;
    let e = unsafe { ts_acquire(c, res.as_ptr(), &opts, PATIENCE_MS, &mut lease) };
    assert_eq!(e, ts_error::TS_ERR_TIMED_OUT, "{}", last_error());

    // Each left the queue: nobody waits on the resource.
    let mut json = null();
    let names = [res.as_ptr()];
    wait_until("the queue to be empty", || {
        ok(unsafe { ts_status(c, names.as_ptr(), 1, PATIENCE_MS, &mut json) });
        let v: serde_json::Value = serde_json::from_str(&cstr(json)).unwrap();
        v["resources"][0]["waiters"]
            .as_array()
            .is_some_and(|w| w.is_empty())
    });
    close_client(c);
}

/// A loss as the callback saw it: lease id, reason, detail, thread name,
/// and what releasing it from inside the callback answered.
type Loss = (u64, ts_lost_reason, String, String, ts_error);
static LOST: Mutex<Vec<Loss>> = Mutex::new(Vec::new());
/// The lease the lost callback releases (a callback may release its own lease).
static RELEASE_ON_LOSS: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn record_lost(
    _: *mut c_void,
    id: u64,
    reason: ts_lost_reason,
    detail: *const c_char,
) {
    let thread = std::thread::current().name().unwrap_or("").to_string();
    let lease = RELEASE_ON_LOSS.load(Ordering::SeqCst) as *mut ts_lease;
    let released = ts_lease_release(lease, 1000);
    LOST.lock()
        .unwrap()
        .push((id, reason, cstr(detail), thread, released));
}

#[test]
fn a_lost_lease_calls_back_on_the_callback_thread() {
    let mut b = spawn_broker();
    let c = b.connect("abi-loser");
    let res = CString::new("fragile").unwrap();
    let mut opts = std::mem::MaybeUninit::<ts_acquire_options>::uninit();
    ok(unsafe {
        ts_acquire_options_init(opts.as_mut_ptr(), std::mem::size_of::<ts_acquire_options>())
    });
    let mut opts = unsafe { opts.assume_init() };
    opts.on_lost = Some(record_lost);
    // Released normally: no callback.
    let mut lease = null_mut();
    ok(unsafe { ts_acquire(c, res.as_ptr(), &opts, PATIENCE_MS, &mut lease) });
    ok(ts_lease_release(lease, PATIENCE_MS));

    // Lost when the broker dies; the callback releases it.
    ok(unsafe { ts_acquire(c, res.as_ptr(), &opts, PATIENCE_MS, &mut lease) });
    let mut d = std::mem::MaybeUninit::<ts_lease_details>::uninit();
    ok(unsafe { ts_lease_get_details(lease, d.as_mut_ptr()) });
    let id = unsafe { d.assume_init() }.lease_id;
    RELEASE_ON_LOSS.store(lease as usize, Ordering::SeqCst);
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    wait_until("the lost callback", || !LOST.lock().unwrap().is_empty());
    let lost = LOST.lock().unwrap().clone();
    assert_eq!(lost.len(), 1, "only the second lease was lost: {lost:?}");
    assert_eq!(lost[0].0, id);
    assert_eq!(lost[0].1, ts_lost_reason::TS_LOST_CONNECTION);
    assert_eq!(lost[0].3, "turnstile-callbacks");
    assert_eq!(
        lost[0].4,
        ts_error::TS_ERR_LOST,
        "released from its own callback"
    );
    assert_eq!(
        ts_lease_release(lease, PATIENCE_MS),
        ts_error::TS_ERR_INVALID_HANDLE
    );
    let mut out = null_mut();
    let e = unsafe { ts_acquire(c, res.as_ptr(), null(), PATIENCE_MS, &mut out) };
    assert_eq!(e, ts_error::TS_ERR_DISCONNECTED, "{}", last_error());
    close_client(c);
}

#[test]
fn lease_check_reports_a_loss() {
    let mut b = spawn_broker();
    let c = b.connect("abi-checker");
    let res = CString::new("checked").unwrap();
    let mut lease = null_mut();
    ok(unsafe { ts_acquire(c, res.as_ptr(), null(), PATIENCE_MS, &mut lease) });
    ok(unsafe { ts_lease_check(lease, null_mut()) });
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let mut reason = ts_lost_reason::TS_LOST_EXPIRED;
    wait_until(
        "the loss to be seen",
        || unsafe { ts_lease_check(lease, &mut reason) } == ts_error::TS_ERR_LOST,
    );
    assert_eq!(reason, ts_lost_reason::TS_LOST_CONNECTION);
    assert_eq!(ts_lease_release(lease, PATIENCE_MS), ts_error::TS_ERR_LOST);
    close_client(c);
}

static NOTIFIED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn count_notify(_: *mut c_void) {
    NOTIFIED.fetch_add(1, Ordering::SeqCst);
}

#[cfg(unix)]
fn readable(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

#[test]
fn watch_events_arrive_through_next_the_fd_and_the_notify_callback() {
    let b = spawn_broker();
    let c = b.connect("abi-watcher");
    let res = CString::new("watched").unwrap();
    let names = [res.as_ptr()];
    let mut w = null_mut();
    ok(unsafe { ts_watch_open(c, names.as_ptr(), 1, Some(count_notify), null_mut(), &mut w) });
    let mut ev = std::mem::MaybeUninit::<ts_watch_event>::uninit();
    ok(unsafe { ts_watch_next(w, PATIENCE_MS, ev.as_mut_ptr()) });
    let snap = unsafe { ev.assume_init_ref() };
    assert_eq!(snap.item, ts_watch_item::TS_WATCH_SNAPSHOT);
    let states: serde_json::Value = serde_json::from_str(&cstr(snap.state_json)).unwrap();
    assert_eq!(states[0]["resource"], "watched", "{states}");
    assert!(
        states[0]["holders"].as_array().unwrap().is_empty(),
        "{states}"
    );
    assert_eq!(
        unsafe { ts_watch_next(w, 0, ev.as_mut_ptr()) },
        ts_error::TS_ERR_TIMED_OUT
    );

    #[cfg(unix)]
    let fd = {
        let mut fd = -1;
        ok(unsafe { ts_watch_fd(w, &mut fd) });
        assert!(!readable(fd), "nothing waits: the fd is not readable");
        fd
    };
    let mut lease = null_mut();
    ok(unsafe { ts_acquire(c, res.as_ptr(), null(), PATIENCE_MS, &mut lease) });
    #[cfg(unix)]
    wait_until("the fd to be readable", || readable(fd));
    // Called on each change from empty to not: the snapshot, then this.
    wait_until("the notify callback", || {
        NOTIFIED.load(Ordering::SeqCst) >= 2
    });
    ok(unsafe { ts_watch_next(w, 0, ev.as_mut_ptr()) });
    let e = unsafe { ev.assume_init_ref() };
    assert_eq!(e.item, ts_watch_item::TS_WATCH_CHANGE);
    assert_eq!(e.kind, ts_event_kind::TS_EVENT_GRANTED);
    assert_eq!(cstr(e.resource), "watched");
    assert_eq!((e.holders, e.waiters), (1, 0));
    let state: serde_json::Value = serde_json::from_str(&cstr(e.state_json)).unwrap();
    assert_eq!(state["holders"][0]["holder"]["client_name"], "abi-watcher");
    #[cfg(unix)]
    assert!(!readable(fd), "drained: the fd is not readable any more");
    ok(ts_lease_release(lease, PATIENCE_MS));
    ok(unsafe { ts_watch_next(w, PATIENCE_MS, ev.as_mut_ptr()) });
    assert_eq!(
        unsafe { ev.assume_init_ref() }.kind,
        ts_event_kind::TS_EVENT_RELEASED
    );

    // Closing from another thread wakes a blocked next.
    std::thread::scope(|s| {
        let wh = w as usize;
        let t = s.spawn(move || unsafe {
            let mut ev = std::mem::MaybeUninit::<ts_watch_event>::uninit();
            ts_watch_next(wh as *mut _, TS_WAIT_FOREVER, ev.as_mut_ptr())
        });
        // Wait until it blocks? Either order ends the same: CLOSED or INVALID_HANDLE.
        ok(ts_watch_close(w));
        let e = t.join().unwrap();
        assert!(
            e == ts_error::TS_ERR_CLOSED || e == ts_error::TS_ERR_INVALID_HANDLE,
            "{e:?}"
        );
    });
    assert_eq!(ts_watch_close(w), ts_error::TS_ERR_INVALID_HANDLE);
    close_client(c);
}

#[test]
fn publish_consume_ack_and_nack() {
    let b = spawn_broker();
    let c = b.connect("abi-queues");
    let q = CString::new("notices").unwrap();
    let (k, v) = (CString::new("from").unwrap(), CString::new("svc").unwrap());
    let mut seq = 0;
    for body in [&b"first"[..], b"second"] {
        ok(unsafe {
            ts_publish(
                c,
                q.as_ptr(),
                body.as_ptr(),
                body.len(),
                &k.as_ptr(),
                &v.as_ptr(),
                1,
                PATIENCE_MS,
                &mut seq,
            )
        });
    }
    assert_eq!(seq, 2);
    let mut consumer = null_mut();
    ok(unsafe { ts_consume(c, q.as_ptr(), 0, None, null_mut(), &mut consumer) });
    let mut d = std::mem::MaybeUninit::<ts_delivery>::uninit();
    ok(unsafe { ts_consumer_next(consumer, PATIENCE_MS, d.as_mut_ptr()) });
    let first = unsafe { d.assume_init_ref() };
    let payload = unsafe { std::slice::from_raw_parts(first.payload, first.payload_len) };
    assert_eq!((payload, first.seq, first.attempt), (&b"first"[..], 1, 1));
    assert_eq!(cstr(first.queue), "notices");
    assert_eq!(first.header_count, 1);
    assert_eq!(cstr(unsafe { *first.header_names }), "from");
    assert_eq!(cstr(unsafe { *first.header_values }), "svc");
    let first_id = first.delivery_id;
    ok(ts_consumer_ack(consumer, first_id, PATIENCE_MS));
    assert_eq!(
        ts_consumer_ack(consumer, first_id, PATIENCE_MS),
        ts_error::TS_ERR_NOT_FOUND
    );

    ok(unsafe { ts_consumer_next(consumer, PATIENCE_MS, d.as_mut_ptr()) });
    let second = unsafe { d.assume_init_ref() };
    assert_eq!(second.seq, 2);
    ok(ts_consumer_nack(
        consumer,
        second.delivery_id,
        1,
        PATIENCE_MS,
    ));
    ok(unsafe { ts_consumer_next(consumer, PATIENCE_MS, d.as_mut_ptr()) });
    let again = unsafe { d.assume_init_ref() };
    assert_eq!((again.seq, again.attempt), (2, 2));
    // Taken, not settled: closing gives it back.
    ok(ts_consumer_close(consumer));
    assert_eq!(ts_consumer_close(consumer), ts_error::TS_ERR_INVALID_HANDLE);
    let (code, out) = b.cli(&["queue", "ls"]);
    assert_eq!(code, 0);
    assert!(out.contains("notices"), "{out}");
    close_client(c);
}

#[test]
fn one_client_many_threads_and_a_racing_close() {
    let b = spawn_broker();
    let c = b.connect("abi-threads") as usize;
    // Eight threads share the client, each with its own leases.
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                let res = CString::new(format!("r{t}")).unwrap();
                for i in 0..50u32 {
                    let payload = i.to_le_bytes();
                    ok(unsafe { ts_ping(c as *mut _, payload.as_ptr(), 4, PATIENCE_MS) });
                    let mut lease = null_mut();
                    ok(unsafe {
                        ts_acquire(c as *mut _, res.as_ptr(), null(), PATIENCE_MS, &mut lease)
                    });
                    ok(unsafe { ts_lease_report_progress(lease, i, 50, null(), PATIENCE_MS) });
                    ok(ts_lease_release(lease, PATIENCE_MS));
                }
            });
        }
    });
    // A close racing with calls: each call either completes or reports
    // the handle closed or invalid; nothing crashes.
    std::thread::scope(|s| {
        let callers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(move || {
                    let mut seen = Vec::new();
                    for _ in 0..200 {
                        let e = unsafe { ts_ping(c as *mut _, null(), 0, PATIENCE_MS) };
                        seen.push(e);
                        if e == ts_error::TS_ERR_INVALID_HANDLE {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();
        ok(unsafe { ts_client_close(c as *mut _) });
        for t in callers {
            for e in t.join().unwrap() {
                assert!(
                    matches!(
                        e,
                        ts_error::TS_OK | ts_error::TS_ERR_CLOSED | ts_error::TS_ERR_INVALID_HANDLE
                    ),
                    "{e:?}"
                );
            }
        }
    });
}

/// Yield requests the holder heard: (lease id, reason, thread name).
static YIELDS: Mutex<Vec<(u64, String, String)>> = Mutex::new(Vec::new());

unsafe extern "C" fn record_yield(_: *mut c_void, id: u64, r: *const ts_yield_request) {
    let reason = cstr(unsafe { (*r).reason });
    let thread = std::thread::current().name().unwrap_or("").to_string();
    YIELDS.lock().unwrap().push((id, reason, thread));
}

#[test]
fn one_lease_many_threads_a_yield_meanwhile_and_a_racing_release() {
    let b = spawn_broker();
    let c = b.connect("abi-lease-threads");
    let res = CString::new("shared-lease").unwrap();
    let mut o = std::mem::MaybeUninit::<ts_acquire_options>::uninit();
    ok(unsafe {
        ts_acquire_options_init(o.as_mut_ptr(), std::mem::size_of::<ts_acquire_options>())
    });
    let mut o = unsafe { o.assume_init() };
    o.on_yield = Some(record_yield);
    let mut lease = null_mut();
    ok(unsafe { ts_acquire(c, res.as_ptr(), &o, PATIENCE_MS, &mut lease) });
    let mut d = std::mem::MaybeUninit::<ts_lease_details>::uninit();
    ok(unsafe { ts_lease_get_details(lease, d.as_mut_ptr()) });
    let id = unsafe { d.assume_init() }.lease_id;
    let l = lease as usize;
    // Eight threads report progress and decline on the one lease while
    // another client asks the holder to yield: every call succeeds, and
    // the request reaches the callback thread.
    let asker = b.connect("abi-asker");
    let why = CString::new("make way").unwrap();
    std::thread::scope(|s| {
        for t in 0..8u32 {
            s.spawn(move || {
                for i in 0..25u32 {
                    ok(unsafe {
                        ts_lease_report_progress(l as *mut _, t * 25 + i, 200, null(), PATIENCE_MS)
                    });
                    ok(unsafe { ts_lease_check(l as *mut _, null_mut()) });
                }
                ok(unsafe { ts_lease_decline_yield(l as *mut _, null(), PATIENCE_MS) });
            });
        }
        ok(unsafe { ts_request_yield(asker, res.as_ptr(), 10_000, why.as_ptr(), 0, PATIENCE_MS) });
    });
    wait_until("the yield callback", || !YIELDS.lock().unwrap().is_empty());
    {
        let seen = YIELDS.lock().unwrap();
        assert_eq!(seen[0].0, id);
        assert_eq!(seen[0].1, "make way");
        assert_eq!(seen[0].2, "turnstile-callbacks");
    }
    // A release racing with calls on the lease: each call completes, or
    // finds the lease closed or its handle gone; the release itself succeeds.
    std::thread::scope(|s| {
        let callers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(move || {
                    let mut seen = Vec::new();
                    for i in 0..200 {
                        let e = unsafe {
                            ts_lease_report_progress(l as *mut _, i, 200, null(), PATIENCE_MS)
                        };
                        seen.push(e);
                        if e == ts_error::TS_ERR_INVALID_HANDLE {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();
        ok(ts_lease_release(l as *mut _, PATIENCE_MS));
        for t in callers {
            for e in t.join().unwrap() {
                assert!(
                    matches!(
                        e,
                        ts_error::TS_OK | ts_error::TS_ERR_CLOSED | ts_error::TS_ERR_INVALID_HANDLE
                    ),
                    "{e:?}"
                );
            }
        }
    });
    assert_eq!(
        ts_lease_release(l as *mut _, PATIENCE_MS),
        ts_error::TS_ERR_INVALID_HANDLE
    );
    close_client(asker);
    close_client(c);
}
