"""The broker's named pipe on Windows, through documented kernel32 calls.

The pipe is opened like the Rust client does (``clients/client/src/transport.rs``):
``CreateFileW`` asking for ``FILE_READ_DATA | FILE_WRITE_DATA |
FILE_READ_ATTRIBUTES | SYNCHRONIZE`` only (never ``GENERIC_WRITE``, whose
``FILE_APPEND_DATA`` bit is ``FILE_CREATE_PIPE_INSTANCE``, which the
broker's DACL denies clients), with ``SECURITY_SQOS_PRESENT |
SECURITY_IDENTIFICATION`` so that a server squatting the name can identify
the client but never impersonate it. ``ERROR_PIPE_BUSY`` waits with
``WaitNamedPipeW``.

The handle is overlapped, so that one thread can sit in a read while
another writes (a synchronous handle serialises all I/O on it): a reader
thread loops on ``ReadFile`` + ``GetOverlappedResult`` and hands the bytes
to the event loop; a writer thread drains an ordered queue with
``WriteFile``. Closing cancels the pending I/O with ``CancelIoEx``.

Everything goes through one :class:`Kernel32` object, so that Linux tests
can run this module against a fake one (``tests/test_winpipe.py``).
"""

from __future__ import annotations

import asyncio
import ctypes
import queue
import threading
import time
from typing import Any, Callable, Optional

from ._errors import BrokerUnavailable
from ._transport import Stream

# Documented constants (winnt.h, fileapi.h, winbase.h, winerror.h).
FILE_READ_DATA = 0x0001
FILE_WRITE_DATA = 0x0002
FILE_READ_ATTRIBUTES = 0x0080
SYNCHRONIZE = 0x00100000
OPEN_EXISTING = 3
FILE_FLAG_OVERLAPPED = 0x40000000
SECURITY_SQOS_PRESENT = 0x00100000
SECURITY_IDENTIFICATION = 0x00010000
INVALID_HANDLE_VALUE = ctypes.c_void_p(-1).value
ERROR_FILE_NOT_FOUND = 2
ERROR_ACCESS_DENIED = 5
ERROR_BROKEN_PIPE = 109
ERROR_SEM_TIMEOUT = 121
ERROR_PIPE_BUSY = 231
ERROR_NO_DATA = 232
ERROR_PIPE_NOT_CONNECTED = 233
ERROR_MORE_DATA = 234
ERROR_OPERATION_ABORTED = 995
ERROR_IO_PENDING = 997

_CLOSED_ERRORS = (ERROR_BROKEN_PIPE, ERROR_NO_DATA, ERROR_PIPE_NOT_CONNECTED, ERROR_OPERATION_ABORTED)
_READ_CHUNK = 65536


class OVERLAPPED(ctypes.Structure):
    """The ``OVERLAPPED`` structure of ``minwinbase.h`` (offsets unused on a pipe)."""

    _fields_ = [
        ("Internal", ctypes.c_void_p),
        ("InternalHigh", ctypes.c_void_p),
        ("Offset", ctypes.c_uint32),
        ("OffsetHigh", ctypes.c_uint32),
        ("hEvent", ctypes.c_void_p),
    ]


class Kernel32:
    """The kernel32 functions this module calls, with their ctypes signatures.

    ``get_last_error`` reads the error the last call left (``GetLastError``,
    saved by ctypes right after the call).
    """

    def __init__(self) -> None:
        dll: Any = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        handle, dword, bool_ = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
        lp = ctypes.c_void_p

        def bind(name: str, restype: Any, *argtypes: Any) -> Callable[..., Any]:
            f = getattr(dll, name)
            f.restype = restype
            f.argtypes = list(argtypes)
            return f  # type: ignore[no-any-return]

        self.CreateFileW = bind(
            "CreateFileW", handle, ctypes.c_wchar_p, dword, dword, lp, dword, dword, handle
        )
        self.WaitNamedPipeW = bind("WaitNamedPipeW", bool_, ctypes.c_wchar_p, dword)
        self.ReadFile = bind("ReadFile", bool_, handle, lp, dword, lp, lp)
        self.WriteFile = bind("WriteFile", bool_, handle, lp, dword, lp, lp)
        self.GetOverlappedResult = bind("GetOverlappedResult", bool_, handle, lp, lp, bool_)
        self.CreateEventW = bind("CreateEventW", handle, lp, bool_, bool_, ctypes.c_wchar_p)
        self.CancelIoEx = bind("CancelIoEx", bool_, handle, lp)
        self.CloseHandle = bind("CloseHandle", bool_, handle)
        self.get_last_error: Callable[[], int] = ctypes.get_last_error  # type: ignore[attr-defined]


_kernel32: Optional[Any] = None


def kernel32() -> Any:
    """The process's :class:`Kernel32`, loaded on first use (tests replace ``_kernel32``)."""
    global _kernel32
    if _kernel32 is None:
        _kernel32 = Kernel32()
    return _kernel32


def pipe_path(socket: str) -> str:
    r"""``\\.\pipe\NAME`` for a bare NAME; a path starting with ``\\`` as it is."""
    return socket if socket.startswith("\\\\") else "\\\\.\\pipe\\" + socket


