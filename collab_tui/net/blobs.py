"""Sans-IO blob streaming: split a blob into chunks, reassemble it and check its SHA-256.

A sender announces a blob with the message from :func:`blob_header`, then sends the data
as CHUNK frames on the same stream id (see :mod:`collab_tui.net.codec`). The receiver
feeds chunk data into a :class:`BlobReceiver` and calls :meth:`BlobReceiver.finish`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["BlobError", "DEFAULT_CHUNK", "iter_chunks", "blob_header", "BlobReceiver"]

DEFAULT_CHUNK = 256 * 1024
_MAX_STREAM_ID = 0xFFFFFFFF
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class BlobError(ValueError):
    """A blob header is invalid or the received data does not match it."""


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
            raise BlobError(f"blob stream id must be an int in 0..{_MAX_STREAM_ID}, got {stream_id!r}")
        if not _is_int(size) or size < 0:
            raise BlobError(f"blob size must be a non-negative int, got {size!r}")
        if size > max_size:
            raise BlobError(f"blob of {size} bytes exceeds the limit of {max_size} bytes")
        if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
            raise BlobError(f"blob sha256 must be 64 lowercase hex chars, got {sha256!r}")
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
