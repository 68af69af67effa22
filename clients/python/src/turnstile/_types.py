"""What the broker tells: plain, immutable values built from the wire messages.

Enum values appear as their names without prefix (``mode="SHARED"``,
``kind="GRANTED"``); a value newer than this client knows appears as its
number in a string. Durations are float seconds, instants float Unix
timestamps (``None`` when the broker says 0 = not applicable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional, Tuple

from .v1 import turnstile_pb2 as pb

__all__ = [
    "Peer",
    "Progress",
    "LeaseInfo",
    "ResourceState",
    "QueueInfo",
    "Status",
    "Queued",
    "HelloInfo",
    "WatchEvent",
    "YieldRequested",
    "ResumeToken",
    "HistoryEntry",
    "History",
]


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """The name of ``value`` in a generated enum, without ``prefix``; the number if unknown."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name[len(prefix) :] if name.startswith(prefix) else name


def _instant(ms: int) -> Optional[float]:
    return ms / 1000.0 if ms else None


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection, as the broker's OS reports it.

    ``user`` is the account name of ``uid`` (a SID on Windows), "" if it has
    none; ``login_session`` the peer's logon session as the OS knows it, ""
    if unknown. Both come from the OS, never from the client.
    """

    client_name: str
    uid: int
    pid: int
    session_id: int
    user: str = ""
    login_session: str = ""

    @classmethod
    def from_pb(cls, m: pb.Peer) -> "Peer":
        """Built from the wire ``Peer``."""
        return cls(m.client_name, m.uid, m.pid, m.session_id, m.user, m.login_session)


@dataclass(frozen=True)
class Progress:
    """A holder's last ``report_progress``."""

    done: int
    total: int
    message: str


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as others see it: a holder, or a waiter with its position.

    ``permits``: how many of the resource's permits it holds or waits for (0
    when the resource is not a counting semaphore). ``detached``: its
    connection closed and it is kept for its detach grace, waiting to be
    re-attached. ``stalled``: a holder that keeps its lease alive but has
    reported no progress for its ``stall_after`` (stuck, not dead nor hung).
    """

    lease_id: int
    resource: str
    mode: str
    purpose: str
    holder: Peer
    fencing_token: int
    progress: Optional[Progress]
    granted_at: Optional[float]
    expires_in: float
    position: int
    queued_at: Optional[float]
    permits: int = 0
    detached: bool = False
    stalled: bool = False

    @classmethod
    def from_pb(cls, m: pb.Lease) -> "LeaseInfo":
        """Built from the wire ``Lease``."""
        progress = (
            Progress(m.progress.done, m.progress.total, m.progress.message)
            if m.HasField("progress")
            else None
        )
        return cls(
            lease_id=m.lease_id,
            resource=m.resource,
            mode=enum_name(pb.Mode, m.mode, "MODE_"),
            purpose=m.purpose,
            holder=Peer.from_pb(m.holder),
            fencing_token=m.fencing_token,
            progress=progress,
            granted_at=_instant(m.granted_at_ms),
            expires_in=m.expires_in_ms / 1000.0,
            position=m.position,
            queued_at=_instant(m.queued_at_ms),
            permits=m.permits,
            detached=m.detached,
            stalled=m.stalled,
        )


@dataclass(frozen=True)
class ResourceState:
    """The whole state of one resource: its holders, and its waiters in queue order.

    ``capacity``: its permits as a counting semaphore (0: not one);
    ``permits_held``: how many are held now.
    """

    resource: str
    revision: int
    holders: Tuple[LeaseInfo, ...]
    waiters: Tuple[LeaseInfo, ...]
    capacity: int = 0
    permits_held: int = 0

    @classmethod
    def from_pb(cls, m: pb.ResourceState) -> "ResourceState":
        """Built from the wire ``ResourceState``."""
        return cls(
            m.resource,
            m.revision,
            tuple(LeaseInfo.from_pb(h) for h in m.holders),
            tuple(LeaseInfo.from_pb(w) for w in m.waiters),
            m.capacity,
            m.permits_held,
        )


@dataclass(frozen=True)
class QueueInfo:
    """One message queue's counters."""

    queue: str
    ready: int
    unacked: int
    consumers: int


@dataclass(frozen=True)
class Status:
    """Answer to ``status()``: resources in use (or those named) and queues."""

    revision: int
    resources: Tuple[ResourceState, ...]
    queues: Tuple[QueueInfo, ...]
    #: Resources were left out so that the answer fits in one frame: name
    #: them to see them.
    truncated: bool = False
    #: Queues were left out so that the answer fits in one frame.
    queues_truncated: bool = False

    @classmethod
    def from_pb(cls, m: pb.Status) -> "Status":
        """Built from the wire ``Status``."""
        return cls(
            m.revision,
            tuple(ResourceState.from_pb(r) for r in m.resources),
            tuple(QueueInfo(q.queue, q.ready, q.unacked, q.consumers) for q in m.queues),
            m.truncated,
            m.queues_truncated,
        )

    def resource(self, name: str) -> Optional[ResourceState]:
        """The state of ``name``, or ``None`` if the answer does not mention it."""
        for r in self.resources:
            if r.resource == name:
                return r
        return None


