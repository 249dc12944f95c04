"""Sans-IO wire codec: length-prefixed frames carrying JSON messages or binary chunks.

Frame layout::

    u32 big-endian L | u8 kind | body (L - 1 bytes)

* kind 1 (MESSAGE): body is UTF-8 JSON of an object with a string field ``"t"``.
* kind 2 (CHUNK):   body is ``u32 big-endian stream_id`` followed by raw data (maybe empty).

``L`` (kind byte + body) is capped by ``max_frame``. No sockets, no asyncio here.

A frame that is partly received has a deadline counted from its first byte (``frame_timeout``, the clock
passed in to :meth:`FrameDecoder.feed` and :meth:`FrameDecoder.check`): a per-read timeout would restart
with every byte, so a peer trickling one byte every few seconds could keep a frame (and its buffer) open
forever.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_FRAME",
    "KIND_MESSAGE",
    "KIND_CHUNK",
    "FrameError",
    "FrameTooLarge",
    "FrameTimeout",
    "MalformedFrame",
    "Message",
    "Chunk",
    "encode_message",
    "chunk_header",
    "encode_chunk",
    "FrameDecoder",
]

DEFAULT_MAX_FRAME = 4 * 1024 * 1024
KIND_MESSAGE = 1
KIND_CHUNK = 2
MAX_STREAM_ID = 0xFFFFFFFF

_LEN = struct.Struct(">I")
_LEN_KIND = struct.Struct(">IB")
_CHUNK_HDR = struct.Struct(">IBI")
_HEADER = 5  # u32 length + u8 kind


class FrameError(ValueError):
    """Base class for wire framing errors."""


class FrameTooLarge(FrameError):
    """A frame's length exceeds the configured cap."""


class MalformedFrame(FrameError):
    """A frame is structurally invalid (bad kind, bad JSON, short chunk, ...)."""


class FrameTimeout(FrameError):
    """A partly received frame was not completed within ``frame_timeout`` of its first byte."""


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded MESSAGE frame; ``payload["t"]`` is guaranteed to be a str."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A decoded CHUNK frame."""

    stream_id: int
    data: bytes


def _check_stream_id(stream_id: int) -> None:
    if isinstance(stream_id, bool) or not isinstance(stream_id, int):
        raise TypeError(f"stream_id must be an int, got {type(stream_id).__name__}")
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream_id {stream_id} out of range 0..{MAX_STREAM_ID}")


