"""Logging: a rotating file in the node's home plus an in-memory ring the control API can serve."""

from __future__ import annotations

import collections
import logging
import logging.handlers
import time
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RingHandler(logging.Handler):
    """Keeps the last N records as dicts (for `collab logs` and the TUI), notifies listeners."""

    def __init__(self, capacity: int = 2000, node: str = "") -> None:
        super().__init__()
        self.records: collections.deque[dict] = collections.deque(maxlen=capacity)
        self.listeners: list = []
        self.node = node
        self.seq = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.seq += 1
            item = {
                "seq": self.seq,
                "ts": record.created,
                "level": record.levelname,
                "logger": record.name,
                "node": self.node,
                "msg": record.getMessage(),
            }
            self.records.append(item)
            for fn in list(self.listeners):
                fn(item)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logging(home: Path | None, level: str = "INFO", node: str = "", stderr: bool = True) -> RingHandler:
    root = logging.getLogger()
    root.setLevel(level.upper())
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter(FORMAT)
    fmt.converter = time.gmtime
    if home is not None:
        logdir = home / "logs"
        logdir.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(logdir / "collab.log", maxBytes=2_000_000, backupCount=3)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    if stderr:
        sh = logging.StreamHandler()
        sh.setFormatter(fmt)
        root.addHandler(sh)
    ring = RingHandler(node=node)
    root.addHandler(ring)
    logging.getLogger("zeroconf").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    return ring
