"""The blocking flavour: the asyncio client driven by an event loop in a
background thread that each :class:`Client` owns.

Calls block the calling thread until the loop thread has the answer; the
keep-alive of leases and the reading of the socket go on in that thread,
so a lease stays alive while the caller blocks or computes. ``on_queued``
callbacks run in the caller's thread. An interrupted call (Ctrl-C, a
``timeout``) is cancelled in the loop too: an interrupted wait gives its
place in the queue back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import threading
import weakref
from types import TracebackType
from typing import Any, Callable, Coroutine, Dict, Iterator, Optional, Sequence, Type, TypeVar, Union

from . import aio
from ._errors import ConnectionLost, NotFound, TimedOut
from ._connection import Connection
from ._lease_options import count, history_message, names, progress_message, request_yield_message, text
from ._types import History, HelloInfo, Queued, QueuePeek, ResumeToken, Status, WatchEvent, YieldRequested
from .v1 import turnstile_pb2 as pb

__all__ = ["connect", "Client", "Lease", "Watch", "Consumer", "Delivery"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread of its own.

    Plain requests (ping, status, publish, progress, ack) go straight to the
    connection (:meth:`call`); the rest run as coroutines in the loop (:meth:`run`).

    It stops (its connections closed, so the broker ends their leases at
    once) on :meth:`stop`, when nothing refers to it any more (the client,
    its leases, watches and consumers all dropped), or at interpreter exit.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="turnstile", daemon=True)
        self._thread.start()
        self._finalizer = weakref.finalize(self, _shut_down, self.loop, self._thread)

    def run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        """Runs ``coro`` in the loop and waits for it (cancelled if the wait is interrupted)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking turnstile call from inside its own loop thread would deadlock")
        if self.loop.is_closed():
            coro.close()
            raise _closed()
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimedOut:
            raise  # the call's own (a TimeoutError too): not this wait's
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimedOut(f"no answer within {timeout} s") from None
        except BaseException:
            fut.cancel()
            raise

    def call(self, conn: Connection, field: str, body: Any, timeout: Optional[float]) -> pb.Reply:
        """One request on ``conn`` answered by a plain reply (no route), without a task."""
        if self.loop.is_closed():
            raise _closed()
        fut = conn.request_threadsafe(field, body)
        try:
            reply, _ = fut.result(timeout)
        except TimedOut:
            raise
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimedOut(f"no answer to {field} within {timeout} s") from None
        except BaseException:
            fut.cancel()
            raise
        return reply

    def stop(self) -> None:
        """Cancels what still runs in the loop (keep-alives, readers), then
        stops the loop and its thread."""
        self._finalizer()