@dataclass(frozen=True)
class Queued:
    """Where a waiting request stands: position 1 is next in line.

    ``resume_token``: with a ``detach_grace``, what :meth:`reattach` needs
    to take the place back from another connection (``None`` otherwise):
    an ``on_queued`` callback can save it before a long wait.
    """

    lease_id: int
    position: int
    ahead: Tuple[LeaseInfo, ...]
    estimated_wait: Optional[float]
    resume_token: Optional["ResumeToken"] = field(default=None, repr=False)

    @classmethod
    def from_pb(cls, m: pb.Queued, resource: str = "") -> "Queued":
        """Built from the wire ``Queued`` (``resource``: the one requested, for its resume token)."""
        return cls(
            m.lease_id,
            m.position,
            tuple(LeaseInfo.from_pb(a) for a in m.ahead),
            m.estimated_wait_ms / 1000.0 if m.estimated_wait_ms else None,
            ResumeToken(m.lease_id, resource, bytes(m.resume_token)) if m.resume_token else None,
        )


@dataclass(frozen=True)
class HelloInfo:
    """What the broker said when the connection opened."""

    broker_version: str
    protocol_version: int
    session_id: int
    max_frame_bytes: int
    peer: Peer

    @classmethod
    def from_pb(cls, m: pb.HelloReply) -> "HelloInfo":
        """Built from the wire ``HelloReply``."""
        return cls(
            m.broker_version,
            m.protocol_version,
            m.session_id,
            m.max_frame_bytes,
            Peer.from_pb(m.peer),
        )


@dataclass(frozen=True)
class WatchEvent:
    """One item of a watch.

    ``kind`` is the wire ``EventKind`` without prefix (``"GRANTED"``,
    ``"RELEASED"``, ``"EXPIRED"``, ``"DISCONNECTED"``, ``"QUEUED"``,
    ``"CANCELLED"``, ``"PROGRESS"``, ``"RESYNC"``, ``"HEARTBEAT"``; and
    since wave 2 ``"YIELD_REQUESTED"``, ``"YIELD_DECLINED"``, ``"REVOKED"``,
    ``"DETACHED"``, ``"REATTACHED"``, ``"STALLED"``), or one of the
    watcher's own:

    - ``"SNAPSHOT"``: ``states`` holds every watched resource's state (at the
      start, and after a reconnect whose resume the broker could not honour,
      then with ``resync=True``: events in between are lost and this replaces them);
    - ``"CONNECTION_LOST"``: the broker went away; the watcher reconnects;
    - ``"RECONNECTED"``: back; the missed events (or a resync snapshot) follow.
    """

    kind: str
    revision: int
    state: Optional[ResourceState] = None
    states: Tuple[ResourceState, ...] = ()
    coalesced: bool = False
    resync: bool = False
    detail: str = ""

    @classmethod
    def from_pb(cls, m: pb.WatchEvent) -> "WatchEvent":
        """Built from the wire ``WatchEvent``."""
        return cls(
            kind=enum_name(pb.EventKind, m.kind, "EVENT_KIND_"),
            revision=m.revision,
            state=ResourceState.from_pb(m.state) if m.HasField("state") else None,
            coalesced=m.coalesced,
            detail=m.detail,
        )


@dataclass(frozen=True)
class YieldRequested:
    """Someone asks the holder of a lease to make way (``request_yield``).

    The holder makes way by releasing (and acquiring again if it wants), or
    answers with ``lease.decline_yield(reason)``. With ``revoke``, a lease
    still held ``within`` seconds after the request is taken
    (``lease.lost_reason == "REVOKED"``); declining does not stop that.
    """

    requester: Peer
    reason: str
    within: float
    revoke: bool

    @classmethod
    def from_pb(cls, m: pb.YieldRequested) -> "YieldRequested":
        """Built from the wire ``YieldRequested``."""
        return cls(Peer.from_pb(m.requester), m.reason, m.within_ms / 1000.0, m.revoke)


@dataclass(frozen=True)
class ResumeToken:
    """What a process needs to take back a detached lease or queue place
    (``client.reattach(token)``): the lease id, the resource, and the secret
    the broker gave its owner.

    ``str(token)`` is ``LEASE:HEX:RESOURCE`` (the Rust client's form), and
    :meth:`parse` reads it back: keep it where only its owner can read it.
    ``repr`` hides the secret.
    """

    lease_id: int
    resource: str
    secret: bytes = field(repr=False)

    def __str__(self) -> str:
        return f"{self.lease_id}:{self.secret.hex()}:{self.resource}"

    @classmethod
    def parse(cls, text: str) -> "ResumeToken":
        """Reads ``LEASE:HEX:RESOURCE`` back; :class:`ValueError` if it is not one."""
        m = _RESUME_TOKEN.fullmatch(text.rstrip("\r\n"))
        if m is None:
            raise ValueError(f"not a resume token: {text!r}")
        return cls(int(m.group(1)), m.group(3), bytes.fromhex(m.group(2)))


