"""Benchmarks for collab: `python -m bench [GROUP ...] [--json]`.

A *group* is a module ``bench/<group>_bench.py`` with a function ``run() -> list[Figure]``; the runner
(`bench/__main__.py`) finds every such module by its name, so adding a group is adding a file.
Everything a benchmark starts binds 127.0.0.1 (mDNS pinned to 127.0.0.1); nothing leaves the machine.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field

__all__ = ["Figure", "Stats", "stats", "progress"]


@dataclass
class Stats:
    median: float
    min: float
    max: float
    n: int


def stats(samples: list[float]) -> Stats:
    """Median, min, max and count of a non-empty list of samples."""
    if not samples:
        raise ValueError("no samples")
    return Stats(statistics.median(samples), min(samples), max(samples), len(samples))


@dataclass
class Figure:
    """One benchmark figure.

    ``target`` with ``op`` ("<=" or ">=") decides pass/fail; a figure without a target is
    informational (``passed`` is None). ``value`` None means the measurement failed (``detail`` says why)
    and counts as a failure when there is a target.
    """

    group: str
    key: str  # stable machine name, e.g. "net.failover_s"
    name: str  # what a reader sees in the table
    value: float | None
    unit: str = ""
    target: float | None = None
    op: str = "<="
    reference: str | None = None  # e.g. "Ray 2.60: 1.71 ms" (see ../shared/bench/README.md)
    detail: str = ""
    samples: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        if self.value is None:
            return False
        return self.value <= self.target if self.op == "<=" else self.value >= self.target

    def to_dict(self) -> dict:
        return {
            "group": self.group,
            "key": self.key,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "op": self.op if self.target is not None else None,
            "passed": self.passed,
            "reference": self.reference,
            "detail": self.detail,
            "samples": [round(s, 6) for s in self.samples],
        }


def progress(msg: str) -> None:
    """Progress notes go to stderr so that `--json` output on stdout stays clean."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
