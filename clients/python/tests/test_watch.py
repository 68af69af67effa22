"""Watches: a snapshot then every change, and a watch that lives through a
broker restart (reconnects, resumes, or resyncs, never a silent gap)."""

from __future__ import annotations

import asyncio
from typing import List

import turnstile
import turnstile.aio
from conftest import PATIENCE, Broker


def kinds_until(w: turnstile.Watch, last: str) -> List[str]:
    out = []
    while True:
        ev = w.next(timeout=PATIENCE)
        out.append(ev.kind)
        if ev.kind == last:
            return out


def test_watch_sees_snapshot_then_changes(broker: Broker) -> None:
    with broker.connect() as c:
        with c.acquire("pcm", purpose="before"):
            with c.watch(["pcm"]) as w:
                snap = w.next(timeout=PATIENCE)
                assert snap.kind == "SNAPSHOT" and not snap.resync
                assert [s.holders[0].purpose for s in snap.states] == ["before"]
        with c.watch(["pcm"]) as w:
            assert w.next(timeout=PATIENCE).kind == "SNAPSHOT"
            with c.acquire("pcm", purpose="job") as lease:
                ev = w.next(timeout=PATIENCE)
                assert ev.kind == "GRANTED" and ev.state is not None
                assert ev.state.holders[0].fencing_token == lease.fencing_token
                lease.report_progress(1, 2, "half")
                ev = w.next(timeout=PATIENCE)
                assert ev.kind == "PROGRESS" and ev.state is not None
                assert ev.state.holders[0].progress == turnstile.Progress(1, 2, "half")
            assert w.next(timeout=PATIENCE).kind == "RELEASED"
            assert w.revision >= ev.revision


def test_watch_lives_through_a_broker_restart(broker: Broker) -> None:
    with broker.connect() as c:
        w = c.watch(["pcm"])
        assert w.next(timeout=PATIENCE).kind == "SNAPSHOT"
        c.acquire("pcm", purpose="before restart").release()
        assert kinds_until(w, "RELEASED") == ["GRANTED", "RELEASED"]
    broker.restart()
    assert w.next(timeout=PATIENCE).kind == "CONNECTION_LOST"
    assert w.next(timeout=PATIENCE).kind == "RECONNECTED"
    with broker.connect() as c:
        with c.acquire("pcm", purpose="after restart"):
            while True:
                ev = w.next(timeout=PATIENCE)
                if ev.kind == "GRANTED":
                    break
                # The new broker does not remember the old one's history:
                # the watcher says so with a fresh snapshot.
                assert ev.kind == "SNAPSHOT" and ev.resync, ev
            assert ev.state is not None and ev.state.holders[0].purpose == "after restart"
    w.close()


async def _aio_watch_restart(b: Broker) -> None:
    async with turnstile.aio.connect(b.socket) as c:
        w = await c.watch(["pcm"]).start()
        assert (await w.__anext__()).kind == "SNAPSHOT"
        async with c.acquire("pcm", purpose="one"):
            assert (await w.__anext__()).kind == "GRANTED"
    await asyncio.get_running_loop().run_in_executor(None, b.restart)
    kinds = []
    async for ev in w:
        kinds.append(ev.kind)
        if ev.kind == "RECONNECTED":
            break
    # The release may or may not reach the watcher before the broker stops.
    assert kinds[-2:] == ["CONNECTION_LOST", "RECONNECTED"], kinds
    async with turnstile.aio.connect(b.socket) as c:
        async with c.acquire("pcm", purpose="two"):
            async for ev in w:
                if ev.kind == "GRANTED":
                    assert ev.state is not None and ev.state.holders[0].purpose == "two"
                    break
    await w.close()


def test_aio_watch_lives_through_a_broker_restart(broker: Broker) -> None:
    asyncio.run(asyncio.wait_for(_aio_watch_restart(broker), PATIENCE * 2))


def test_watch_resumes_from_a_revision_or_says_resync(broker: Broker) -> None:
    with broker.connect() as c:
        c.acquire("pcm", purpose="seen").release()
        before = c.status().revision  # 0 would mean "from now"
        assert before > 0
        # The broker keeps history only while someone watches: none did, so
        # resuming gets a fresh snapshot that says so.
        c.acquire("pcm", purpose="forgotten").release()
        with c.watch(["pcm"], start_revision=before) as w:
            snap = w.next(timeout=PATIENCE)
            assert snap.kind == "SNAPSHOT" and snap.resync, snap
        with c.watch(["pcm"]) as keeper:
            assert keeper.next(timeout=PATIENCE).kind == "SNAPSHOT"
            before = keeper.revision
            c.acquire("pcm", purpose="missed").release()
            assert kinds_until(keeper, "RELEASED") == ["GRANTED", "RELEASED"]
            with c.watch(["pcm"], start_revision=before) as w:
                # No snapshot: the changes after `before` are replayed.
                first = w.next(timeout=PATIENCE)
                assert first.kind == "GRANTED" and first.revision == before + 1, first
                assert first.state is not None and first.state.holders[0].purpose == "missed"
                assert w.next(timeout=PATIENCE).kind == "RELEASED"
