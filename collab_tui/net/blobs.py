"""Sans-IO blob streaming: split a blob into chunks, reassemble it and check its SHA-256.

A sender announces a blob with the message from :func:`blob_header`, then sends the data
as CHUNK frames on the same stream id (see :mod:`collab_tui.net.codec`). The receiver
feeds chunk data into a :class:`BlobReceiver` and calls :meth:`BlobReceiver.finish`.

:class:`BlobStreams` holds the streams one connection has open, with bounds: a header costs the sender one
frame and commits the receiver to buffering up to ``size`` bytes, so without caps a peer could open streams
without end, or start one and never finish it, and hold the memory for as long as the connection lives.
The open streams are capped in number and in declared bytes, and each must be complete by a deadline set
from its header (:func:`blob_deadline`; the clock is passed in).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .schema import clip

__all__ = [
    "BlobError",
    "BlobLimit",
    "BlobTimeout",
    "DEFAULT_CHUNK",
    "MAX_OPEN_BLOBS",
    "BLOB_MIN_SECONDS",
    "BLOB_MIN_RATE",
    "iter_chunks",
    "blob_header",
    "blob_deadline",
    "BlobReceiver",
    "BlobStreams",
]

DEFAULT_CHUNK = 256 * 1024
MAX_OPEN_BLOBS = 8  # unfinished streams per connection (a sender keeps to the same number, see transport.py)
BLOB_MIN_SECONDS = 30.0  # every blob may take this long, however small
BLOB_MIN_RATE = 1024 * 1024  # bytes/s: a bigger blob gets size / rate seconds (a LAN does far better)
_MAX_STREAM_ID = 0xFFFFFFFF
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class BlobError(ValueError):
    """A blob header is invalid or the received data does not match it."""


class BlobLimit(BlobError):
    """A peer went past a per-connection cap on open blob streams or their bytes."""


class BlobTimeout(BlobError):
    """An open blob was not complete by its deadline."""


def _as_bytes_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def iter_chunks(data: bytes | bytearray | memoryview, chunk_size: int = DEFAULT_CHUNK) -> Iterator[memoryview]:
    """Yield zero-copy slices of ``data`` of at most ``chunk_size`` bytes (none if empty)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    view = _as_bytes_view(data)
    for start in range(0, view.nbytes, chunk_size):
        yield view[start : start + chunk_size]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def blob_deadline(
    size: int, now: float, min_seconds: float = BLOB_MIN_SECONDS, min_rate: float = BLOB_MIN_RATE
) -> float:
    """When a blob of ``size`` bytes announced at ``now`` must be complete: ``min_seconds``, or the time it
    takes at ``min_rate`` bytes/s when that is longer (a big model is not cut off for being big)."""
    return now + max(min_seconds, size / min_rate)


