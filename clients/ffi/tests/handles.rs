//! Every handle is freed by its own function: once all are closed and
//! released, the library holds none (its own file, so that no other test
//! opens handles in this process meanwhile).

mod support;

use std::ffi::CString;
use std::ptr::{null, null_mut};

use support::*;
use turnstile::*;

#[test]
fn every_handle_is_freed_by_its_own_function() {
    let b = spawn_broker();
    assert_eq!(ts_open_handles(), 0);
    let c = b.connect("handles");
    let q = CString::new("counted").unwrap();
    let mut consumer = null_mut();
    ok(unsafe { ts_consume(c, q.as_ptr(), 0, None, null_mut(), &mut consumer) });
    let mut w = null_mut();
    ok(unsafe { ts_watch_open(c, null(), 0, None, null_mut(), &mut w) });
    let mut lease = null_mut();
    ok(unsafe { ts_acquire(c, q.as_ptr(), null(), PATIENCE_MS, &mut lease) });
    assert_eq!(ts_open_handles(), 4);
    // Closing the client first leaves the others usable.
    close_client(c);
    assert_eq!(ts_open_handles(), 3);
    ok(unsafe { ts_lease_report_progress(lease, 1, 2, null(), PATIENCE_MS) });
    ok(ts_lease_release(lease, PATIENCE_MS));
    ok(ts_watch_close(w));
    ok(ts_consumer_close(consumer));
    assert_eq!(ts_open_handles(), 0);
}
