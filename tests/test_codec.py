"""Unit tests for the sans-IO wire codec."""

from __future__ import annotations

import json
import random
import struct
import time

import pytest

from collab_tui.net.codec import (
    DEFAULT_MAX_FRAME,
    Chunk,
    FrameDecoder,
    FrameError,
    FrameTimeout,
    FrameTooLarge,
    MalformedFrame,
    Message,
    chunk_header,
    encode_chunk,
    encode_message,
)


def raw_frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


def sample_frames() -> tuple[bytes, list[Message | Chunk]]:
    items: list[Message | Chunk] = [
        Message({"t": "hello", "id": 1, "name": "nœud-é", "nested": {"a": [1, 2.5, None, True]}}),
        Chunk(7, b"\x00\x01binary\xff"),
        Chunk(0xFFFFFFFF, b""),
        Message({"t": "bye", "re": 1, "ok": True}),
        Chunk(3, bytes(range(256)) * 4),
    ]
    wire = b"".join(
        encode_message(i.payload) if isinstance(i, Message) else encode_chunk(i.stream_id, i.data) for i in items
    )
    return wire, items


# ---------------------------------------------------------------- encoding


def test_encode_message_layout_is_compact_utf8() -> None:
    frame = encode_message({"t": "x", "v": "é"})
    body = '{"t":"x","v":"é"}'.encode()
    assert frame == struct.pack(">IB", len(body) + 1, 1) + body


def test_encode_chunk_layout_and_header() -> None:
    hdr = chunk_header(5, 3)
    assert hdr == struct.pack(">IBI", 8, 2, 5) and len(hdr) == 9
    assert encode_chunk(5, b"abc") == hdr + b"abc"
    assert encode_chunk(5, memoryview(b"abc")) == hdr + b"abc"
    assert encode_chunk(1, b"") == struct.pack(">IBI", 5, 2, 1)


@pytest.mark.parametrize("msg", [{}, {"t": 1}, {"t": None}, {"type": "x"}])
def test_encode_message_requires_string_t(msg: dict) -> None:
    with pytest.raises(ValueError):
        encode_message(msg)


def test_encode_message_rejects_unserializable() -> None:
    with pytest.raises(MalformedFrame):
        encode_message({"t": "x", "v": object()})
    with pytest.raises(MalformedFrame):
        encode_message({"t": "x", "v": float("nan")})


def test_encode_message_too_large() -> None:
    with pytest.raises(FrameTooLarge):
        encode_message({"t": "x", "pad": "a" * 100}, max_frame=50)
    encode_message({"t": "x"}, max_frame=len('{"t":"x"}') + 1)  # exactly at the cap


def test_chunk_header_validation() -> None:
    with pytest.raises(ValueError):
        chunk_header(-1, 0)
    with pytest.raises(ValueError):
        chunk_header(2**32, 0)
    with pytest.raises(ValueError):
        chunk_header(1, -1)
    with pytest.raises(FrameTooLarge):
        chunk_header(1, DEFAULT_MAX_FRAME)


# ---------------------------------------------------------------- decoding


def test_round_trip_single_feed() -> None:
    wire, items = sample_frames()
    dec = FrameDecoder()
    assert dec.feed(wire) == items
    assert dec.pending_bytes == 0


def test_byte_by_byte() -> None:
    wire, items = sample_frames()
    dec = FrameDecoder()
    out: list = []
    for i in range(len(wire)):
        out += dec.feed(wire[i : i + 1])
    assert out == items and dec.pending_bytes == 0


@pytest.mark.parametrize("seed", range(20))
def test_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    wire, items = sample_frames()
    wire, items = wire * 3, items * 3
    dec = FrameDecoder()
    out: list = []
    pos = 0
    while pos < len(wire):
        step = rng.randint(0, 40)
        out += dec.feed(memoryview(wire)[pos : pos + step])
        pos += step
    assert out == items and dec.pending_bytes == 0


def test_many_small_frames_in_one_feed_is_fast() -> None:
    frames = [encode_message({"t": "m", "i": i}) for i in range(20000)]
    dec = FrameDecoder()
    t0 = time.perf_counter()
    out = dec.feed(b"".join(frames))
    assert time.perf_counter() - t0 < 2.0
    assert [m.payload["i"] for m in out] == list(range(20000))


def test_big_chunks_in_64k_pieces_are_fast() -> None:
    data = random.Random(1).randbytes(1024 * 1024)
    wire = b"".join(encode_chunk(i, data) for i in range(3))
    dec = FrameDecoder()
    out: list = []
    t0 = time.perf_counter()
    for pos in range(0, len(wire), 64 * 1024):
        out += dec.feed(wire[pos : pos + 64 * 1024])
    assert time.perf_counter() - t0 < 2.0
    assert [(c.stream_id, c.data) for c in out] == [(i, data) for i in range(3)]


def test_truncated_frame_stays_pending() -> None:
    frame = encode_message({"t": "partial", "x": 1})
    dec = FrameDecoder()
    for cut in (1, 4, 5, len(frame) - 1):
        dec = FrameDecoder()
        assert dec.feed(frame[:cut]) == []
        assert dec.pending_bytes == cut
    assert dec.feed(frame[-1:]) == [Message({"t": "partial", "x": 1})]
    assert dec.pending_bytes == 0


