//! Who is calling, from the operating system's word: never from anything
//! the client says.
//!
//! On Unix the kernel's `SO_PEERCRED` (through `interprocess`'s
//! `peer_creds`) gives uid, gid and pid as they were at `connect()`. On
//! Windows `GetNamedPipeClientProcessId` gives the pid, and the user and
//! group SIDs of that process's token, mapped to local ids, stand for uid
//! and groups (see `windows_identity`).

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
    /// The account name of the uid ("" if it has none). Filled by
    /// [`PeerCredentials::look_up_names`]; on Windows the user SID at once.
    pub user: String,
    /// The peer's logon session ("" if unknown). Filled by
    /// [`PeerCredentials::look_up_names`].
    pub login_session: String,
}

impl PeerCredentials {
    /// Fills `user` and `login_session` from the system. **Blocking**: a
    /// user lookup may go through NSS (LDAP and the like), so call it off
    /// the runtime's thread. Unix: the passwd entry of the uid. Linux: the
    /// systemd-logind session of the pid (the `session-N.scope` of its
    /// cgroup, which is what `sd_pid_get_session` reads), else the audit
    /// session id in `/proc/PID/sessionid`. Windows: the user SID of the
    /// client's token and the pipe client's session
    /// (`GetNamedPipeClientSessionId`), both read at accept.
    pub fn look_up_names(&mut self) {
        #[cfg(unix)]
        {
            if self.uid != u32::MAX {
                self.user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default();
            }
            self.login_session = login_session(self.pid);
        }
    }
}

/// The logon session of `pid`, "" if unknown.
#[cfg(target_os = "linux")]
fn login_session(pid: u32) -> String {
    if pid == 0 {
        return String::new();
    }
    if let Ok(cgroups) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
        let scope = cgroups
            .lines()
            .filter_map(|line| line.rsplit(':').next())
            .flat_map(|path| path.split('/'))
            .find_map(|part| part.strip_prefix("session-")?.strip_suffix(".scope"));
        if let Some(id) = scope.filter(|id| !id.is_empty()) {
            return id.to_string();
        }
    }
    match std::fs::read_to_string(format!("/proc/{pid}/sessionid")) {
        // (u32)-1: the process has no audit session.
        Ok(id) if !id.trim().is_empty() && id.trim() != "4294967295" => id.trim().to_string(),
        _ => String::new(),
    }
}

/// The logon session of `pid`: not known on this platform.
#[cfg(all(unix, not(target_os = "linux")))]
fn login_session(_pid: u32) -> String {
    String::new()
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
            user: String::new(),
            login_session: String::new(),
        })
    }
    #[cfg(windows)]
    {
        // The client's token: its user SID and group SIDs, each mapped to a
        // local id (see `windows_identity::intern`) so that the policy
        // matches them like uids and gids.
        let login_session = match stream {
            Stream::NamedPipe(s) => {
                windows_identity::pipe_client_session(std::os::windows::io::AsHandle::as_handle(s))
            }
        };
        let (uid, groups, user) = match windows_identity::process_sids(pid) {
            Some((user, groups)) => (
                windows_identity::intern(&user),
                groups.iter().map(|g| windows_identity::intern(g)).collect(),
                user,
            ),
            None => (u32::MAX, Vec::new(), String::new()),
        };
        Ok(PeerCredentials {
            uid,
            gid: u32::MAX,
            groups,
            pid,
            user,
            login_session,
        })
    }
}