def encode_message(msg: dict[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Encode a JSON message as one frame (compact JSON, UTF-8)."""
    if not isinstance(msg, dict):
        raise MalformedFrame(f"message must be a dict, got {type(msg).__name__}")
    if not isinstance(msg.get("t"), str):
        raise MalformedFrame('message must have a string field "t"')
    try:
        text = json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise MalformedFrame(f"message {msg['t']!r} is not JSON-serializable: {exc}") from exc
    body = text.encode("utf-8")
    length = len(body) + 1
    if length > max_frame:
        raise FrameTooLarge(f"message {msg['t']!r} frame of {length} bytes exceeds cap {max_frame}")
    return _LEN_KIND.pack(length, KIND_MESSAGE) + body


def chunk_header(stream_id: int, n: int, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Return the 9 bytes (length, kind, stream_id) that precede ``n`` data bytes of a chunk."""
    _check_stream_id(stream_id)
    if n < 0:
        raise ValueError(f"chunk size must be >= 0, got {n}")
    length = 1 + 4 + n
    if length > max_frame:
        raise FrameTooLarge(f"chunk frame of {length} bytes exceeds cap {max_frame}")
    return _CHUNK_HDR.pack(length, KIND_CHUNK, stream_id)


def encode_chunk(stream_id: int, data: bytes | bytearray | memoryview, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Encode one chunk frame (header + data) as a single bytes object."""
    mv = memoryview(data).cast("B")
    return chunk_header(stream_id, mv.nbytes, max_frame=max_frame) + mv.tobytes()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _decode_message(body: bytes | bytearray) -> Message:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedFrame(f"message body is not valid UTF-8: {exc}") from exc
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedFrame(f"message body is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedFrame(f"message JSON must be an object, got {type(obj).__name__}")
    if not isinstance(obj.get("t"), str):
        raise MalformedFrame('message JSON lacks a string field "t"')
    return Message(obj)


class FrameDecoder:
    """Incremental frame decoder: ``feed(bytes)`` returns every complete frame.

    Any error poisons the decoder; later ``feed`` calls raise ``FrameError``. With ``frame_timeout``, a
    frame must be complete within that many seconds of its first byte (see :meth:`check`).
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, frame_timeout: float | None = None) -> None:
        if max_frame < _HEADER:
            raise ValueError(f"max_frame must be >= {_HEADER}, got {max_frame}")
        if frame_timeout is not None and not frame_timeout > 0:
            raise ValueError(f"frame_timeout must be > 0 or None, got {frame_timeout}")
        self.max_frame = max_frame
        self.frame_timeout = frame_timeout
        self._buf = bytearray()
        self._closed = False
        self._since: float | None = None  # when the first byte of the pending frame arrived

    @property
    def closed(self) -> bool:
        """True once an error has poisoned the decoder."""
        return self._closed

    @property
    def pending_bytes(self) -> int:
        """Bytes buffered for a frame that is not complete yet."""
        return len(self._buf)

    @property
    def deadline(self) -> float | None:
        """When the pending frame must be complete (its first byte's time + ``frame_timeout``), or None."""
        if self.frame_timeout is None or self._since is None:
            return None
        return self._since + self.frame_timeout

    def feed(self, data: bytes | bytearray | memoryview, now: float = 0.0) -> list[Message | Chunk]:
        """Buffer ``data`` (received at ``now``) and return all frames completed by it (possibly none)."""
        if self._closed:
            raise FrameError("decoder is closed after an error")
        try:
            out = self._feed(data)
        except BaseException:
            self._poison()
            raise
        if not self._buf:
            self._since = None
        elif out or self._since is None:
            self._since = now  # the pending frame began in ``data``: a frame ended before it, or none was pending
        return out

    def check(self, now: float) -> None:
        """Raise `FrameTimeout` (and poison the decoder, freeing its buffer) when the pending frame is past its
        deadline at ``now``."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return
        pending = len(self._buf)
        self._poison()
        raise FrameTimeout(
            f"a partial frame ({pending} bytes so far) was not completed within {self.frame_timeout:g} s "
            "of its first byte"
        )

    def _poison(self) -> None:
        self._closed = True
        self._buf = bytearray()
        self._since = None

    def _check_header(self, length: int, kind: int | None) -> None:
        if length == 0:
            raise MalformedFrame("frame length is 0 (no kind byte)")
        if length > self.max_frame:
            raise FrameTooLarge(f"frame of {length} bytes exceeds cap {self.max_frame}")
        if kind is None:
            return
        if kind not in (KIND_MESSAGE, KIND_CHUNK):
            raise MalformedFrame(f"unknown frame kind {kind}")
        if kind == KIND_CHUNK and length < 5:
            raise MalformedFrame(f"chunk frame body of {length - 1} bytes lacks the 4-byte stream id")

    def _feed(self, data: bytes | bytearray | memoryview) -> list[Message | Chunk]:
        buf = self._buf
        buf += data
        out: list[Message | Chunk] = []
        pos = 0
        end = len(buf)
        while True:
            avail = end - pos
            if avail < 4:
                break
            if avail < _HEADER:
                self._check_header(_LEN.unpack_from(buf, pos)[0], None)
                break
            length, kind = _LEN_KIND.unpack_from(buf, pos)
            self._check_header(length, kind)
            stop = pos + 4 + length
            if stop > end:
                break
            body_start = pos + _HEADER
            if kind == KIND_MESSAGE:
                out.append(_decode_message(buf[body_start:stop]))
            else:
                (stream_id,) = _LEN.unpack_from(buf, body_start)
                with memoryview(buf) as view:  # single copy of the payload
                    out.append(Chunk(stream_id, view[body_start + 4 : stop].tobytes()))
            pos = stop
        if pos:
            del buf[:pos]  # one compaction per feed, not per frame
        return out