#: ``LEASE:HEX:RESOURCE``: a decimal u64, at most 64 bytes of secret in hex.
_RESUME_TOKEN = re.compile(r"([0-9]{1,20}):((?:[0-9a-fA-F]{2}){0,64}):(.*)", re.DOTALL)


def _seconds_between(start: float, end: float) -> float:
    """``end - start`` for two instants the broker gave in milliseconds: to the
    millisecond, so that float noise (about 1e-7 s on today's timestamps)
    cannot make 200 ms look like 199.9998 ms."""
    return max(round(end - start, 3), 0.0)


@dataclass(frozen=True)
class HistoryEntry:
    """One lease or waiting request that ended, as the broker recorded it.

    Instants are float Unix timestamps: ``queued_at`` when the request
    arrived (for a lease granted at once, the same as ``granted_at``),
    ``granted_at`` ``None`` for a request never granted, ``ended_at`` when
    it ended. ``ended_by`` is the event that ended it (``"RELEASED"``,
    ``"EXPIRED"``, ``"DISCONNECTED"``, ``"CANCELLED"``, ``"REVOKED"``), and
    ``timed_out`` true for a ``"CANCELLED"`` whose ``max_wait`` ran out;
    ``detail`` the broker's sentence about it. ``fencing_token`` is 0 for
    one never granted.
    """

    lease_id: int
    resource: str
    mode: str
    permits: int
    purpose: str
    holder: Peer
    queued_at: Optional[float]
    granted_at: Optional[float]
    ended_at: Optional[float]
    ended_by: str
    detail: str
    fencing_token: int
    timed_out: bool = False

    @property
    def waited(self) -> Optional[float]:
        """Seconds in the queue: until the grant, or until it left the queue
        ungranted; ``None`` when the broker did not say when it arrived."""
        if self.queued_at is None:
            return None
        until = self.granted_at if self.granted_at is not None else self.ended_at
        return None if until is None else _seconds_between(self.queued_at, until)

    @property
    def held(self) -> Optional[float]:
        """Seconds from the grant to the end; ``None`` for one never granted."""
        if self.granted_at is None or self.ended_at is None:
            return None
        return _seconds_between(self.granted_at, self.ended_at)

    @classmethod
    def from_pb(cls, m: pb.HistoryEntry) -> "HistoryEntry":
        """Built from the wire ``HistoryEntry``."""
        return cls(
            lease_id=m.lease_id,
            resource=m.resource,
            mode=enum_name(pb.Mode, m.mode, "MODE_"),
            permits=m.permits,
            purpose=m.purpose,
            holder=Peer.from_pb(m.holder),
            queued_at=_instant(m.queued_at_ms),
            granted_at=_instant(m.granted_at_ms),
            ended_at=_instant(m.ended_at_ms),
            ended_by=enum_name(pb.EventKind, m.ended_by, "EVENT_KIND_"),
            detail=m.detail,
            fencing_token=m.fencing_token,
            timed_out=m.timed_out,
        )


@dataclass(frozen=True)
class History:
    """Answer to ``history()``: the recorded leases of a resource, oldest
    first (newest last); iterate it for the :class:`HistoryEntry` items.
    ``truncated`` when older matching entries were left out (by ``limit``,
    or to fit in one frame)."""

    entries: Tuple[HistoryEntry, ...]
    truncated: bool = False

    @classmethod
    def from_pb(cls, m: pb.History) -> "History":
        """Built from the wire ``History``."""
        return cls(tuple(HistoryEntry.from_pb(e) for e in m.entries), m.truncated)

    def __iter__(self) -> Iterator[HistoryEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class PeekedMessage:
    """A ready message of a queue as ``peek()`` shows it: nothing is taken,
    no delivery attempt is used."""

    #: The queue it is in.
    queue: str
    #: Its sequence number in the queue (what ``publish`` answered).
    seq: int
    #: The message body, as published.
    payload: bytes
    #: The publisher's headers.
    headers: Dict[str, str]
    #: Deliveries made so far (0: never delivered).
    attempt: int

    @classmethod
    def from_pb(cls, m: pb.Delivery) -> "PeekedMessage":
        """Built from a wire ``Delivery`` of a ``QueuePeek``."""
        return cls(m.queue, m.seq, bytes(m.payload), headers_dict(m.headers), m.attempt)


@dataclass(frozen=True)
class QueuePeek:
    """Answer to ``peek()``: the next ready messages of a queue, next to be
    delivered first; iterate it for the :class:`PeekedMessage` items.
    ``truncated`` when more ready messages follow (``limit``, or the frame size)."""

    messages: Tuple[PeekedMessage, ...]
    truncated: bool = False

    @classmethod
    def from_pb(cls, m: pb.QueuePeek) -> "QueuePeek":
        """Built from the wire ``QueuePeek``."""
        return cls(tuple(PeekedMessage.from_pb(d) for d in m.messages), m.truncated)

    def __iter__(self) -> Iterator[PeekedMessage]:
        return iter(self.messages)

    def __len__(self) -> int:
        return len(self.messages)


def headers_dict(m: Any) -> Dict[str, str]:
    """A protobuf ``map<string, string>`` as a plain dict."""
    return {str(k): str(v) for k, v in m.items()}
