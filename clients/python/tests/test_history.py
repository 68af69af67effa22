"""History against the real broker, both flavours: every lease that ended,
granted or not, with what ended it, oldest first; ``since`` and ``limit``;
kept across a broker restart."""

from __future__ import annotations

import asyncio
import datetime

import pytest

import turnstile
import turnstile.aio
from conftest import PATIENCE, Broker
from turnstile.v1 import turnstile_pb2 as pb


def test_waits_and_holds_are_counted_to_the_millisecond() -> None:
    # 1796025600.323 - 1796025600.123 in floats is 0.20000004768371582 (and 0.1999998 for other pairs).
    m = pb.HistoryEntry(queued_at_ms=1796025600123, granted_at_ms=1796025600323, ended_at_ms=1796025601323)
    entry = turnstile.HistoryEntry.from_pb(m)
    assert (entry.waited, entry.held) == (0.2, 1.0)
    never = turnstile.HistoryEntry.from_pb(pb.HistoryEntry(queued_at_ms=1796025600123, ended_at_ms=1796025600323))
    assert (never.waited, never.held, never.granted_at) == (0.2, None, None)


def test_history_records_each_lease_that_ended_and_survives_a_restart(broker: Broker) -> None:
    with broker.connect("first") as a, broker.connect("second") as b:
        assert len(a.history("pcm")) == 0
        a.acquire("pcm", purpose="quick job", shared=True).release()
        with b.acquire("pcm", purpose="long job"):
            with pytest.raises(turnstile.TimedOut):
                a.acquire("pcm", purpose="impatient", max_wait=0.2)
        history = a.history("pcm")
        assert [(e.purpose, e.ended_by) for e in history] == [
            ("quick job", "RELEASED"),
            ("impatient", "CANCELLED"),
            ("long job", "RELEASED"),
        ]
        assert not history.truncated
        quick, impatient, long = history.entries
        assert quick.mode == "SHARED" and quick.holder.client_name == "first" and quick.fencing_token == 1
        assert quick.granted_at is not None and quick.waited == 0.0 and quick.held is not None
        assert impatient.granted_at is None and impatient.fencing_token == 0 and impatient.held is None
        assert impatient.waited is not None and impatient.waited >= 0.2
        assert "max_wait" in impatient.detail
        assert [e.timed_out for e in history] == [False, True, False]
        assert long.mode == "EXCLUSIVE" and long.fencing_token == 2 and long.holder.client_name == "second"
        assert all(e.ended_at is not None for e in history)

        newest = a.history("pcm", limit=1)
        assert newest.entries == (long,) and newest.truncated
        assert impatient.ended_at is not None
        assert a.history("pcm", since=impatient.ended_at).entries == (impatient, long)
        later = datetime.datetime.fromtimestamp(impatient.ended_at, datetime.timezone.utc)
        assert a.history("pcm", since=later).entries == (impatient, long)
        with pytest.raises(turnstile.InvalidArgument):
            a.history("pcm", since=-1.0)
        with pytest.raises(turnstile.InvalidArgument):
            a.history("")

    broker.restart()
    with broker.connect("after") as c:
        assert c.history("pcm").entries == history.entries


async def _aio_history(b: Broker) -> None:
    async with turnstile.aio.connect(b.socket, name="watcher") as c:
        watch = c.watch(["pcm"])
        async for ev in watch:
            if ev.kind == "SNAPSHOT":
                break
        doomed = await turnstile.aio.connect(b.socket, name="doomed")
        await doomed.acquire("pcm", purpose="dies", capacity=2, shared=True, permits=2)
        await doomed.close()
        async for ev in watch:
            if ev.kind == "DISCONNECTED":
                break
        await watch.close()
        history = await c.history("pcm", limit=10)
        (entry,) = history
        assert (entry.purpose, entry.ended_by, entry.permits) == ("dies", "DISCONNECTED", 2)
        assert entry.holder.client_name == "doomed" and entry.fencing_token == 1


def test_aio_history(broker: Broker) -> None:
    asyncio.run(asyncio.wait_for(_aio_history(broker), PATIENCE))
