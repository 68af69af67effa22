"""Dialling the broker: a Unix socket file, or on Windows a named pipe.

Both give a :class:`Stream`: bytes out through ``write``, bytes in handed
to the connection's callbacks in the event loop, for it to frame. The Unix side is asyncio's own socket transport; the pipe is opened
with documented kernel32 calls through ctypes (see ``_winpipe``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Callable, List, Optional

from ._errors import BrokerUnavailable

#: Whether endpoints are named pipes (Windows). Tests set it to drive the
#: pipe code against a fake kernel32 on Linux.
USE_PIPES = sys.platform == "win32"


#: Called with each chunk of bytes from the broker.
OnData = Callable[[bytes], None]
#: Called once when the stream has closed, with the error if any.
OnEnd = Callable[[Optional[BaseException]], None]


class Stream:
    """A connected byte stream to the broker. What arrives is handed, in the
    event loop, to the callbacks given to :meth:`start` (anything that came
    before is kept for them)."""

    def __init__(self) -> None:
        self._on_data: Optional[OnData] = None
        self._on_end: Optional[OnEnd] = None
        self._early: List[bytes] = []
        self._ended = False
        self._end_why: Optional[BaseException] = None

    def start(self, on_data: OnData, on_end: OnEnd) -> None:
        """Starts handing bytes to ``on_data``, then the end to ``on_end``."""
        self._on_data, self._on_end = on_data, on_end
        early, self._early = self._early, []
        for data in early:
            on_data(data)
        if self._ended:
            on_end(self._end_why)

    def _deliver(self, data: bytes) -> None:
        if self._ended:
            return
        if self._on_data is None:
            self._early.append(data)
        else:
            self._on_data(data)

    def _finish(self, why: Optional[BaseException]) -> None:
        if self._ended:
            return
        self._ended, self._end_why = True, why
        if self._on_end is not None:
            self._on_end(why)

    def write(self, data: bytes) -> None:
        """Queues ``data`` to send, in order; never blocks."""
        raise NotImplementedError

    async def drain(self) -> None:
        """Waits while too much is queued to send (back-pressure)."""
        raise NotImplementedError

    def close(self) -> None:
        """Closes the stream; the end is reported to ``on_end``."""
        raise NotImplementedError


class _UnixStream(Stream, asyncio.Protocol):
    """A Unix socket through asyncio's own transport, as a protocol: bytes
    reach the connection straight from the selector callback."""

    def __init__(self) -> None:
        Stream.__init__(self)
        self._transport: Optional[asyncio.Transport] = None
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._deliver(data)

    def eof_received(self) -> Optional[bool]:
        return False  # close our side too

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._writable.set()
        self._finish(exc)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        # Only when the kernel stopped taking bytes (asyncio's high-water mark).
        if not self._writable.is_set():
            await self._writable.wait()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def dial(socket: str, timeout: Optional[float]) -> Stream:
    """Connects to ``socket``; :class:`BrokerUnavailable` when nothing answers there."""
    if USE_PIPES:
        from . import _winpipe

        return await _winpipe.dial(socket, timeout)
    loop = asyncio.get_running_loop()
    try:
        _, stream = await asyncio.wait_for(loop.create_unix_connection(_UnixStream, socket), timeout)
    except asyncio.TimeoutError:
        raise BrokerUnavailable(
            f"cannot connect to the broker at {socket}: timed out", socket
        ) from None
    except OSError as e:
        raise BrokerUnavailable(
            f"cannot connect to the broker at {socket}: {e.strerror or e}", socket
        ) from e
    return stream
