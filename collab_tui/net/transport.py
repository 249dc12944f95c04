"""Thin asyncio driver around the sans-IO codec: one authenticated TLS connection to one peer.

A `Connection` reads frames, dispatches messages to a handler, matches responses to requests by id, and
streams blobs in chunks (SHA-256 checked by `BlobReceiver`). The HELLO/ACK exchange that turns a TLS session
into an authenticated peer lives in `handshake.py`.

A member is not trusted with the receiver's resources. Per connection:

- a partial frame must be complete within ``frame_timeout`` of its first byte (not of the last read: a
  trickle of one byte every few seconds would keep a per-read timeout from ever firing);
- at most ``max_open_blobs`` blob streams are open at once, announcing at most ``max_blob_bytes`` together,
  and each must be complete by its deadline (``max(blob_timeout, size / blob_min_rate)``, see `BlobStreams`).
  Past a cap or a deadline the connection is closed with the reason (the node redials a real member): a
  stream cannot be cancelled on its own, and closing frees the buffers at once and fails every request
  still waiting for a reply with `ConnectionClosed`, so none of them hangs. Our own sender keeps to the
  same caps (``send_blob`` waits for room), so a peer with the default settings never trips them;
- ``id`` and ``re`` must be ints in 0..2**53; anything else is dropped, and a reply only resolves a request
  sent on this connection;
- log lines are rate limited (`RefusalQuiet`: one per key per interval, with the count held back) and a
  peer's values are clipped (`clip`) in log lines and error replies.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from .blobs import (
    BLOB_MIN_RATE,
    BLOB_MIN_SECONDS,
    DEFAULT_CHUNK,
    MAX_OPEN_BLOBS,
    BlobError,
    BlobLimit,
    BlobStreams,
    BlobTimeout,
    blob_header,
    iter_chunks,
)
from .codec import (
    DEFAULT_MAX_FRAME,
    Chunk,
    FrameDecoder,
    FrameError,
    FrameTimeout,
    Message,
    chunk_header,
    encode_message,
)
from .schema import RefusalQuiet, clip

log = logging.getLogger("collab.transport")

MAX_ID = 2**53  # request ids (``id``) and reply ids (``re``) are ints in 0..MAX_ID (exact in any JSON reader)
READ_SIZE = 256 * 1024
LOG_EVERY = 10.0  # seconds: one log line per key (message type and error, or peer and reason) per interval
REASON_CHARS = 200  # of an error text (which may quote a peer's value) in a log line, an error reply, a close

Handler = Callable[["Connection", dict], Awaitable[dict | None]]


class ConnectionClosed(ConnectionError):
    """The peer went away (or we closed the connection)."""


class RemoteError(RuntimeError):
    """The peer answered a request with ok=false."""


def is_id(value: object) -> bool:
    """A request or reply id as this transport sends them: an int (not a bool) in 0..MAX_ID."""
    return type(value) is int and 0 <= value <= MAX_ID


class BlobReply:
    """A handler's answer that carries bytes: sent as a blob that resolves the caller's request."""

    def __init__(self, fields: dict, data: bytes) -> None:
        self.fields = fields
        self.data = data


class Connection:
    """Framed, request/response messaging over one stream pair.

    ``handler(conn, msg)`` is awaited for every incoming message that is not a response; when the
    message carries an ``id`` the handler's return value is sent back as the response. ``quiet`` may be
    shared by all connections of a node, so that a flood over many connections still gives few lines.
    """

    _stream_ids = itertools.count(1)

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_blob: int = 512 * 1024 * 1024,
        frame_timeout: float = 10.0,
        idle_timeout: float | None = None,
        max_open_blobs: int = MAX_OPEN_BLOBS,
        max_blob_bytes: int | None = None,
        blob_timeout: float = BLOB_MIN_SECONDS,
        blob_min_rate: float = BLOB_MIN_RATE,
        quiet: RefusalQuiet | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(max_frame=max_frame, frame_timeout=frame_timeout)
        self.max_frame = max_frame
        self.max_blob = max_blob
        self.idle_timeout = idle_timeout
        self.blobs = BlobStreams(
            max_blob,
            max_open=max_open_blobs,
            max_bytes=max_blob_bytes,
            min_seconds=blob_timeout,
            min_rate=blob_min_rate,
        )
        self.quiet = quiet or RefusalQuiet(LOG_EVERY)
        self.peer_id: str = ""
        self.hello: dict = {}
        self.peer_addr = ""  # the peer's address as recorded by the node (see net/addresses.py)
        self.outbound = False
        self.handler: Handler | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._sending: dict[int, int] = {}  # our blob streams being sent -> their sizes
        self._room = asyncio.Event()  # set when a blob we send finishes: a waiting send_blob may go on
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
        """Read exactly one message within ``timeout`` seconds in all (used during handshakes, before `run`;
        the peer is not authenticated yet, so a trickle must not stretch the wait either)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self._early:
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError("no complete message within the handshake timeout")
            data = await asyncio.wait_for(self.reader.read(65536), left)
            if not data:
                raise ConnectionClosed("peer closed the connection")
            self._early.extend(self.decoder.feed(data, loop.time()))
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
        sid = next(self._stream_ids) & 0xFFFFFFFF
        header = {**fields, **blob_header(sid, data)}
        async with self._blob_room(sid, header["size"]):
            parts = [encode_message(header, self.max_frame)]
            for piece in iter_chunks(data, chunk_size):
                parts += [chunk_header(sid, len(piece)), piece]
                if len(parts) >= 16:
                    await self._write(parts)
                    parts = []
            if parts:
                await self._write(parts)

    @asynccontextmanager
    async def _blob_room(self, sid: int, size: int) -> AsyncIterator[None]:
        """Hold one of the peer's blob streams for ``size`` bytes while a blob is sent: wait while as many
        streams or bytes are in flight as the peer accepts (its caps are ours by default), so that many
        concurrent senders (job fetches, training rounds) never get our connection closed as abusive."""
        if size > self.blobs.max_bytes:
            raise BlobLimit(f"a blob of {size} bytes exceeds the cap of {self.blobs.max_bytes} bytes in flight")
        while self._sending and (
            len(self._sending) >= self.blobs.max_open or sum(self._sending.values()) + size > self.blobs.max_bytes
        ):
            if self.closed:
                raise ConnectionClosed(self.close_reason or "connection closed")
            self._room.clear()
            await self._room.wait()
        self._sending[sid] = size
        try:
            yield
        finally:
            del self._sending[sid]
            self._room.set()

    # ----------------------------------------------------------------- reading loop
    async def run(self) -> None:
        """Read until the peer goes away, a deadline passes or a cap is exceeded; dispatch each frame. Never
        raises."""
        loop = asyncio.get_running_loop()
        try:
            early, self._early = self._early, []
            for frame in early:
                self._dispatch(frame, loop.time())
            while True:
                data = await self._read(loop)
                if self.closed:  # closed by us (dropped, replaced) while reading: what came in is not read
                    break
                if not data:
                    self.close_reason = "peer closed the connection"
                    break
                now = loop.time()
                for frame in self.decoder.feed(data, now):
                    self._dispatch(frame, now)
                self._check_deadlines(now)  # a trickle is read in time, yet its frame may be overdue
        except TimeoutError:
            self._closing("read timeout", f"nothing received for {self.idle_timeout} s")
        except FrameTimeout as exc:
            self._closing("frame deadline", str(exc))
        except FrameError as exc:
            self._closing("bad frame", str(exc))
        except BlobTimeout as exc:
            self._closing("blob deadline", str(exc))
        except BlobLimit as exc:
            self._closing("blob limit", str(exc))
        except BlobError as exc:
            self._closing("bad blob", str(exc))
        except (ConnectionError, OSError) as exc:
            self.close_reason = f"connection lost: {exc}"
        except asyncio.CancelledError:
            self.close_reason = self.close_reason or "cancelled"
        finally:
            self.abort(self.close_reason or "closed")

    async def _read(self, loop: asyncio.AbstractEventLoop) -> bytes:
        """Some bytes, or the error of the deadline that passes first: the partial frame's, an open blob's
        (`FrameTimeout`, `BlobTimeout`) or the idle timeout (`TimeoutError`)."""
        now = loop.time()
        ends = [d for d in (self.decoder.deadline, self.blobs.deadline) if d is not None]
        if self.idle_timeout is not None:
            ends.append(now + self.idle_timeout)
        end = min(ends, default=None)
        try:
            return await asyncio.wait_for(self.reader.read(READ_SIZE), None if end is None else max(0.0, end - now))
        except TimeoutError:
            self._check_deadlines(max(loop.time(), end or 0.0))  # the timer may fire a hair early
            raise

    def _check_deadlines(self, now: float) -> None:
        self.decoder.check(now)
        self.blobs.check(now)

    def _closing(self, kind: str, detail: str) -> None:
        """Close for ``kind`` (a peer breaking the stream's rules); one log line per peer and kind per interval."""
        self.close_reason = f"{kind}: {clip(detail, REASON_CHARS)}"
        held = self.quiet.note(f"peer {self.peer_id[:12]}", kind, time.monotonic())
        if held is not None:
            more = f" ({held} more like it since the last line)" if held else ""
            log.warning("peer %s: %s, closing%s", self.peer_id[:12], self.close_reason, more)

    def _dispatch(self, frame: Message | Chunk, now: float) -> None:
        if isinstance(frame, Chunk):
            done = self.blobs.add(frame.stream_id, frame.data)
        elif frame.payload["t"] == "blob":
            done = self.blobs.open(frame.payload, now)
        else:
            self._route(frame.payload)
            return
        if done is not None:
            header, data = done
            self._route({**header, "t": str(header.get("kind", "blob")), "data": data})

    def _route(self, msg: dict) -> None:
        """A reply (``re``) resolves the request of this connection waiting for it (a late one is dropped);
        the rest is handled. A reply or a request whose id is not an id (`is_id`) is dropped."""
        if "re" in msg:
            rid = msg["re"]
            if not is_id(rid):
                self._dropped("re", rid)
                return
            fut = self._pending.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        if "id" in msg and not is_id(msg["id"]):
            self._dropped("id", msg["id"])
            return
        self._handle(msg)

    def _dropped(self, field: str, value: object) -> None:
        held = self.quiet.note(f"peer {self.peer_id[:12]}", f"bad {field}", time.monotonic())
        if held is not None:
            more = f" ({held} more like it since the last line)" if held else ""
            log.info("dropped a message from %s with a bad %r: %s%s", self.peer_id[:12], field, clip(value), more)

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
            self._log_failure(msg, exc)
            if rid is not None:
                try:
                    await self.send({"t": "re", "re": rid, "ok": False, "error": clip(str(exc), REASON_CHARS)})
                except ConnectionClosed:
                    pass

    def _log_failure(self, msg: dict, exc: Exception) -> None:
        """One line per (type, exception class) per interval, with the count held back; the error text (which
        may quote a peer's value) is clipped, tracebacks too (formatted here, their last line clipped)."""
        t = clip(msg.get("t"))
        held = self.quiet.note(t, type(exc).__name__, time.monotonic())
        if held is None:
            return
        more = f" ({held} more like it since the last line)" if held else ""
        text = clip(str(exc), REASON_CHARS)
        if isinstance(exc, (ValueError, KeyError, PermissionError, LookupError)):
            log.info("refused %s from %s: %s%s", t, self.peer_id[:12], text, more)
        else:
            stack = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
            log.error(
                "handler for %s from %s failed%s\nTraceback (most recent call last):\n%s\n%s: %s",
                t,
                self.peer_id[:12],
                more,
                stack,
                type(exc).__name__,
                text,
            )

    # ----------------------------------------------------------------- closing
    def abort(self, reason: str = "closed") -> None:
        if self._closed.is_set():
            return
        self.close_reason = self.close_reason or reason
        self._closed.set()
        self.blobs.clear()  # unfinished blobs are freed now, not when the last reference to us goes
        self._room.set()  # a send_blob waiting for room sees the connection closed
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