def test_pending_counts_only_incomplete_tail() -> None:
    a, b = encode_message({"t": "a"}), encode_chunk(1, b"xyz")
    dec = FrameDecoder()
    assert dec.feed(a + b[:6]) == [Message({"t": "a"})]
    assert dec.pending_bytes == 6


def test_oversized_detected_from_header_alone() -> None:
    dec = FrameDecoder(max_frame=1024)
    with pytest.raises(FrameTooLarge):
        dec.feed(struct.pack(">IB", 1025, 2))
    dec = FrameDecoder(max_frame=1024)
    with pytest.raises(FrameTooLarge):
        dec.feed(struct.pack(">I", 0xFFFFFFFF))  # even before the kind byte
    dec = FrameDecoder()
    with pytest.raises(FrameTooLarge):
        dec.feed(struct.pack(">IB", DEFAULT_MAX_FRAME + 1, 1))


def test_frame_at_cap_is_accepted() -> None:
    dec = FrameDecoder(max_frame=5 + 10)
    assert dec.feed(encode_chunk(9, b"0123456789", max_frame=15)) == [Chunk(9, b"0123456789")]


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(struct.pack(">I", 0), id="zero-length"),
        pytest.param(raw_frame(3, b"{}"), id="unknown-kind"),
        pytest.param(raw_frame(0, b""), id="kind-zero"),
        pytest.param(raw_frame(1, b'{"t":"\xff"}'), id="bad-utf8"),
        pytest.param(raw_frame(1, b'{"t":'), id="bad-json"),
        pytest.param(raw_frame(1, b""), id="empty-json"),
        pytest.param(raw_frame(1, b'["t"]'), id="json-array"),
        pytest.param(raw_frame(1, b'"t"'), id="json-string"),
        pytest.param(raw_frame(1, b'{"x":1}'), id="missing-t"),
        pytest.param(raw_frame(1, b'{"t":5}'), id="int-t"),
        pytest.param(raw_frame(1, b'{"t":"x","v":NaN}'), id="nan"),
        pytest.param(raw_frame(1, b"[" * 100000 + b"]" * 100000), id="deep-nesting"),
        pytest.param(raw_frame(2, b""), id="chunk-empty-body"),
        pytest.param(raw_frame(2, b"\x00\x00\x01"), id="chunk-short-body"),
    ],
)
def test_malformed(wire: bytes) -> None:
    dec = FrameDecoder()
    with pytest.raises(MalformedFrame):
        dec.feed(wire)


def test_malformed_header_detected_early() -> None:
    dec = FrameDecoder()
    with pytest.raises(MalformedFrame):
        dec.feed(struct.pack(">IB", 100, 9))  # unknown kind before the body arrives


def test_malformed_after_good_frames() -> None:
    dec = FrameDecoder()
    with pytest.raises(MalformedFrame):
        dec.feed(encode_message({"t": "ok"}) + raw_frame(1, b"nope"))


def test_poisoned_decoder() -> None:
    dec = FrameDecoder()
    with pytest.raises(MalformedFrame):
        dec.feed(raw_frame(7, b"x"))
    assert dec.closed and dec.pending_bytes == 0
    with pytest.raises(FrameError, match="decoder is closed after an error"):
        dec.feed(encode_message({"t": "ok"}))
    with pytest.raises(FrameError):
        dec.feed(b"")


def test_exception_hierarchy() -> None:
    assert issubclass(FrameError, ValueError)
    assert issubclass(FrameTooLarge, FrameError) and issubclass(MalformedFrame, FrameError)


def test_unicode_payload_round_trip() -> None:
    msg = {"t": "chat", "text": '日本語 🚀 \u2028 "quoted" \\ back'}
    frame = encode_message(msg)
    assert "🚀".encode() in frame  # ensure_ascii=False
    assert FrameDecoder().feed(frame) == [Message(msg)]
    assert json.loads(frame[5:]) == msg


def test_empty_feed_returns_nothing() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"") == [] and dec.pending_bytes == 0


# ---------------------------------------------------------------- partial-frame deadline


def test_a_partial_frame_has_a_deadline_from_its_first_byte_not_its_last_read() -> None:
    frame = encode_message({"t": "slow", "pad": "x" * 50})
    dec = FrameDecoder(frame_timeout=10.0)
    assert dec.deadline is None
    dec.feed(frame[:1], now=100.0)
    for k in range(1, 9):  # a byte a second: each read is in time, the frame is not
        dec.feed(frame[k : k + 1], now=100.0 + k)
        assert dec.deadline == 110.0
    dec.check(109.9)
    with pytest.raises(FrameTimeout, match="within 10 s of its first byte"):
        dec.check(110.0)
    assert dec.closed and dec.pending_bytes == 0 and dec.deadline is None  # the buffer is freed


def test_each_frame_gets_its_own_deadline() -> None:
    a, b = encode_message({"t": "a"}), encode_message({"t": "b"})
    dec = FrameDecoder(frame_timeout=5.0)
    dec.feed(a[:3], now=0.0)
    assert dec.feed(a[3:] + b[:2], now=4.0) == [Message({"t": "a"})]
    assert dec.deadline == 9.0  # b began at 4.0
    assert dec.feed(b[2:], now=8.0) == [Message({"t": "b"})]
    assert dec.deadline is None
    dec.check(1000.0)  # nothing pending: nothing is late
    assert FrameDecoder().deadline is None  # without a frame_timeout there is no deadline
    with pytest.raises(ValueError):
        FrameDecoder(frame_timeout=0)
