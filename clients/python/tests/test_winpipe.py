"""The Windows named-pipe transport, run on Linux against a fake kernel32.

The fake implements the documented contract of the calls the module makes
(CreateFileW, WaitNamedPipeW, overlapped ReadFile/WriteFile completed by
GetOverlappedResult, CancelIoEx, CreateEventW, CloseHandle, the thread's
last error) over a real Unix socket to the real broker, so the whole
client runs over the pipe code path. Only real Windows can prove the
kernel's side (CI cross-builds the broker for it, see .ci/windows).
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import socket
import threading
from typing import Any, Dict, List, Tuple

import pytest

import turnstile
import turnstile.aio
from turnstile import _transport, _winpipe
from conftest import PATIENCE, Broker


class FakeKernel32:
    """kernel32 as the module uses it, backed by Unix sockets."""

    def __init__(self, pipes: Dict[str, str], busy_first: int = 0) -> None:
        self.pipes = pipes  # \\.\pipe\NAME -> Unix socket path
        self.busy_first = busy_first
        self.handles: Dict[int, socket.socket] = {}
        self.pending: Dict[Tuple[int, int], Tuple[str, Any, int]] = {}
        self.cancelled: set[int] = set()
        self.opened: List[Tuple[str, int, int]] = []
        self.waited: List[str] = []
        self.closed: List[int] = []
        self.all_closed = threading.Event()
        self._ids = itertools.count(100)
        self._last = threading.local()
        self._lock = threading.Lock()

    def _fail(self, err: int) -> int:
        self._last.value = err
        return 0

    def get_last_error(self) -> int:
        return int(getattr(self._last, "value", 0))

    def CreateFileW(self, path: str, access: int, share: int, sa: Any, disp: int, flags: int, tmpl: Any) -> Any:
        self.opened.append((path, access, flags))
        if self.busy_first > 0:
            self.busy_first -= 1
            self._last.value = _winpipe.ERROR_PIPE_BUSY
            return _winpipe.INVALID_HANDLE_VALUE
        target = self.pipes.get(path)
        if target is None:
            self._last.value = _winpipe.ERROR_FILE_NOT_FOUND
            return _winpipe.INVALID_HANDLE_VALUE
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(target)
        h = next(self._ids)
        self.handles[h] = s
        return h

    def WaitNamedPipeW(self, path: str, ms: int) -> int:
        self.waited.append(path)
        return 1

    def CreateEventW(self, sa: Any, manual: bool, initial: bool, name: Any) -> int:
        return next(self._ids)

    def _start(self, op: str, h: int, buf: Any, size: int, written: Any, ov: Any) -> int:
        assert written is None, "overlapped I/O must not ask for a byte count up front"
        self.pending[(h, ctypes.addressof(ov._obj))] = (op, buf, size)
        return self._fail(_winpipe.ERROR_IO_PENDING)

    def ReadFile(self, h: int, buf: Any, size: int, read: Any, ov: Any) -> int:
        return self._start("read", h, buf, size, read, ov)

    def WriteFile(self, h: int, buf: Any, size: int, written: Any, ov: Any) -> int:
        return self._start("write", h, buf, size, written, ov)

    def GetOverlappedResult(self, h: int, ov: Any, done: Any, wait: bool) -> int:
        assert wait
        op, buf, size = self.pending.pop((h, ctypes.addressof(ov._obj)))
        s = self.handles[h]
        if h in self.cancelled:
            return self._fail(_winpipe.ERROR_OPERATION_ABORTED)
        try:
            if op == "read":
                data = s.recv(size)
                if not data:
                    return self._fail(
                        _winpipe.ERROR_OPERATION_ABORTED if h in self.cancelled else _winpipe.ERROR_BROKEN_PIPE
                    )
                ctypes.memmove(buf, data, len(data))
                done._obj.value = len(data)
            else:
                done._obj.value = s.send(buf.raw[:size])
        except OSError:
            return self._fail(_winpipe.ERROR_BROKEN_PIPE)
        return 1

    def CancelIoEx(self, h: int, ov: Any) -> int:
        self.cancelled.add(h)
        try:
            self.handles[h].shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return 1

    def CloseHandle(self, h: int) -> int:
        self.closed.append(h)
        s = self.handles.pop(h, None)
        if s is not None:
            s.close()
            if not self.handles:
                self.all_closed.set()
        return 1


@pytest.fixture
def fake(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> FakeKernel32:
    k = FakeKernel32({r"\\.\pipe\turnstile-test": broker.socket}, busy_first=1)
    monkeypatch.setattr(_transport, "USE_PIPES", True)
    monkeypatch.setattr(_winpipe, "_kernel32", k)
    return k


def test_pipe_open_asks_for_least_rights_and_no_impersonation(fake: FakeKernel32) -> None:
    with turnstile.connect("turnstile-test", name="pipe") as c:
        assert c.ping(b"over the pipe") == b"over the pipe"
    path, access, flags = fake.opened[-1]
    assert path == r"\\.\pipe\turnstile-test"
    assert access == 0x0001 | 0x0002 | 0x0080 | 0x00100000  # read/write data, read attributes, synchronize
    assert access & 0x40000000 == 0  # never GENERIC_WRITE
    assert flags & _winpipe.FILE_FLAG_OVERLAPPED
    assert flags & _winpipe.SECURITY_SQOS_PRESENT and flags & _winpipe.SECURITY_IDENTIFICATION
    # The first attempt found every instance busy and waited for one.
    assert fake.waited == [r"\\.\pipe\turnstile-test"]
    assert len(fake.opened) == 2


def test_the_whole_client_over_the_pipe(fake: FakeKernel32, broker: Broker) -> None:
    with turnstile.connect(r"\\.\pipe\turnstile-test", name="pipe") as c:
        with c.acquire("pcm", ttl=0.3, purpose="over a pipe") as lease:
            state = c.status(["pcm"]).resource("pcm")
            assert state is not None and state.holders[0].purpose == "over a pipe"
            # Reads and writes go on at once on the one handle (keep-alive
            # while the reader waits): the lease outlives several TTLs.
            assert not lease.lost.wait(1.0)
        big = b"x" * 200_000  # more than one ReadFile/WriteFile chunk
        c.publish("q", big)
        assert c.consume("q").get(timeout=PATIENCE).payload == big
    # Closing cancelled the pending read and released every handle.
    assert fake.cancelled
    assert fake.all_closed.wait(PATIENCE)


def test_missing_pipe_is_broker_unavailable(fake: FakeKernel32) -> None:
    fake.busy_first = 0
    with pytest.raises(turnstile.BrokerUnavailable) as e:
        turnstile.connect("no-such-pipe")
    assert "no such pipe" in str(e.value)


def test_broker_death_reaches_a_pipe_client(fake: FakeKernel32, broker: Broker) -> None:
    async def run() -> None:
        c = await turnstile.aio.connect("turnstile-test")
        lease = await c.acquire("pcm")
        broker.stop()
        await asyncio.wait_for(lease.lost.wait(), PATIENCE)
        assert lease.lost_reason == "CONNECTION_LOST"
        await c.close()

    asyncio.run(run())
