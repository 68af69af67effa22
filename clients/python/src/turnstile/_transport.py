"""Dialling the broker: a Unix socket file, or on Windows a named pipe.

Both give a :class:`Stream`: bytes in, bytes out, for the connection to
frame. The Unix side is asyncio's own socket transport; the pipe is opened
with documented kernel32 calls through ctypes (see ``_winpipe``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Optional

from ._errors import BrokerUnavailable

#: Whether endpoints are named pipes (Windows). Tests set it to drive the
#: pipe code against a fake kernel32 on Linux.
USE_PIPES = sys.platform == "win32"

_READ_CHUNK = 65536


class Stream:
    """A connected byte stream to the broker."""

    async def read(self) -> bytes:
        """The next bytes from the broker; ``b""`` once it has closed."""
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        """Queues ``data`` to send, in order; never blocks."""
        raise NotImplementedError

    async def drain(self) -> None:
        """Waits while too much is queued to send (back-pressure)."""
        raise NotImplementedError

    def close(self) -> None:
        """Closes the stream; a pending ``read`` answers ``b""``."""
        raise NotImplementedError


class _UnixStream(Stream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._drain_lock = asyncio.Lock()

    async def read(self) -> bytes:
        try:
            return await self._reader.read(_READ_CHUNK)
        except (ConnectionError, OSError):
            return b""

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        # Only when the kernel stopped taking bytes; one drainer at a time
        # (Python 3.9's drain() refuses concurrent callers).
        if self._writer.transport.get_write_buffer_size() > _READ_CHUNK:
            async with self._drain_lock:
                await self._writer.drain()

    def close(self) -> None:
        self._writer.close()


async def dial(socket: str, timeout: Optional[float]) -> Stream:
    """Connects to ``socket``; :class:`BrokerUnavailable` when nothing answers there."""
    if USE_PIPES:
        from . import _winpipe

        return await _winpipe.dial(socket, timeout)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(socket, limit=_READ_CHUNK), timeout
        )
    except asyncio.TimeoutError:
        raise BrokerUnavailable(
            f"cannot connect to the broker at {socket}: timed out", socket
        ) from None
    except OSError as e:
        raise BrokerUnavailable(
            f"cannot connect to the broker at {socket}: {e.strerror or e}", socket
        ) from e
    return _UnixStream(reader, writer)
