from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_EXCLUSIVE: _ClassVar[Mode]
    MODE_SHARED: _ClassVar[Mode]

class WaitPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WAIT_POLICY_UNSPECIFIED: _ClassVar[WaitPolicy]
    WAIT_POLICY_QUEUE: _ClassVar[WaitPolicy]
    WAIT_POLICY_NO_WAIT: _ClassVar[WaitPolicy]

class LostReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOST_REASON_UNSPECIFIED: _ClassVar[LostReason]
    LOST_REASON_EXPIRED: _ClassVar[LostReason]
    LOST_REASON_TIMED_OUT: _ClassVar[LostReason]
    LOST_REASON_REVOKED: _ClassVar[LostReason]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_GRANTED: _ClassVar[EventKind]
    EVENT_KIND_RELEASED: _ClassVar[EventKind]
    EVENT_KIND_EXPIRED: _ClassVar[EventKind]
    EVENT_KIND_DISCONNECTED: _ClassVar[EventKind]
    EVENT_KIND_QUEUED: _ClassVar[EventKind]
    EVENT_KIND_CANCELLED: _ClassVar[EventKind]
    EVENT_KIND_PROGRESS: _ClassVar[EventKind]
    EVENT_KIND_RESYNC: _ClassVar[EventKind]
    EVENT_KIND_HEARTBEAT: _ClassVar[EventKind]
    EVENT_KIND_YIELD_REQUESTED: _ClassVar[EventKind]
    EVENT_KIND_YIELD_DECLINED: _ClassVar[EventKind]
    EVENT_KIND_REVOKED: _ClassVar[EventKind]
    EVENT_KIND_DETACHED: _ClassVar[EventKind]
    EVENT_KIND_REATTACHED: _ClassVar[EventKind]
    EVENT_KIND_STALLED: _ClassVar[EventKind]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_ARGUMENT: _ClassVar[ErrorCode]
    ERROR_CODE_PERMISSION_DENIED: _ClassVar[ErrorCode]
    ERROR_CODE_BUSY: _ClassVar[ErrorCode]
    ERROR_CODE_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_RESOURCE_EXHAUSTED: _ClassVar[ErrorCode]
    ERROR_CODE_UNSUPPORTED_VERSION: _ClassVar[ErrorCode]
    ERROR_CODE_FRAME_TOO_LARGE: _ClassVar[ErrorCode]
    ERROR_CODE_TIMED_OUT: _ClassVar[ErrorCode]
    ERROR_CODE_PROTOCOL_VIOLATION: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL: _ClassVar[ErrorCode]
MODE_UNSPECIFIED: Mode
MODE_EXCLUSIVE: Mode
MODE_SHARED: Mode
WAIT_POLICY_UNSPECIFIED: WaitPolicy
WAIT_POLICY_QUEUE: WaitPolicy
WAIT_POLICY_NO_WAIT: WaitPolicy
LOST_REASON_UNSPECIFIED: LostReason
LOST_REASON_EXPIRED: LostReason
LOST_REASON_TIMED_OUT: LostReason
LOST_REASON_REVOKED: LostReason
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_GRANTED: EventKind
EVENT_KIND_RELEASED: EventKind
EVENT_KIND_EXPIRED: EventKind
EVENT_KIND_DISCONNECTED: EventKind
EVENT_KIND_QUEUED: EventKind
EVENT_KIND_CANCELLED: EventKind
EVENT_KIND_PROGRESS: EventKind
EVENT_KIND_RESYNC: EventKind
EVENT_KIND_HEARTBEAT: EventKind
EVENT_KIND_YIELD_REQUESTED: EventKind
EVENT_KIND_YIELD_DECLINED: EventKind
EVENT_KIND_REVOKED: EventKind
EVENT_KIND_DETACHED: EventKind
EVENT_KIND_REATTACHED: EventKind
EVENT_KIND_STALLED: EventKind
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_INVALID_ARGUMENT: ErrorCode
ERROR_CODE_PERMISSION_DENIED: ErrorCode
ERROR_CODE_BUSY: ErrorCode
ERROR_CODE_NOT_FOUND: ErrorCode
ERROR_CODE_RESOURCE_EXHAUSTED: ErrorCode
ERROR_CODE_UNSUPPORTED_VERSION: ErrorCode
ERROR_CODE_FRAME_TOO_LARGE: ErrorCode
ERROR_CODE_TIMED_OUT: ErrorCode
ERROR_CODE_PROTOCOL_VIOLATION: ErrorCode
ERROR_CODE_INTERNAL: ErrorCode

