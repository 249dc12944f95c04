"""Unit tests for sans-IO blob streaming."""

from __future__ import annotations

import hashlib
import random

import pytest

from collab_tui.net.blobs import (
    BLOB_MIN_RATE,
    BLOB_MIN_SECONDS,
    DEFAULT_CHUNK,
    BlobError,
    BlobLimit,
    BlobReceiver,
    BlobStreams,
    BlobTimeout,
    blob_deadline,
    blob_header,
    iter_chunks,
)
from collab_tui.net.codec import Chunk, FrameDecoder, Message, chunk_header, encode_message

EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def receive(data: bytes, chunk_size: int = DEFAULT_CHUNK, max_size: int = 1 << 30) -> bytes:
    hdr = blob_header(4, data)
    rx = BlobReceiver(hdr["stream"], hdr["size"], hdr["sha256"], max_size)
    for piece in iter_chunks(data, chunk_size):
        assert not rx.done
        rx.add(piece)
    assert rx.done
    return rx.finish()


def test_iter_chunks_sizes_and_zero_copy() -> None:
    data = bytes(range(10))
    pieces = list(iter_chunks(data, 4))
    assert [bytes(p) for p in pieces] == [b"\x00\x01\x02\x03", b"\x04\x05\x06\x07", b"\x08\x09"]
    assert all(isinstance(p, memoryview) for p in pieces)
    assert list(iter_chunks(b"", 4)) == []
    assert [bytes(p) for p in iter_chunks(memoryview(data)[2:5])] == [b"\x02\x03\x04"]


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_iter_chunks_bad_size(size) -> None:
    with pytest.raises(ValueError):
        list(iter_chunks(b"abc", size))


def test_blob_header() -> None:
    assert blob_header(3, b"abc") == {
        "t": "blob",
        "stream": 3,
        "size": 3,
        "sha256": hashlib.sha256(b"abc").hexdigest(),
    }
    assert blob_header(0, b"")["sha256"] == EMPTY_SHA
    with pytest.raises(BlobError):
        blob_header(-1, b"")


def test_round_trip_small_and_uneven() -> None:
    data = random.Random(2).randbytes(1000)
    assert receive(data, 7) == data
    assert receive(data, 1000) == data
    assert receive(data, 5000) == data


def test_empty_blob() -> None:
    rx = BlobReceiver(1, 0, EMPTY_SHA, max_size=0)
    assert rx.done
    rx.add(b"")
    assert rx.finish() == b""


def test_big_blob_round_trip() -> None:
    data = random.Random(3).randbytes(3 * 1024 * 1024)
    assert receive(data) == data


def test_big_blob_through_codec() -> None:
    """Full path: header message + chunk frames through the decoder, fed in odd pieces."""
    data = random.Random(4).randbytes(3 * 1024 * 1024 + 17)
    hdr = blob_header(9, data)
    parts = [encode_message(hdr)]
    for piece in iter_chunks(data):
        parts += [chunk_header(9, len(piece)), bytes(piece)]
    wire = b"".join(parts)
    dec = FrameDecoder()
    rx: BlobReceiver | None = None
    for pos in range(0, len(wire), 65_000):
        for frame in dec.feed(wire[pos : pos + 65_000]):
            if isinstance(frame, Message):
                rx = BlobReceiver.from_header(frame.payload, max_size=8 << 20)
            else:
                assert isinstance(frame, Chunk) and rx is not None and frame.stream_id == 9
                rx.add(frame.data)
    assert rx is not None and rx.done and rx.finish() == data


def test_hash_mismatch() -> None:
    data = b"hello world"
    rx = BlobReceiver(1, len(data), hashlib.sha256(b"other").hexdigest(), max_size=100)
    rx.add(data)
    assert rx.done
    with pytest.raises(BlobError, match="sha256 mismatch") as exc:
        rx.finish()
    assert hashlib.sha256(data).hexdigest() in str(exc.value)
    assert hashlib.sha256(b"other").hexdigest() in str(exc.value)


def test_oversize_blob_rejected_by_header() -> None:
    with pytest.raises(BlobError, match="exceeds"):
        BlobReceiver(1, 101, EMPTY_SHA, max_size=100)
    BlobReceiver(1, 100, EMPTY_SHA, max_size=100)  # exactly at the limit


def test_add_beyond_announced_size() -> None:
    rx = BlobReceiver(1, 5, EMPTY_SHA, max_size=100)
    rx.add(b"abc")
    with pytest.raises(BlobError, match="exceed"):
        rx.add(b"def")
    assert rx.received == 3


def test_finish_incomplete() -> None:
    rx = BlobReceiver(1, 5, hashlib.sha256(b"abcde").hexdigest(), max_size=100)
    rx.add(b"abc")
    assert not rx.done
    with pytest.raises(BlobError, match="expected 5 bytes, got 3"):
        rx.finish()


def test_finish_twice_and_add_after_finish() -> None:
    rx = BlobReceiver(1, 0, EMPTY_SHA, max_size=0)
    assert rx.finish() == b""
    with pytest.raises(BlobError):
        rx.finish()
    with pytest.raises(BlobError):
        rx.add(b"")


