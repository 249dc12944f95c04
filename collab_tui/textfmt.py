"""Small text helpers shared by both frontends (CLI and TUI) and by log lines: node ids, durations, sizes.

A leaf: standard library only, so the CLI's fast path, the TUI and the runtime may all import it.
"""

from __future__ import annotations

__all__ = ["short_id", "parse_duration", "human_bytes"]


def short_id(node_id: str | None) -> str:
    """``'3f2a9c1b77d0...'`` -> ``'3F2A-9C1B-77D0'`` (first 12 hex chars, upper, groups of 4)."""
    head = (node_id or "")[:12].upper()
    return "-".join(head[i : i + 4] for i in range(0, len(head), 4))


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
    """``1536`` -> ``'1.5 KiB'``; ``None`` -> ``''``."""
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


TRUST_DETAIL_KEYS = ("name", "token", "reason", "priority", "kept")


def trust_detail(row: dict[str, object]) -> str:
    """The detail of a trust-log row (`collab trust log`, the TUI's trust log): ``name=... token=...``."""
    return " ".join(f"{k}={row[k]}" for k in TRUST_DETAIL_KEYS if row.get(k) not in (None, ""))