class ClientFrame(_message.Message):
    __slots__ = ("id", "hello", "ping", "get_status", "acquire", "keep_alive", "release", "cancel", "report_progress", "watch", "unwatch", "publish", "consume", "ack", "nack", "reattach", "request_yield", "decline_yield", "get_history", "cancel_consume", "peek_queue", "purge_queue", "requeue_dead")
    ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    GET_STATUS_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    REPORT_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    WATCH_FIELD_NUMBER: _ClassVar[int]
    UNWATCH_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    CONSUME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    REATTACH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_YIELD_FIELD_NUMBER: _ClassVar[int]
    DECLINE_YIELD_FIELD_NUMBER: _ClassVar[int]
    GET_HISTORY_FIELD_NUMBER: _ClassVar[int]
    CANCEL_CONSUME_FIELD_NUMBER: _ClassVar[int]
    PEEK_QUEUE_FIELD_NUMBER: _ClassVar[int]
    PURGE_QUEUE_FIELD_NUMBER: _ClassVar[int]
    REQUEUE_DEAD_FIELD_NUMBER: _ClassVar[int]
    id: int
    hello: Hello
    ping: Ping
    get_status: GetStatus
    acquire: Acquire
    keep_alive: KeepAlive
    release: Release
    cancel: Cancel
    report_progress: ReportProgress
    watch: Watch
    unwatch: Unwatch
    publish: Publish
    consume: Consume
    ack: Ack
    nack: Nack
    reattach: Reattach
    request_yield: RequestYield
    decline_yield: DeclineYield
    get_history: GetHistory
    cancel_consume: CancelConsume
    peek_queue: PeekQueue
    purge_queue: PurgeQueue
    requeue_dead: RequeueDead
    def __init__(self, id: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., get_status: _Optional[_Union[GetStatus, _Mapping]] = ..., acquire: _Optional[_Union[Acquire, _Mapping]] = ..., keep_alive: _Optional[_Union[KeepAlive, _Mapping]] = ..., release: _Optional[_Union[Release, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., report_progress: _Optional[_Union[ReportProgress, _Mapping]] = ..., watch: _Optional[_Union[Watch, _Mapping]] = ..., unwatch: _Optional[_Union[Unwatch, _Mapping]] = ..., publish: _Optional[_Union[Publish, _Mapping]] = ..., consume: _Optional[_Union[Consume, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., nack: _Optional[_Union[Nack, _Mapping]] = ..., reattach: _Optional[_Union[Reattach, _Mapping]] = ..., request_yield: _Optional[_Union[RequestYield, _Mapping]] = ..., decline_yield: _Optional[_Union[DeclineYield, _Mapping]] = ..., get_history: _Optional[_Union[GetHistory, _Mapping]] = ..., cancel_consume: _Optional[_Union[CancelConsume, _Mapping]] = ..., peek_queue: _Optional[_Union[PeekQueue, _Mapping]] = ..., purge_queue: _Optional[_Union[PurgeQueue, _Mapping]] = ..., requeue_dead: _Optional[_Union[RequeueDead, _Mapping]] = ...) -> None: ...

class ServerFrame(_message.Message):
    __slots__ = ("reply", "lease_update", "watch_event", "delivery")
    REPLY_FIELD_NUMBER: _ClassVar[int]
    LEASE_UPDATE_FIELD_NUMBER: _ClassVar[int]
    WATCH_EVENT_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    reply: Reply
    lease_update: LeaseUpdate
    watch_event: WatchEvent
    delivery: Delivery
    def __init__(self, reply: _Optional[_Union[Reply, _Mapping]] = ..., lease_update: _Optional[_Union[LeaseUpdate, _Mapping]] = ..., watch_event: _Optional[_Union[WatchEvent, _Mapping]] = ..., delivery: _Optional[_Union[Delivery, _Mapping]] = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("id", "error", "hello", "pong", "status", "acquire", "keep_alive", "done", "watch", "publish", "consume", "history", "queue_peek", "queue_count")
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    WATCH_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    CONSUME_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_PEEK_FIELD_NUMBER: _ClassVar[int]
    QUEUE_COUNT_FIELD_NUMBER: _ClassVar[int]
    id: int
    error: Error
    hello: HelloReply
    pong: Pong
    status: Status
    acquire: AcquireReply
    keep_alive: KeepAliveReply
    done: Done
    watch: WatchStarted
    publish: Published
    consume: ConsumeStarted
    history: History
    queue_peek: QueuePeek
    queue_count: QueueCount
    def __init__(self, id: _Optional[int] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., hello: _Optional[_Union[HelloReply, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., status: _Optional[_Union[Status, _Mapping]] = ..., acquire: _Optional[_Union[AcquireReply, _Mapping]] = ..., keep_alive: _Optional[_Union[KeepAliveReply, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., watch: _Optional[_Union[WatchStarted, _Mapping]] = ..., publish: _Optional[_Union[Published, _Mapping]] = ..., consume: _Optional[_Union[ConsumeStarted, _Mapping]] = ..., history: _Optional[_Union[History, _Mapping]] = ..., queue_peek: _Optional[_Union[QueuePeek, _Mapping]] = ..., queue_count: _Optional[_Union[QueueCount, _Mapping]] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("holders_asked",)
    HOLDERS_ASKED_FIELD_NUMBER: _ClassVar[int]
    holders_asked: int
    def __init__(self, holders_asked: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "client_name")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    client_name: str
    def __init__(self, protocol_version: _Optional[int] = ..., client_name: _Optional[str] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("broker_version", "protocol_version", "session_id", "max_frame_bytes", "peer", "min_protocol_version", "max_protocol_version")
    BROKER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    MIN_PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    broker_version: str
    protocol_version: int
    session_id: int
    max_frame_bytes: int
    peer: Peer
    min_protocol_version: int
    max_protocol_version: int
    def __init__(self, broker_version: _Optional[str] = ..., protocol_version: _Optional[int] = ..., session_id: _Optional[int] = ..., max_frame_bytes: _Optional[int] = ..., peer: _Optional[_Union[Peer, _Mapping]] = ..., min_protocol_version: _Optional[int] = ..., max_protocol_version: _Optional[int] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("client_name", "uid", "pid", "session_id", "user", "login_session")
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    LOGIN_SESSION_FIELD_NUMBER: _ClassVar[int]
    client_name: str
    uid: int
    pid: int
    session_id: int
    user: str
    login_session: str
    def __init__(self, client_name: _Optional[str] = ..., uid: _Optional[int] = ..., pid: _Optional[int] = ..., session_id: _Optional[int] = ..., user: _Optional[str] = ..., login_session: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class GetStatus(_message.Message):
    __slots__ = ("resources",)
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, resources: _Optional[_Iterable[str]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("revision", "resources", "queues", "truncated", "queues_truncated")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    QUEUES_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    resources: _containers.RepeatedCompositeFieldContainer[ResourceState]
    queues: _containers.RepeatedCompositeFieldContainer[QueueInfo]
    truncated: bool
    queues_truncated: bool
    def __init__(self, revision: _Optional[int] = ..., resources: _Optional[_Iterable[_Union[ResourceState, _Mapping]]] = ..., queues: _Optional[_Iterable[_Union[QueueInfo, _Mapping]]] = ..., truncated: bool = ..., queues_truncated: bool = ...) -> None: ...

class Acquire(_message.Message):
    __slots__ = ("resource", "mode", "ttl_ms", "wait", "max_wait_ms", "purpose", "permits", "capacity", "detach_grace_ms", "stall_after_ms")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PERMITS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    DETACH_GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    STALL_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    resource: str
    mode: Mode
    ttl_ms: int
    wait: WaitPolicy
    max_wait_ms: int
    purpose: str
    permits: int
    capacity: int
    detach_grace_ms: int
    stall_after_ms: int
    def __init__(self, resource: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., ttl_ms: _Optional[int] = ..., wait: _Optional[_Union[WaitPolicy, str]] = ..., max_wait_ms: _Optional[int] = ..., purpose: _Optional[str] = ..., permits: _Optional[int] = ..., capacity: _Optional[int] = ..., detach_grace_ms: _Optional[int] = ..., stall_after_ms: _Optional[int] = ...) -> None: ...

class AcquireReply(_message.Message):
    __slots__ = ("granted", "queued")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    granted: Granted
    queued: Queued
    def __init__(self, granted: _Optional[_Union[Granted, _Mapping]] = ..., queued: _Optional[_Union[Queued, _Mapping]] = ...) -> None: ...

class Granted(_message.Message):
    __slots__ = ("lease_id", "fencing_token", "ttl_ms", "resume_token")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    fencing_token: int
    ttl_ms: int
    resume_token: bytes
    def __init__(self, lease_id: _Optional[int] = ..., fencing_token: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., resume_token: _Optional[bytes] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("lease_id", "position", "ahead", "estimated_wait_ms", "resume_token")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    AHEAD_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    position: int
    ahead: _containers.RepeatedCompositeFieldContainer[Lease]
    estimated_wait_ms: int
    resume_token: bytes
    def __init__(self, lease_id: _Optional[int] = ..., position: _Optional[int] = ..., ahead: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., estimated_wait_ms: _Optional[int] = ..., resume_token: _Optional[bytes] = ...) -> None: ...

class Reattach(_message.Message):
    __slots__ = ("lease_id", "resume_token")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    resume_token: bytes
    def __init__(self, lease_id: _Optional[int] = ..., resume_token: _Optional[bytes] = ...) -> None: ...

class RequestYield(_message.Message):
    __slots__ = ("resource", "within_ms", "reason", "revoke")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    WITHIN_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REVOKE_FIELD_NUMBER: _ClassVar[int]
    resource: str
    within_ms: int
    reason: str
    revoke: bool
    def __init__(self, resource: _Optional[str] = ..., within_ms: _Optional[int] = ..., reason: _Optional[str] = ..., revoke: bool = ...) -> None: ...

class YieldRequested(_message.Message):
    __slots__ = ("requester", "reason", "within_ms", "revoke")
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WITHIN_MS_FIELD_NUMBER: _ClassVar[int]
    REVOKE_FIELD_NUMBER: _ClassVar[int]
    requester: Peer
    reason: str
    within_ms: int
    revoke: bool
    def __init__(self, requester: _Optional[_Union[Peer, _Mapping]] = ..., reason: _Optional[str] = ..., within_ms: _Optional[int] = ..., revoke: bool = ...) -> None: ...

class DeclineYield(_message.Message):
    __slots__ = ("lease_id", "reason")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    reason: str
    def __init__(self, lease_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class LeaseUpdate(_message.Message):
    __slots__ = ("lease_id", "granted", "queued", "lost", "yield_requested")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    YIELD_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    granted: Granted
    queued: Queued
    lost: Lost
    yield_requested: YieldRequested
    def __init__(self, lease_id: _Optional[int] = ..., granted: _Optional[_Union[Granted, _Mapping]] = ..., queued: _Optional[_Union[Queued, _Mapping]] = ..., lost: _Optional[_Union[Lost, _Mapping]] = ..., yield_requested: _Optional[_Union[YieldRequested, _Mapping]] = ...) -> None: ...

class Lost(_message.Message):
    __slots__ = ("reason", "detail")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    reason: LostReason
    detail: str
    def __init__(self, reason: _Optional[_Union[LostReason, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class KeepAlive(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    def __init__(self, lease_id: _Optional[int] = ...) -> None: ...

class KeepAliveReply(_message.Message):
    __slots__ = ("ttl_ms",)
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    ttl_ms: int
    def __init__(self, ttl_ms: _Optional[int] = ...) -> None: ...

class Release(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    def __init__(self, lease_id: _Optional[int] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    def __init__(self, lease_id: _Optional[int] = ...) -> None: ...

class ReportProgress(_message.Message):
    __slots__ = ("lease_id", "done", "total", "message")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    done: int
    total: int
    message: str
    def __init__(self, lease_id: _Optional[int] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("done", "total", "message")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    message: str
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "resource", "mode", "purpose", "holder", "fencing_token", "progress", "granted_at_ms", "expires_in_ms", "position", "queued_at_ms", "permits", "detached", "stalled", "estimated_wait_ms")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_MS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    QUEUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PERMITS_FIELD_NUMBER: _ClassVar[int]
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    STALLED_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    resource: str
    mode: Mode
    purpose: str
    holder: Peer
    fencing_token: int
    progress: Progress
    granted_at_ms: int
    expires_in_ms: int
    position: int
    queued_at_ms: int
    permits: int
    detached: bool
    stalled: bool
    estimated_wait_ms: int
    def __init__(self, lease_id: _Optional[int] = ..., resource: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., purpose: _Optional[str] = ..., holder: _Optional[_Union[Peer, _Mapping]] = ..., fencing_token: _Optional[int] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., granted_at_ms: _Optional[int] = ..., expires_in_ms: _Optional[int] = ..., position: _Optional[int] = ..., queued_at_ms: _Optional[int] = ..., permits: _Optional[int] = ..., detached: bool = ..., stalled: bool = ..., estimated_wait_ms: _Optional[int] = ...) -> None: ...

class ResourceState(_message.Message):
    __slots__ = ("resource", "revision", "holders", "waiters", "capacity", "permits_held")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    WAITERS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    PERMITS_HELD_FIELD_NUMBER: _ClassVar[int]
    resource: str
    revision: int
    holders: _containers.RepeatedCompositeFieldContainer[Lease]
    waiters: _containers.RepeatedCompositeFieldContainer[Lease]
    capacity: int
    permits_held: int
    def __init__(self, resource: _Optional[str] = ..., revision: _Optional[int] = ..., holders: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., waiters: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., capacity: _Optional[int] = ..., permits_held: _Optional[int] = ...) -> None: ...

class GetHistory(_message.Message):
    __slots__ = ("resource", "since_ms", "limit")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    resource: str
    since_ms: int
    limit: int
    def __init__(self, resource: _Optional[str] = ..., since_ms: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class History(_message.Message):
    __slots__ = ("entries", "truncated")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    truncated: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ..., truncated: bool = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("lease_id", "resource", "mode", "permits", "purpose", "holder", "queued_at_ms", "granted_at_ms", "ended_at_ms", "ended_by", "detail", "fencing_token", "timed_out")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PERMITS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    QUEUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_BY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    resource: str
    mode: Mode
    permits: int
    purpose: str
    holder: Peer
    queued_at_ms: int
    granted_at_ms: int
    ended_at_ms: int
    ended_by: EventKind
    detail: str
    fencing_token: int
    timed_out: bool
    def __init__(self, lease_id: _Optional[int] = ..., resource: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., permits: _Optional[int] = ..., purpose: _Optional[str] = ..., holder: _Optional[_Union[Peer, _Mapping]] = ..., queued_at_ms: _Optional[int] = ..., granted_at_ms: _Optional[int] = ..., ended_at_ms: _Optional[int] = ..., ended_by: _Optional[_Union[EventKind, str]] = ..., detail: _Optional[str] = ..., fencing_token: _Optional[int] = ..., timed_out: bool = ...) -> None: ...

class Watch(_message.Message):
    __slots__ = ("resources", "start_revision")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedScalarFieldContainer[str]
    start_revision: int
    def __init__(self, resources: _Optional[_Iterable[str]] = ..., start_revision: _Optional[int] = ...) -> None: ...

class WatchStarted(_message.Message):
    __slots__ = ("watch_id", "revision", "snapshot", "resync")
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    watch_id: int
    revision: int
    snapshot: _containers.RepeatedCompositeFieldContainer[ResourceState]
    resync: bool
    def __init__(self, watch_id: _Optional[int] = ..., revision: _Optional[int] = ..., snapshot: _Optional[_Iterable[_Union[ResourceState, _Mapping]]] = ..., resync: bool = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("watch_id", "revision", "kind", "state", "coalesced", "detail")
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COALESCED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    watch_id: int
    revision: int
    kind: EventKind
    state: ResourceState
    coalesced: bool
    detail: str
    def __init__(self, watch_id: _Optional[int] = ..., revision: _Optional[int] = ..., kind: _Optional[_Union[EventKind, str]] = ..., state: _Optional[_Union[ResourceState, _Mapping]] = ..., coalesced: bool = ..., detail: _Optional[str] = ...) -> None: ...

class Unwatch(_message.Message):
    __slots__ = ("watch_id",)
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    watch_id: int
    def __init__(self, watch_id: _Optional[int] = ...) -> None: ...

class Publish(_message.Message):
    __slots__ = ("queue", "payload", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    payload: bytes
    headers: _containers.ScalarMap[str, str]
    def __init__(self, queue: _Optional[str] = ..., payload: _Optional[bytes] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Published(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class Consume(_message.Message):
    __slots__ = ("queue", "prefetch")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    queue: str
    prefetch: int
    def __init__(self, queue: _Optional[str] = ..., prefetch: _Optional[int] = ...) -> None: ...

class ConsumeStarted(_message.Message):
    __slots__ = ("consumer_id",)
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    consumer_id: int
    def __init__(self, consumer_id: _Optional[int] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("consumer_id", "delivery_id", "seq", "queue", "payload", "headers", "attempt")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    consumer_id: int
    delivery_id: int
    seq: int
    queue: str
    payload: bytes
    headers: _containers.ScalarMap[str, str]
    attempt: int
    def __init__(self, consumer_id: _Optional[int] = ..., delivery_id: _Optional[int] = ..., seq: _Optional[int] = ..., queue: _Optional[str] = ..., payload: _Optional[bytes] = ..., headers: _Optional[_Mapping[str, str]] = ..., attempt: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("delivery_id",)
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    delivery_id: int
    def __init__(self, delivery_id: _Optional[int] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("delivery_id", "requeue")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEUE_FIELD_NUMBER: _ClassVar[int]
    delivery_id: int
    requeue: bool
    def __init__(self, delivery_id: _Optional[int] = ..., requeue: bool = ...) -> None: ...

class CancelConsume(_message.Message):
    __slots__ = ("consumer_id",)
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    consumer_id: int
    def __init__(self, consumer_id: _Optional[int] = ...) -> None: ...

class PeekQueue(_message.Message):
    __slots__ = ("queue", "limit")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    queue: str
    limit: int
    def __init__(self, queue: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class QueuePeek(_message.Message):
    __slots__ = ("messages", "truncated")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Delivery]
    truncated: bool
    def __init__(self, messages: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., truncated: bool = ...) -> None: ...

class PurgeQueue(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    def __init__(self, queue: _Optional[str] = ...) -> None: ...

class RequeueDead(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    def __init__(self, queue: _Optional[str] = ...) -> None: ...

class QueueCount(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class QueueInfo(_message.Message):
    __slots__ = ("queue", "ready", "unacked", "consumers")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    UNACKED_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    ready: int
    unacked: int
    consumers: int
    def __init__(self, queue: _Optional[str] = ..., ready: _Optional[int] = ..., unacked: _Optional[int] = ..., consumers: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...
