//! A connection split into the half its task reads from and the half it
//! writes to ([`Writer`]); on Unix the core writes through the same half
//! ([`Writer::direct`]) when the connection has nothing waiting to go out.
//!
//! Unix: tokio's own `UnixStream` halves. Their reads stop polling the
//! socket after a short read, where interprocess's `&Stream` reads try
//! once more and get EAGAIN: a measured extra `recvfrom` per request. The
//! write half is shared (an `Arc`): the connection's task writes through
//! it, and so may the core, without waiting, with `try_write` (issue 14:
//! a waiter's grant or a watch event then costs no wake-up and poll of the
//! connection's task).
//!
//! Windows: both halves use one shared pipe handle (`&Stream` reads and
//! writes; interprocess's advice in place of its deprecated `split`). The
//! pipe closes when both are gone. Only the connection's task writes.

use interprocess::local_socket::tokio::Stream;
use tokio::io::AsyncRead;

pub use imp::Writer;

/// The reading and the writing half of a connection.
#[cfg(unix)]
pub fn split(stream: Stream) -> (impl AsyncRead + Send + Unpin, Writer) {
    match stream {
        Stream::UdSocket(s) => {
            let (read, write) = tokio::net::UnixStream::from(s).into_split();
            (read, Writer(std::sync::Arc::new(write)))
        }
    }
}

/// The reading and the writing half of a connection.
#[cfg(windows)]
pub fn split(stream: Stream) -> (impl AsyncRead + Send + Unpin, Writer) {
    let shared = imp::Shared(std::sync::Arc::new(stream));
    (shared.clone(), Writer(shared))
}

#[cfg(unix)]
mod imp {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, ready};

    use tokio::io::AsyncWrite;
    use tokio::net::UnixStream;
    use tokio::net::unix::OwnedWriteHalf;

    /// The writing half of a connection, shared by its task and the core.
    #[derive(Debug)]
    pub struct Writer(pub(super) Arc<OwnedWriteHalf>);

    impl Writer {
        /// A handle the core writes through without waiting (see
        /// [`Writer::try_write`]); `None` where only the connection's task
        /// may write.
        pub fn direct(&self) -> Option<Writer> {
            Some(Writer(self.0.clone()))
        }

        /// Writes what the socket takes now, without waiting: `Ok(0)` or
        /// `WouldBlock` when it takes nothing.
        pub fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.try_write(buf)
        }

        fn stream(&self) -> &UnixStream {
            (*self.0).as_ref()
        }
    }

    impl AsyncWrite for Writer {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            // What tokio's own write half does, through a shared reference:
            // a `WouldBlock` clears the readiness, so the next poll waits.
            loop {
                ready!(self.stream().poll_write_ready(cx))?;
                match self.stream().try_write(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    written => return Poll::Ready(written),
                }
            }
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        /// Shuts the writing side down once the task holds the only handle
        /// (the core's is dropped first: see `ReadGate::close_queue`);
        /// otherwise the socket closes when the last handle goes.
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            match Arc::get_mut(&mut self.0) {
                Some(half) => Pin::new(half).poll_shutdown(cx),
                None => Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(windows)]
mod imp {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use interprocess::local_socket::tokio::Stream;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    /// One pipe handle shared by both halves.
    #[derive(Clone)]
    pub(super) struct Shared(pub(super) Arc<Stream>);

    /// The writing half of a connection: only its task writes.
    pub struct Writer(pub(super) Shared);

    impl std::fmt::Debug for Writer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Writer")
        }
    }

    impl Writer {
        /// `None`: on a named pipe only the connection's task writes (a
        /// write that cannot wait would need overlapped I/O of its own).
        pub fn direct(&self) -> Option<Writer> {
            None
        }

        /// Never called (see [`Writer::direct`]): takes nothing.
        pub fn try_write(&self, _buf: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    }

    impl AsyncRead for Shared {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut &*self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Writer {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut &*self.0.0).poll_write(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut &*self.0.0).poll_flush(cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut &*self.0.0).poll_shutdown(cx)
        }
    }
}
