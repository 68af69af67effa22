"""The asyncio flavour: the same names as the blocking one, awaited.

.. code-block:: python

    import turnstile.aio

    async def main() -> None:
        async with turnstile.aio.connect(name="agent") as client:
            request = client.acquire("pcm", shared=True, purpose="initialise")
            async for queued in request.queued():      # each change of place
                print("position", queued.position)
            async with request as lease:                # granted
                await lease.report_progress(1, 5, "copying")
            await client.request_yield("pcm", within=30.0, reason="user logon")

One :class:`Client` is one connection; its leases keep themselves alive in
background tasks of the running loop. A watch opens its own connection so
that it can reconnect and resume on its own.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import os
import sys
from types import TracebackType
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Generator,
    List,
    Optional,
    Sequence,
    Type,
    Union,
)

from ._connection import Connection, Push
from ._endpoint import resolve_socket
from ._errors import ConnectionLost, Error, InvalidArgument, LeaseLost, NotFound, ProtocolViolation, TimedOut
from ._lease_options import (
    acquire_message,
    count,
    header_map,
    history_message,
    names,
    payload_bytes,
    progress_message,
    request_yield_message,
    text,
)
from ._types import (
    History,
    QueuePeek,
    HelloInfo,
    Queued,
    ResourceState,
    ResumeToken,
    Status,
    WatchEvent,
    YieldRequested,
    enum_name,
    headers_dict,
)
from .v1 import turnstile_pb2 as pb

__all__ = ["connect", "Connecting", "Client", "AcquireRequest", "Lease", "Watcher", "Consumer", "Delivery"]

#: ``on_queued`` may be a plain function or a coroutine function.
OnQueued = Callable[[Queued], Union[None, Awaitable[None]]]
PathLike = Union[str, "os.PathLike[str]"]


def default_name() -> str:
    """The client name used when none is given: the program's file name."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return prog or "python"


def connect(
    socket: Optional[PathLike] = None,
    *,
    name: Optional[str] = None,
    timeout: Optional[float] = 5.0,
    retry_for: float = 0.0,
) -> "Connecting":
    """Connects to the broker and says Hello: ``client = await connect(...)``,
    or ``async with connect(...) as client:`` to close it at the end.

    ``socket``: the socket file (or on Windows the pipe); default
    ``TURNSTILE_SOCKET``, else the platform's default (see
    :func:`turnstile.default_socket`). ``name``: a label the broker shows to
    others (default: the program's name). ``timeout``: seconds for
    connecting and the handshake (``None``: no limit). ``retry_for``: keep
    trying this many seconds while the broker is not there yet.

    Raises :class:`turnstile.BrokerUnavailable` when nothing answers.
    """
    return Connecting(resolve_socket(socket), name if name is not None else default_name(), timeout, retry_for)


class Connecting:
    """What :func:`connect` returns: awaitable (gives the :class:`Client`)
    and an async context manager (closes the client at the end)."""

    def __init__(self, socket: str, name: str, timeout: Optional[float], retry_for: float) -> None:
        self._args = (socket, name, timeout, retry_for)
        self._client: Optional[Client] = None

    async def _connect(self) -> "Client":
        socket, name, timeout, retry_for = self._args
        conn = await Connection.open(socket, name, timeout, retry_for)
        self._client = Client(conn, name, timeout)
        return self._client

    def __await__(self) -> Generator[Any, None, "Client"]:
        return self._connect().__await__()

    async def __aenter__(self) -> "Client":
        return await self._connect()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._client is not None:
            await self._client.close()


