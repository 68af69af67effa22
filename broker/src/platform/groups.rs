//! The peer's supplementary groups, from the kernel: what the policy's
//! `groups` match besides the effective gid (`PeerCredentials::groups`).
//!
//! On Linux (4.13 and later) `getsockopt(SO_PEERGROUPS)` gives the groups
//! the peer had at `connect()`, like `SO_PEERCRED` gives its uid and gid.
//! Elsewhere, and whenever the kernel refuses, the answer is empty: a
//! subject without its supplementary groups can only be denied more, never
//! granted more. (BSDs and macOS could read `LOCAL_PEERCRED`'s `cr_groups`,
//! capped at 16; not done yet.) Windows has no such call here: a client's
//! groups will come from its token as SIDs.
//!
//! It does not decide anything: the policy does.

#![cfg(unix)]

use std::os::fd::BorrowedFd;

/// The supplementary groups of the process at the other end of a connected
/// Unix socket, as they were when it connected; empty when the platform or
/// the kernel cannot tell.
pub fn supplementary_groups(socket: BorrowedFd<'_>) -> Vec<u32> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        linux::peer_groups(socket).unwrap_or_default()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = socket;
        Vec::new()
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux {
    use std::io;
    use std::mem::size_of;
    use std::os::fd::{AsRawFd, BorrowedFd};

    /// Linux's `NGROUPS_MAX`: no process has more groups than this.
    const NGROUPS_MAX: usize = 65_536;

    /// Enough for almost everyone at the first call.
    const FIRST_GUESS: usize = 64;

    pub(super) fn peer_groups(socket: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
        peer_groups_guessing(socket, FIRST_GUESS)
    }

    fn peer_groups_guessing(socket: BorrowedFd<'_>, guess: usize) -> io::Result<Vec<u32>> {
        let mut groups: Vec<libc::gid_t> = vec![0; guess];
        // The peer's groups are fixed at connect(), so one retry with the
        // size the kernel asked for suffices; a few more cost nothing.
        for _ in 0..4 {
            let mut len = libc::socklen_t::try_from(groups.len() * size_of::<libc::gid_t>())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: the buffer is valid for `len` bytes of writes, `len`
            // is a valid socklen_t, and the fd is open for the borrow.
            let rc = unsafe {
                libc::getsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_PEERGROUPS,
                    groups.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            let count = len as usize / size_of::<libc::gid_t>();
            if rc == 0 {
                groups.truncate(count.min(groups.len()));
                return Ok(groups);
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ERANGE) {
                return Err(err);
            }
            // ERANGE: `len` now holds the size needed.
            let wanted = count.max(groups.len() * 2).max(1);
            if wanted > NGROUPS_MAX {
                return Err(err);
            }
            groups.resize(wanted, 0);
        }
        Err(io::Error::from_raw_os_error(libc::ERANGE))
    }

    #[cfg(test)]
    mod tests {
        use std::os::fd::AsFd;
        use std::os::unix::net::UnixStream;

        use super::*;

        fn own_groups() -> Vec<u32> {
            // SAFETY: a null buffer with size 0 only asks for the count.
            let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
            let mut g = vec![0; usize::try_from(n).unwrap_or(0)];
            // SAFETY: the buffer holds `n` gids.
            let n = unsafe { libc::getgroups(n, g.as_mut_ptr()) };
            g.truncate(usize::try_from(n).unwrap_or(0));
            g
        }

        #[test]
        fn a_peer_in_this_process_has_this_process_s_groups() {
            let (a, _b) = UnixStream::pair().unwrap();
            let mut seen = super::super::supplementary_groups(a.as_fd());
            let mut own = own_groups();
            seen.sort_unstable();
            own.sort_unstable();
            assert_eq!(seen, own);
        }

        #[test]
        fn a_buffer_too_small_at_first_is_retried_larger() {
            // A zero-sized first buffer: ERANGE whenever the process has any
            // supplementary group, then the retry must get them all.
            let (a, _b) = UnixStream::pair().unwrap();
            let mut seen = peer_groups_guessing(a.as_fd(), 0).unwrap();
            let mut own = own_groups();
            seen.sort_unstable();
            own.sort_unstable();
            assert_eq!(seen, own);
        }
    }
}
