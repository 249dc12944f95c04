"""The local control API: a Unix domain socket (mode 0600) in HOME/run, newline-delimited JSON.

Commands are declared once in `collab_tui/api.py` (one request Struct each). The node's command
classes mark their methods with ``@command(api.X)`` and the server mounts them (`ControlServer.mount`);
it decodes and validates every request's arguments before the method runs, so a method receives an
``api.X`` instance. Request ``{"cmd": NAME, "args": {...}}``; answer ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": "..."}``. Streaming commands answer with one ``{"ok": true, "stream":
true}`` line, then one ``{"event": {...}}`` line per event until the client hangs up. The typed
clients (`collab_tui/client.py`) sit on the two small transports below: a synchronous one for the CLI
(no asyncio, fast start) and an asyncio one for the TUI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from .. import api

log = logging.getLogger("collab.control")

MAX_LINE = 16 * 1024 * 1024


def socket_path(home: Path) -> Path:
    return home / "run" / "control.sock"


class NoNodeRunning(ConnectionError):
    def __init__(self, home: Path) -> None:
        super().__init__(f"no collab node is running for {home} (start one with `collab daemon`, or pass --home)")


class ControlError(RuntimeError):
    """The node refused a control command."""


_MARK = "__control_request__"


def command(request: type[api.Request]) -> Callable:
    """Mark a method of a command class as the handler of ``request`` (a reply command: an async method
    returning JSON-ready data; a stream: an async generator of events)."""

    def mark(fn: Callable) -> Callable:
        setattr(fn, _MARK, request)
        return fn

    return mark


def stream(request: type[api.Stream]) -> Callable:
    """`command` for a streaming request (reads better on async generators)."""
    if not request.STREAM:
        raise TypeError(f"{request.__name__} is not a stream")
    return command(request)


class ControlServer:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.handlers: dict[str, tuple[type[api.Request], Callable[[Any], Any]]] = {}
        self.server: asyncio.base_events.Server | None = None

    def mount(self, commands: object) -> None:
        """Serve every ``@command`` method of ``commands`` (an instance of a command class)."""
        for attr in dir(type(commands)):
            request = getattr(getattr(type(commands), attr), _MARK, None)
            if request is None:
                continue
            if request.NAME in self.handlers:
                raise ValueError(f"control command {request.NAME!r} is mounted twice")
            self.handlers[request.NAME] = (request, getattr(commands, attr))

    @property
    def names(self) -> set[str]:
        return set(self.handlers)

    async def start(self) -> Path:
        path = socket_path(self.home)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        if path.exists():
            if _alive(path):
                raise RuntimeError(f"a node is already running for {self.home}")
            path.unlink()
        old = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._client, str(path), limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        return path

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            try:
                socket_path(self.home).unlink()
            except FileNotFoundError:
                pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    req = json.loads(line)
                    cmd, args = req["cmd"], req.get("args") or {}
                    if not isinstance(cmd, str) or not isinstance(args, dict):
                        raise ValueError("bad request")
                except (ValueError, KeyError, TypeError):
                    await _send(writer, {"ok": False, "error": "malformed control request"})
                    continue
                entry = self.handlers.get(cmd)
                if entry is None:
                    await _send(writer, {"ok": False, "error": f"unknown command {cmd[:64]!r}"})
                    continue
                request_type, fn = entry
                try:
                    request = api.decode(request_type, args)
                except ValueError as exc:
                    await _send(writer, {"ok": False, "error": str(exc)[:500]})
                    continue
                if request_type.STREAM:
                    await self._stream(fn(request), reader, writer)
                    return
                try:
                    result = await fn(request)
                    await _send(writer, {"ok": True, "result": result})
                except Exception as exc:
                    if not isinstance(exc, (ValueError, PermissionError, LookupError, RuntimeError)):
                        log.exception("control command %s failed", cmd)
                    await _send(writer, {"ok": False, "error": str(exc) or type(exc).__name__})
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass  # client went away, or the daemon is shutting down
        finally:
            writer.close()

    async def _stream(self, events: AsyncIterator[dict], reader, writer) -> None:
        await _send(writer, {"ok": True, "stream": True})
        gone = asyncio.ensure_future(reader.read(1))
        try:
            async for event in events:
                await _send(writer, {"event": event})
                if gone.done():
                    break
        except ConnectionError:
            pass  # the client went away
        except (LookupError, ValueError, PermissionError, RuntimeError) as exc:  # e.g. an unknown job id
            await _send(writer, {"ok": False, "error": str(exc) or type(exc).__name__})
        finally:
            gone.cancel()
            await events.aclose()  # type: ignore[attr-defined]  (async generators)


async def _send(writer: asyncio.StreamWriter, obj: dict) -> None:
    writer.write(json.dumps(obj, default=str).encode() + b"\n")
    await writer.drain()


def _alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


_NO_LISTENER = (FileNotFoundError, ConnectionRefusedError)  # connecting: no socket file, or no node behind it


def _request_line(cmd: str, args: dict) -> bytes:
    return json.dumps({"cmd": cmd, "args": args}).encode() + b"\n"


def _accepted(reply: dict) -> dict:
    """The node's first answer to a request, or `ControlError` with its reason."""
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "failed"))
    return reply


class ControlClient:
    """Synchronous transport (the CLI's typed `client.Client` sits on it; the test harness calls it with
    wire names)."""

    def __init__(self, home: Path, timeout: float = 30.0) -> None:
        self.home = home
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(socket_path(home)))
        except _NO_LISTENER:
            self.sock.close()
            raise NoNodeRunning(home) from None
        self.file = self.sock.makefile("rb")

    def call(self, cmd: str, **args) -> object:
        self.sock.sendall(_request_line(cmd, args))
        return _accepted(self._read()).get("result")

    def stream(self, cmd: str, **args):
        self.sock.settimeout(None)
        self.sock.sendall(_request_line(cmd, args))
        _accepted(self._read())
        while True:
            msg = self._read()
            if "event" not in msg:
                raise ControlError(msg.get("error", "the stream failed"))
            yield msg["event"]

    def _read(self) -> dict:
        line = self.file.readline(MAX_LINE)
        if not line:
            raise ConnectionError("the node closed the control connection")
        return json.loads(line)

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncControlClient:
    """asyncio transport (the TUI's typed `client.AsyncClient` sits on it): one connection per request."""

    def __init__(self, home: Path) -> None:
        self.home = home

    @contextlib.asynccontextmanager
    async def _sent(self, cmd: str, args: dict) -> AsyncIterator[asyncio.StreamReader]:
        """A new connection with the request sent: yields its reader, closes it on the way out."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(socket_path(self.home)), limit=MAX_LINE)
        except _NO_LISTENER:
            raise NoNodeRunning(self.home) from None
        try:
            writer.write(_request_line(cmd, args))
            yield reader
        finally:
            writer.close()

    async def call(self, cmd: str, timeout: float = 30.0, **args) -> object:
        async with self._sent(cmd, args) as reader:
            reply = json.loads(await asyncio.wait_for(reader.readline(), timeout))
        return _accepted(reply).get("result")

    async def stream(self, cmd: str, **args) -> AsyncIterator[dict]:
        async with self._sent(cmd, args) as reader:
            _accepted(json.loads(await reader.readline()))
            while True:
                line = await reader.readline()
                if not line:
                    return
                msg = json.loads(line)
                if "event" not in msg:
                    raise ControlError(msg.get("error", "the stream failed"))
                yield msg["event"]
