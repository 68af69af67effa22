//! A connection split into the halves its reader and writer tasks own.
//!
//! Unix: tokio's own `UnixStream` halves. Their reads stop polling the
//! socket after a short read, where interprocess's `&Stream` reads try
//! once more and get EAGAIN: a measured extra `recvfrom` per request.
//!
//! Windows: both halves use one shared pipe handle (`&Stream` reads and
//! writes; interprocess's advice in place of its deprecated `split`). The
//! pipe closes when both are gone.

use interprocess::local_socket::tokio::Stream;
use tokio::io::{AsyncRead, AsyncWrite};

/// The reading and the writing half of a connection.
#[cfg(unix)]
pub fn split(
    stream: Stream,
) -> (
    impl AsyncRead + Send + Unpin,
    impl AsyncWrite + Send + Unpin,
) {
    match stream {
        Stream::UdSocket(s) => tokio::net::UnixStream::from(s).into_split(),
    }
}

/// The reading and the writing half of a connection.
#[cfg(windows)]
pub fn split(
    stream: Stream,
) -> (
    impl AsyncRead + Send + Unpin,
    impl AsyncWrite + Send + Unpin,
) {
    let shared = windows::Shared(std::sync::Arc::new(stream));
    (shared.clone(), shared)
}

#[cfg(windows)]
mod windows {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use interprocess::local_socket::tokio::Stream;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    /// One pipe handle shared by both halves.
    #[derive(Clone)]
    pub(super) struct Shared(pub(super) Arc<Stream>);

    impl AsyncRead for Shared {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut &*self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Shared {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut &*self.0).poll_write(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut &*self.0).poll_flush(cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut &*self.0).poll_shutdown(cx)
        }
    }
}