def _shut_down(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if loop.is_closed():
        return
    if threading.current_thread() is thread:
        # Dropped from inside the loop: finish there, without waiting on it.
        task = loop.create_task(_cancel_all())
        task.add_done_callback(lambda _: loop.stop())
        return
    try:
        asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(_SHUTDOWN_PATIENCE)
    except Exception:
        pass  # a stuck loop: stop it all the same
    loop.call_soon_threadsafe(loop.stop)
    thread.join(_SHUTDOWN_PATIENCE)
    if not thread.is_alive():
        loop.close()


def _closed() -> ConnectionLost:
    """A call on a client that was closed: its connection is gone, as when
    the broker closes it."""
    return ConnectionLost("the client was closed")


#: Seconds a shutdown waits for the loop thread before leaving it to die with the process.
_SHUTDOWN_PATIENCE = 5.0


async def _cancel_all() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def connect(
    socket: Optional[aio.PathLike] = None,
    *,
    name: Optional[str] = None,
    timeout: Optional[float] = 5.0,
    retry_for: float = 0.0,
) -> "Client":
    """Connects to the broker and says Hello.

    ``socket``: the socket file (or on Windows the pipe); default
    ``TURNSTILE_SOCKET``, else the platform's default (see
    :func:`turnstile.default_socket`). ``name``: a label the broker shows to
    others (default: the program's name). ``timeout``: seconds for
    connecting and the handshake (``None``: no limit). ``retry_for``: keep
    trying this many seconds while the broker is not there yet.

    Raises :class:`turnstile.BrokerUnavailable` when nothing answers.
    """
    runner = _LoopThread()
    try:
        inner = runner.run(aio.connect(socket, name=name, timeout=timeout, retry_for=retry_for)._connect())
    except BaseException:
        runner.stop()
        raise
    return Client(inner, runner)


class Client:
    """One connection to the broker. Use as ``with``, or call :meth:`close`."""

    def __init__(self, inner: aio.Client, runner: _LoopThread) -> None:
        self._inner = inner
        self._runner = runner
        #: The name this client gave the broker.
        self.name = inner.name

    @property
    def socket(self) -> str:
        """The socket (or pipe) this client is connected to."""
        return self._inner.socket

    @property
    def hello(self) -> HelloInfo:
        """What the broker said at Hello: its version, limits, and who it sees."""
        return self._inner.hello

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (by :meth:`close` or by the broker)."""
        return self._inner.closed

    def close(self) -> None:
        """Closes the connection (the broker ends its leases and waits at
        once) and stops the client's thread. Leases of this client are lost;
        a :class:`Watch` has its own connection and goes on."""
        if not self._runner.loop.is_closed():
            self._runner.run(self._inner.close())
            self._runner.stop()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def ping(self, payload: bytes = b"", *, timeout: Optional[float] = None) -> bytes:
        """A round trip to the broker; answers ``payload`` echoed."""
        reply = self._runner.call(self._inner._conn, "ping", pb.Ping(payload=payload), timeout)
        return bytes(aio.expect(reply, "pong").payload)

    def status(self, resources: Optional[Sequence[str]] = None, *, timeout: Optional[float] = None) -> Status:
        """The state of the named resources (every one in use when ``None``) and of the queues."""
        body = pb.GetStatus(resources=names(resources, "a resource name"))
        reply = self._runner.call(self._inner._conn, "get_status", body, timeout)
        return Status.from_pb(aio.expect(reply, "status"))

    def history(
        self,
        resource: str,
        *,
        since: Union[float, datetime.datetime, None] = None,
        limit: int = 0,
        timeout: Optional[float] = None,
    ) -> History:
        """The leases of ``resource`` that ended (granted or not), as the
        broker recorded them durably: oldest first, newest last.

        ``since``: only those that ended at or after this instant (a Unix
        timestamp in seconds, such as ``time.time() - 3600``, or an aware
        ``datetime``); ``None``: as far back as the broker keeps. ``limit``:
        at most this many, the newest (0: as many as fit in one frame);
        :attr:`History.truncated` says whether older ones were left out.
        """
        body = history_message(resource, since=since, limit=limit)
        reply = self._runner.call(self._inner._conn, "get_history", body, timeout)
        return History.from_pb(aio.expect(reply, "history"))

    def peek(self, queue: str, *, limit: int = 0, timeout: Optional[float] = None) -> QueuePeek:
        """The next ready messages of ``queue``, next to be delivered first,
        without taking them (at most ``limit``; 0: as many as fit in one
        frame). Policy verb ``consume``."""
        body = pb.PeekQueue(queue=text(queue, "queue"), limit=count(limit, "limit"))
        reply = self._runner.call(self._inner._conn, "peek_queue", body, timeout)
        return QueuePeek.from_pb(aio.expect(reply, "queue_peek"))

    def purge(self, queue: str, *, timeout: Optional[float] = None) -> int:
        """Drops every ready message of ``queue`` (delivered, unacknowledged
        ones stay with their consumers); answers how many. Policy verb
        ``queue-admin``."""
        reply = self._runner.call(self._inner._conn, "purge_queue", pb.PurgeQueue(queue=text(queue, "queue")), timeout)
        return int(aio.expect(reply, "queue_count").count)

    def requeue_dead(self, queue: str, *, timeout: Optional[float] = None) -> int:
        """Moves the dead letters of ``queue`` (``QUEUE.dead``) back to its
        end, attempts reset; answers how many. Policy verb ``queue-admin``."""
        reply = self._runner.call(self._inner._conn, "requeue_dead", pb.RequeueDead(queue=text(queue, "queue")), timeout)
        return int(aio.expect(reply, "queue_count").count)

    def acquire(
        self,
        resource: str,
        *,
        shared: bool = False,
        ttl: Optional[float] = None,
        wait: bool = True,
        max_wait: Optional[float] = None,
        purpose: str = "",
        on_queued: Optional[Callable[[Queued], None]] = None,
        permits: int = 0,
        capacity: int = 0,
        detach_grace: Optional[float] = None,
        stall_after: Optional[float] = None,
    ) -> "Lease":
        """Takes a lease on ``resource``, waiting in its queue until granted.

        The :class:`Lease` is also a context manager that releases it. EXCLUSIVE
        unless ``shared``; ``ttl`` seconds (``None``: the broker's default,
        15 s), kept alive in the background at a third of it. ``wait=False``
        raises :class:`turnstile.Busy` instead of queueing; ``max_wait``
        seconds in the queue raise :class:`turnstile.TimedOut`. ``purpose`` is
        shown to everyone who looks. ``on_queued`` is called (in this
        thread) with a :class:`turnstile.Queued` at each change of place.

        ``capacity=C`` (SHARED) makes the resource a counting semaphore of C
        permits, of which this lease takes ``permits`` (0: one); the capacity
        belongs to the resource (its config, or the first request while
        nobody holds or waits), and naming another one is
        :class:`turnstile.InvalidArgument`. ``detach_grace`` seconds: when
        this connection closes, the lease (or queue place) is kept that long
        for :meth:`reattach` with :attr:`Lease.resume_token`, instead of
        ending at once. ``stall_after`` seconds without ``report_progress``
        mark the holder *stalled* for everyone who looks (nothing is revoked).
        """
        request = self._inner.acquire(
            resource,
            shared=shared,
            ttl=ttl,
            wait=wait,
            max_wait=max_wait,
            purpose=purpose,
            permits=permits,
            capacity=capacity,
            detach_grace=detach_grace,
            stall_after=stall_after,
        )
        return self._wait(request, on_queued)

    def reattach(
        self, token: Union[ResumeToken, str], *, on_queued: Optional[Callable[[Queued], None]] = None
    ) -> "Lease":
        """Takes back, on this connection, a detached lease or queue place:
        one acquired with ``detach_grace`` whose connection closed (its
        process died or handed over) less than the grace ago. ``token`` is
        the :class:`turnstile.ResumeToken` its owner kept, or its ``str``.

        Answers the :class:`Lease` at once if it was held; if it was waiting,
        waits for the grant as :meth:`acquire` does (``on_queued`` with each
        place). The same uid only; a wrong token, another uid or a lease that
        has ended are all :class:`turnstile.NotFound`.
        """
        return self._wait(self._inner.reattach(token), on_queued)

    def request_yield(
        self,
        resource: str,
        *,
        within: Optional[float] = None,
        reason: str = "",
        revoke: bool = False,
        timeout: Optional[float] = None,
    ) -> int:
        """Asks every holder of ``resource`` to make way within ``within``
        seconds (``None`` or 0: at once), for ``reason``; returns once every
        holder has been asked, with how many were (0: nobody held it). Holders see it on their lease
        (:attr:`Lease.yield_requested`), watchers as ``"YIELD_REQUESTED"``.

        With ``revoke``, a holder still holding after ``within`` loses its
        lease (``"REVOKED"``) and the next in line is granted. The broker's
        policy decides who may ask (verb ``yield``) and who may revoke
        (verb ``revoke``: by default root and the broker's own user).
        """
        body = request_yield_message(resource, within=within, reason=reason, revoke=revoke)
        reply = self._runner.call(self._inner._conn, "request_yield", body, timeout)
        return int(aio.expect(reply, "done").holders_asked)

    def _wait(self, request: aio.AcquireRequest, on_queued: Optional[Callable[[Queued], None]]) -> "Lease":
        run = self._runner.run
        try:
            place = run(request._start())
            while place is not None:
                if on_queued is not None:
                    on_queued(place)
                place = run(request._next())
        except BaseException:
            if not self._runner.loop.is_closed():
                self._runner.loop.call_soon_threadsafe(request._give_back)
            raise

        async def take() -> aio.Lease:
            return request._into_lease()

        return Lease(run(take()), self._runner)

    def watch(
        self,
        resources: Optional[Sequence[str]] = None,
        *,
        start_revision: int = 0,
        heartbeats: bool = False,
    ) -> "Watch":
        """Watches the named resources (all when ``None``) on a connection of
        its own that reconnects and resumes after the broker restarts.

        An iterator of :class:`turnstile.WatchEvent`: first a ``"SNAPSHOT"``
        (unless resuming from ``start_revision``), then every change.
        Heartbeats are skipped unless ``heartbeats``. It has a connection and
        a thread of its own and may outlive this client. Close it with
        :meth:`Watch.close` or ``with``.
        """
        inner = self._inner.watch(resources, start_revision=start_revision, heartbeats=heartbeats)
        runner = _LoopThread()  # its own thread: the watch may outlive this client
        try:
            runner.run(inner.start())
        except BaseException:
            runner.stop()
            raise
        return Watch(inner, runner)

    def publish(
        self,
        queue: str,
        payload: Union[bytes, str],
        *,
        headers: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> int:
        """Appends a message to ``queue``; answers its sequence number once the
        broker has stored it durably. A ``str`` payload is sent as UTF-8."""
        body = aio.publish_message(queue, payload, headers)
        reply = self._runner.call(self._inner._conn, "publish", body, timeout)
        return int(aio.expect(reply, "publish").seq)

    def consume(self, queue: str, *, prefetch: int = 0, timeout: Optional[float] = None) -> "Consumer":
        """Starts consuming ``queue``: an iterator of :class:`Delivery`, at most
        ``prefetch`` unacknowledged at a time (0: the broker's default, 16)."""
        return Consumer(self._runner.run(self._inner.consume(queue, prefetch=prefetch, timeout=timeout)), self._runner)


class Lease:
    """A granted lease. It keeps itself alive in the client's thread until
    released, lost, or dropped (then released, best effort).

    ``with`` releases it at the end of the block.
    """

    def __init__(self, inner: aio.Lease, runner: _LoopThread) -> None:
        self._inner = inner
        self._runner = runner
        self._detached = False
        #: Set when the lease is lost (expired, revoked, connection lost).
        self.lost = threading.Event()
        self._yields = _YieldView()
        #: Set at each request that this holder make way (``request_yield``;
        #: ``clear()`` it to notice the next one); :attr:`yield_request` is the
        #: latest request. Make way by releasing, or answer with :meth:`decline_yield`.
        self.yield_requested = self._yields.event
        runner.loop.call_soon_threadsafe(_listen, inner, self.lost, self._yields)

    @property
    def resource(self) -> str:
        """The resource held."""
        return self._inner.resource

    @property
    def lease_id(self) -> int:
        """The broker's id for the lease."""
        return self._inner.lease_id

    @property
    def fencing_token(self) -> int:
        """Strictly increasing per resource, never reused: hand it to what the
        lease protects so it can refuse a stale holder."""
        return self._inner.fencing_token

    @property
    def ttl(self) -> float:
        """The TTL in force, in seconds."""
        return self._inner.ttl

    @property
    def lost_reason(self) -> Optional[str]:
        """Why it was lost (``"EXPIRED"``, ``"REVOKED"``, ``"CONNECTION_LOST"``...), ``None`` while held."""
        return self._inner.lost_reason

    @property
    def lost_detail(self) -> str:
        """The broker's sentence about the loss ("" while held)."""
        return self._inner.lost_detail

    @property
    def resume_token(self) -> Optional[ResumeToken]:
        """The token for :meth:`Client.reattach` when the lease was acquired
        with a ``detach_grace`` (``None`` otherwise). Keep it where only its
        owner can read it: it lets a new connection take the lease."""
        return self._inner.resume_token

    @property
    def yield_request(self) -> Optional[YieldRequested]:
        """The latest request to make way (who, why, within how long, whether
        it revokes), ``None`` if there was none."""
        return self._yields.latest

    def next_yield_request(self, timeout: Optional[float] = None) -> YieldRequested:
        """Waits for the next request to make way (each is answered once, in
        order). :class:`turnstile.TimedOut` after ``timeout`` seconds;
        :class:`turnstile.LeaseLost` once the lease is released, lost or detached."""
        return self._runner.run(self._inner.next_yield_request(timeout))

    def decline_yield(self, reason: str = "") -> None:
        """Answers a request to make way: this holder will not, now, for
        ``reason`` (watchers see ``"YIELD_DECLINED"``). A pending revoke
        still stands."""
        body = pb.DeclineYield(lease_id=self._inner.lease_id, reason=text(reason, "reason"))
        self._runner.call(self._inner._conn, "decline_yield", body, None)

    def detach(self) -> Optional[ResumeToken]:
        """Lets go of the lease without releasing it, and answers its
        :attr:`resume_token`: with a ``detach_grace``, the lease is kept for
        :meth:`Client.reattach` once this connection closes (a process
        handing over to its successor). It is no longer kept alive from here:
        while this connection stays open its TTL runs. The object is inert
        afterwards (leaving ``with`` does not release it)."""

        async def detach() -> Optional[ResumeToken]:
            return self._inner.detach()

        self._detached = True
        return self._runner.run(detach())

    def report_progress(self, done: int, total: int, message: str = "") -> None:
        """Tells waiters and watchers how far the work under the lease has got."""
        inner = self._inner
        body = progress_message(inner.lease_id, done, total, message)
        self._runner.call(inner._conn, "report_progress", body, None)

    def release(self) -> None:
        """Releases the lease and waits for the broker to confirm.

        Raises :class:`turnstile.NotFound` if it had already ended.
        """
        self._runner.run(self._inner.release())

    def __enter__(self) -> "Lease":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self.lost.is_set() or self._detached or self._runner.loop.is_closed():
            return
        try:
            self.release()
        except (NotFound, ConnectionLost):
            pass

    def __repr__(self) -> str:
        return repr(self._inner)


class _YieldView:
    """The yield requests of a lease as this thread sees them. Kept apart from
    :class:`Lease` so that the loop's callbacks do not keep a dropped lease alive."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.latest: Optional[YieldRequested] = None

    def record(self, request: YieldRequested) -> None:
        self.latest = request
        self.event.set()


def _listen(inner: aio.Lease, lost: threading.Event, yields: _YieldView) -> None:
    """In the loop: mirrors a lease's events into the thread-safe view."""
    inner.add_lost_callback(lost.set)
    inner.add_yield_callback(yields.record)
    if inner.yield_request is not None:
        yields.record(inner.yield_request)


class Watch:
    """A live watch: an iterator of :class:`turnstile.WatchEvent` that never
    ends on its own (it reconnects); :meth:`close` it, or use ``with``."""

    def __init__(self, inner: aio.Watcher, runner: _LoopThread) -> None:
        self._inner = inner
        self._runner = runner

    @property
    def revision(self) -> int:
        """The revision of the newest state seen."""
        return self._inner.revision

    def next(self, timeout: Optional[float] = None) -> WatchEvent:
        """The next event; :class:`turnstile.TimedOut` after ``timeout`` seconds."""
        try:
            return self._runner.run(self._inner.__anext__(), timeout)
        except StopAsyncIteration:
            raise StopIteration from None

    def __iter__(self) -> Iterator[WatchEvent]:
        return self

    def __next__(self) -> WatchEvent:
        return self.next()

    def close(self) -> None:
        """Ends the watch, its connection and its thread."""
        if not self._runner.loop.is_closed():
            self._runner.run(self._inner.close())
            self._runner.stop()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


class Delivery:
    """One message handed to a consumer: :meth:`ack` it once handled, or
    :meth:`nack` it to give it back; one dropped unsettled is given back."""

    def __init__(self, inner: aio.Delivery, runner: _LoopThread) -> None:
        self._inner = inner
        self._runner = runner

    @property
    def payload(self) -> bytes:
        """The message body, as published."""
        return self._inner.payload

    @property
    def headers(self) -> Dict[str, str]:
        """The publisher's headers."""
        return self._inner.headers

    @property
    def attempt(self) -> int:
        """1 for the first delivery of the message, 2 and up for redeliveries."""
        return self._inner.attempt

    @property
    def seq(self) -> int:
        """The message's sequence number in its queue."""
        return self._inner.seq

    @property
    def queue(self) -> str:
        """The queue it comes from."""
        return self._inner.queue

    @property
    def delivery_id(self) -> int:
        """This delivery's id (a redelivery gets a new one)."""
        return self._inner.delivery_id

    def ack(self) -> None:
        """The message was handled: the broker forgets it."""
        inner = self._inner
        inner.settled = True
        self._runner.call(inner._conn, "ack", pb.Ack(delivery_id=inner.delivery_id), None)

    def leave_unacked(self) -> None:
        """Neither acks nor gives the message back: it keeps its place in the
        prefetch window until the connection closes, and is then delivered again."""
        self._inner.leave_unacked()

    def nack(self, requeue: bool = True) -> None:
        """Gives the message back: delivered again with ``requeue``, else dropped."""
        inner = self._inner
        inner.settled = True
        self._runner.call(inner._conn, "nack", pb.Nack(delivery_id=inner.delivery_id, requeue=requeue), None)

    def __repr__(self) -> str:
        return repr(self._inner)


class Consumer:
    """A subscription to one queue: an iterator of :class:`Delivery`.

    Raises :class:`turnstile.ConnectionLost` when the connection is gone.
    """

    def __init__(self, inner: aio.Consumer, runner: _LoopThread) -> None:
        self._inner = inner
        self._runner = runner

    @property
    def queue(self) -> str:
        """The queue consumed."""
        return self._inner.queue

    def get(self, timeout: Optional[float] = None) -> Delivery:
        """The next delivery; :class:`turnstile.TimedOut` after ``timeout`` seconds."""
        return Delivery(self._runner.run(self._inner.get(timeout)), self._runner)

    def __iter__(self) -> Iterator[Delivery]:
        return self

    def __next__(self) -> Delivery:
        return self.get()