/// The Windows side of "who is calling": the SIDs in the access token of
/// the client's process (`OpenProcess` with
/// `PROCESS_QUERY_LIMITED_INFORMATION`, `OpenProcessToken` with
/// `TOKEN_QUERY`, `GetTokenInformation(TokenUser / TokenGroups)`,
/// `ConvertSidToStringSidW`; Microsoft Learn), from the pid the kernel gave
/// for the pipe client (`GetNamedPipeClientProcessId`). The broker never
/// impersonates its clients.
///
/// SIDs are mapped to local ids by [`intern`](windows_identity::intern):
/// LocalSystem (`S-1-5-18`) is 0, like root; every other SID gets a stable
/// id for the broker's lifetime. The policy resolves the users and groups
/// it names (SIDs, or account names through `LookupAccountNameW`) to the
/// same ids, so its rules work unchanged.
#[cfg(windows)]
pub mod windows_identity {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, LocalFree};
    use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
    use windows_sys::Win32::Security::{
        GetTokenInformation, LookupAccountNameW, PSID, SID_NAME_USE, TOKEN_GROUPS, TOKEN_QUERY,
        TOKEN_USER, TokenGroups, TokenUser,
    };
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
    };

    /// The logon session of the pipe's client as Windows numbers it
    /// (`GetNamedPipeClientSessionId`, Microsoft Learn), "" if it cannot
    /// be told.
    pub fn pipe_client_session(pipe: std::os::windows::io::BorrowedHandle<'_>) -> String {
        use std::os::windows::io::AsRawHandle;
        let mut id: u32 = 0;
        // SAFETY: the handle is the live pipe instance borrowed for this
        // call; `id` is a local the call writes.
        let ok = unsafe {
            windows_sys::Win32::System::Pipes::GetNamedPipeClientSessionId(
                pipe.as_raw_handle() as HANDLE,
                &mut id,
            )
        };
        if ok == 0 {
            String::new()
        } else {
            id.to_string()
        }
    }

    /// The id of a SID string: 0 for LocalSystem, else stable per broker run.
    pub fn intern(sid: &str) -> u32 {
        static TABLE: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
        if sid == "S-1-5-18" {
            return 0;
        }
        let Ok(mut table) = TABLE.lock() else {
            return u32::MAX;
        };
        let table = table.get_or_insert_with(HashMap::new);
        let next = 1_000_000 + table.len() as u32;
        *table.entry(sid.to_string()).or_insert(next)
    }

    /// A SID as its string form.
    fn sid_string(sid: PSID) -> Option<String> {
        let mut wide: windows_sys::core::PWSTR = std::ptr::null_mut();
        // SAFETY: `sid` points to a valid SID; the string is freed below.
        if unsafe { ConvertSidToStringSidW(sid, &mut wide) } == 0 || wide.is_null() {
            return None;
        }
        // SAFETY: the system returned a NUL-terminated UTF-16 string.
        let len = (0..).take_while(|&i| unsafe { *wide.add(i) } != 0).count();
        // SAFETY: `len` u16s are readable at `wide`.
        let text = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(wide, len) });
        // SAFETY: allocated by ConvertSidToStringSidW with LocalAlloc.
        unsafe { LocalFree(wide.cast()) };
        Some(text)
    }

    /// One `GetTokenInformation` class of a token, in an aligned buffer.
    fn token_info(token: HANDLE, class: i32) -> Option<Vec<u64>> {
        let mut len = 0u32;
        // SAFETY: a size query with no buffer, as documented.
        unsafe { GetTokenInformation(token, class, std::ptr::null_mut(), 0, &mut len) };
        // The length comes from the kernel, not from the client.
        let mut buf = vec![0u64; (len as usize).div_ceil(8).max(1)];
        // SAFETY: `buf` holds at least `len` bytes, 8-byte aligned.
        let ok =
            unsafe { GetTokenInformation(token, class, buf.as_mut_ptr().cast(), len, &mut len) };
        (ok != 0).then_some(buf)
    }

    /// The user SID and group SIDs of a process's token.
    fn token_sids(process: HANDLE) -> Option<(String, Vec<String>)> {
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: `process` is a valid process handle; the token is closed.
        if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
            return None;
        }
        let user = token_info(token, TokenUser);
        let groups = token_info(token, TokenGroups);
        // SAFETY: opened above, closed once.
        unsafe { CloseHandle(token) };
        // SAFETY: the buffers hold what the kernel wrote for these classes;
        // the SID pointers point into the same buffers, alive here.
        unsafe {
            let user = sid_string((*user?.as_ptr().cast::<TOKEN_USER>()).User.Sid)?;
            let mut group_sids = Vec::new();
            if let Some(g) = groups {
                let list = g.as_ptr().cast::<TOKEN_GROUPS>();
                let count = (*list).GroupCount as usize;
                let first = std::ptr::addr_of!((*list).Groups)
                    .cast::<windows_sys::Win32::Security::SID_AND_ATTRIBUTES>();
                for i in 0..count {
                    if let Some(s) = sid_string((*first.add(i)).Sid) {
                        group_sids.push(s);
                    }
                }
            }
            Some((user, group_sids))
        }
    }

    /// The SIDs of the process `pid`, if it can be opened.
    pub fn process_sids(pid: u32) -> Option<(String, Vec<String>)> {
        // SAFETY: OpenProcess returns null on failure; the handle is closed.
        let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if process.is_null() {
            return None;
        }
        let sids = token_sids(process);
        // SAFETY: closed once.
        unsafe { CloseHandle(process) };
        sids
    }

    /// The broker's own user SID.
    pub fn own_sid() -> Option<String> {
        // SAFETY: the pseudo-handle of this process needs no closing.
        token_sids(unsafe { GetCurrentProcess() }).map(|(user, _)| user)
    }

    /// The SID of an account name (`LookupAccountNameW` on this machine,
    /// which also knows domain accounts); a string that already is a SID
    /// (`S-1-...`) is taken as it is.
    pub fn account_sid(name: &str) -> Result<Option<String>, String> {
        if name.starts_with("S-1-") {
            return Ok(Some(name.to_string()));
        }
        let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
        let mut sid = vec![0u64; 16]; // 128 bytes: larger than any SID (68)
        let mut sid_len = (sid.len() * 8) as u32;
        let mut domain = vec![0u16; 256];
        let mut domain_len = domain.len() as u32;
        let mut kind: SID_NAME_USE = 0;
        // SAFETY: every buffer is as large as the length passed with it.
        let ok = unsafe {
            LookupAccountNameW(
                std::ptr::null(),
                wide.as_ptr(),
                sid.as_mut_ptr().cast(),
                &mut sid_len,
                domain.as_mut_ptr(),
                &mut domain_len,
                &mut kind,
            )
        };
        if ok == 0 {
            // ERROR_NONE_MAPPED (1332): no such account.
            let e = std::io::Error::last_os_error();
            return if e.raw_os_error() == Some(1332) {
                Ok(None)
            } else {
                Err(e.to_string())
            };
        }
        Ok(sid_string(sid.as_mut_ptr().cast()))
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
        // The id its own SID maps to (see `windows_identity::intern`).
        windows_identity::own_sid().map_or(u32::MAX, |sid| windows_identity::intern(&sid))
    }
}
