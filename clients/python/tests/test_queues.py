"""Message queues: publish, consume with ack and nack, and at-least-once
delivery across a broker restart."""

from __future__ import annotations

import asyncio

import pytest

import turnstile
import turnstile.aio
from conftest import PATIENCE, Broker


def test_publish_consume_ack_nack(broker: Broker) -> None:
    with broker.connect("svc") as svc, broker.connect("agent") as agent:
        assert svc.publish("notices", b"one", headers={"from": "svc"}) == 1
        assert svc.publish("notices", "two") == 2
        consumer = agent.consume("notices", prefetch=16)
        first = consumer.get(timeout=PATIENCE)
        assert (first.payload, first.headers, first.seq, first.attempt) == (b"one", {"from": "svc"}, 1, 1)
        first.ack()
        second = consumer.get(timeout=PATIENCE)
        assert second.payload == b"two"
        second.nack(requeue=True)
        again = consumer.get(timeout=PATIENCE)
        assert (again.seq, again.attempt) == (2, 2)
        again.nack(requeue=False)
        with pytest.raises(turnstile.TimedOut):
            consumer.get(timeout=0.3)
        status = agent.status()
        assert [(q.queue, q.ready, q.unacked, q.consumers) for q in status.queues] == [("notices", 0, 0, 1)]


def test_a_dropped_delivery_is_given_back(broker: Broker) -> None:
    import gc

    with broker.connect() as c:
        c.publish("q", b"x")
        consumer = c.consume("q", prefetch=1)
        d = consumer.get(timeout=PATIENCE)
        assert d.attempt == 1
        del d
        gc.collect()
        # With prefetch 1, only the nack of the dropped one lets this through.
        again = consumer.get(timeout=PATIENCE)
        assert (again.seq, again.attempt) == (1, 2)
        again.leave_unacked()
        del again
        gc.collect()
        with pytest.raises(turnstile.TimedOut):
            consumer.get(timeout=0.3)


def test_publish_and_consume_across_a_broker_restart(broker: Broker) -> None:
    with broker.connect("svc") as svc:
        for text in ("a", "b", "c"):
            svc.publish("jobs", text)
    c = broker.connect("worker")
    consumer = c.consume("jobs")
    d = consumer.get(timeout=PATIENCE)
    assert d.payload == b"a"
    d.ack()
    unacked = consumer.get(timeout=PATIENCE)
    assert unacked.payload == b"b"
    broker.restart()
    with pytest.raises(turnstile.ConnectionLost):
        for _ in consumer:
            pass
    c.close()
    with broker.connect("worker") as c:
        consumer = c.consume("jobs")
        got = [consumer.get(timeout=PATIENCE) for _ in range(2)]
        assert [(d.payload, d.seq) for d in got] == [(b"b", 2), (b"c", 3)]
        for d in got:
            d.ack()
        assert c.publish("jobs", "d") == 4


async def _aio_queues(b: Broker) -> None:
    async with turnstile.aio.connect(b.socket, name="svc") as svc:
        assert await svc.publish("q", b"x", headers={"k": "v"}) == 1
        consumer = await svc.consume("q", prefetch=1)
        async for d in consumer:
            assert (d.payload, d.headers) == (b"x", {"k": "v"})
            await d.nack()
            break
        d = await consumer.get(timeout=PATIENCE)
        assert d.attempt == 2
        await svc.publish("q", b"y")
        # prefetch=1: nothing more until this one is settled.
        with pytest.raises(turnstile.TimedOut):
            await consumer.get(timeout=0.3)
        await d.ack()
        assert (await consumer.get(timeout=PATIENCE)).payload == b"y"
    await asyncio.get_running_loop().run_in_executor(None, b.restart)
    async with turnstile.aio.connect(b.socket, name="svc") as svc:
        consumer = await svc.consume("q")
        d = await consumer.get(timeout=PATIENCE)
        assert d.payload == b"y"  # unacked before the restart: delivered again
        await d.ack()


def test_aio_publish_consume_and_restart(broker: Broker) -> None:
    asyncio.run(_aio_queues(broker))


def test_peek_purge_and_requeue_dead(broker: Broker) -> None:
    with broker.connect("admin") as c:
        for body in (b"a", b"b", b"c"):
            c.publish("jobs", body, headers={"n": body.decode()})
        peek = c.peek("jobs", limit=2)
        assert [(m.seq, m.payload, m.headers, m.attempt) for m in peek] == [
            (1, b"a", {"n": "a"}, 0),
            (2, b"b", {"n": "b"}, 0),
        ]
        assert peek.truncated and len(peek) == 2
        assert [m.seq for m in c.peek("jobs")] == [1, 2, 3]  # nothing was taken
        assert c.requeue_dead("jobs") == 0
        assert c.purge("jobs") == 3
        assert len(c.peek("jobs")) == 0
        assert all(q.ready == 0 for q in c.status().queues)


def test_aio_peek_purge_and_requeue_dead(broker: Broker) -> None:
    async def main() -> None:
        async with turnstile.aio.connect(broker.socket, name="admin") as c:
            await c.publish("jobs", b"a")
            await c.publish("jobs", b"b")
            peek = await c.peek("jobs")
            assert [m.payload for m in peek] == [b"a", b"b"] and not peek.truncated
            assert await c.requeue_dead("jobs") == 0
            assert await c.purge("jobs") == 2
            assert len(await c.peek("jobs")) == 0

    asyncio.run(main())
