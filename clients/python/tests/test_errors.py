"""Every error class the broker (or the client) can be made to raise, each
a subclass of turnstile.Error named after its wire code."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Callable, List, Tuple

import pytest

import turnstile
import turnstile._wire
import turnstile.aio
from conftest import PATIENCE, Broker


def test_every_error_is_a_turnstile_error() -> None:
    for name in turnstile.__all__:
        obj = getattr(turnstile, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, turnstile.Error), name
    assert issubclass(turnstile.TimedOut, TimeoutError)
    assert issubclass(turnstile.BrokerUnavailable, ConnectionError)
    assert issubclass(turnstile.ConnectionLost, turnstile.BrokerUnavailable)


def test_busy_names_the_holder(broker: Broker) -> None:
    with broker.connect("holder") as a, broker.connect("other") as b:
        with a.acquire("pcm", purpose="job"):
            with pytest.raises(turnstile.Busy) as e:
                b.acquire("pcm", wait=False)
            assert "holder" in e.value.message and e.value.code == "BUSY"


def test_invalid_argument(broker: Broker) -> None:
    with broker.connect() as c:
        with pytest.raises(turnstile.InvalidArgument):
            c.acquire("")
        with pytest.raises(turnstile.InvalidArgument):
            c.acquire("pcm", ttl=0.01)  # under the broker's 100 ms minimum
        with pytest.raises(turnstile.InvalidArgument):
            c.publish("bad\nname", b"x")
        with pytest.raises(turnstile.InvalidArgument):
            c.acquire("pcm", ttl=-1.0)  # refused before sending
        assert c.ping(b"still open") == b"still open"


def test_wrong_types_name_the_argument(broker: Broker) -> None:
    # Checked before protobuf sees them (whose TypeError names nothing);
    # the connection serves on.
    with broker.connect() as c:
        cases: List[Tuple[Callable[[], object], str]] = [
            (lambda: c.acquire(5), "resource must be a str"),  # type: ignore[arg-type]
            (lambda: c.acquire(b"pcm"), "resource must be a str"),  # type: ignore[arg-type]
            (lambda: c.acquire("pcm", purpose=5), "purpose must be a str"),  # type: ignore[arg-type]
            (lambda: c.publish("q", 5), "payload must be bytes or str"),  # type: ignore[arg-type]
            (lambda: c.publish("q", b"x", headers={"a": 1}), "header 'a'"),  # type: ignore[dict-item]
            (lambda: c.history(5), "resource must be a str"),  # type: ignore[arg-type]
            (lambda: c.consume("q", prefetch=-1), "prefetch must be an integer"),
            (lambda: c.reattach("garbage"), "not a resume token"),
            (lambda: c.status([5]), "a resource name must be a str"),  # type: ignore[list-item]
        ]
        for call, words in cases:
            with pytest.raises(turnstile.InvalidArgument) as e:
                call()
            assert words in str(e.value), (words, str(e.value))
        with c.acquire("pcm") as lease:
            with pytest.raises(turnstile.InvalidArgument, match="done must be"):
                lease.report_progress(-1, 5)
        # A single name is one name, not its letters.
        with c.acquire("pcm"):
            status = c.status("pcm")
            assert [r.resource for r in status.resources] == ["pcm"]
        assert c.peek("q") is not None and c.ping(b"ok") == b"ok"


def test_a_closed_client_is_a_lost_connection(broker: Broker) -> None:
    c = broker.connect()
    c.close()
    for call in (lambda: c.acquire("zz"), lambda: c.status(["zz"]), lambda: c.ping(b"x")):
        with pytest.raises(turnstile.ConnectionLost, match="closed"):
            call()


def test_not_found(broker: Broker) -> None:
    with broker.connect() as c:
        lease = c.acquire("pcm")
        lease.release()
        c.publish("q", b"x")
        d = c.consume("q").get(timeout=PATIENCE)
        d.ack()
        with pytest.raises(turnstile.NotFound):
            d.ack()
        # A second release of the same lease id is refused by the broker.
        with pytest.raises(turnstile.NotFound):
            asyncio.run_coroutine_threadsafe(
                c._inner._conn.request("release", turnstile.v1.turnstile_pb2.Release(lease_id=lease.lease_id)),
                c._runner.loop,
            ).result(PATIENCE)


def test_resource_exhausted(make_broker: Callable[..., Broker]) -> None:
    b = make_broker("--max-leases-per-connection", "1")
    with b.connect() as c:
        with c.acquire("one"):
            with pytest.raises(turnstile.ResourceExhausted):
                c.acquire("two")


def test_timed_out_when_max_wait_runs_out(broker: Broker) -> None:
    with broker.connect("holder") as a, broker.connect("waiter") as b:
        with a.acquire("pcm"):
            with pytest.raises(turnstile.TimedOut):
                b.acquire("pcm", max_wait=0.2)
            state = b.status(["pcm"]).resource("pcm")
            assert state is not None and not state.waiters


def test_unsupported_version(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turnstile._wire, "PROTOCOL_VERSION", 99)
    with pytest.raises(turnstile.UnsupportedVersion):
        broker.connect()


def test_frame_too_large(make_broker: Callable[..., Broker]) -> None:
    b = make_broker("--max-frame-bytes", "4096")
    with b.connect() as c:
        # Refused before sending: the connection stays usable.
        with pytest.raises(turnstile.FrameTooLarge):
            c.publish("q", b"x" * 5000)
        assert c.ping() == b""
        # Past the client's check, the broker refuses it and closes.
        c._inner._conn._max_out = 1 << 20
        with pytest.raises(turnstile.FrameTooLarge):
            c.publish("q", b"x" * 5000)
        with pytest.raises(turnstile.ConnectionLost):
            c.ping()


def test_protocol_violation(broker: Broker) -> None:
    with broker.connect() as c:
        # A second Hello is a protocol violation.
        with pytest.raises(turnstile.ProtocolViolation):
            c._runner.run(
                c._inner._conn.request(
                    "hello", turnstile.v1.turnstile_pb2.Hello(protocol_version=1, client_name="again")
                )
            )


def test_broker_unavailable(broker_dir: pathlib.Path) -> None:
    missing = str(broker_dir / "nobody-here.sock")
    with pytest.raises(turnstile.BrokerUnavailable) as e:
        turnstile.connect(missing)
    assert e.value.socket == missing and missing in str(e.value)
    with pytest.raises(turnstile.BrokerUnavailable):
        asyncio.run(_aio_connect(missing))


async def _aio_connect(socket: str) -> None:
    async with turnstile.aio.connect(socket):
        pass


def test_connection_lost_while_waiting(broker: Broker) -> None:
    with broker.connect("holder") as a:
        lease = a.acquire("pcm")
        b = broker.connect("waiter")

        def die(q: turnstile.Queued) -> None:
            broker.stop()

        with pytest.raises(turnstile.ConnectionLost):
            b.acquire("pcm", on_queued=die)
        assert lease.lost.wait(PATIENCE)
        b.close()


def test_broker_timed_out_on_a_silent_client(make_broker: Callable[..., Broker]) -> None:
    import socket

    b = make_broker("--handshake-timeout", "200ms")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(b.socket)
    s.settimeout(PATIENCE)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    frames = turnstile._wire.FrameDecoder().feed(data)
    assert len(frames) == 1
    err = turnstile._errors.from_wire(frames[0].reply.error)
    assert isinstance(err, turnstile.TimedOut)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_permission_denied_for_another_user(broker: Broker) -> None:
    # By default only root and the broker's user may take EXCLUSIVE leases.
    src = pathlib.Path(turnstile.__file__).resolve().parent.parent
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(src)!r})
        import turnstile, turnstile.aio
        # Become another user after loading (the interpreter may live where
        # that user cannot read); the broker takes the uid at connect time.
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        with turnstile.connect({broker.socket!r}, name="nobody") as c:
            with c.acquire("pcm", shared=True):
                pass
            try:
                c.acquire("pcm")
            except turnstile.PermissionDenied as e:
                print("denied:", e.code)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=PATIENCE
    )
    assert out.stdout.strip() == "denied: PERMISSION_DENIED", out.stderr


async def _aio_errors(b: Broker) -> None:
    async with turnstile.aio.connect(b.socket, name="a") as a, turnstile.aio.connect(
        b.socket, name="b"
    ) as c:
        async with a.acquire("pcm"):
            with pytest.raises(turnstile.Busy):
                await c.acquire("pcm", wait=False)
            with pytest.raises(turnstile.TimedOut):
                await c.acquire("pcm", max_wait=0.1)
        with pytest.raises(turnstile.InvalidArgument):
            await c.status([""])
        lease = await c.acquire("pcm")
        await lease.release()
        assert lease.lost_reason is None


def test_aio_errors(broker: Broker) -> None:
    asyncio.run(_aio_errors(broker))