class PipeHandle:
    """An open, overlapped pipe handle: blocking ``read``/``write`` for one
    reader thread and one writer thread at a time."""

    def __init__(self, k: Any, handle: int) -> None:
        self._k = k
        self._handle = handle
        self._read_event = k.CreateEventW(None, True, False, None)
        self._write_event = k.CreateEventW(None, True, False, None)
        self._closed = threading.Event()

    def _io(self, fn: Any, buf: Any, size: int, event: int) -> int:
        """One overlapped ReadFile/WriteFile, waited for; bytes moved, 0 once closed."""
        if self._closed.is_set():
            return 0
        ov = OVERLAPPED()
        ov.hEvent = event
        done = ctypes.c_uint32(0)
        if not fn(self._handle, buf, size, None, ctypes.byref(ov)):
            err = self._k.get_last_error()
            if err in _CLOSED_ERRORS:
                return 0
            if err != ERROR_IO_PENDING:
                raise OSError(err, f"pipe I/O failed (Windows error {err})")
        if not self._k.GetOverlappedResult(self._handle, ctypes.byref(ov), ctypes.byref(done), True):
            err = self._k.get_last_error()
            if err in _CLOSED_ERRORS:
                return 0
            if err != ERROR_MORE_DATA:
                raise OSError(err, f"pipe I/O failed (Windows error {err})")
        return int(done.value)

    def read(self) -> bytes:
        """Blocks for the next bytes; ``b""`` when the pipe is closed."""
        buf = ctypes.create_string_buffer(_READ_CHUNK)
        n = self._io(self._k.ReadFile, buf, _READ_CHUNK, self._read_event)
        return buf.raw[:n]

    def write(self, data: bytes) -> bool:
        """Writes all of ``data``; ``False`` when the pipe is closed."""
        view = memoryview(data)
        while view:
            chunk = bytes(view[:_READ_CHUNK])
            buf = ctypes.create_string_buffer(chunk, len(chunk))
            n = self._io(self._k.WriteFile, buf, len(chunk), self._write_event)
            if n == 0:
                return False
            view = view[n:]
        return True

    def cancel(self) -> None:
        """Makes pending and later I/O answer "closed"."""
        if not self._closed.is_set():
            self._closed.set()
            self._k.CancelIoEx(self._handle, None)

    def close(self) -> None:
        """Releases the handle and its events (after both threads stopped)."""
        self.cancel()
        self._k.CloseHandle(self._handle)
        self._k.CloseHandle(self._read_event)
        self._k.CloseHandle(self._write_event)


class _PipeStream(Stream):
    def __init__(self, pipe: PipeHandle, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._pipe = pipe
        self._loop = loop
        self._outgoing: "queue.Queue[Optional[bytes]]" = queue.Queue()
        self._reader = threading.Thread(target=self._read_loop, name="turnstile-pipe-reader", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="turnstile-pipe-writer", daemon=True)
        self._reader.start()
        self._writer.start()

    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    data = self._pipe.read()
                except OSError:
                    data = b""
                self._post(data)
                if not data:
                    return
        finally:
            self._outgoing.put(None)
            self._writer.join()
            self._pipe.close()

    def _post(self, data: bytes) -> None:
        try:
            if data:
                self._loop.call_soon_threadsafe(self._deliver, data)
            else:
                self._loop.call_soon_threadsafe(self._finish, None)
        except RuntimeError:  # the loop is closed: nobody reads any more
            pass

    def _write_loop(self) -> None:
        while True:
            data = self._outgoing.get()
            if data is None:
                return
            try:
                if not self._pipe.write(data):
                    self._pipe.cancel()
            except OSError:
                self._pipe.cancel()

    def write(self, data: bytes) -> None:
        self._outgoing.put(data)

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self._pipe.cancel()


def _open(path: str, deadline: Optional[float]) -> PipeHandle:
    k = kernel32()
    while True:
        handle = k.CreateFileW(
            path,
            FILE_READ_DATA | FILE_WRITE_DATA | FILE_READ_ATTRIBUTES | SYNCHRONIZE,
            0,
            None,
            OPEN_EXISTING,
            FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
            None,
        )
        if handle is not None and handle != INVALID_HANDLE_VALUE:
            return PipeHandle(k, handle)
        err = k.get_last_error()
        if err == ERROR_PIPE_BUSY:
            # Every instance is taken for a moment: wait for one.
            left = 1000 if deadline is None else int((deadline - time.monotonic()) * 1000)
            if left > 0:
                k.WaitNamedPipeW(path, min(left, 1000))
                continue
        why = {
            ERROR_FILE_NOT_FOUND: "no such pipe",
            ERROR_ACCESS_DENIED: "access denied",
            ERROR_PIPE_BUSY: "every pipe instance is busy",
        }.get(err, f"Windows error {err}")
        raise BrokerUnavailable(f"cannot connect to the broker at {path}: {why}", path)


async def dial(socket: str, timeout: Optional[float]) -> Stream:
    """Opens the broker's pipe (blocking calls run in a worker thread)."""
    path = pipe_path(socket)
    deadline = None if timeout is None else time.monotonic() + timeout
    loop = asyncio.get_running_loop()
    pipe = await loop.run_in_executor(None, _open, path, deadline)
    return _PipeStream(pipe, loop)
