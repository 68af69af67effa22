//! Who is calling, from the operating system's word: never from anything
//! the client says.
//!
//! On Unix the kernel's `SO_PEERCRED` (through `interprocess`'s
//! `peer_creds`) gives uid, gid and pid as they were at `connect()`. On
//! Windows `GetNamedPipeClientProcessId` gives the pid; the user is the
//! owner of that process's token (issue: Windows policy by SID).

use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon as _;

/// The kernel's account of a connected peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Effective user id (on Windows: `u32::MAX` until SIDs are mapped).
    pub uid: u32,
    /// Effective group id (on Windows: `u32::MAX`).
    pub gid: u32,
    /// Supplementary groups (`SO_PEERGROUPS` on Linux; empty elsewhere).
    pub groups: Vec<u32>,
    /// Process id.
    pub pid: u32,
}

impl PeerCredentials {
    /// The policy's view of this peer.
    pub fn subject(&self) -> crate::policy::Subject {
        crate::policy::Subject {
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.clone(),
        }
    }
}

/// Reads the peer's credentials from a freshly accepted connection.
pub fn peer_credentials(stream: &Stream) -> std::io::Result<PeerCredentials> {
    let creds = stream.peer_creds()?;
    let pid = creds.pid().map(|p| p as u32).unwrap_or(0);
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let groups = match stream {
            Stream::UdSocket(s) => super::groups::supplementary_groups(s.as_fd()),
        };
        Ok(PeerCredentials {
            uid: creds.euid().unwrap_or(u32::MAX),
            gid: creds.egid().unwrap_or(u32::MAX),
            groups,
            pid,
        })
    }
    #[cfg(windows)]
    {
        Ok(PeerCredentials {
            uid: u32::MAX,
            gid: u32::MAX,
            groups: Vec::new(),
            pid,
        })
    }
}

/// The broker's own user: it and root are trusted with EXCLUSIVE leases
/// by default and are bound only by the total connection limit.
pub fn own_uid() -> u32 {
    #[cfg(unix)]
    {
        // SAFETY: geteuid cannot fail and touches no memory.
        unsafe { libc::geteuid() }
    }
    #[cfg(windows)]
    {
        u32::MAX
    }
}
