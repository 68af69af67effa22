"""The frame codec: a protobuf varint length prefix, then one message.

Encodes ``ClientFrame``s and decodes ``ServerFrame``s from a byte buffer,
refusing a length over the limit before reading its body. No I/O here.
"""

from __future__ import annotations

from typing import List, Optional

from ._errors import FrameTooLarge, ProtocolViolation
from .v1 import turnstile_pb2 as pb

#: The protocol version this client speaks.
PROTOCOL_VERSION = 1
#: The frame limit every broker accepts; a broker may announce a larger one.
DEFAULT_MAX_FRAME_BYTES = 1 << 20


def varint(n: int) -> bytes:
    """``n`` (unsigned) as a protobuf varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode(frame: pb.ClientFrame) -> bytes:
    """One frame on the wire: length prefix and message bytes."""
    body = frame.SerializeToString()
    return varint(len(body)) + body


class FrameDecoder:
    """Accumulates bytes from the broker and yields whole ``ServerFrame``s."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[pb.ServerFrame]:
        """Adds ``data`` and returns every frame now complete, in order."""
        self._buf += data
        frames: List[pb.ServerFrame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> Optional[pb.ServerFrame]:
        buf = self._buf
        size = 0
        shift = 0
        pos = 0
        while True:
            if pos >= len(buf):
                return None
            if pos >= 10:
                raise ProtocolViolation("a length prefix longer than 10 bytes from the broker")
            b = buf[pos]
            size |= (b & 0x7F) << shift
            pos += 1
            if not b & 0x80:
                break
            shift += 7
        if size > self.max_frame_bytes:
            raise FrameTooLarge(
                f"the broker sent a frame of {size} bytes, over the limit of {self.max_frame_bytes}"
            )
        end = pos + size
        if len(buf) < end:
            return None
        frame = pb.ServerFrame()
        try:
            frame.ParseFromString(bytes(buf[pos:end]))
        except Exception as e:  # protobuf's DecodeError has no stable import path
            raise ProtocolViolation(f"a frame from the broker is not a ServerFrame: {e}") from e
        del buf[:end]
        return frame
