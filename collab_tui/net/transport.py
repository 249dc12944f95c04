"""Thin asyncio driver around the sans-IO codec: one authenticated TLS connection to one peer.

A `Connection` reads frames with a read timeout for partial frames, dispatches messages to a handler,
matches responses to requests by id, and streams blobs in chunks (SHA-256 checked by `BlobReceiver`).
The HELLO/ACK exchange that turns a TLS session into an authenticated peer lives in `handshake.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

from .blobs import DEFAULT_CHUNK, BlobError, BlobReceiver, blob_header, iter_chunks
from .codec import DEFAULT_MAX_FRAME, Chunk, FrameDecoder, FrameError, Message, chunk_header, encode_message

log = logging.getLogger("collab.transport")

Handler = Callable[["Connection", dict], Awaitable[dict | None]]


class ConnectionClosed(ConnectionError):
    """The peer went away (or we closed the connection)."""


class RemoteError(RuntimeError):
    """The peer answered a request with ok=false."""


class BlobReply:
    """A handler's answer that carries bytes: sent as a blob that resolves the caller's request."""

    def __init__(self, fields: dict, data: bytes) -> None:
        self.fields = fields
        self.data = data


class Connection:
    """Framed, request/response messaging over one stream pair.

    ``handler(conn, msg)`` is awaited for every incoming message that is not a response; when the
    message carries an ``id`` the handler's return value is sent back as the response.
    """

    _stream_ids = itertools.count(1)

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_blob: int = 512 * 1024 * 1024,
        partial_timeout: float = 10.0,
        idle_timeout: float | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(max_frame=max_frame)
        self.max_frame = max_frame
        self.max_blob = max_blob
        self.partial_timeout = partial_timeout
        self.idle_timeout = idle_timeout
        self.peer_id: str = ""
        self.hello: dict = {}
        self.peer_addr = ""  # the peer's address as recorded by the node (see net/addresses.py)
        self.outbound = False
        self.handler: Handler | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._blobs: dict[int, tuple[dict, BlobReceiver]] = {}
        self._write_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.close_reason = ""
        self._early: list = []

    # ----------------------------------------------------------------- basic I/O
    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def send(self, msg: dict) -> None:
        data = encode_message(msg, self.max_frame)
        await self._write([data])

    async def _write(self, parts: list) -> None:
        if self.closed:
            raise ConnectionClosed(self.close_reason or "connection closed")
        async with self._write_lock:
            try:
                self.writer.writelines(parts)
                await self.writer.drain()
            except (ConnectionError, OSError, RuntimeError) as exc:
                self.abort(f"write failed: {exc}")
                raise ConnectionClosed(str(exc)) from None

    async def read_message(self, timeout: float) -> dict:
        """Read exactly one message (used during handshakes, before `run`)."""
        while not self._early:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionClosed("peer closed the connection")
            self._early.extend(self.decoder.feed(data))
        frame = self._early.pop(0)
        if not isinstance(frame, Message):
            raise FrameError("expected a message during the handshake, got a chunk")
        return frame.payload

    async def request(self, msg: dict, timeout: float = 10.0) -> dict:
        return await self._request(lambda rid: self.send({**msg, "id": rid}), timeout)

    async def request_blob(self, fields: dict, data: bytes, timeout: float = 10.0) -> dict:
        """Send bytes as a request; the peer's handler answers like any request."""
        return await self._request(lambda rid: self.send_blob({**fields, "id": rid}, data), timeout)

    async def _request(self, send, timeout: float) -> dict:
        """Register a pending id, send with it, wait for the answer; ok=false raises RemoteError."""
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await send(rid)
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok", False):
            raise RemoteError(str(reply.get("error", "request failed")))
        return reply

    async def send_blob(self, fields: dict, data: bytes | memoryview, chunk_size: int = DEFAULT_CHUNK) -> None:
        """Header message, then chunks. The receiver's handler gets ``fields`` plus ``"data"`` (bytes),
        with ``t`` set to ``fields["kind"]``; a blob whose fields carry ``re`` answers that request."""
        sid = next(self._stream_ids)
        header = {**fields, **blob_header(sid, data)}
        parts = [encode_message(header, self.max_frame)]
        for piece in iter_chunks(data, chunk_size):
            parts += [chunk_header(sid, len(piece)), piece]
            if len(parts) >= 16:
                await self._write(parts)
                parts = []
        if parts:
            await self._write(parts)

    # ----------------------------------------------------------------- reading loop
    async def run(self) -> None:
        """Read until the peer goes away; dispatch each frame. Never raises."""
        try:
            early, self._early = self._early, []
            for frame in early:
                self._dispatch(frame)
            while True:
                timeout = self.partial_timeout if self.decoder.pending_bytes else self.idle_timeout
                data = await asyncio.wait_for(self.reader.read(256 * 1024), timeout)
                if not data:
                    self.close_reason = "peer closed the connection"
                    break
                for frame in self.decoder.feed(data):
                    self._dispatch(frame)
        except TimeoutError:
            self.close_reason = "read timeout"
            log.warning("peer %s: read timeout, closing", self.peer_id[:12])
        except FrameError as exc:
            self.close_reason = f"bad frame: {exc}"
            log.warning("peer %s: %s, closing", self.peer_id[:12], self.close_reason)
        except BlobError as exc:
            self.close_reason = f"bad blob: {exc}"
            log.warning("peer %s: %s, closing", self.peer_id[:12], self.close_reason)
        except (ConnectionError, OSError) as exc:
            self.close_reason = f"connection lost: {exc}"
        except asyncio.CancelledError:
            self.close_reason = self.close_reason or "cancelled"
        finally:
            self.abort(self.close_reason or "closed")

    def _dispatch(self, frame) -> None:
        if isinstance(frame, Chunk):
            entry = self._blobs.get(frame.stream_id)
            if entry is None:
                raise BlobError(f"chunk for unknown stream {frame.stream_id}")
            header, rx = entry
            rx.add(frame.data)
            if rx.done:
                del self._blobs[frame.stream_id]
                self._deliver_blob(header, rx.finish())
            return
        msg = frame.payload
        if msg["t"] == "blob":
            sid = msg.get("stream")
            if not isinstance(sid, int) or sid in self._blobs:
                raise BlobError(f"bad blob stream id {sid!r}")
            rx = BlobReceiver(sid, msg.get("size"), msg.get("sha256"), self.max_blob)
            if rx.done:
                self._deliver_blob(msg, rx.finish())
            else:
                self._blobs[sid] = (msg, rx)
            return
        self._route(msg)

    def _deliver_blob(self, header: dict, data: bytes) -> None:
        self._route({**header, "t": str(header.get("kind", "blob")), "data": data})

    def _route(self, msg: dict) -> None:
        """A reply (``re``) resolves the request waiting for it (a late one is dropped); the rest is handled."""
        if "re" in msg:
            fut = self._pending.get(msg["re"])
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        self._handle(msg)

    def _handle(self, msg: dict) -> None:
        task = asyncio.get_running_loop().create_task(self._call_handler(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call_handler(self, msg: dict) -> None:
        rid = msg.get("id")
        try:
            if self.handler is None:
                raise RuntimeError("no handler")
            reply = await self.handler(self, msg)
            if rid is None:
                return
            if isinstance(reply, BlobReply):
                await self.send_blob({**reply.fields, "re": rid, "ok": True}, reply.data)
            else:
                await self.send({"t": "re", "re": rid, "ok": True, **(reply or {})})
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bad request must not take the connection down
            if not isinstance(exc, (ValueError, KeyError, PermissionError, LookupError)):
                log.exception("handler for %r from %s failed", msg.get("t"), self.peer_id[:12])
            else:
                log.info("refused %r from %s: %s", msg.get("t"), self.peer_id[:12], exc)
            if rid is not None:
                try:
                    await self.send({"t": "re", "re": rid, "ok": False, "error": f"{exc}"})
                except ConnectionClosed:
                    pass

    # ----------------------------------------------------------------- closing
    def abort(self, reason: str = "closed") -> None:
        if self._closed.is_set():
            return
        self.close_reason = self.close_reason or reason
        self._closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(self.close_reason))
        self._pending.clear()
        try:
            self.writer.close()
        except Exception:  # pragma: no cover
            pass

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(self) -> None:
        self.abort("closed locally")
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except Exception:
            pass
