"""One output object for the CLI: data on stdout (JSON with --json), diagnostics on stderr.

Exit codes: 0 success, 1 error, 2 usage error (Typer), 3 no local node is running, 4 refused by the node,
5 a job finished but some of its items failed (bad images, ...).
"""

from __future__ import annotations

import json
import sys

# The CLI's callers import these from here; the TUI imports them from textfmt (it must not import CLI code).
from ..textfmt import human_bytes, parse_duration  # noqa: F401

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NO_NODE, EXIT_REFUSED, EXIT_PARTIAL = 0, 1, 2, 3, 4, 5


class Out:
    def __init__(self, as_json: bool = False) -> None:
        self.json = as_json

    def data(self, obj, human: str | None = None) -> None:
        if self.json:
            sys.stdout.write(json.dumps(obj, default=str) + "\n")
        else:
            sys.stdout.write((human if human is not None else _plain(obj)) + "\n")
        sys.stdout.flush()

    def info(self, text: str) -> None:
        sys.stderr.write(text + "\n")

    def error(self, text: str) -> None:
        sys.stderr.write(f"error: {text}\n")

    def warn(self, text: str) -> None:
        sys.stderr.write(f"warning: {text}\n")

    def table(self, rows: list[dict], columns: list[tuple[str, str]]) -> str:
        """Plain aligned table (no Rich import on the fast path)."""
        head = [title for _, title in columns]
        body = [["" if r.get(k) is None else str(r.get(k)) for k, _ in columns] for r in rows]
        widths = [max(len(x) for x in col) for col in zip(head, *body)] if rows else [len(h) for h in head]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
        return "\n".join(line.rstrip() for line in lines)


def _plain(obj) -> str:
    if isinstance(obj, dict):
        width = max((len(str(k)) for k in obj), default=0)
        return "\n".join(f"{str(k).ljust(width)}  {v}" for k, v in obj.items())
    return str(obj)
