"""Transport figures measured with the real code in one process (plus a forked receiver): mutual-TLS 1.3
handshakes, and blob throughput over mutual TLS vs plain TCP with `Connection.send_blob`.

Two node identities of one cluster: `create_cluster` (node A, holds the CA key) and a second key whose CSR
the CA signs (node B). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from pathlib import Path

from collab_tui.net.handshake import client_hello, make_hello, server_hello
from collab_tui.net.identity import NodeIdentity, create_cluster, load_identity
from collab_tui.net.pki import make_csr, new_key, sign_csr
from collab_tui.net.tls import client_ssl_context, server_ssl_context
from collab_tui.net.transport import Connection

HOST = "127.0.0.1"
LIMIT = 2**20  # StreamReader limit, as in PeerTable
IO_TIMEOUT = 10.0
BLOB = 4 * 1024 * 1024
BLOBS = 16  # 64 MiB per repetition
MAX_BLOB = 8 * 1024 * 1024


def make_identities(base: Path) -> tuple[NodeIdentity, NodeIdentity]:
    """Node A from `create_cluster`, node B signed by A's CA (as `join` would do)."""
    a = create_cluster(base / "a", "bench-a")
    key = new_key()
    cert = sign_csr(a.ca_key, a.ca_cert, make_csr(key, "bench-b"))
    (base / "b" / "identity").mkdir(parents=True, exist_ok=True)
    return a, NodeIdentity(base / "b", key, cert, a.ca_cert)


def _hello(ident: NodeIdentity, t: str) -> dict:
    return make_hello(t, ident.node_id, ident.name, ident.cluster_id, f"{HOST}:1")


def _not_revoked(_node_id: str) -> bool:
    return False


# --------------------------------------------------------------------------- handshakes
async def handshakes(a: NodeIdentity, b: NodeIdentity, n: int, hello: bool, warmup: int = 3) -> list[float]:
    """Seconds per connection: B dials A; TLS only (client side done), or TLS + HELLO/ACK (B holds A's ACK)."""
    sctx, cctx = server_ssl_context(a), client_ssl_context(b)

    async def on_conn(reader, writer) -> None:
        conn = Connection(reader, writer)
        try:
            if hello:
                first = await conn.read_message(IO_TIMEOUT)
                await server_hello(conn, first, _hello(a, "hello_ack"), a.cluster_id, _not_revoked)
            await asyncio.wait_for(reader.read(1), IO_TIMEOUT)  # until the client hangs up
        except Exception:
            pass
        finally:
            await conn.close()

    server = await asyncio.start_server(on_conn, HOST, 0, ssl=sctx)
    port = server.sockets[0].getsockname()[1]
    samples = []
    try:
        for k in range(warmup + n):
            t0 = time.perf_counter()
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port, ssl=cctx), IO_TIMEOUT)
            conn = Connection(reader, writer)
            if hello:
                await client_hello(conn, _hello(b, "hello"), b.cluster_id, _not_revoked, IO_TIMEOUT)
            t1 = time.perf_counter()
            await conn.close()
            if k >= warmup:
                samples.append(t1 - t0)
    finally:
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), 2.0)
        except TimeoutError:
            pass
    return samples


def context_build_times(ident: NodeIdentity, n: int = 20) -> list[float]:
    """Seconds per `client_ssl_context(ident)` (PeerTable.dial builds one per dial)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        client_ssl_context(ident)
        out.append(time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------- blob throughput
def _receiver(conn: Connection) -> None:
    """Count blobs (BlobReceiver already checked size and SHA-256); answer the last one with bench.done."""
    count = 0

    async def handler(c: Connection, msg: dict) -> None:
        nonlocal count
        if msg.get("t") == "blob":
            count += 1
            if len(msg["data"]) != msg["size"]:
                raise ValueError("size mismatch")
            if msg.get("last"):
                await c.send({"t": "bench.done", "n": count})
                count = 0

    conn.handler = handler


async def _serve_receiver(reader, writer) -> None:
    conn = Connection(reader, writer, max_blob=MAX_BLOB)
    _receiver(conn)
    await conn.run()


async def _send_rounds(port: int, cctx, reps: int, data: bytes) -> list[float]:
    """One warm-up blob, then `reps` rounds of BLOBS blobs; seconds from the first byte to bench.done."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port, ssl=cctx, limit=LIMIT), IO_TIMEOUT)
    conn = Connection(reader, writer, max_blob=MAX_BLOB)
    loop = asyncio.get_running_loop()
    state: dict = {}

    async def on_msg(c: Connection, msg: dict) -> None:
        if msg.get("t") == "bench.done" and not state["fut"].done():
            state["fut"].set_result(msg["n"])

    conn.handler = on_msg
    reader_task = loop.create_task(conn.run())
    samples = []
    try:
        for r in range(reps + 1):
            count = 1 if r == 0 else BLOBS
            state["fut"] = loop.create_future()
            t0 = time.perf_counter()
            for k in range(count):
                await conn.send_blob({"seq": k, "last": k == count - 1}, data)
            got = await asyncio.wait_for(state["fut"], 60.0)
            t1 = time.perf_counter()
            if got != count:
                raise RuntimeError(f"receiver got {got} blobs, expected {count}")
            if r:
                samples.append(t1 - t0)
    finally:
        await conn.close()
        reader_task.cancel()
        await asyncio.gather(reader_task, return_exceptions=True)
    return samples


async def throughput_inproc(a: NodeIdentity, b: NodeIdentity, tls: bool, reps: int, data: bytes) -> list[float]:
    server = await asyncio.start_server(
        _serve_receiver, HOST, 0, ssl=server_ssl_context(a) if tls else None, limit=LIMIT
    )
    try:
        return await _send_rounds(
            server.sockets[0].getsockname()[1], client_ssl_context(b) if tls else None, reps, data
        )
    finally:
        server.close()


def _child(pipe, home: str, tls: bool) -> None:
    async def main() -> None:
        sctx = server_ssl_context(load_identity(Path(home))) if tls else None
        server = await asyncio.start_server(_serve_receiver, HOST, 0, ssl=sctx, limit=LIMIT)
        pipe.send(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, pipe.poll, 120.0)  # "stop" or parent gone
        server.close()

    try:
        asyncio.run(main())
    finally:
        os._exit(0)


def throughput_forked(a: NodeIdentity, b: NodeIdentity, tls: bool, reps: int, data: bytes) -> list[float]:
    """Receiver in a forked process (its own core), sender here."""
    ctx = multiprocessing.get_context("fork")
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(theirs, str(a.home), tls), daemon=True)
    proc.start()
    try:
        if not mine.poll(20.0):
            raise RuntimeError("the receiver process did not start")
        port = mine.recv()
        return asyncio.run(_send_rounds(port, client_ssl_context(b) if tls else None, reps, data))
    finally:
        try:
            mine.send("stop")
        except OSError:
            pass
        proc.join(10.0)
        if proc.is_alive():
            proc.kill()  # by its PID; we started it
            proc.join(5.0)


def mbps(seconds: float) -> float:
    return BLOB * BLOBS / 1e6 / seconds
