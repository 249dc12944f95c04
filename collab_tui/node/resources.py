"""This machine's free capacity, for heartbeats and the scheduler (cheap: /proc reads, no psutil import)."""

from __future__ import annotations

import os
import time

_cache: dict = {"at": 0.0, "value": None}


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover
        return 0


def local_resources(max_age: float = 0.5) -> dict:
    now = time.monotonic()
    if _cache["value"] is not None and now - _cache["at"] < max_age:
        return _cache["value"]
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        load = 0.0
    value = {"cpus": os.cpu_count() or 1, "load": round(load, 2), "mem_free": _mem_available()}
    _cache.update(at=now, value=value)
    return value


def process_rss(pid: int | None = None) -> int | None:
    """Resident memory of a process in bytes (this one by default), from /proc; None if it is gone."""
    try:
        with open(f"/proc/{pid or 'self'}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