@pytest.mark.parametrize(
    "sha",
    [EMPTY_SHA.upper(), EMPTY_SHA[:-1], EMPTY_SHA + "0", "z" * 64, 123, None, EMPTY_SHA + "\n"],
)
def test_bad_sha_rejected(sha) -> None:
    with pytest.raises(BlobError, match="sha256"):
        BlobReceiver(1, 0, sha, max_size=10)


@pytest.mark.parametrize("size", [-1, 1.0, "3", None, True])
def test_bad_size_rejected(size) -> None:
    with pytest.raises(BlobError):
        BlobReceiver(1, size, EMPTY_SHA, max_size=10)


@pytest.mark.parametrize("stream", [-1, 2**32, "1", None])
def test_bad_stream_rejected(stream) -> None:
    with pytest.raises(BlobError):
        BlobReceiver(stream, 0, EMPTY_SHA, max_size=10)


def test_from_header_validation() -> None:
    hdr = blob_header(2, b"xyz")
    rx = BlobReceiver.from_header(hdr, max_size=10)
    assert (rx.stream_id, rx.size, rx.sha256) == (2, 3, hdr["sha256"])
    with pytest.raises(BlobError, match="sha256"):
        BlobReceiver.from_header({"t": "blob", "stream": 2, "size": 3}, max_size=10)
    with pytest.raises(BlobError):
        BlobReceiver.from_header(["not", "a", "dict"], max_size=10)  # type: ignore[arg-type]


def test_add_accepts_buffers_and_copies_them() -> None:
    data = bytearray(b"abcdef")
    rx = BlobReceiver(1, 6, hashlib.sha256(b"abcdef").hexdigest(), max_size=10)
    rx.add(memoryview(data)[:3])
    rx.add(bytearray(b"def"))
    data[0:3] = b"XYZ"  # mutating the source after add must not corrupt the blob
    assert rx.finish() == b"abcdef"


# ---------------------------------------------------------------- the open streams of one connection


def _hdr(sid: int, data: bytes) -> dict:
    return {**blob_header(sid, data), "kind": "x"}


def test_streams_reassemble_interleaved_blobs() -> None:
    streams = BlobStreams(max_size=100)
    a, b = b"a" * 10, b"b" * 20
    assert streams.open(_hdr(1, a), 0.0) is None and streams.open(_hdr(2, b), 0.0) is None
    assert (len(streams), streams.declared) == (2, 30)
    assert streams.add(1, a[:5]) is None and streams.add(2, b) == (_hdr(2, b), b)
    assert streams.received == 5
    assert streams.add(1, a[5:]) == (_hdr(1, a), a)
    assert (len(streams), streams.declared, streams.deadline) == (0, 0, None)
    assert streams.open(_hdr(3, b""), 0.0) == (_hdr(3, b""), b"")  # empty: complete at once, never open


def test_streams_are_capped_in_number_and_in_declared_bytes() -> None:
    streams = BlobStreams(max_size=100, max_open=2)
    streams.open(_hdr(1, b"x" * 10), 0.0)
    streams.open(_hdr(2, b"x" * 10), 0.0)
    with pytest.raises(BlobLimit, match="more than 2 blob streams"):
        streams.open(_hdr(3, b"x" * 10), 0.0)
    assert len(streams) == 0  # dropped: the connection is closed
    streams = BlobStreams(max_size=100, max_bytes=150)
    streams.open(_hdr(1, b"x" * 100), 0.0)
    with pytest.raises(BlobLimit, match="160 bytes of open blob streams exceed the cap of 150"):
        streams.open(_hdr(2, b"x" * 60), 0.0)


def test_streams_refuse_a_reused_id_an_unknown_stream_and_an_unhashable_id() -> None:
    streams = BlobStreams(max_size=100)
    streams.open(_hdr(1, b"x"), 0.0)
    with pytest.raises(BlobError, match="already open"):
        streams.open(_hdr(1, b"y"), 0.0)
    with pytest.raises(BlobError, match="unknown blob stream 9"):
        streams.add(9, b"x")
    with pytest.raises(BlobError, match="stream id"):
        streams.open({**_hdr(2, b"x"), "stream": [2]}, 0.0)


def test_each_stream_has_a_deadline_from_its_header_scaled_by_its_size() -> None:
    assert blob_deadline(10, 5.0) == 5.0 + BLOB_MIN_SECONDS
    assert blob_deadline(100 * BLOB_MIN_RATE, 5.0) == 105.0  # a big blob is not cut off for being big
    streams = BlobStreams(max_size=1000, min_seconds=2.0, min_rate=100.0)
    streams.open(_hdr(1, b"x" * 10), 0.0)  # 2 s
    streams.open(_hdr(2, b"x" * 500), 1.0)  # 5 s
    streams.add(2, b"x" * 100)
    assert streams.deadline == 2.0
    streams.add(1, b"x" * 10)
    assert streams.deadline == 6.0
    streams.check(5.9)
    with pytest.raises(BlobTimeout, match="blob stream 2 timed out: 100 of 500 bytes in 5 s"):
        streams.check(6.0)
    assert (len(streams), streams.declared, streams.received) == (0, 0, 0)  # freed
