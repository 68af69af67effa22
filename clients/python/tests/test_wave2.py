"""The wave-2 features against the real broker, both flavours: counted
permits, a detach grace and re-attaching after the owner's connection dies,
yield requests reaching the holder (declined, or revoking), and the stalled
mark in status, watch events and the waiters' view."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List

import pytest

import turnstile
import turnstile.aio
from conftest import PATIENCE, Broker, read_line, wait_until_state

#: A holder in a process of its own: acquires with a detach grace, prints its
#: resume token, and waits to be killed.
DETACHABLE_HOLDER = """
import sys, time, turnstile
client = turnstile.connect(sys.argv[1], name="doomed")
lease = client.acquire("pcm", ttl=1.0, detach_grace=float(sys.argv[2]), purpose="job")
print("token", lease.resume_token, flush=True)
time.sleep(600)
"""


#: A waiter in a process of its own: queues with a detach grace, prints the
#: resume token of its place, and waits to be killed.
DETACHABLE_WAITER = """
import sys, turnstile
client = turnstile.connect(sys.argv[1], name="doomed waiter")
def save(q): print("token", q.resume_token, flush=True)
client.acquire("pcm", detach_grace=float(sys.argv[2]), purpose="next", on_queued=save)
"""


def next_kind(w: turnstile.Watch, kind: str) -> turnstile.WatchEvent:
    """The next watch event of ``kind``, skipping others; fails after PATIENCE."""
    deadline = time.monotonic() + PATIENCE
    seen: List[str] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {kind} event; saw {seen}")
        ev = w.next(timeout=left)
        if ev.kind == kind:
            return ev
        seen.append(ev.kind)


async def anext_kind(w: turnstile.aio.Watcher, kind: str) -> turnstile.WatchEvent:
    """:func:`next_kind` for the asyncio watcher."""
    seen: List[str] = []

    async def find() -> turnstile.WatchEvent:
        async for ev in w:
            if ev.kind == kind:
                return ev
            seen.append(ev.kind)
        raise AssertionError("the watch ended")

    try:
        return await asyncio.wait_for(find(), PATIENCE)
    except asyncio.TimeoutError:
        pytest.fail(f"no {kind} event; saw {seen}")


def only(state: turnstile.ResourceState) -> turnstile.LeaseInfo:
    assert len(state.holders) == 1, state
    return state.holders[0]


# --- counted permits ------------------------------------------------------


def test_permits_two_plus_one_granted_of_three_and_the_fourth_queued(broker: Broker) -> None:
    with broker.connect("a") as a, broker.connect("b") as b, broker.connect("c") as c:
        two = a.acquire("downloads", shared=True, capacity=3, permits=2, purpose="two")
        one = b.acquire("downloads", shared=True, capacity=3, purpose="one")
        state = a.status(["downloads"]).resource("downloads")
        assert state is not None and state.capacity == 3 and state.permits_held == 3
        assert sorted(h.permits for h in state.holders) == [1, 2]
        with pytest.raises(turnstile.Busy):
            c.acquire("downloads", shared=True, capacity=3, wait=False)
        with pytest.raises(turnstile.InvalidArgument, match="3"):
            c.acquire("downloads", shared=True, capacity=4)  # the resource's is 3
        with pytest.raises(turnstile.InvalidArgument):
            c.acquire("downloads", shared=True, capacity=3, permits=4)  # more than there are

        places: List[turnstile.Queued] = []
        outcome: Dict[str, int] = {}

        def fourth() -> None:
            with c.acquire("downloads", shared=True, capacity=3, purpose="fourth", on_queued=places.append) as lease:
                outcome["token"] = lease.fencing_token

        t = threading.Thread(target=fourth)
        t.start()
        wait_until_state(broker, "downloads", lambda s: len(s.waiters) == 1, "the fourth request queued")
        assert "token" not in outcome
        one.release()
        t.join(PATIENCE)
        assert not t.is_alive() and outcome["token"] == 3
        assert places[0].position == 1 and sum(h.permits for h in places[0].ahead) == 3
        state = a.status(["downloads"]).resource("downloads")
        assert state is not None and state.permits_held == 2
        two.release()


async def _aio_permits(b: Broker) -> None:
    async with turnstile.aio.connect(b.socket, name="a") as a, turnstile.aio.connect(
        b.socket, name="b"
    ) as bc, turnstile.aio.connect(b.socket, name="c") as c:
        two = await a.acquire("downloads", shared=True, capacity=3, permits=2)
        one = await bc.acquire("downloads", shared=True, capacity=3)
        request = c.acquire("downloads", shared=True, capacity=3, purpose="fourth")
        async for q in request.queued():
            assert q.position == 1 and sum(h.permits for h in q.ahead) == 3
            break
        await one.release()
        fourth = await asyncio.wait_for(request.wait(), PATIENCE)
        assert fourth.fencing_token == 3
        state = (await c.status(["downloads"])).resource("downloads")
        assert state is not None and (state.capacity, state.permits_held) == (3, 3)
        with pytest.raises(turnstile.InvalidArgument):
            await c.acquire("downloads", shared=True, capacity=2)
        await two.release()
        await fourth.release()


def test_aio_permits(broker: Broker) -> None:
    asyncio.run(_aio_permits(broker))


def test_bad_counts_are_refused_before_sending() -> None:
    from turnstile._lease_options import acquire_message

    for bad in ({"permits": -1}, {"capacity": 1 << 32}, {"detach_grace": -1.0}, {"stall_after": float("inf")}):
        with pytest.raises(turnstile.InvalidArgument):
            acquire_message("r", shared=True, ttl=None, wait=True, max_wait=None, purpose="", **bad)
    m = acquire_message("r", shared=True, ttl=None, wait=True, max_wait=None, purpose="", detach_grace=0.0, stall_after=1.5)
    assert (m.detach_grace_ms, m.stall_after_ms) == (0, 1500)


# --- detach grace and re-attach --------------------------------------------


def test_resume_token_reads_back_from_its_text_and_hides_its_secret() -> None:
    token = turnstile.ResumeToken(42, "pcm:with:colons", bytes(range(16)))
    assert str(token) == "42:000102030405060708090a0b0c0d0e0f:pcm:with:colons"
    assert turnstile.ResumeToken.parse(str(token) + "\n") == token
    assert "0a0b" not in repr(token) and "42" in repr(token)
    for bad in ("", "x:00:r", "1:0:r", "1:zz:r", "1:00"):
        with pytest.raises(ValueError):
            turnstile.ResumeToken.parse(bad)


def _detachable(
    b: Broker, grace: float, script: str = DETACHABLE_HOLDER
) -> "tuple[subprocess.Popen[bytes], turnstile.ResumeToken]":
    proc = subprocess.Popen(
        [sys.executable, "-c", script, b.socket, str(grace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    line = read_line(proc, "token")
    return proc, turnstile.ResumeToken.parse(line.split(" ", 1)[1])


def test_reattach_takes_the_lease_back_after_its_owner_is_killed(broker: Broker) -> None:
    proc, token = _detachable(broker, PATIENCE)
    try:
        assert token.resource == "pcm" and len(token.secret) >= 16
        with broker.connect("successor") as c, c.watch(["pcm"]) as w:
            assert next_kind(w, "SNAPSHOT").states[0].holders[0].detached is False
            os.killpg(proc.pid, signal.SIGKILL)
            ev = next_kind(w, "DETACHED")
            assert ev.state is not None and only(ev.state).detached and only(ev.state).purpose == "job"
            # A wrong secret is NOT_FOUND, and leaves the lease to its owner.
            wrong = turnstile.ResumeToken(token.lease_id, token.resource, bytes(len(token.secret)))
            with pytest.raises(turnstile.NotFound):
                c.reattach(wrong)
            with c.reattach(str(token)) as lease:
                assert (lease.lease_id, lease.fencing_token, lease.resource) == (token.lease_id, 1, "pcm")
                ev = next_kind(w, "REATTACHED")
                assert ev.state is not None and not only(ev.state).detached
                # Its TTL (1 s) runs again, kept alive by this client now.
                lease.report_progress(1, 1, "taken over")
                assert next_kind(w, "PROGRESS").state is not None
                assert not lease.lost.is_set()
            assert next_kind(w, "RELEASED").state is not None
    finally:
        proc.kill()
        proc.wait()


def test_a_detached_lease_ends_when_its_grace_runs_out(broker: Broker) -> None:
    proc, token = _detachable(broker, 0.3)
    try:
        with broker.connect("late") as c, c.watch(["pcm"]) as w:
            next_kind(w, "SNAPSHOT")
            os.killpg(proc.pid, signal.SIGKILL)
            next_kind(w, "DETACHED")
            ev = next_kind(w, "DISCONNECTED")
            assert ev.state is not None and not ev.state.holders
            with pytest.raises(turnstile.NotFound):
                c.reattach(token)
    finally:
        proc.kill()
        proc.wait()


def test_reattach_takes_a_queue_place_back_after_its_owner_is_killed(broker: Broker) -> None:
    with broker.connect("holder") as h, broker.connect("successor") as c:
        held = h.acquire("pcm", purpose="job")
        proc, token = _detachable(broker, PATIENCE, DETACHABLE_WAITER)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            wait_until_state(broker, "pcm", lambda s: bool(s.waiters) and s.waiters[0].detached, "the place detached")
            places: List[turnstile.Queued] = []
            outcome: Dict[str, int] = {}

            def take_back() -> None:
                with c.reattach(token, on_queued=places.append) as lease:
                    outcome["token"] = lease.fencing_token

            t = threading.Thread(target=take_back)
            t.start()
            wait_until_state(broker, "pcm", lambda s: bool(s.waiters) and not s.waiters[0].detached, "re-attached")
            held.release()
            t.join(PATIENCE)
            assert not t.is_alive() and outcome == {"token": 2}
            assert [q.position for q in places] == [1] and places[0].lease_id == token.lease_id
        finally:
            proc.kill()
            proc.wait()


def test_a_lease_handed_over_with_detach(broker: Broker) -> None:
    old = broker.connect("old")
    lease = old.acquire("pcm", ttl=5.0, detach_grace=PATIENCE, purpose="job")
    token = lease.detach()
    assert token is not None and token == lease.resume_token
    old.close()  # leaving `with lease` would not release it either
    wait_until_state(broker, "pcm", lambda s: bool(s.holders) and s.holders[0].detached, "the lease detached")
    with broker.connect("new") as new, new.reattach(token) as again:
        assert (again.lease_id, again.fencing_token) == (lease.lease_id, lease.fencing_token)
        assert again.resume_token is not None and again.resume_token.lease_id == lease.lease_id
        state = new.status(["pcm"]).resource("pcm")
        assert state is not None and not only(state).detached
    assert lease.resume_token is not None
    with broker.connect("none") as c:
        assert c.acquire("pcm", wait=False).fencing_token == 2


async def _aio_reattach(b: Broker) -> None:
    first = await turnstile.aio.connect(b.socket, name="first")
    second = await turnstile.aio.connect(b.socket, name="second")
    async with turnstile.aio.connect(b.socket, name="successor") as c:
        watch = c.watch(["pcm"])
        await anext_kind(watch, "SNAPSHOT")
        lease = await first.acquire("pcm", detach_grace=PATIENCE, purpose="job")
        assert lease.resume_token is not None and lease.resume_token.lease_id == lease.lease_id
        # A queue place can be detached too.
        request = second.acquire("pcm", detach_grace=PATIENCE, purpose="next")
        async for q in request.queued():
            assert q.position == 1 and q.resume_token is not None
            break
        place = request.detach()
        assert place is not None and place == q.resume_token
        held = lease.detach()
        assert held == lease.resume_token
        await first.close()
        await second.close()
        for _ in range(2):
            await anext_kind(watch, "DETACHED")
        again = await c.reattach(held)
        assert (again.lease_id, again.fencing_token) == (lease.lease_id, lease.fencing_token)
        waiting = c.reattach(str(place))
        async for q in waiting.queued():
            assert q.position == 1 and q.ahead[0].lease_id == again.lease_id
            break
        await again.release()
        taken = await asyncio.wait_for(waiting.wait(), PATIENCE)
        assert taken.fencing_token == lease.fencing_token + 1
        await taken.release()
        with pytest.raises(turnstile.NotFound):
            await c.reattach(held)
        await watch.close()


def test_aio_reattach_a_lease_and_a_queue_place(broker: Broker) -> None:
    asyncio.run(_aio_reattach(broker))


# --- yield requests, declined or revoking ------------------------------------


def test_a_yield_request_reaches_the_holder_who_declines(broker: Broker) -> None:
    with broker.connect("holder") as a, broker.connect("asker") as b, b.watch(["pcm"]) as w:
        next_kind(w, "SNAPSHOT")
        with a.acquire("pcm", purpose="install") as lease:
            assert not lease.yield_requested.is_set() and lease.yield_request is None
            assert b.request_yield("pcm", within=60.0, reason="user logon") == 1
            assert lease.yield_requested.wait(PATIENCE)
            req = lease.yield_request
            assert req is not None and req.reason == "user logon" and req.within == 60.0
            assert req.requester.client_name == "asker" and not req.revoke
            assert lease.next_yield_request(timeout=PATIENCE) == req
            ev = next_kind(w, "YIELD_REQUESTED")
            assert "user logon" in ev.detail
            lease.decline_yield("half-way through an install")
            ev = next_kind(w, "YIELD_DECLINED")
            assert "half-way through an install" in ev.detail
            assert ev.state is not None and only(ev.state).lease_id == lease.lease_id
            with pytest.raises(turnstile.TimedOut):
                lease.next_yield_request(timeout=0.05)  # no second request
            assert not lease.lost.is_set()
        next_kind(w, "RELEASED")


def test_revoke_takes_the_lease_and_grants_the_next_in_line(broker: Broker) -> None:
    with broker.connect("holder") as a, broker.connect("admin") as b, broker.connect("waiter") as c:
        lease = a.acquire("pcm", purpose="stubborn")
        outcome: Dict[str, int] = {}

        def waiter() -> None:
            with c.acquire("pcm", purpose="next") as next_lease:
                outcome["token"] = next_lease.fencing_token

        t = threading.Thread(target=waiter)
        t.start()
        wait_until_state(broker, "pcm", lambda s: len(s.waiters) == 1, "the waiter queued")
        with b.watch(["pcm"]) as w:
            next_kind(w, "SNAPSHOT")
            b.request_yield("pcm", within=0.2, reason="shutting down", revoke=True)
            assert lease.yield_requested.wait(PATIENCE)
            assert lease.yield_request is not None and lease.yield_request.revoke
            assert lease.lost.wait(PATIENCE)
            assert lease.lost_reason == "REVOKED"
            assert "shutting down" in lease.lost_detail
            ev = next_kind(w, "REVOKED")
            assert ev.state is not None and all(h.purpose != "stubborn" for h in ev.state.holders)
        t.join(PATIENCE)
        assert not t.is_alive() and outcome["token"] == 2
        with pytest.raises(turnstile.NotFound):
            lease.release()


async def _aio_yield(b: Broker) -> None:
    async with turnstile.aio.connect(b.socket, name="holder") as h, turnstile.aio.connect(
        b.socket, name="admin"
    ) as k, turnstile.aio.connect(b.socket, name="waiter") as w:
        lease = await h.acquire("pcm", purpose="job")
        heard: List[turnstile.YieldRequested] = []
        reported: List[BaseException] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reported.append(ctx["exception"]))

        def broken(_: turnstile.YieldRequested) -> None:
            raise RuntimeError("a bug in a callback")

        lease.add_yield_callback(broken)  # reported, and the lease goes on (the revoke below reaches it)
        lease.add_yield_callback(heard.append)
        assert await k.request_yield("pcm", reason="please") == 1
        assert await k.request_yield("nothing-held", reason="please") == 0
        req = await lease.next_yield_request(timeout=PATIENCE)
        assert req.reason == "please" and req.requester.client_name == "admin" and req.within == 0.0
        assert lease.yield_requested.is_set() and heard == [req] and lease.yield_request == req
        assert [str(e) for e in reported] == ["a bug in a callback"]
        await lease.decline_yield("not now")

        request = w.acquire("pcm", purpose="next")
        async for q in request.queued():
            break
        await k.request_yield("pcm", within=0.2, reason="go away", revoke=True)
        req = await lease.next_yield_request(timeout=PATIENCE)
        assert req.revoke and req.within == 0.2
        await asyncio.wait_for(lease.lost.wait(), PATIENCE)
        assert lease.lost_reason == "REVOKED" and "go away" in lease.lost_detail
        with pytest.raises(turnstile.LeaseLost):
            await lease.next_yield_request()
        successor = await asyncio.wait_for(request.wait(), PATIENCE)
        assert successor.fencing_token == lease.fencing_token + 1
        await successor.release()


def test_aio_yield_declined_then_revoked(broker: Broker) -> None:
    asyncio.run(_aio_yield(broker))


# --- stalled ------------------------------------------------------------------


def test_a_holder_alive_without_progress_is_marked_stalled(broker: Broker) -> None:
    with broker.connect("worker") as a, a.watch(["pcm"]) as w:
        next_kind(w, "SNAPSHOT")
        with a.acquire("pcm", ttl=5.0, stall_after=0.3, purpose="stuck job") as lease:
            ev = next_kind(w, "GRANTED")
            assert ev.state is not None and not only(ev.state).stalled
            ev = next_kind(w, "STALLED")
            assert ev.state is not None and only(ev.state).stalled
            assert "stuck" in ev.detail
            state = a.status(["pcm"]).resource("pcm")
            assert state is not None and only(state).stalled
            assert not lease.lost.is_set()  # kept alive: stuck, not hung
            lease.report_progress(1, 2, "moving again")
            ev = next_kind(w, "PROGRESS")
            assert ev.state is not None and not only(ev.state).stalled


async def _aio_stalled(b: Broker) -> None:
    async with turnstile.aio.connect(b.socket, name="worker") as a, turnstile.aio.connect(
        b.socket, name="waiter"
    ) as c:
        watch = a.watch(["pcm"])
        await anext_kind(watch, "SNAPSHOT")
        lease = await a.acquire("pcm", ttl=5.0, stall_after=0.3, purpose="stuck job")
        # A waiter is told too: a fresh place that shows the holder stalled.
        request = c.acquire("pcm", shared=True)
        async for q in request.queued():
            if q.ahead[0].stalled:
                break
        ev = await anext_kind(watch, "STALLED")
        assert ev.state is not None and ev.state.holders[0].stalled
        await lease.report_progress(1, 2)
        ev = await anext_kind(watch, "PROGRESS")
        assert ev.state is not None and not ev.state.holders[0].stalled
        await lease.release()
        await (await asyncio.wait_for(request.wait(), PATIENCE)).release()
        await watch.close()


def test_aio_stalled(broker: Broker) -> None:
    asyncio.run(_aio_stalled(broker))


# --- history (the request; the broker's answers are in test_history.py) ------


def test_history_request_from_its_options() -> None:
    import datetime

    from turnstile._lease_options import history_message

    m = history_message("pcm", since=None, limit=0)
    assert (m.resource, m.since_ms, m.limit) == ("pcm", 0, 0)
    at = datetime.datetime(2026, 11, 30, 8, 0, 0, 123000, tzinfo=datetime.timezone.utc)
    assert history_message("pcm", since=at, limit=5).since_ms == 1796025600123
    assert history_message("pcm", since=1796025600.123, limit=5).since_ms == 1796025600123
    for bad in ({"since": -1.0}, {"since": float("nan")}, {"limit": -1}):
        with pytest.raises(turnstile.InvalidArgument):
            history_message("pcm", **{"since": None, "limit": 0, **bad})  # type: ignore[arg-type]
