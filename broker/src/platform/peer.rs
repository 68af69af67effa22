//! Who is calling, from the operating system's word: never from anything
//! the client says.
//!
//! On Unix the kernel's `SO_PEERCRED` (through `interprocess`'s
//! `peer_creds`) gives uid, gid and pid as they were at `connect()`. On
//! Windows `GetNamedPipeClientProcessId` gives the pid, and the user SID of
//! that process's token says whether it is the broker's own account or
//! LocalSystem (privileged) or anyone else (the policy's defaults; SID
//! rules are not written yet).

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
        // Until the policy speaks SIDs: a client running as the broker's
        // own account or as LocalSystem counts as privileged (uid 0, like
        // root); anyone else is an unknown id, which the policy treats as
        // unprivileged (only the defaults apply to it).
        let uid = if windows_identity::privileged(pid) {
            0
        } else {
            u32::MAX
        };
        Ok(PeerCredentials {
            uid,
            gid: u32::MAX,
            groups: Vec::new(),
            pid,
        })
    }
}

/// The Windows side of "who is calling": the user SID in the access token
/// of the client's process (`OpenProcess` with
/// `PROCESS_QUERY_LIMITED_INFORMATION`, `OpenProcessToken` with
/// `TOKEN_QUERY`, `GetTokenInformation(TokenUser)`; Microsoft Learn), from
/// the pid the kernel gave for the pipe client
/// (`GetNamedPipeClientProcessId`). The broker never impersonates its
/// clients.
#[cfg(windows)]
mod windows_identity {
    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
    use windows_sys::Win32::Security::{
        EqualSid, GetTokenInformation, IsWellKnownSid, TOKEN_QUERY, TOKEN_USER, TokenUser,
        WinLocalSystemSid,
    };
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
    };

    /// The `TOKEN_USER` of a process's token, in an 8-byte aligned buffer.
    fn token_user(process: HANDLE) -> Option<Vec<u64>> {
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: `process` is a valid process handle; `token` receives a
        // handle that is closed below.
        if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
            return None;
        }
        let mut len = 0u32;
        // SAFETY: a size query with no buffer, as documented.
        unsafe { GetTokenInformation(token, TokenUser, std::ptr::null_mut(), 0, &mut len) };
        // The length comes from the kernel, not from the client.
        let mut buf = vec![0u64; (len as usize).div_ceil(8).max(1)];
        // SAFETY: `buf` holds at least `len` bytes, aligned for TOKEN_USER.
        let ok = unsafe {
            GetTokenInformation(token, TokenUser, buf.as_mut_ptr().cast(), len, &mut len)
        };
        // SAFETY: the token handle was opened above and is closed once.
        unsafe { CloseHandle(token) };
        (ok != 0).then_some(buf)
    }

    /// Whether the process `pid` runs as the broker's own account or as
    /// LocalSystem.
    pub fn privileged(pid: u32) -> bool {
        // SAFETY: OpenProcess returns null on failure; the handle is closed.
        let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if process.is_null() {
            return false;
        }
        let peer = token_user(process);
        // SAFETY: closed once.
        unsafe { CloseHandle(process) };
        // SAFETY: the pseudo-handle of this process needs no closing.
        let me = token_user(unsafe { GetCurrentProcess() });
        let (Some(peer), Some(me)) = (peer, me) else {
            return false;
        };
        // SAFETY: both buffers hold a TOKEN_USER written by the kernel; its
        // SID pointers point into the same buffers, alive here.
        unsafe {
            let peer_sid = (*peer.as_ptr().cast::<TOKEN_USER>()).User.Sid;
            let my_sid = (*me.as_ptr().cast::<TOKEN_USER>()).User.Sid;
            EqualSid(peer_sid, my_sid) != 0 || IsWellKnownSid(peer_sid, WinLocalSystemSid) != 0
        }
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
        // Peers running as the broker's own account are mapped to uid 0
        // (see `peer_credentials`).
        0
    }
}
