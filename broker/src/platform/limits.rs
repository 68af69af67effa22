//! How many files the broker may have open: every connection is one
//! descriptor, and a soft `RLIMIT_NOFILE` of 256 or 1024 (what many systems
//! start processes with) would cap `--max-connections` long before its
//! default of 10 000, with `accept()` failing `EMFILE`.
//!
//! At start the broker raises its soft limit to the hard limit (what any
//! process may do for itself; systemd's `LimitNOFILE=` or `ulimit -Hn` set
//! the hard one) and says what it got; deciding whether that is enough is
//! the caller's (`cli.rs`). Windows has no such per-process limit on
//! handles: there is nothing to raise.

use std::io;

/// The open-files limit before and after raising it (`rlim_t` is a `u64`
/// on every Unix the broker builds for).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the broker was started with.
    pub before: u64,
    /// The soft limit now in force.
    pub now: u64,
    /// The hard limit: the most the soft one could be raised to.
    pub hard: u64,
}

/// Raises the soft open-files limit to the hard limit; `Ok(None)` where
/// there is no such limit (Windows).
#[cfg(unix)]
pub fn raise_open_files_limit() -> io::Result<Option<OpenFiles>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let set = |cur: libc::rlim_t| {
            let wanted = libc::rlimit {
                rlim_cur: cur,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: setrlimit reads the struct it is given.
            (unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0).then_some(cur)
        };
        // macOS refuses an unlimited soft limit: it takes at most OPEN_MAX.
        #[cfg(target_os = "macos")]
        let set =
            |cur: libc::rlim_t| set(cur).or_else(|| set(cur.min(libc::OPEN_MAX as libc::rlim_t)));
        limit.rlim_cur = set(limit.rlim_max).ok_or_else(io::Error::last_os_error)?;
    }
    Ok(Some(OpenFiles {
        before,
        now: limit.rlim_cur,
        hard: limit.rlim_max,
    }))
}

/// Windows: no per-process limit on handles to raise.
#[cfg(windows)]
pub fn raise_open_files_limit() -> io::Result<Option<OpenFiles>> {
    Ok(None)
}
