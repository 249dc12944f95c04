"""One output object for the CLI: data on stdout (JSON with --json), diagnostics on stderr.

Exit codes: 0 success, 1 error, 2 usage error (Typer), 3 no local node is running, 4 refused by the node,
5 a job finished but some of its items failed (bad images, ...).
"""

from __future__ import annotations

import json
import sys

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


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '1h', '2d' -> seconds."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (try 90s, 15m, 1h)") from None
    if value <= 0:
        raise ValueError("duration must be positive")
    return value


def human_bytes(n: float | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
