"""turnstile: a client for the turnstile broker (leases with a fair wait
queue, state watches, durable message queues over a local socket).

Blocking:

.. code-block:: python

    import turnstile

    with turnstile.connect(name="agent") as client:
        with client.acquire("pcm", shared=True, ttl=15.0, purpose="initialise",
                            on_queued=lambda q: print("position", q.position)) as lease:
            lease.report_progress(1, 5, "copying")

asyncio: the same names in :mod:`turnstile.aio` (``async with turnstile.aio.connect(...) as client``).

Errors are exceptions named after the wire codes (:class:`Busy`,
:class:`PermissionDenied`, :class:`NotFound`, ...), all subclasses of
:class:`Error`; :class:`BrokerUnavailable` when nothing answers.
"""

from ._endpoint import SOCKET_ENV, default_socket, socket_from_env
from ._errors import (
    BrokerUnavailable,
    Busy,
    ConnectionLost,
    Error,
    FrameTooLarge,
    Internal,
    InvalidArgument,
    LeaseLost,
    NotFound,
    PermissionDenied,
    ProtocolViolation,
    ResourceExhausted,
    TimedOut,
    UnsupportedVersion,
)
from ._sync import Client, Consumer, Delivery, Lease, Watch, connect
from ._types import (
    HelloInfo,
    History,
    HistoryEntry,
    LeaseInfo,
    PeekedMessage,
    Peer,
    Progress,
    QueueInfo,
    Queued,
    QueuePeek,
    ResourceState,
    ResumeToken,
    Status,
    WatchEvent,
    YieldRequested,
)
from ._wire import PROTOCOL_VERSION

__version__ = "0.1.0"

__all__ = [
    "connect",
    "Client",
    "Lease",
    "Watch",
    "Consumer",
    "Delivery",
    "Status",
    "ResourceState",
    "LeaseInfo",
    "QueueInfo",
    "Queued",
    "Peer",
    "Progress",
    "HelloInfo",
    "WatchEvent",
    "YieldRequested",
    "ResumeToken",
    "History",
    "HistoryEntry",
    "QueuePeek",
    "PeekedMessage",
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
    "SOCKET_ENV",
    "default_socket",
    "socket_from_env",
    "PROTOCOL_VERSION",
]
