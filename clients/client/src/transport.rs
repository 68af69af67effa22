//! Dialling the broker: a Unix socket file, or on Windows a named pipe
//! opened with the least rights a client needs.
//!
//! Windows: the pipe is opened with `CreateFileW` asking for
//! `FILE_READ_DATA | FILE_WRITE_DATA | FILE_READ_ATTRIBUTES | SYNCHRONIZE`
//! only, never `GENERIC_WRITE` (which includes `FILE_APPEND_DATA`, the
//! same bit as `FILE_CREATE_PIPE_INSTANCE`, so the broker's DACL can deny
//! clients the right to create pipe instances), and with
//! `SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION`, so a rogue server
//! squatting the name can identify the client but never impersonate it
//! ("Impersonation Levels", "Named Pipe Security and Access Rights",
//! Microsoft Learn). The handle is overlapped, as tokio requires.

use std::io;
use std::path::Path;

/// A connection's reading and writing halves.
pub(crate) type Halves = (
    Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
);

/// A second descriptor of a Unix connection, kept for child processes to
/// inherit (see `ConnectOptions::keep_socket_for_children`). Windows keeps
/// none: the type has no value there.
#[cfg(unix)]
pub(crate) type Kept = std::os::fd::OwnedFd;
/// Windows keeps no second handle.
#[cfg(windows)]
pub(crate) enum Kept {}

/// Duplicates the connection's descriptor (close-on-exec, like every
/// descriptor Rust opens).
#[cfg(unix)]
fn keep(s: &tokio::net::UnixStream) -> io::Result<Kept> {
    use std::os::fd::AsFd;
    s.as_fd().try_clone_to_owned()
}

/// Connects to the broker's socket (a socket file, through interprocess),
/// then reads and writes through tokio's own halves, which stop polling
/// after a short read (one `recvfrom` per frame, not two).
/// With `keep`, also a second descriptor of the connection.
#[cfg(unix)]
pub(crate) async fn dial(socket: &Path, keep: bool) -> io::Result<(Halves, Option<Kept>)> {
    use interprocess::local_socket::tokio::Stream;
    use interprocess::local_socket::traits::tokio::Stream as _;
    use interprocess::local_socket::{GenericFilePath, ToFsName};
    let Stream::UdSocket(s) = Stream::connect(socket.to_fs_name::<GenericFilePath>()?).await?;
    let s = tokio::net::UnixStream::from(s);
    let kept = if keep { Some(self::keep(&s)?) } else { None };
    let (r, w) = s.into_split();
    Ok(((Box::new(r), Box::new(w)), kept))
}

/// Connects to the broker's named pipe: `\\.\pipe\NAME` or a bare NAME
/// (`keep` is a Unix matter: nothing is kept).
#[cfg(windows)]
pub(crate) async fn dial(socket: &Path, _keep: bool) -> io::Result<(Halves, Option<Kept>)> {
    use std::os::windows::ffi::OsStrExt;
    use tokio::net::windows::named_pipe::NamedPipeClient;
    use windows_sys::Win32::Foundation::{ERROR_PIPE_BUSY, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::Storage::FileSystem::{
        CreateFileW, FILE_FLAG_OVERLAPPED, FILE_READ_ATTRIBUTES, FILE_READ_DATA, FILE_WRITE_DATA,
        OPEN_EXISTING, SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT, SYNCHRONIZE,
    };

    let text = socket.to_string_lossy();
    let full = if text.starts_with(r"\\") {
        text.to_string()
    } else {
        format!(r"\\.\pipe\{text}")
    };
    let wide: Vec<u16> = std::ffi::OsStr::new(&full)
        .encode_wide()
        .chain(std::iter::once(0))
        .collect();
    loop {
        // SAFETY: `wide` is a NUL-terminated UTF-16 path that outlives the
        // call; no security attributes or template handle are passed.
        let handle = unsafe {
            CreateFileW(
                wide.as_ptr(),
                FILE_READ_DATA | FILE_WRITE_DATA | FILE_READ_ATTRIBUTES | SYNCHRONIZE,
                0,
                std::ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
                std::ptr::null_mut(),
            )
        };
        if handle == INVALID_HANDLE_VALUE {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) {
                // Every instance is taken for a moment: try again shortly.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
            return Err(e);
        }
        // SAFETY: the handle was just opened, overlapped, and is owned here.
        let pipe = unsafe { NamedPipeClient::from_raw_handle(handle as _) }?;
        let (r, w) = tokio::io::split(pipe);
        return Ok(((Box::new(r), Box::new(w)), None));
    }
}
