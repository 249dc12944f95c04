"""Bounds a member cannot get past (issue 15), over real asyncio streams (socket pairs: no network).

Per connection: a partial frame has a deadline from its first byte, at most 8 blob streams are open, each
blob has a deadline, ids must be ids, and failing messages give few, short log lines. Per peer table:
unproven gossip addresses are forgotten when their dials fail, and one peer's gossip is capped.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest

from collab_tui.net.blobs import blob_header
from collab_tui.net.codec import FrameDecoder, chunk_header, encode_message
from collab_tui.net.schema import RefusalQuiet
from collab_tui.net.transport import Connection, ConnectionClosed, RemoteError
from collab_tui.node.peers import GOSSIP_NEW_PER_PEER, GOSSIP_WINDOW, UNPROVEN_FAILURES, UNPROVEN_TTL, PeerTable

pytestmark = pytest.mark.timeout(30)

PEER = "ab" * 32
BIG = "A" * (1024 * 1024)


async def _streams() -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], ...]:
    a, b = socket.socketpair()
    return await asyncio.open_connection(sock=a), await asyncio.open_connection(sock=b)


async def _ok(conn: Connection, msg: dict) -> dict:
    return {"echo": msg["t"]}


@asynccontextmanager
async def served(handler=_ok, **kw) -> AsyncIterator[tuple[Connection, asyncio.StreamReader, asyncio.StreamWriter]]:
    """Our `Connection` (with ``kw``) running on one end; the raw other end for the test to speak through."""
    (r1, w1), (r2, w2) = await _streams()
    conn = Connection(r1, w1, **kw)
    conn.peer_id, conn.handler = PEER, handler
    task = asyncio.create_task(conn.run())
    try:
        yield conn, r2, w2
    finally:
        w2.close()
        conn.abort("test over")
        await asyncio.wait_for(task, 5)


@asynccontextmanager
async def linked(handler=_ok, **kw) -> AsyncIterator[tuple[Connection, Connection]]:
    """Two of our `Connection`s (both with ``kw``) talking to each other: (client, server)."""
    (r1, w1), (r2, w2) = await _streams()
    client, server = Connection(r1, w1, **kw), Connection(r2, w2, **kw)
    client.peer_id, client.handler = "cd" * 32, _ok
    server.peer_id, server.handler = PEER, handler
    tasks = [asyncio.create_task(c.run()) for c in (client, server)]
    try:
        yield client, server
    finally:
        client.abort("test over")
        server.abort("test over")
        await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def _until(pred, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.01)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("collab.")]


def _raw_blob(sid: int, size: int) -> bytes:
    return encode_message({"t": "blob", "kind": "x", "stream": sid, "size": size, "sha256": "0" * 64})


# ----------------------------------------------------------------------------- partial frames
async def test_a_trickled_partial_frame_is_closed_at_its_frame_deadline():
    async with served(frame_timeout=0.5) as (conn, _, w):
        frame = encode_message({"t": "ping", "pad": "x" * 200})
        t0 = time.monotonic()
        w.write(frame[:10])

        async def trickle():  # a byte every 0.1 s: a per-read timeout of 0.5 s would never fire
            for k in range(10, len(frame)):
                await asyncio.sleep(0.1)
                w.write(frame[k : k + 1])

        trickler = asyncio.create_task(trickle())
        await asyncio.wait_for(conn.wait_closed(), 3.0)
        took = time.monotonic() - t0
        trickler.cancel()
        assert 0.45 <= took < 1.0, took
        assert conn.close_reason.startswith("frame deadline"), conn.close_reason


async def test_a_frame_that_arrives_whole_in_time_is_fine_however_it_is_split():
    async with served(frame_timeout=0.5) as (conn, r, w):
        for _ in range(3):  # each frame gets its own deadline, from its own first byte
            frame = encode_message({"t": "ping", "id": 1})
            w.write(frame[:5])
            await asyncio.sleep(0.3)
            w.write(frame[5:])
            reply = FrameDecoder().feed(await asyncio.wait_for(r.read(65536), 2.0))
            assert reply[0].payload["echo"] == "ping"
        assert not conn.closed


# ----------------------------------------------------------------------------- blob streams
async def test_a_ninth_open_blob_stream_is_refused_and_logged_once(caplog):
    caplog.set_level(logging.INFO)
    quiet = RefusalQuiet(10.0)  # shared by a node's connections (see PeerTable)
    for _ in range(3):  # the same abuse again (a reconnecting peer) adds no line
        async with served(quiet=quiet) as (conn, _, w):
            w.write(b"".join(_raw_blob(100 + k, 10) for k in range(8)))
            await _until(lambda: len(conn.blobs) == 8)
            assert not conn.closed
            w.write(_raw_blob(200, 10))
            await asyncio.wait_for(conn.wait_closed(), 2.0)
            assert conn.close_reason.startswith("blob limit: more than 8 blob streams"), conn.close_reason
            assert len(conn.blobs) == 0
    assert len([line for line in _lines(caplog) if "blob limit" in line]) == 1


async def test_blob_bytes_in_flight_are_capped():
    async with served(max_blob=1000) as (conn, _, w):
        w.write(_raw_blob(1, 600))
        await _until(lambda: len(conn.blobs) == 1)
        w.write(_raw_blob(2, 600))  # each is within max_blob; together they are not
        await asyncio.wait_for(conn.wait_closed(), 2.0)
        assert "1200 bytes of open blob streams exceed the cap of 1000" in conn.close_reason


async def test_our_own_sender_keeps_to_the_caps_however_many_blobs_are_sent_at_once():
    got: list[bytes] = []

    async def keep(conn: Connection, msg: dict) -> None:
        got.append(msg["data"])

    async with linked(keep, max_blob=1_000_000) as (client, server):
        blobs = [bytes([k]) * 300_000 for k in range(20)]  # 20 at once; at most 3 fit in flight together
        await asyncio.wait_for(asyncio.gather(*(client.send_blob({"kind": "x"}, b) for b in blobs)), 10)
        await _until(lambda: len(got) == 20)
        assert sorted(got) == sorted(blobs) and not server.closed and not client.closed


async def test_a_blob_that_stops_midway_is_dropped_at_its_deadline_and_its_buffer_freed():
    async with served(blob_timeout=0.3) as (conn, _, w):
        w.write(_raw_blob(7, 100_000) + chunk_header(7, 50_000) + b"\0" * 50_000)
        await _until(lambda: conn.blobs.received == 50_000)
        rx = weakref.ref(next(iter(conn.blobs._open.values())).rx)
        t0 = time.monotonic()
        await asyncio.wait_for(conn.wait_closed(), 2.0)
        assert time.monotonic() - t0 < 0.6
        assert conn.close_reason.startswith("blob deadline: blob stream 7 timed out: 50000 of 100000 bytes")
        assert len(conn.blobs) == 0 and conn.blobs.declared == 0
        gc.collect()
        assert rx() is None, "the unfinished blob's buffer is still referenced"


async def test_a_request_waiting_for_a_blob_reply_that_stalls_gets_an_error_not_a_hang():
    (r1, w1), (r2, w2) = await _streams()
    client = Connection(r1, w1, blob_timeout=0.3)
    task = asyncio.create_task(client.run())
    try:
        ask = asyncio.create_task(client.request({"t": "fetch"}, timeout=20.0))
        (req,) = FrameDecoder().feed(await asyncio.wait_for(r2.read(65536), 2.0))
        header = {**blob_header(9, b"\0" * 1000), "kind": "fetched", "re": req.payload["id"], "ok": True}
        w2.write(encode_message(header) + chunk_header(9, 10) + b"\0" * 10)  # ... and nothing more
        t0 = time.monotonic()
        with pytest.raises(ConnectionClosed, match="blob deadline"):
            await asyncio.wait_for(ask, 3.0)
        assert time.monotonic() - t0 < 1.0
    finally:
        w2.close()
        client.abort()
        await asyncio.wait_for(task, 5)


# ----------------------------------------------------------------------------- ids and replies
async def test_replies_and_requests_with_bad_ids_are_dropped_and_the_connection_goes_on(caplog):
    caplog.set_level(logging.INFO)
    handled: list[dict] = []

    async def handler(conn: Connection, msg: dict) -> dict:
        handled.append(msg)
        return {"pong": 1}

    async with linked(handler) as (client, server):
        for bad in ([1], {"a": 1}, "1", True, -1, 2**60, 1.0, None):
            await client.send({"t": "re", "re": bad, "ok": True})
            await client.send({"t": "ping", "id": bad})
        await client.send_blob({"kind": "x", "re": [1]}, b"abc")
        assert (await client.request({"t": "ping"}, timeout=5))["pong"] == 1
        assert not server.closed and [m["t"] for m in handled] == ["ping"]
    lines = _lines(caplog)
    assert len([line for line in lines if "bad 're'" in line]) == 1
    assert len([line for line in lines if "bad 'id'" in line]) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_reply_resolves_only_a_request_this_connection_sent():
    release = asyncio.Event()

    async def slow(conn: Connection, msg: dict) -> dict:
        await release.wait()
        return {"from": "the real server"}

    async with linked(slow) as (a1, b1), linked(_ok) as (a2, b2):
        ask = asyncio.create_task(a1.request({"t": "slow"}, timeout=5))
        await _until(lambda: a1._pending)
        (rid,) = a1._pending
        await b2.send({"t": "re", "re": rid, "ok": True, "from": "another connection"})
        await b1.send({"t": "re", "re": rid + 1000, "ok": True, "from": "a request never sent"})
        await asyncio.sleep(0.1)
        assert not ask.done()
        release.set()
        assert (await asyncio.wait_for(ask, 5))["from"] == "the real server"
        assert not a2.closed and not b2.closed


# ----------------------------------------------------------------------------- log floods
async def test_a_thousand_failing_messages_give_a_couple_of_log_lines(caplog):
    caplog.set_level(logging.INFO)
    calls = [0]

    async def failing(conn: Connection, msg: dict) -> dict:
        calls[0] += 1
        if msg["t"] == "bug":
            raise RuntimeError("a bug")
        raise ValueError(f"bad value {msg['n']}")

    async with linked(failing) as (client, server):
        for n in range(1000):
            await client.send({"t": "bad", "n": n})
            await client.send({"t": "bug", "n": n})
        with pytest.raises(RemoteError, match="bad value -1"):
            await client.request({"t": "bad", "n": -1}, timeout=5)
        await _until(lambda: calls[0] == 2001)
    lines = _lines(caplog)
    assert len(lines) <= 2, lines
    assert sum("Traceback" in line for line in lines) == 1  # the unexpected error, once


async def test_a_1mb_value_never_appears_in_a_log_line_or_an_error_reply(caplog):
    caplog.set_level(logging.DEBUG)

    async def echoing(conn: Connection, msg: dict) -> dict:
        raise {"v": ValueError, "k": KeyError, "r": RuntimeError}[msg["t"]](f"bad {msg['x']}")

    async with linked(echoing) as (client, server):
        for t in ("v", "k", "r"):
            with pytest.raises(RemoteError) as exc:
                await client.request({"t": t, "x": BIG}, timeout=5)
            assert len(str(exc.value)) < 300
        await client.send({"t": "v", "x": 1, "id": BIG})  # a bad id, echoed nowhere
        with pytest.raises(RemoteError):
            await client.request({"t": BIG, "x": 1}, timeout=5)  # an unknown type: a KeyError quoting it
    for field in ("sha256", "stream", "size"):  # a bad blob header closes the connection; its reason is short
        async with served() as (conn, _, w):
            w.write(encode_message({**blob_header(1, b"abc"), field: BIG}))
            await asyncio.wait_for(conn.wait_closed(), 2.0)
            assert conn.close_reason.startswith("bad blob") and len(conn.close_reason) < 300
    text = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert len(text) == 8 and all("A" * 250 not in line for line in text), text  # a short prefix at most
    assert all(len(line) < 1500 for line in text)  # (a traceback is a few lines of our code)


# ----------------------------------------------------------------------------- known peer addresses
def _table(static: tuple[str, ...] = ()) -> PeerTable:
    node = SimpleNamespace(addrs=["10.0.0.1:7373"], node_id="me", cfg=SimpleNamespace(peers=list(static)))
    table = PeerTable(node)
    table._client_ctx = object()  # never used: no TCP connection gets that far
    return table


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unproven_gossip_addresses_are_forgotten_after_failed_dials_static_and_proven_ones_are_not():
    port = _closed_port()
    gossiped, static, proven = f"127.0.0.1:{port}", f"127.0.0.2:{port}", f"127.0.0.3:{port}"
    table = _table(static=(static,))
    table.propose(static)
    table.propose(proven, "member", proven=True)
    assert table.propose_from(PEER, gossiped, "c" * 64)
    for k in range(UNPROVEN_FAILURES):
        assert gossiped in table.addrs, k
        for addr in (gossiped, static, proven):
            await asyncio.wait_for(table._dial_once(addr), 5)  # refused at once: nothing listens there
    assert gossiped not in table.addrs and gossiped not in table._backoff
    assert static in table.addrs and proven in table.addrs
    assert table.propose_from(PEER, gossiped, "c" * 64)  # gossiped again: on probation again


def test_unproven_addresses_are_forgotten_after_a_bounded_time_however_they_fail():
    table = _table(static=("10.0.0.2:7373",))
    table.spawn = lambda coro: coro.close()  # no dials: only the forgetting is looked at
    table.propose("10.0.0.2:7373")
    table.propose("10.0.0.3:7373", "member", proven=True)
    table.propose("10.0.0.66:7373", "claimed-by-mdns")
    now = table.now()
    table.dial_due(now + UNPROVEN_TTL - 1)
    table.propose("10.0.0.66:7373", "claimed-by-mdns")  # announced again: its time is not extended
    assert "10.0.0.66:7373" in table.addrs
    table.dial_due(now + UNPROVEN_TTL + 1)
    assert set(table.addrs) == {"10.0.0.2:7373", "10.0.0.3:7373"}


def test_the_gossip_of_one_peer_adds_a_bounded_number_of_new_addresses_per_interval(caplog):
    caplog.set_level(logging.INFO)
    table = _table()
    fake = [(f"127.0.{k // 250}.{k % 250}:{20000 + k}", f"{k:064x}") for k in range(3072)]
    added = [table.propose_from(PEER, addr, nid) for addr, nid in fake]
    assert sum(added) == GOSSIP_NEW_PER_PEER == len(table.addrs)
    assert table.propose_from(PEER, fake[0][0], fake[0][1]) is False  # known: a hint, not a new address
    assert sum(table.propose_from("ef" * 32, addr, nid) for addr, nid in fake[100:200]) == GOSSIP_NEW_PER_PEER
    assert len([line for line in _lines(caplog) if "gossiped more than" in line]) == 2  # one per peer
    later = table.now() + GOSSIP_WINDOW
    table.now = lambda: later
    assert sum(table.propose_from(PEER, addr, nid) for addr, nid in fake[1000:]) == GOSSIP_NEW_PER_PEER
    assert len(table.addrs) == 3 * GOSSIP_NEW_PER_PEER
