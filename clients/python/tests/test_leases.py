"""Leases against the real broker, both flavours: the seed's agent queueing
behind a Rust holder, FIFO across SHARED and EXCLUSIVE, a SIGKILLed holder
handing over, keep-alive, loss, release on drop."""

from __future__ import annotations

import asyncio
import gc
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import List

import pytest

import turnstile
import turnstile.aio
from conftest import PATIENCE, REPO, Broker, read_line, wait_until_state

EXAMPLES = REPO / "clients" / "python" / "examples"


def held_by(purpose: str):  # type: ignore[no-untyped-def]
    return lambda s: any(h.purpose == purpose for h in s.holders)


def test_agent_example_queues_behind_a_rust_holder_and_initialises(broker: Broker) -> None:
    # The Rust holder runs a job (`cat`) that ends when we close its input.
    holder = broker.cli("run", "pcm", "--purpose", "Install Office 97", "--", "cat", stdin=subprocess.PIPE)
    try:
        wait_until_state(broker, "pcm", held_by("Install Office 97"), "the Rust job holding pcm")
        env = dict(os.environ, TURNSTILE_SOCKET=broker.socket)
        agent = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "agent.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        line = read_line(agent, "queued at position")
        assert "position 1" in line and "Install Office 97" in line, line
        # The job ends: the agent is granted and initialises.
        assert holder.stdin is not None
        holder.stdin.close()
        line = read_line(agent, "initialised")
        assert "fencing token 2" in line, line
        assert agent.wait(PATIENCE) == 0
        assert holder.wait(PATIENCE) == 0
    finally:
        holder.kill()
        holder.wait()


def test_acquire_returns_a_lease_and_as_context_manager_releases(broker: Broker) -> None:
    with broker.connect() as c:
        lease = c.acquire("pcm", purpose="job", ttl=5.0)
        assert lease.fencing_token == 1 and lease.ttl == 5.0 and lease.resource == "pcm"
        lease.report_progress(2, 5, "copying")
        h = c.status(["pcm"]).resource("pcm")
        assert h is not None and h.holders[0].progress == turnstile.Progress(2, 5, "copying")
        lease.release()
        with pytest.raises(turnstile.Busy):
            with c.acquire("pcm"):
                c.acquire("pcm", wait=False)
        state = c.status(["pcm"]).resource("pcm")
        assert state is None or not state.holders


def _grant_order(b: Broker) -> List[str]:
    """A holds EXCLUSIVE; B (SHARED), C (EXCLUSIVE), D (SHARED) queue in that
    order; each releases as soon as it is granted... except that we release
    A, then each in turn, recording the order of grants."""
    granted: "queue.Queue[str]" = queue.Queue()
    release = {name: threading.Event() for name in "BCD"}
    clients = {name: b.connect(name) for name in "ABCD"}
    a = clients["A"].acquire("r", purpose="A")
    positions: "dict[str, int]" = {}

    def waiter(name: str, shared: bool, placed: threading.Event) -> None:
        def on_queued(q: turnstile.Queued) -> None:
            positions.setdefault(name, q.position)
            placed.set()

        with clients[name].acquire("r", shared=shared, purpose=name, on_queued=on_queued):
            granted.put(name)
            release[name].wait(PATIENCE)

    threads = []
    for name, shared in (("B", True), ("C", False), ("D", True)):
        placed = threading.Event()
        t = threading.Thread(target=waiter, args=(name, shared, placed))
        t.start()
        threads.append(t)
        assert placed.wait(PATIENCE), f"{name} never queued"
    assert positions == {"B": 1, "C": 2, "D": 3}
    order = []
    a.release()
    order.append(granted.get(timeout=PATIENCE))
    # D is SHARED like B, but C (EXCLUSIVE) is ahead of it: no barging.
    assert granted.empty()
    for name in ("B", "C"):
        release[name].set()
        order.append(granted.get(timeout=PATIENCE))
    release["D"].set()
    for t in threads:
        t.join(PATIENCE)
    for c in clients.values():
        c.close()
    return order


def test_shared_and_exclusive_are_served_first_come_first_served(broker: Broker) -> None:
    assert _grant_order(broker) == ["B", "C", "D"]