def blob_header(stream_id: int, data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Return the ``{"t": "blob", "stream", "size", "sha256"}`` message announcing ``data``."""
    if not _is_int(stream_id) or not 0 <= stream_id <= _MAX_STREAM_ID:
        raise BlobError(f"stream id must be an int in 0..{_MAX_STREAM_ID}, got {stream_id!r}")
    view = _as_bytes_view(data)
    return {
        "t": "blob",
        "stream": stream_id,
        "size": view.nbytes,
        "sha256": hashlib.sha256(view).hexdigest(),
    }


class BlobReceiver:
    """Reassemble one announced blob, enforcing its size and SHA-256."""

    def __init__(self, stream_id: int, size: int, sha256: str, max_size: int) -> None:
        if not _is_int(stream_id) or not 0 <= stream_id <= _MAX_STREAM_ID:
            raise BlobError(f"blob stream id must be an int in 0..{_MAX_STREAM_ID}, got {clip(stream_id)}")
        if not _is_int(size) or size < 0:
            raise BlobError(f"blob size must be a non-negative int, got {clip(size)}")
        if size > max_size:
            raise BlobError(f"blob of {size} bytes exceeds the limit of {max_size} bytes")
        if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
            raise BlobError(f"blob sha256 must be 64 lowercase hex chars, got {clip(sha256, 80)}")
        self.stream_id = stream_id
        self.size = size
        self.sha256 = sha256
        self.max_size = max_size
        self._chunks: list[bytes] = []
        self._received = 0
        self._hash = hashlib.sha256()
        self._finished = False

    @classmethod
    def from_header(cls, msg: dict[str, Any], max_size: int) -> BlobReceiver:
        """Build a receiver from a ``blob`` message as produced by :func:`blob_header`."""
        if not isinstance(msg, dict):
            raise BlobError(f"blob header must be a dict, got {type(msg).__name__}")
        missing = [k for k in ("stream", "size", "sha256") if k not in msg]
        if missing:
            raise BlobError(f"blob header lacks field(s) {', '.join(missing)}")
        return cls(msg["stream"], msg["size"], msg["sha256"], max_size)

    @property
    def received(self) -> int:
        """Bytes received so far."""
        return self._received

    @property
    def done(self) -> bool:
        """True once exactly ``size`` bytes have been received."""
        return self._received == self.size

    def add(self, data: bytes | bytearray | memoryview) -> None:
        """Append a chunk of data; raises BlobError if it would overflow the announced size."""
        if self._finished:
            raise BlobError(f"blob stream {self.stream_id} already finished")
        view = _as_bytes_view(data)
        n = view.nbytes
        if self._received + n > self.size:
            raise BlobError(
                f"blob stream {self.stream_id}: {self._received + n} bytes exceed announced size {self.size}"
            )
        if not n:
            return
        chunk = data if isinstance(data, bytes) else view.tobytes()
        self._hash.update(chunk)
        self._chunks.append(chunk)
        self._received += n

    def finish(self) -> bytes:
        """Return the blob after checking its size and SHA-256 (call once)."""
        if self._finished:
            raise BlobError(f"blob stream {self.stream_id} already finished")
        self._finished = True
        if self._received != self.size:
            raise BlobError(
                f"blob stream {self.stream_id} incomplete: expected {self.size} bytes, got {self._received}"
            )
        actual = self._hash.hexdigest()
        if actual != self.sha256:
            raise BlobError(f"blob stream {self.stream_id} sha256 mismatch: expected {self.sha256}, got {actual}")
        chunks, self._chunks = self._chunks, []
        return b"".join(chunks)


@dataclass(slots=True)
class _Open:
    header: dict[str, Any]
    rx: BlobReceiver
    opened: float
    deadline: float


class BlobStreams:
    """The unfinished blob streams of one connection, bounded in number (``max_open``), in declared bytes
    (``max_bytes``, the sum of the open streams' sizes) and in time (each stream's `blob_deadline`).

    A header beyond a cap raises `BlobLimit`, a stream past its deadline `BlobTimeout` (from :meth:`check`);
    both drop every open stream, so its memory is freed at once: the caller closes the connection, as there
    is no way to cancel one stream and tell its later chunks from a protocol error.
    """

    def __init__(
        self,
        max_size: int,
        *,
        max_open: int = MAX_OPEN_BLOBS,
        max_bytes: int | None = None,
        min_seconds: float = BLOB_MIN_SECONDS,
        min_rate: float = BLOB_MIN_RATE,
    ) -> None:
        if max_open < 1 or not min_seconds > 0 or not min_rate > 0:
            raise ValueError("need max_open >= 1, min_seconds > 0 and min_rate > 0")
        self.max_size = max_size
        self.max_open = max_open
        self.max_bytes = max_size if max_bytes is None else max_bytes
        self.min_seconds = min_seconds
        self.min_rate = min_rate
        self._open: dict[int, _Open] = {}
        self._declared = 0

    def __len__(self) -> int:
        return len(self._open)

    @property
    def declared(self) -> int:
        """Bytes the open streams announced (what they may still make this connection hold)."""
        return self._declared

    @property
    def received(self) -> int:
        """Bytes buffered by the open streams."""
        return sum(s.rx.received for s in self._open.values())

    @property
    def deadline(self) -> float | None:
        """The nearest deadline of an open stream, or None."""
        return min((s.deadline for s in self._open.values()), default=None)

    def open(self, header: dict[str, Any], now: float) -> tuple[dict[str, Any], bytes] | None:
        """Start the stream announced by ``header`` at ``now``; an empty blob is complete at once and returned
        as ``(header, data)``."""
        sid = header.get("stream") if isinstance(header, dict) else None
        if _is_int(sid) and sid in self._open:
            raise BlobError(f"blob stream {sid} is already open")
        rx = BlobReceiver.from_header(header, self.max_size)
        if rx.done:
            return header, rx.finish()
        if len(self._open) >= self.max_open:
            self.clear()
            raise BlobLimit(f"more than {self.max_open} blob streams open at once")
        if self._declared + rx.size > self.max_bytes:
            total = self._declared + rx.size
            self.clear()
            raise BlobLimit(f"{total} bytes of open blob streams exceed the cap of {self.max_bytes}")
        deadline = blob_deadline(rx.size, now, self.min_seconds, self.min_rate)
        self._open[rx.stream_id] = _Open(header, rx, now, deadline)
        self._declared += rx.size
        return None

    def add(self, stream_id: int, data: bytes | bytearray | memoryview) -> tuple[dict[str, Any], bytes] | None:
        """Chunk data for an open stream; returns ``(header, data)`` when it completes the blob."""
        entry = self._open.get(stream_id)
        if entry is None:
            raise BlobError(f"chunk for unknown blob stream {stream_id}")
        entry.rx.add(data)
        if not entry.rx.done:
            return None
        del self._open[stream_id]
        self._declared -= entry.rx.size
        return entry.header, entry.rx.finish()

    def check(self, now: float) -> None:
        """Raise `BlobTimeout` (dropping every open stream) when one is past its deadline at ``now``."""
        late = next((s for s in self._open.values() if now >= s.deadline), None)
        if late is None:
            return
        self.clear()
        raise BlobTimeout(
            f"blob stream {late.rx.stream_id} timed out: {late.rx.received} of {late.rx.size} bytes "
            f"in {now - late.opened:.0f} s (allowed {late.deadline - late.opened:.0f} s)"
        )

    def clear(self) -> None:
        """Drop every open stream and its buffered data."""
        self._open.clear()
        self._declared = 0
