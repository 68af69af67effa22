"""The one place where ``acquire``'s keyword arguments become an ``Acquire``
message, for both flavours. A new option of the wire (wave 2: permits,
capacity, detach_grace, stall_after) is added here and to the two
``acquire`` signatures that pass it through."""

from __future__ import annotations

import math
from typing import Optional

from ._errors import InvalidArgument
from .v1 import turnstile_pb2 as pb

_U32 = 0xFFFFFFFF


def millis(seconds: Optional[float], what: str) -> int:
    """Float seconds as the wire's u32 milliseconds (``None`` = 0, "the default")."""
    if seconds is None:
        return 0
    if not (seconds >= 0) or math.isinf(seconds):
        raise InvalidArgument(f"{what} must be a finite number of seconds >= 0, not {seconds!r}")
    return min(max(int(round(seconds * 1000)), 1), _U32)


def acquire_message(
    resource: str,
    *,
    shared: bool,
    ttl: Optional[float],
    wait: bool,
    max_wait: Optional[float],
    purpose: str,
) -> pb.Acquire:
    """The ``Acquire`` request for these options."""
    return pb.Acquire(
        resource=resource,
        mode=pb.MODE_SHARED if shared else pb.MODE_EXCLUSIVE,
        ttl_ms=millis(ttl, "ttl"),
        wait=pb.WAIT_POLICY_QUEUE if wait else pb.WAIT_POLICY_NO_WAIT,
        max_wait_ms=millis(max_wait, "max_wait"),
        purpose=purpose,
    )
