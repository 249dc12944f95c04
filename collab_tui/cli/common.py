"""Options and plumbing every command shares: --home, --json, the typed client of the local node.

Exit codes: 0 ok, 1 error, 2 usage, 3 no local node running, 4 refused by the node.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from .output import EXIT_ERROR, EXIT_NO_NODE, EXIT_REFUSED, Out

HomeOpt = Annotated[Path | None, typer.Option("--home", envvar="COLLAB_HOME", help="Node home directory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


class State:
    home: Path


state = State()  # set by the root callback (`collab --home DIR COMMAND`)


def home_of(home: Path | None) -> Path:
    """A command's --home, else the root's, else the default home."""
    from ..config import resolve_home

    if home:
        return resolve_home(home)
    return state.home if getattr(state, "home", None) else resolve_home(None)


def node_client(home: Path, out: Out):
    """The typed client of the local node (`client.Client`); exits 3 when no node runs."""
    from ..client import Client, NoNodeRunning

    try:
        return Client(home)
    except NoNodeRunning as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_NO_NODE) from None


def absolute_paths(paths: list[str]) -> list[str]:
    """Paths as the node needs them (it runs elsewhere, in its own folder): ``~`` expanded and made
    absolute; globs are left as typed (the node expands them)."""
    return [str(Path(p).expanduser().absolute()) if not any(c in p for c in "*?[") else p for p in paths]


def call(home: Path, out_: Out, ask: Callable):
    """``ask(client)`` against the local node: a refusal exits 4 with the node's reason."""
    from ..client import ControlError

    with node_client(home, out_) as client:
        try:
            return ask(client)
        except ControlError as exc:
            out_.error(str(exc))
            raise typer.Exit(EXIT_REFUSED) from None


def write_page(out: Out, path: Path, page: str) -> dict:
    """Write an HTML report; ``{"path", "bytes"}``, or a clear error and exit 1 when it cannot be written."""
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        out.error(f"cannot write {path}: {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    return {"path": str(path.absolute()), "bytes": len(page.encode())}
