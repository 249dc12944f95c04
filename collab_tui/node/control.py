"""The local control API: a Unix domain socket (mode 0600) in HOME/run, newline-delimited JSON.

Request ``{"cmd": NAME, "args": {...}}``; answer ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. Streaming commands (``subscribe``, ``logs`` with follow) answer
with one ``{"ok": true, "stream": true}`` line, then one ``{"event": {...}}`` line per event until the
client hangs up. The CLI uses the small synchronous client below (no asyncio, fast start); the TUI
uses the async one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

log = logging.getLogger("collab.control")

MAX_LINE = 16 * 1024 * 1024


def socket_path(home: Path) -> Path:
    return home / "run" / "control.sock"


class NoNodeRunning(ConnectionError):
    def __init__(self, home: Path) -> None:
        super().__init__(
            f"no collab node is running for {home} (start one with `collab daemon`, or pass --home)"
        )


class ControlError(RuntimeError):
    """The node refused a control command."""


Command = Callable[[dict], Awaitable[object]]
StreamCommand = Callable[[dict], AsyncIterator[dict]]


class ControlServer:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.commands: dict[str, Command] = {}
        self.streams: dict[str, StreamCommand] = {}
        self.server: asyncio.base_events.Server | None = None

    def command(self, name: str, fn: Command) -> None:
        self.commands[name] = fn

    def stream(self, name: str, fn: StreamCommand) -> None:
        self.streams[name] = fn

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
                if cmd in self.streams:
                    await self._stream(cmd, args, reader, writer)
                    return
                fn = self.commands.get(cmd)
                if fn is None:
                    await _send(writer, {"ok": False, "error": f"unknown command {cmd!r}"})
                    continue
                try:
                    result = await fn(args)
                    await _send(writer, {"ok": True, "result": result})
                except Exception as exc:
                    if not isinstance(exc, (ValueError, PermissionError, LookupError, RuntimeError)):
                        log.exception("control command %s failed", cmd)
                    await _send(writer, {"ok": False, "error": str(exc) or type(exc).__name__})
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass  # client went away, or the daemon is shutting down
        finally:
            writer.close()

    async def _stream(self, cmd: str, args: dict, reader, writer) -> None:
        await _send(writer, {"ok": True, "stream": True})
        gone = asyncio.ensure_future(reader.read(1))
        try:
            async for event in self.streams[cmd](args):
                await _send(writer, {"event": event})
                if gone.done():
                    break
        except (ConnectionError, RuntimeError):
            pass
        finally:
            gone.cancel()


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


class ControlClient:
    """Synchronous client for the CLI."""

    def __init__(self, home: Path, timeout: float = 30.0) -> None:
        self.home = home
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(socket_path(home)))
        except (FileNotFoundError, ConnectionRefusedError):
            self.sock.close()
            raise NoNodeRunning(home) from None
        self.file = self.sock.makefile("rb")

    def call(self, cmd: str, **args) -> object:
        self.sock.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        reply = self._read()
        if not reply.get("ok"):
            raise ControlError(reply.get("error", "failed"))
        return reply.get("result")

    def stream(self, cmd: str, **args):
        self.sock.settimeout(None)
        self.sock.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        first = self._read()
        if not first.get("ok"):
            raise ControlError(first.get("error", "failed"))
        while True:
            msg = self._read()
            yield msg["event"]

    def _read(self) -> dict:
        line = self.file.readline(MAX_LINE)
        if not line:
            raise ConnectionError("the node closed the control connection")
        return json.loads(line)

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncControlClient:
    """asyncio client (the TUI runs on an event loop)."""

    def __init__(self, home: Path) -> None:
        self.home = home

    async def call(self, cmd: str, timeout: float = 30.0, **args) -> object:
        try:
            reader, writer = await asyncio.open_unix_connection(str(socket_path(self.home)), limit=MAX_LINE)
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoNodeRunning(self.home) from None
        try:
            writer.write(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
            reply = json.loads(await asyncio.wait_for(reader.readline(), timeout))
        finally:
            writer.close()
        if not reply.get("ok"):
            raise ControlError(reply.get("error", "failed"))
        return reply.get("result")

    async def stream(self, cmd: str, **args) -> AsyncIterator[dict]:
        try:
            reader, writer = await asyncio.open_unix_connection(str(socket_path(self.home)), limit=MAX_LINE)
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoNodeRunning(self.home) from None
        try:
            writer.write(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
            first = json.loads(await reader.readline())
            if not first.get("ok"):
                raise ControlError(first.get("error", "failed"))
            while True:
                line = await reader.readline()
                if not line:
                    return
                yield json.loads(line)["event"]
        finally:
            writer.close()
