"""The one place where ``acquire``'s keyword arguments become an ``Acquire``
message, for both flavours, and where float seconds become the wire's
milliseconds. A new option of the wire is added here and to the two
``acquire`` signatures that pass it through.

Every argument a caller gives is checked here before protobuf sees it, so
that a wrong type or value is an :class:`InvalidArgument` naming the
argument (protobuf's own ``TypeError: bad argument type for built-in
operation`` names none)."""

from __future__ import annotations

import datetime
import math
from typing import Dict, List, Optional, Sequence, Union

from ._errors import InvalidArgument
from .v1 import turnstile_pb2 as pb

_U32 = 0xFFFFFFFF


def millis(seconds: Optional[float], what: str, *, zero_is_none: bool = False) -> int:
    """Float seconds as the wire's u32 milliseconds (``None`` = 0, "the default").

    Any other duration is at least 1 ms: ``ttl=0`` is a (refused) TTL of 1 ms,
    not silently the broker's default. With ``zero_is_none`` (a grace, a
    stall limit, a yield's delay), 0 seconds is the wire's 0 = "none".
    """
    if seconds is None:
        return 0
    if not (seconds >= 0) or math.isinf(seconds):
        raise InvalidArgument(f"{what} must be a finite number of seconds >= 0, not {seconds!r}")
    if seconds == 0 and zero_is_none:
        return 0
    return min(max(int(round(seconds * 1000)), 1), _U32)


def count(value: int, what: str) -> int:
    """A non-negative count that fits the wire's u32."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U32:
        raise InvalidArgument(f"{what} must be an integer from 0 to {_U32}, not {value!r}")
    return value


def text(value: object, what: str) -> str:
    """A ``str`` argument (a name, a purpose, a reason)."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a str, not {type(value).__name__} {value!r:.60}")
    return value


def names(value: Optional[Sequence[str]], what: str) -> List[str]:
    """Names to look at: ``None`` for none named, and a single ``str`` is one
    name (not a sequence of one-letter names)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [text(v, what) for v in value]


def payload_bytes(payload: Union[bytes, str]) -> bytes:
    """A message's payload: bytes as they are, a ``str`` as UTF-8."""
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise InvalidArgument(f"payload must be bytes or str, not {type(payload).__name__}")


def header_map(headers: Optional[Dict[str, str]]) -> Dict[str, str]:
    """A message's headers, names and values ``str``."""
    return {text(k, "a header name"): text(v, f"header {k!r}") for k, v in (headers or {}).items()}


def acquire_message(
    resource: str,
    *,
    shared: bool,
    ttl: Optional[float],
    wait: bool,
    max_wait: Optional[float],
    purpose: str,
    permits: int = 0,
    capacity: int = 0,
    detach_grace: Optional[float] = None,
    stall_after: Optional[float] = None,
) -> pb.Acquire:
    """The ``Acquire`` request for these options."""
    return pb.Acquire(
        resource=text(resource, "resource"),
        mode=pb.MODE_SHARED if shared else pb.MODE_EXCLUSIVE,
        ttl_ms=millis(ttl, "ttl"),
        wait=pb.WAIT_POLICY_QUEUE if wait else pb.WAIT_POLICY_NO_WAIT,
        max_wait_ms=millis(max_wait, "max_wait"),
        purpose=text(purpose, "purpose"),
        permits=count(permits, "permits"),
        capacity=count(capacity, "capacity"),
        detach_grace_ms=millis(detach_grace, "detach_grace", zero_is_none=True),
        stall_after_ms=millis(stall_after, "stall_after", zero_is_none=True),
    )


def request_yield_message(
    resource: str, *, within: Optional[float], reason: str, revoke: bool
) -> pb.RequestYield:
    """The ``RequestYield`` request for these options."""
    return pb.RequestYield(
        resource=text(resource, "resource"),
        within_ms=millis(within, "within", zero_is_none=True),
        reason=text(reason, "reason"),
        revoke=revoke,
    )


def history_message(
    resource: str, *, since: Union[float, datetime.datetime, None], limit: int
) -> pb.GetHistory:
    """The ``GetHistory`` request: ``since`` a Unix timestamp in seconds (or
    an aware ``datetime``), ``None`` = as far back as the broker keeps."""
    since_ms = 0
    if since is not None:
        stamp = since.timestamp() if isinstance(since, datetime.datetime) else since
        if not (stamp >= 0) or math.isinf(stamp):
            raise InvalidArgument(f"since must be a Unix timestamp >= 0, not {since!r}")
        since_ms = int(round(stamp * 1000))
    return pb.GetHistory(resource=text(resource, "resource"), since_ms=since_ms, limit=count(limit, "limit"))


def progress_message(lease_id: int, done: int, total: int, message: str) -> pb.ReportProgress:
    """The ``ReportProgress`` request: ``done`` of ``total`` steps."""
    return pb.ReportProgress(
        lease_id=lease_id, done=count(done, "done"), total=count(total, "total"), message=text(message, "message")
    )