class Client:
    """One connection to the broker. Use as ``async with``, or call :meth:`close`."""

    def __init__(self, conn: Connection, name: str, timeout: Optional[float]) -> None:
        self._conn = conn
        self._timeout = timeout
        #: The name this client gave the broker.
        self.name = name

    @property
    def socket(self) -> str:
        """The socket (or pipe) this client is connected to."""
        return self._conn.socket

    @property
    def hello(self) -> HelloInfo:
        """What the broker said at Hello: its version, limits, and who it sees."""
        assert self._conn.hello is not None
        return self._conn.hello

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (by :meth:`close` or by the broker)."""
        return self._conn.closed.is_set()

    async def close(self) -> None:
        """Closes the connection; the broker ends its leases and waits at once."""
        self._conn.close()
        await self._conn.wait_closed()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    async def ping(self, payload: bytes = b"", *, timeout: Optional[float] = None) -> bytes:
        """A round trip to the broker; answers ``payload`` echoed."""
        reply, _ = await self._conn.request("ping", pb.Ping(payload=payload), timeout)
        return expect(reply, "pong").payload  # type: ignore[no-any-return]

    async def status(
        self, resources: Optional[Sequence[str]] = None, *, timeout: Optional[float] = None
    ) -> Status:
        """The state of the named resources (every one in use when ``None``) and of the queues."""
        body = pb.GetStatus(resources=names(resources, "a resource name"))
        reply, _ = await self._conn.request("get_status", body, timeout)
        return Status.from_pb(expect(reply, "status"))

    async def history(
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
        reply, _ = await self._conn.request("get_history", body, timeout)
        return History.from_pb(expect(reply, "history"))

    async def peek(self, queue: str, *, limit: int = 0, timeout: Optional[float] = None) -> QueuePeek:
        """The next ready messages of ``queue``, next to be delivered first,
        without taking them (at most ``limit``; 0: as many as fit in one
        frame). Policy verb ``consume``."""
        body = pb.PeekQueue(queue=text(queue, "queue"), limit=count(limit, "limit"))
        reply, _ = await self._conn.request("peek_queue", body, timeout)
        return QueuePeek.from_pb(expect(reply, "queue_peek"))

    async def purge(self, queue: str, *, timeout: Optional[float] = None) -> int:
        """Drops every ready message of ``queue`` (delivered, unacknowledged
        ones stay with their consumers); answers how many. Policy verb
        ``queue-admin``."""
        reply, _ = await self._conn.request("purge_queue", pb.PurgeQueue(queue=text(queue, "queue")), timeout)
        return int(expect(reply, "queue_count").count)

    async def requeue_dead(self, queue: str, *, timeout: Optional[float] = None) -> int:
        """Moves the dead letters of ``queue`` (``QUEUE.dead``) back to its
        end, attempts reset; answers how many. Policy verb ``queue-admin``."""
        reply, _ = await self._conn.request("requeue_dead", pb.RequeueDead(queue=text(queue, "queue")), timeout)
        return int(expect(reply, "queue_count").count)

    def acquire(
        self,
        resource: str,
        *,
        shared: bool = False,
        ttl: Optional[float] = None,
        wait: bool = True,
        max_wait: Optional[float] = None,
        purpose: str = "",
        on_queued: Optional[OnQueued] = None,
        permits: int = 0,
        capacity: int = 0,
        detach_grace: Optional[float] = None,
        stall_after: Optional[float] = None,
    ) -> "AcquireRequest":
        """A lease on ``resource``: ``await`` it for the :class:`Lease`, or
        ``async with`` it to release at the end of the block.

        EXCLUSIVE unless ``shared``; ``ttl`` seconds (``None``: the broker's
        default, 15 s), kept alive in the background at a third of it.
        ``wait=False`` raises :class:`turnstile.Busy` instead of queueing;
        ``max_wait`` seconds in the queue raise :class:`turnstile.TimedOut`.
        ``purpose`` is shown to everyone who looks. ``on_queued`` (a function
        or coroutine function) is called with a :class:`turnstile.Queued` at
        each change of place in the queue; or iterate :meth:`AcquireRequest.queued`.

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
        message = acquire_message(
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
        return AcquireRequest(self._conn, resource, "acquire", message, on_queued)

    def reattach(
        self, token: Union[ResumeToken, str], *, on_queued: Optional[OnQueued] = None
    ) -> "AcquireRequest":
        """Takes back, on this connection, a detached lease or queue place:
        one acquired with ``detach_grace`` whose connection closed (its
        process died or handed over) less than the grace ago. ``token`` is
        the :class:`turnstile.ResumeToken` its owner kept, or its ``str``.

        As :meth:`acquire`: ``await`` it for the :class:`Lease` (at once if
        it was held, once granted if it was waiting), ``async with`` it, or
        iterate :meth:`AcquireRequest.queued`. The same uid only; a wrong
        token, another uid or a lease that has ended are all
        :class:`turnstile.NotFound`.
        """
        if isinstance(token, str):
            try:
                token = ResumeToken.parse(token)
            except ValueError as e:
                raise InvalidArgument(f"token: {e}") from None
        body = pb.Reattach(lease_id=token.lease_id, resume_token=token.secret)
        return AcquireRequest(self._conn, token.resource, "reattach", body, on_queued, token)

    async def request_yield(
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
        reply, _ = await self._conn.request("request_yield", body, timeout)
        return int(expect(reply, "done").holders_asked)

    def watch(
        self,
        resources: Optional[Sequence[str]] = None,
        *,
        start_revision: int = 0,
        heartbeats: bool = False,
    ) -> "Watcher":
        """Watches the named resources (all when ``None``) on a connection of
        its own that reconnects and resumes after the broker restarts.

        An async iterator of :class:`turnstile.WatchEvent`: first a
        ``"SNAPSHOT"`` (unless resuming from ``start_revision``), then every
        change. Heartbeats are skipped unless ``heartbeats``. Close it with
        :meth:`Watcher.close` or ``async with``.
        """
        return Watcher(
            self._conn.socket, self.name, resources, start_revision, heartbeats, self._timeout
        )

    async def publish(
        self,
        queue: str,
        payload: Union[bytes, str],
        *,
        headers: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> int:
        """Appends a message to ``queue``; answers its sequence number once the
        broker has stored it durably. A ``str`` payload is sent as UTF-8."""
        reply, _ = await self._conn.request("publish", publish_message(queue, payload, headers), timeout)
        return int(expect(reply, "publish").seq)

    async def consume(self, queue: str, *, prefetch: int = 0, timeout: Optional[float] = None) -> "Consumer":
        """Starts consuming ``queue``: at most ``prefetch`` deliveries
        unacknowledged at a time (0: the broker's default, 16).

        The subscription lasts as long as the connection; deliveries neither
        acked nor nacked when it closes are delivered again.
        """
        reply, route = await self._conn.request(
            "consume", pb.Consume(queue=text(queue, "queue"), prefetch=count(prefetch, "prefetch")), timeout
        )
        started = expect(reply, "consume")
        assert route is not None
        return Consumer(self._conn, started.consumer_id, queue, route)


def publish_message(queue: str, payload: Union[bytes, str], headers: Optional[Dict[str, str]]) -> pb.Publish:
    """The ``Publish`` request (a ``str`` payload as UTF-8)."""
    return pb.Publish(queue=text(queue, "queue"), payload=payload_bytes(payload), headers=header_map(headers))


def expect(reply: pb.Reply, kind: str) -> Any:
    """The ``kind`` result of ``reply``; :class:`turnstile.ProtocolViolation` if it is another."""
    got = reply.WhichOneof("result")
    if got != kind:
        raise ProtocolViolation(f"expected {kind} in the broker's reply, got {got}")
    return getattr(reply, kind)


async def _call_back(fn: Optional[OnQueued], queued: Queued) -> None:
    if fn is None:
        return
    result = fn(queued)
    if inspect.isawaitable(result):
        await result


def _lost_error(lost: pb.Lost) -> Error:
    reason = enum_name(pb.LostReason, lost.reason, "LOST_REASON_")
    detail = lost.detail or f"the request was lost ({reason})"
    if reason == "TIMED_OUT":
        return TimedOut(detail)
    return LeaseLost(detail, reason)


class AcquireRequest:
    """A lease request: awaitable (gives the :class:`Lease` once granted),
    an async context manager (releases at the end), and through
    :meth:`queued` an async iterator of the places it waits in.

    Cancelling the wait (or leaving it by an exception) gives the place
    back: the broker is told at once.
    """

    def __init__(
        self,
        conn: Connection,
        resource: str,
        field: str,
        message: Union[pb.Acquire, pb.Reattach],
        on_queued: Optional[OnQueued],
        token: Optional[ResumeToken] = None,
    ) -> None:
        self._conn = conn
        self._resource = resource
        self._field = field
        self._message = message
        self._on_queued = on_queued
        self._route: "Optional[asyncio.Queue[Push]]" = None
        self._lease_id = 0
        self._granted: Optional[pb.Granted] = None
        self._queued: Optional[Queued] = None
        self._lease: Optional[Lease] = None
        self._token = token
        self._detached = False

    @property
    def lease_id(self) -> int:
        """The broker's id for the request (0 before it is sent)."""
        return self._lease_id

    @property
    def resume_token(self) -> Optional[ResumeToken]:
        """The token for :meth:`Client.reattach` once the request is sent with
        a ``detach_grace`` (``None`` otherwise). Keep it where only its owner
        can read it."""
        return self._token

    def _keep_token(self, lease_id: int, secret: bytes) -> None:
        if secret:
            self._token = ResumeToken(lease_id, self._resource, bytes(secret))

    async def _start(self) -> Optional[Queued]:
        """Sends the request once; the place it got, or ``None`` if granted."""
        if self._detached:
            raise Error("this request was detached: take it back with reattach(token)", code="DETACHED")
        if self._route is None:
            reply, route = await self._conn.request(self._field, self._message)
            acquired = expect(reply, "acquire")
            assert route is not None
            self._route = route
            if acquired.WhichOneof("outcome") == "granted":
                self._granted = acquired.granted
                self._lease_id = acquired.granted.lease_id
                self._keep_token(self._lease_id, acquired.granted.resume_token)
            else:
                self._queued = Queued.from_pb(acquired.queued, self._resource)
                self._lease_id = acquired.queued.lease_id
                self._keep_token(self._lease_id, acquired.queued.resume_token)
        return None if self._granted is not None else self._queued

    async def _next(self) -> Optional[Queued]:
        """Waits for the next change of place; ``None`` once granted."""
        assert self._route is not None
        if self._granted is not None:
            return None
        while True:
            push = await self._route.get()
            if push is None:
                raise ConnectionLost("the connection to the broker was lost while queued", self._conn.socket)
            if not isinstance(push, pb.LeaseUpdate):
                continue
            change = push.WhichOneof("change")
            if change == "granted":
                self._granted = push.granted
                self._keep_token(self._lease_id, push.granted.resume_token)
                return None
            if change == "queued":
                self._queued = Queued.from_pb(push.queued, self._resource)
                self._keep_token(self._lease_id, push.queued.resume_token)
                return self._queued
            if change == "lost":
                self._conn.close_route(("lease", self._lease_id))
                raise _lost_error(push.lost)

    def _give_back(self) -> None:
        """Leaves the queue (or releases a grant nobody took)."""
        if self._lease_id and self._lease is None and not self._detached:
            self._conn.close_route(("lease", self._lease_id))
            self._conn.send_nowait("release", pb.Release(lease_id=self._lease_id))
            self._lease_id = 0

    def detach(self) -> Optional[ResumeToken]:
        """Lets go of the request without leaving the queue: with a
        ``detach_grace``, the place is kept for :meth:`Client.reattach` once
        this connection closes (a process handing over to its successor);
        without one, it ends when the connection closes. Answers the token
        (``None`` without a grace). The request is inert afterwards."""
        if self._lease_id and self._lease is None:
            self._conn.close_route(("lease", self._lease_id))
        self._detached = True
        return self._token

    def _into_lease(self) -> "Lease":
        if self._lease is None:
            assert self._granted is not None and self._route is not None
            self._lease = Lease(self._conn, self._resource, self._granted, self._route, self._token)
        return self._lease

    async def queued(self) -> AsyncIterator[Queued]:
        """Sends the request and yields each place it waits in; ends once granted.

        ``await`` the request afterwards for the lease. Leaving the loop early
        keeps the place; cancelling the task gives it back.
        """
        try:
            place = await self._start()
            while place is not None:
                yield place
                place = await self._next()
        except GeneratorExit:
            raise  # the caller stopped iterating: the request still waits
        except BaseException:
            self._give_back()
            raise

    def __aiter__(self) -> AsyncIterator[Queued]:
        return self.queued()

    async def wait(self) -> "Lease":
        """Sends the request (if not yet) and waits until it is granted."""
        if self._lease is not None:
            return self._lease
        try:
            place = await self._start()
            while place is not None:
                await _call_back(self._on_queued, place)
                place = await self._next()
        except BaseException:
            self._give_back()
            raise
        return self._into_lease()

    def __await__(self) -> Generator[Any, None, "Lease"]:
        return self.wait().__await__()

    async def __aenter__(self) -> "Lease":
        return await self.wait()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._lease is not None:
            await self._lease.__aexit__(exc_type, exc, tb)


class _LeaseState:
    """What the keep-alive task needs; kept apart from :class:`Lease` so that
    the task does not keep a forgotten lease alive."""

    def __init__(self, conn: Connection, lease_id: int, ttl: float) -> None:
        self.conn = conn
        self.lease_id = lease_id
        self.ttl = ttl
        self.lost = asyncio.Event()
        self.lost_reason: Optional[str] = None
        self.lost_detail = ""
        self.callbacks: List[Callable[[], None]] = []
        self.task: Optional["asyncio.Task[None]"] = None
        self.released = False
        self.yield_requested = asyncio.Event()
        self.yield_request: Optional[YieldRequested] = None
        #: Yield requests not yet taken by ``next_yield_request``; ``None`` once untracked.
        self.yields: "asyncio.Queue[Optional[YieldRequested]]" = asyncio.Queue()
        self.yield_callbacks: List[Callable[[YieldRequested], None]] = []

    def mark_lost(self, reason: str, detail: str) -> None:
        if self.lost.is_set() or self.released:
            return
        self.lost_reason = reason
        self.lost_detail = detail
        self.lost.set()
        for fn in self.callbacks:
            _run_callback(fn)
        self.yields.put_nowait(None)

    def asked_to_yield(self, request: YieldRequested) -> None:
        self.yield_request = request
        self.yield_requested.set()
        self.yields.put_nowait(request)
        for callback in self.yield_callbacks:
            _run_callback(lambda: callback(request))

    def stop(self) -> None:
        """Ends the keep-alive and the route (the lease is released, lost or detached)."""
        self.conn.close_route(("lease", self.lease_id))
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.yields.put_nowait(None)

    def abandon(self) -> None:
        """Releases, best effort, a lease dropped without ``release()``."""
        if not self.released and not self.lost.is_set():
            self.released = True
            self.conn.send_nowait("release", pb.Release(lease_id=self.lease_id))
        self.stop()


def _run_callback(fn: Callable[[], None]) -> None:
    """Runs a user's callback from the keep-alive task: an exception in it is
    reported to the loop's exception handler, and the lease goes on."""
    try:
        fn()
    except Exception as e:
        asyncio.get_running_loop().call_exception_handler(
            {"message": "a turnstile lease callback raised", "exception": e}
        )


async def _keep_alive(state: _LeaseState, route: "asyncio.Queue[Push]") -> None:
    period = max(state.ttl / 3.0, 0.02)
    loop = asyncio.get_running_loop()
    due = loop.time() + period
    while True:
        try:
            push = await asyncio.wait_for(route.get(), max(due - loop.time(), 0.0))
        except asyncio.TimeoutError:
            due += period
            try:
                await state.conn.request("keep_alive", pb.KeepAlive(lease_id=state.lease_id))
            except ConnectionLost as e:
                state.mark_lost("CONNECTION_LOST", str(e.message))
                return
            except Error as e:
                state.mark_lost("EXPIRED", e.message)
                state.stop()
                return
            continue
        if push is None:
            state.mark_lost("CONNECTION_LOST", "the connection to the broker was lost")
            return
        if not isinstance(push, pb.LeaseUpdate):
            continue
        change = push.WhichOneof("change")
        if change == "yield_requested":
            state.asked_to_yield(YieldRequested.from_pb(push.yield_requested))
        elif change == "lost":
            reason = enum_name(pb.LostReason, push.lost.reason, "LOST_REASON_")
            state.mark_lost(reason, push.lost.detail or f"the lease was lost ({reason})")
            state.stop()
            return


class Lease:
    """A granted lease. It keeps itself alive (a KeepAlive at a third of its
    TTL) until released, lost, or dropped (then released, best effort).

    ``async with`` releases it at the end of the block.
    """

    def __init__(
        self,
        conn: Connection,
        resource: str,
        granted: pb.Granted,
        route: "asyncio.Queue[Push]",
        resume_token: Optional[ResumeToken] = None,
    ) -> None:
        self._conn = conn
        #: The token for :meth:`Client.reattach` when the lease was acquired
        #: with a ``detach_grace`` (``None`` otherwise). Keep it where only
        #: its owner can read it: it lets a new connection take the lease.
        self.resume_token = resume_token
        self._loop = asyncio.get_running_loop()
        #: The resource held.
        self.resource = resource
        #: The broker's id for the lease.
        self.lease_id: int = granted.lease_id
        #: Strictly increasing per resource, never reused: hand it to what the
        #: lease protects so it can refuse a stale holder.
        self.fencing_token: int = granted.fencing_token
        #: The TTL in force, in seconds.
        self.ttl: float = granted.ttl_ms / 1000.0
        self._state = _LeaseState(conn, granted.lease_id, self.ttl)
        self._state.task = self._loop.create_task(_keep_alive(self._state, route))

    @property
    def lost(self) -> asyncio.Event:
        """Set when the lease is lost (expired, revoked, connection lost): ``await lease.lost.wait()``."""
        return self._state.lost

    @property
    def lost_reason(self) -> Optional[str]:
        """Why it was lost (``"EXPIRED"``, ``"REVOKED"``, ``"CONNECTION_LOST"``...), ``None`` while held."""
        return self._state.lost_reason

    @property
    def lost_detail(self) -> str:
        """The broker's sentence about the loss ("" while held)."""
        return self._state.lost_detail

    def add_lost_callback(self, fn: Callable[[], None]) -> None:
        """Calls ``fn()`` (in the event loop) when the lease is lost; at once if it already is."""
        if self._state.lost.is_set():
            fn()
        else:
            self._state.callbacks.append(fn)

    @property
    def yield_requested(self) -> asyncio.Event:
        """Set at each request that this holder make way (``request_yield``):
        ``await lease.yield_requested.wait()``, or look at it between steps of
        the work (and ``clear()`` it to notice the next one).
        :attr:`yield_request` is the latest request; make way by releasing,
        or answer with :meth:`decline_yield`."""
        return self._state.yield_requested

    @property
    def yield_request(self) -> Optional[YieldRequested]:
        """The latest request to make way (who, why, within how long, whether
        it revokes), ``None`` if there was none."""
        return self._state.yield_request

    async def next_yield_request(self, timeout: Optional[float] = None) -> YieldRequested:
        """Waits for the next request to make way (each is answered once, in
        order). :class:`turnstile.TimedOut` after ``timeout`` seconds;
        :class:`turnstile.LeaseLost` once the lease is released, lost or detached."""
        yields = self._state.yields
        try:
            request = await asyncio.wait_for(yields.get(), timeout)
        except asyncio.TimeoutError:
            raise TimedOut(f"no yield request within {timeout} s") from None
        if request is None:
            yields.put_nowait(None)  # stays ended for later calls
            raise LeaseLost(
                f"the lease on {self.resource!r} is no longer held here", self.lost_reason or "RELEASED"
            )
        return request

    def add_yield_callback(self, fn: Callable[[YieldRequested], None]) -> None:
        """Calls ``fn(request)`` (in the event loop) at each request to make way."""
        self._state.yield_callbacks.append(fn)

    async def decline_yield(self, reason: str = "") -> None:
        """Answers a request to make way: this holder will not, now, for
        ``reason`` (watchers see ``"YIELD_DECLINED"``). A pending revoke
        still stands."""
        await self._conn.request("decline_yield", pb.DeclineYield(lease_id=self.lease_id, reason=text(reason, "reason")))

    def detach(self) -> Optional[ResumeToken]:
        """Lets go of the lease without releasing it, and answers its
        :attr:`resume_token`: with a ``detach_grace``, the lease is kept for
        :meth:`Client.reattach` once this connection closes (a process
        handing over to its successor). It is no longer kept alive from here:
        while this connection stays open its TTL runs. The object is inert
        afterwards (leaving ``async with`` does not release it)."""
        state = self._state
        state.released = True
        state.stop()
        return self.resume_token

    async def report_progress(self, done: int, total: int, message: str = "") -> None:
        """Tells waiters and watchers how far the work under the lease has got."""
        body = progress_message(self.lease_id, done, total, message)
        await self._conn.request("report_progress", body)

    async def release(self) -> None:
        """Releases the lease and waits for the broker to confirm.

        Raises :class:`turnstile.NotFound` if the lease had already ended
        (expired or lost).
        """
        state = self._state
        if state.released:
            return
        state.released = True
        state.stop()
        await self._conn.request("release", pb.Release(lease_id=self.lease_id))

    async def __aenter__(self) -> "Lease":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._state.lost.is_set():
            return
        try:
            await self.release()
        except (NotFound, ConnectionLost):
            pass  # already ended: nothing left to give back

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state is None or state.released:
            return
        try:
            self._loop.call_soon_threadsafe(state.abandon)
        except RuntimeError:
            pass  # the loop is closed: the connection is gone with it

    def __repr__(self) -> str:
        return f"<Lease {self.resource!r} id={self.lease_id} token={self.fencing_token}>"


class Watcher:
    """A watch that survives broker restarts (like the Rust ``Watcher``).

    On connection loss it yields ``"CONNECTION_LOST"``, reconnects (backing
    off up to once a second, as long as it takes), yields ``"RECONNECTED"``
    and resumes from the last revision it saw: the caller gets every missed
    event, or a ``"SNAPSHOT"`` with ``resync=True``, never a silent gap.
    """

    def __init__(
        self,
        socket: str,
        name: str,
        resources: Optional[Sequence[str]],
        start_revision: int,
        heartbeats: bool,
        timeout: Optional[float],
    ) -> None:
        self._socket = socket
        self._name = name
        self._resources = names(resources, "a resource name")
        self._heartbeats = heartbeats
        self._timeout = timeout
        self._conn: Optional[Connection] = None
        self._route: "Optional[asyncio.Queue[Push]]" = None
        self._ready: List[WatchEvent] = []
        self._closed = False
        self._started = False
        #: The revision of the newest state seen (0 before the first).
        self.revision = start_revision

    async def start(self) -> "Watcher":
        """Connects and starts watching (the first iteration does it too).

        Raises :class:`turnstile.BrokerUnavailable` if the broker cannot be
        reached the first time; later losses are reconnected.
        """
        if not self._started:
            await self._open(self._timeout, 0.0)
            self._started = True
        return self

    async def _open(self, timeout: Optional[float], retry_for: float) -> None:
        conn = await Connection.open(self._socket, self._name, timeout, retry_for)
        try:
            body = pb.Watch(resources=self._resources, start_revision=self.revision)
            reply, route = await conn.request("watch", body, timeout)
        except BaseException:
            conn.close()
            raise
        started = expect(reply, "watch")
        if self.revision == 0 or started.resync:
            self._ready.append(
                WatchEvent(
                    kind="SNAPSHOT",
                    revision=started.revision,
                    states=tuple(ResourceState.from_pb(s) for s in started.snapshot),
                    resync=started.resync,
                )
            )
            self.revision = started.revision
        self._conn = conn
        self._route = route

    def __aiter__(self) -> "Watcher":
        return self

    async def __anext__(self) -> WatchEvent:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        while True:
            if self._ready:
                return self._ready.pop(0)
            if self._route is None:
                await self._reconnect()
                return WatchEvent(kind="RECONNECTED", revision=self.revision)
            push = await self._route.get()
            if push is None:
                lost = self._conn.lost if self._conn is not None else None
                self._route = None
                self._conn = None
                if self._closed:
                    raise StopAsyncIteration
                detail = lost.message if lost is not None else "the connection to the broker was lost"
                return WatchEvent(kind="CONNECTION_LOST", revision=self.revision, detail=detail)
            if not isinstance(push, pb.WatchEvent):
                continue
            self.revision = max(self.revision, push.revision)
            if push.kind == pb.EVENT_KIND_HEARTBEAT and not self._heartbeats:
                continue
            return WatchEvent.from_pb(push)

    async def _reconnect(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._open(self._timeout, 3600.0)
                return
            except (ConnectionLost, TimedOut, OSError):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            except Error as e:
                if e.code != "UNAVAILABLE":
                    raise
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def close(self) -> None:
        """Ends the watch and its connection."""
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()

    async def __aenter__(self) -> "Watcher":
        return await self.start()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()


class Delivery:
    """One message handed to a consumer: settle it with :meth:`ack` once
    handled, or :meth:`nack` to give it back. One dropped unsettled is given
    back (requeued). Delivery is at least once: one unsettled when the
    connection closes is delivered again."""

    def __init__(self, conn: Connection, m: pb.Delivery) -> None:
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        #: The message body, as published.
        self.payload: bytes = m.payload
        #: The publisher's headers.
        self.headers: Dict[str, str] = headers_dict(m.headers)
        #: 1 for the first delivery of the message, 2 and up for redeliveries.
        self.attempt: int = m.attempt
        #: The message's sequence number in its queue (what ``publish`` answered).
        self.seq: int = m.seq
        #: The queue it comes from.
        self.queue: str = m.queue
        #: This delivery's id (a redelivery gets a new one).
        self.delivery_id: int = m.delivery_id
        #: Whether it was acked or nacked.
        self.settled = False

    async def ack(self) -> None:
        """The message was handled: the broker forgets it."""
        self.settled = True
        await self._conn.request("ack", pb.Ack(delivery_id=self.delivery_id))

    async def nack(self, requeue: bool = True) -> None:
        """Gives the message back: delivered again with ``requeue``, else dropped."""
        self.settled = True
        await self._conn.request("nack", pb.Nack(delivery_id=self.delivery_id, requeue=requeue))

    def __del__(self) -> None:
        # Dropped unsettled: give it back, so that its place in the prefetch
        # window is not held until the connection closes (as in the Rust client).
        if getattr(self, "settled", True):
            return
        body = pb.Nack(delivery_id=self.delivery_id, requeue=True)
        try:
            self._loop.call_soon_threadsafe(self._conn.send_nowait, "nack", body)
        except RuntimeError:
            pass  # the loop is closed: the connection is gone, the broker redelivers

    def leave_unacked(self) -> None:
        """Neither acks nor gives the message back: it keeps its place in the
        prefetch window until the connection closes, and is then delivered again."""
        self.settled = True

    def __repr__(self) -> str:
        return f"<Delivery {self.queue!r} seq={self.seq} attempt={self.attempt} {len(self.payload)} bytes>"


class Consumer:
    """A subscription to one queue: an async iterator of :class:`Delivery`.

    Raises :class:`turnstile.ConnectionLost` when the connection is gone
    (its unacknowledged deliveries are then delivered again).
    """

    def __init__(self, conn: Connection, consumer_id: int, queue: str, route: "asyncio.Queue[Push]") -> None:
        self._conn = conn
        self._route = route
        #: The broker's id for this consumer.
        self.consumer_id = consumer_id
        #: The queue consumed.
        self.queue = queue

    async def get(self, timeout: Optional[float] = None) -> Delivery:
        """The next delivery; :class:`turnstile.TimedOut` after ``timeout`` seconds."""
        while True:
            try:
                push = await asyncio.wait_for(self._route.get(), timeout)
            except asyncio.TimeoutError:
                raise TimedOut(f"no delivery from {self.queue!r} within {timeout} s") from None
            if push is None:
                self._route.put_nowait(None)  # stays ended for later calls
                lost = self._conn.lost
                raise ConnectionLost(
                    lost.message if lost is not None else "the connection was closed", self._conn.socket
                )
            if isinstance(push, pb.Delivery):
                return Delivery(self._conn, push)

    def __aiter__(self) -> "Consumer":
        return self

    async def __anext__(self) -> Delivery:
        return await self.get()
