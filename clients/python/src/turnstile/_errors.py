"""Exceptions: one class per wire ``ErrorCode``, all under :class:`Error`.

The broker's refusals map to the class named after their code (``ERROR_CODE_BUSY``
is :class:`Busy`); a broker that cannot be reached, or a connection that
drops, is :class:`BrokerUnavailable`. Nothing here does I/O.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

from .v1 import turnstile_pb2 as pb

__all__ = [
    "Error",
    "InvalidArgument",
    "PermissionDenied",
    "Busy",
    "NotFound",
    "ResourceExhausted",
    "UnsupportedVersion",
    "FrameTooLarge",
    "TimedOut",
    "ProtocolViolation",
    "Internal",
    "BrokerUnavailable",
    "ConnectionLost",
    "LeaseLost",
]


class Error(Exception):
    """Base of every exception this package raises.

    ``code`` is the wire ``ErrorCode`` name without its prefix (``"BUSY"``)
    when the broker refused the request, otherwise a word for the
    client-side condition (``"UNAVAILABLE"``, ``"LOST"``). ``message`` is the
    broker's explanation, for humans (do not parse it).
    """

    code: str = "UNSPECIFIED"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"


class InvalidArgument(Error):
    """``ERROR_CODE_INVALID_ARGUMENT``: a bad name, a TTL out of range, an unknown enum value."""

    code = "INVALID_ARGUMENT"


class PermissionDenied(Error):
    """``ERROR_CODE_PERMISSION_DENIED``: the broker's policy does not allow this uid to do this here."""

    code = "PERMISSION_DENIED"


class Busy(Error):
    """``ERROR_CODE_BUSY``: ``wait=False`` and the resource is held; the message names the holder."""

    code = "BUSY"


class NotFound(Error):
    """``ERROR_CODE_NOT_FOUND``: no such lease, watch or delivery, or it has already ended."""

    code = "NOT_FOUND"


class ResourceExhausted(Error):
    """``ERROR_CODE_RESOURCE_EXHAUSTED``: a quota (connections, waiters, watches, queue depth)."""

    code = "RESOURCE_EXHAUSTED"


class UnsupportedVersion(Error):
    """``ERROR_CODE_UNSUPPORTED_VERSION``: the broker does not speak this protocol version."""

    code = "UNSUPPORTED_VERSION"


class FrameTooLarge(Error):
    """``ERROR_CODE_FRAME_TOO_LARGE``: a frame over the limit (either way); the connection closes."""

    code = "FRAME_TOO_LARGE"


class TimedOut(Error, TimeoutError):
    """``ERROR_CODE_TIMED_OUT`` from the broker, or a client-side ``timeout=`` that ran out.

    Also a :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """

    code = "TIMED_OUT"


class ProtocolViolation(Error):
    """``ERROR_CODE_PROTOCOL_VIOLATION``, or a broker answer this client cannot understand."""

    code = "PROTOCOL_VIOLATION"


class Internal(Error):
    """``ERROR_CODE_INTERNAL``: a fault inside the broker; the request may be retried."""

    code = "INTERNAL"


class BrokerUnavailable(Error, ConnectionError):
    """Nothing answers: the socket is missing, refuses connections, or closed.

    Also a :class:`ConnectionError`. ``socket`` is where the broker was looked for.
    """

    code = "UNAVAILABLE"

    def __init__(self, message: str, socket: str = "") -> None:
        super().__init__(message)
        self.socket = socket


class ConnectionLost(BrokerUnavailable):
    """The connection to the broker closed while this request, lease, watch or consumer used it."""

    code = "CONNECTION_LOST"


class LeaseLost(Error):
    """A place in the queue ended without a grant (``max_wait`` ran out, or it was revoked).

    ``reason`` is the wire ``LostReason`` without its prefix (``"TIMED_OUT"``,
    ``"EXPIRED"``, ``"REVOKED"``), or ``"CONNECTION_LOST"``.
    """

    code = "LOST"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


_BY_CODE: Dict[int, Type[Error]] = {
    pb.ERROR_CODE_INVALID_ARGUMENT: InvalidArgument,
    pb.ERROR_CODE_PERMISSION_DENIED: PermissionDenied,
    pb.ERROR_CODE_BUSY: Busy,
    pb.ERROR_CODE_NOT_FOUND: NotFound,
    pb.ERROR_CODE_RESOURCE_EXHAUSTED: ResourceExhausted,
    pb.ERROR_CODE_UNSUPPORTED_VERSION: UnsupportedVersion,
    pb.ERROR_CODE_FRAME_TOO_LARGE: FrameTooLarge,
    pb.ERROR_CODE_TIMED_OUT: TimedOut,
    pb.ERROR_CODE_PROTOCOL_VIOLATION: ProtocolViolation,
    pb.ERROR_CODE_INTERNAL: Internal,
}


def from_wire(error: pb.Error) -> Error:
    """The exception for a wire ``Error``; an unknown code gives a plain :class:`Error`."""
    cls = _BY_CODE.get(error.code)
    if cls is not None:
        return cls(error.message)
    try:
        name = pb.ErrorCode.Name(error.code).replace("ERROR_CODE_", "")
    except ValueError:
        name = str(error.code)
    return Error(error.message, code=name)
