"""One connection to the broker, on asyncio: the handshake, request ids,
replies matched to their requests, and pushed frames routed to the lease,
watch or consumer that opened them.

The transport hands each chunk of bytes to :meth:`Connection._received`
in the event loop (no reader task: one wake-up less per frame). As in the
Rust client (``clients/client/src/connection.rs``), a route is opened by
the dispatcher itself when it sees the reply that creates it (an
``AcquireReply``, a ``WatchStarted``, a ``ConsumeStarted``), so a push that
follows its reply at once is never lost. A reply whose caller gave up
(cancelled, timed out) gives back what it created: the lease is released,
the watch ended.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from typing import Any, Dict, Optional, Tuple, Union

from . import _wire
from ._errors import (
    BrokerUnavailable,
    ConnectionLost,
    Error,
    FrameTooLarge,
    ProtocolViolation,
    TimedOut,
    from_wire,
)
from ._transport import Stream, dial
from ._types import HelloInfo
from .v1 import turnstile_pb2 as pb

#: What a route carries: a pushed message, or ``None`` once the connection is gone.
Push = Union[pb.LeaseUpdate, pb.WatchEvent, pb.Delivery, None]
#: A route's key: which kind of push, and the id the broker puts in it.
RouteKey = Tuple[str, int]
#: A reply, and the route it opened.
Answer = Tuple[pb.Reply, "Optional[asyncio.Queue[Push]]"]


def _settle(fut: "Union[asyncio.Future[Answer], concurrent.futures.Future[Answer]]", value: Union[Answer, Error]) -> bool:
    """Completes ``fut``; ``False`` if its waiter gave up (a future of another
    thread may be cancelled there at any moment)."""
    if fut.done():
        return False
    try:
        if isinstance(value, Error):
            fut.set_exception(value)
        else:
            fut.set_result(value)
    except (asyncio.InvalidStateError, concurrent.futures.InvalidStateError):
        return False
    return True


def route_of(reply: pb.Reply) -> Optional[RouteKey]:
    """The route a reply opens, if any."""
    kind = reply.WhichOneof("result")
    if kind == "acquire":
        outcome = reply.acquire.WhichOneof("outcome")
        if outcome == "granted":
            return ("lease", reply.acquire.granted.lease_id)
        if outcome == "queued":
            return ("lease", reply.acquire.queued.lease_id)
        return None
    if kind == "watch":
        return ("watch", reply.watch.watch_id)
    if kind == "consume":
        return ("consumer", reply.consume.consumer_id)
    return None


class Connection:
    """A greeted connection. Create with :meth:`open`."""

    def __init__(self, stream: Stream, socket: str) -> None:
        self.socket = socket
        self._stream = stream
        self._ids = itertools.count(1)
        # Futures of the event loop (request) or of another thread (request_threadsafe).
        self._pending: Dict[int, "Union[asyncio.Future[Answer], concurrent.futures.Future[Answer]]"] = {}
        self._routes: Dict[RouteKey, "asyncio.Queue[Push]"] = {}
        self._decoder = _wire.FrameDecoder()
        self._max_out = _wire.DEFAULT_MAX_FRAME_BYTES
        self.lost: Optional[Error] = None
        self.closed = asyncio.Event()
        self.hello: Optional[HelloInfo] = None
        self._loop = asyncio.get_running_loop()
        stream.start(self._received, self._ended)

    @classmethod
    async def open(
        cls, socket: str, name: str, timeout: Optional[float], retry_for: float
    ) -> "Connection":
        """Dials ``socket`` (retrying for ``retry_for`` seconds, backing off
        from 50 ms to 1 s) and says Hello within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + retry_for
        backoff = 0.05
        while True:
            try:
                stream = await dial(socket, timeout)
                break
            except BrokerUnavailable:
                if loop.time() + backoff > give_up:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        conn = cls(stream, socket)
        try:
            reply, _ = await conn.request(
                "hello",
                pb.Hello(protocol_version=_wire.PROTOCOL_VERSION, client_name=name),
                timeout=timeout,
            )
        except BaseException:
            conn.close()
            raise
        if reply.WhichOneof("result") != "hello":
            conn.close()
            raise ProtocolViolation(f"expected HelloReply, got {reply.WhichOneof('result')}")
        conn.hello = HelloInfo.from_pb(reply.hello)
        # Frames as large as the broker says it sends, never below the default.
        conn._decoder.max_frame_bytes = max(reply.hello.max_frame_bytes, _wire.DEFAULT_MAX_FRAME_BYTES)
        conn._max_out = reply.hello.max_frame_bytes or _wire.DEFAULT_MAX_FRAME_BYTES
        return conn

    def _frame(self, field: str, body: Any) -> Tuple[int, bytes]:
        if self.lost is not None:
            if isinstance(self.lost, ConnectionLost):
                raise self.lost
            raise ConnectionLost(f"the connection is closed: {self.lost}", self.socket)
        rid = next(self._ids)
        message = pb.ClientFrame(id=rid, **{field: body}).SerializeToString()
        if len(message) > self._max_out:
            raise FrameTooLarge(
                f"a {field} request of {len(message)} bytes is over the broker's limit of {self._max_out}"
            )
        return rid, _wire.varint(len(message)) + message

    async def request(
        self, field: str, body: Any, timeout: Optional[float] = None
    ) -> Answer:
        """Sends one request and waits for its reply (and the route it opened).

        A wire ``Error`` raises its exception; a lost connection
        :class:`ConnectionLost`; ``timeout`` seconds without an answer
        :class:`TimedOut`.
        """
        rid, data = self._frame(field, body)
        fut: "asyncio.Future[Answer]" = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[rid] = fut
        self._stream.write(data)
        try:
            await self._stream.drain()
            if timeout is None:
                return await fut
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise TimedOut(f"no answer to {field} within {timeout} s") from None
        finally:
            if not fut.done():
                fut.cancel()

    def request_threadsafe(
        self, field: str, body: Any
    ) -> "concurrent.futures.Future[Answer]":
        """:meth:`request` for another thread, without a task: the frame is
        encoded in the calling thread and handed to the loop, and the reply
        completes the returned future from the reader (one wake-up each way).
        Cancelling the future is like a cancelled :meth:`request`."""
        rid, data = self._frame(field, body)
        fut: "concurrent.futures.Future[Answer]" = (
            concurrent.futures.Future()
        )
        self._loop.call_soon_threadsafe(self._submit, rid, data, fut)
        return fut

    def _submit(self, rid: int, data: bytes, fut: "concurrent.futures.Future[Answer]") -> None:
        if self.lost is not None:
            _settle(fut, ConnectionLost(f"the connection is closed: {self.lost}", self.socket))
            return
        self._pending[rid] = fut
        self._stream.write(data)

    def send_nowait(self, field: str, body: Any) -> None:
        """Sends a request whose answer nobody waits for (clean-up paths)."""
        if self.lost is not None:
            return
        try:
            _, data = self._frame(field, body)
        except Error:
            return
        self._stream.write(data)

    def route(self, key: RouteKey) -> "Optional[asyncio.Queue[Push]]":
        """The open route for ``key``, if any."""
        return self._routes.get(key)

    def close_route(self, key: RouteKey) -> None:
        """Stops routing pushes for ``key``."""
        self._routes.pop(key, None)

    def _abandon(self, reply: pb.Reply, key: RouteKey) -> None:
        """Gives back what a reply nobody waits for created."""
        kind, ident = key
        if kind == "lease":
            self.send_nowait("release", pb.Release(lease_id=ident))
        elif kind == "watch":
            self.send_nowait("unwatch", pb.Unwatch(watch_id=ident))

    def _received(self, data: bytes) -> None:
        """Bytes from the broker (called by the transport, in the loop)."""
        if self.lost is not None:
            return
        try:
            for frame in self._decoder.feed(data):
                failure = self._dispatch(frame)
                if failure is not None:
                    self._shut(failure)
                    return
        except Error as e:
            self._shut(e)

    def _ended(self, why: Optional[BaseException]) -> None:
        """The transport closed (called by the transport, in the loop)."""
        detail = f": {why}" if why is not None else ""
        self._shut(ConnectionLost(f"the broker closed the connection{detail}", self.socket))

    def _dispatch(self, frame: pb.ServerFrame) -> Optional[Error]:
        kind = frame.WhichOneof("body")
        if kind == "reply":
            reply = frame.reply
            if reply.WhichOneof("result") == "error":
                error = from_wire(reply.error)
                if reply.id == 0:
                    return error  # about no request: the broker is closing on us
                fut = self._pending.pop(reply.id, None)
                if fut is not None:
                    _settle(fut, error)
                return None
            key = route_of(reply)
            queue: "Optional[asyncio.Queue[Push]]" = None
            if key is not None:
                queue = asyncio.Queue()
                self._routes[key] = queue
            fut = self._pending.pop(reply.id, None)
            if fut is not None and _settle(fut, (reply, queue)):
                pass
            elif key is not None:
                self._routes.pop(key, None)
                self._abandon(reply, key)
            return None
        if kind == "lease_update":
            target = self._routes.get(("lease", frame.lease_update.lease_id))
            push: Push = frame.lease_update
        elif kind == "watch_event":
            target = self._routes.get(("watch", frame.watch_event.watch_id))
            push = frame.watch_event
        elif kind == "delivery":
            target = self._routes.get(("consumer", frame.delivery.consumer_id))
            push = frame.delivery
        else:
            return None
        if target is not None:
            target.put_nowait(push)
        return None

    def _shut(self, lost: Error) -> None:
        if self.closed.is_set():
            return
        if self.lost is None:
            self.lost = lost
        for fut in self._pending.values():
            _settle(fut, lost)
        self._pending.clear()
        for q in self._routes.values():
            q.put_nowait(None)
        self._routes.clear()
        self._stream.close()
        self.closed.set()

    def close(self) -> None:
        """Closes the connection: the broker ends its leases, waits, watches
        and consumers, and redelivers its unacknowledged messages."""
        self._shut(ConnectionLost("the client was closed", self.socket))

    async def wait_closed(self) -> None:
        """Waits until the connection is fully closed."""
        await self.closed.wait()
