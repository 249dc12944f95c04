"""What the TUI needs from a node: an async client (the control socket) and a way to start a node.

The app takes any `client.AsyncClient`; tests inject one whose transport returns fixed data.
Nothing here imports Textual; starting a daemon is a plain detached subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from .client import AsyncClient
from .node.control import ControlError, NoNodeRunning

# Everything a control call can fail with: the node refused, is gone, or answered garbage.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    ControlError,
    NoNodeRunning,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    json.JSONDecodeError,
    KeyError,
)


NodeClient = AsyncClient  # the app takes any `AsyncClient`: tests inject one whose transport is a fake


def connect(home: Path) -> NodeClient:
    """A client for the node whose control socket lives in ``home`` (no I/O until the first call)."""
    return AsyncClient(home)


def describe_error(exc: BaseException) -> str:
    """A short human sentence for a failed control call."""
    if isinstance(exc, NoNodeRunning):
        return "no node is running"
    if isinstance(exc, asyncio.TimeoutError):
        return "the node did not answer in time"
    if isinstance(exc, ControlError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def has_identity(home: Path) -> bool:
    from .net.identity import identity_exists

    return identity_exists(home)


def daemon_log_path(home: Path) -> Path:
    return home / "logs" / "daemon.out"


def start_daemon(home: Path, init_name: str | None = None, extra: list[str] | None = None) -> int:
    """Start `collab daemon --home HOME` detached from the TUI (own session; survives the TUI).

    With ``init_name`` a new cluster is created first (`collab init`). Blocking (a short `init`
    subprocess): call it from a thread worker. Returns the daemon's pid. Settings come from
    HOME/config.toml and the COLLAB_* environment, as for a daemon started by hand.
    """
    home.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "collab_tui"]
    if init_name is not None:
        name = init_name or socket.gethostname()[:64]
        res = subprocess.run(
            [*base, "init", "--name", name, "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if res.returncode != 0:
            raise RuntimeError(res.stderr.strip() or f"collab init exited with {res.returncode}")
    log_path = daemon_log_path(home)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [*base, "daemon", "--home", str(home), "--quiet", *(extra or [])],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=os.environ.copy(),
        )
    return proc.pid


def daemon_log_tail(home: Path, lines: int = 6) -> str:
    try:
        text = daemon_log_path(home).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