def test_sigkilled_rust_holder_hands_over_to_the_python_waiter(broker: Broker) -> None:
    holder = broker.cli("run", "pcm", "--purpose", "doomed", "--", "sleep", "600")
    try:
        wait_until_state(broker, "pcm", held_by("doomed"), "the Rust holder")
        with broker.connect("agent") as c:
            queued = threading.Event()

            def kill_on_queued(q: turnstile.Queued) -> None:
                assert q.ahead[0].purpose == "doomed"
                queued.set()
                os.killpg(holder.pid, signal.SIGKILL)

            with c.acquire("pcm", shared=True, on_queued=kill_on_queued) as lease:
                assert queued.is_set()
                assert lease.fencing_token == 2
    finally:
        try:
            os.killpg(holder.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        holder.wait()


def test_keep_alive_holds_a_lease_past_its_ttl(broker: Broker) -> None:
    with broker.connect() as c, c.watch(["pcm"]) as w:
        assert w.next(timeout=PATIENCE).kind == "SNAPSHOT"
        with c.acquire("pcm", ttl=0.3):
            assert w.next(timeout=PATIENCE).kind == "GRANTED"
            # Ten TTLs: without the background keep-alive it would expire.
            with pytest.raises(turnstile.TimedOut):
                w.next(timeout=3.0)
        assert w.next(timeout=PATIENCE).kind == "RELEASED"


def test_a_dropped_lease_is_released(broker: Broker) -> None:
    with broker.connect("a") as a, broker.connect("b") as b:
        lease = a.acquire("pcm")
        del lease
        gc.collect()
        with b.acquire("pcm", max_wait=PATIENCE) as again:
            assert again.fencing_token == 2


def test_lost_is_set_when_the_connection_goes(broker: Broker) -> None:
    c = broker.connect()
    lease = c.acquire("pcm")
    broker.stop(signal.SIGKILL)
    assert lease.lost.wait(PATIENCE)
    assert lease.lost_reason == "CONNECTION_LOST"
    c.close()


async def _aio_expire(socket: str) -> None:
    async with turnstile.aio.connect(socket, name="stuck") as c:
        lease = await c.acquire("pcm", ttl=0.2)
        time.sleep(1.0)  # the holder hangs: its event loop cannot keep the lease alive
        await asyncio.wait_for(lease.lost.wait(), PATIENCE)
        assert lease.lost_reason == "EXPIRED", lease.lost_detail
        with pytest.raises(turnstile.NotFound):
            await lease.release()


def test_aio_lease_expires_when_the_loop_hangs(broker: Broker) -> None:
    asyncio.run(_aio_expire(broker.socket))


async def _aio_leases(b: Broker) -> None:
    a = await turnstile.aio.connect(b.socket, name="A")
    bc = await turnstile.aio.connect(b.socket, name="B")
    cc = await turnstile.aio.connect(b.socket, name="C")
    first = await a.acquire("r", purpose="A")
    # B queues SHARED through the async iterator of places...
    b_req = bc.acquire("r", shared=True, purpose="B")
    places = []
    async for q in b_req.queued():
        places.append(q.position)
        break
    # ...C EXCLUSIVE with a coroutine callback.
    seen: "asyncio.Queue[int]" = asyncio.Queue()

    async def on_queued(q: turnstile.Queued) -> None:
        await seen.put(q.position)

    c_task = asyncio.ensure_future(cc.acquire("r", purpose="C", on_queued=on_queued).wait())
    assert await asyncio.wait_for(seen.get(), PATIENCE) == 2
    await first.release()
    async with b_req as b_lease:
        assert b_lease.fencing_token == 2
        assert places == [1]
        assert not c_task.done()
    c_lease = await asyncio.wait_for(c_task, PATIENCE)
    assert c_lease.fencing_token == 3

    # A cancelled wait gives its place back at once.
    placed = asyncio.Event()
    waiting = asyncio.ensure_future(a.acquire("r", on_queued=lambda q: placed.set()).wait())
    await asyncio.wait_for(placed.wait(), PATIENCE)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await c_lease.release()
    # Had A's place survived the cancel, it would hold "r" now.
    async with bc.acquire("r", wait=False) as again:
        assert again.fencing_token == 4
    with pytest.raises(turnstile.Busy):
        async with bc.acquire("r", purpose="holder"):
            await cc.acquire("r", wait=False)
    for c in (a, bc, cc):
        await c.close()


def test_aio_fifo_queue_iterator_callbacks_and_cancel(broker: Broker) -> None:
    asyncio.run(_aio_leases(broker))


async def _aio_kill_holder(b: Broker) -> None:
    holder = b.cli("run", "pcm", "--purpose", "doomed", "--", "sleep", "600")
    try:
        await asyncio.get_running_loop().run_in_executor(
            None, wait_until_state, b, "pcm", held_by("doomed"), "the Rust holder"
        )
        async with turnstile.aio.connect(b.socket, name="agent") as c:
            request = c.acquire("pcm", shared=True, purpose="initialise")
            async for q in request.queued():
                assert q.position == 1 and q.ahead[0].purpose == "doomed"
                os.killpg(holder.pid, signal.SIGKILL)
            async with request as lease:
                assert lease.fencing_token == 2
    finally:
        try:
            os.killpg(holder.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        holder.wait()


def test_aio_sigkilled_rust_holder_hands_over(broker: Broker) -> None:
    asyncio.run(_aio_kill_holder(broker))


async def _aio_lost_on_broker_death(b: Broker) -> None:
    c = await turnstile.aio.connect(b.socket)
    lease = await c.acquire("pcm")
    b.stop(signal.SIGKILL)
    await asyncio.wait_for(lease.lost.wait(), PATIENCE)
    assert lease.lost_reason == "CONNECTION_LOST"
    await c.close()


def test_aio_lost_when_the_connection_goes(broker: Broker) -> None:
    asyncio.run(_aio_lost_on_broker_death(broker))


def test_an_interrupted_wait_gives_the_place_back(broker: Broker) -> None:
    class Interrupted(Exception):
        pass

    def interrupt(q: turnstile.Queued) -> None:
        raise Interrupted()

    with broker.connect("holder") as a, broker.connect("waiter") as b:
        with a.acquire("pcm"):
            with pytest.raises(Interrupted):
                b.acquire("pcm", on_queued=interrupt)
            # The broker hears of it before the next request on that connection.
            b.ping()
            state = a.status(["pcm"]).resource("pcm")
            assert state is not None and not state.waiters
