"""TensorFlow lives in one helper process per node, never in the node's own process.

Importing TensorFlow takes ~5 s of mostly GIL-holding work and training saturates the CPU; in the
node process that starves the event loop, heartbeats stop and peers declare the node dead. So every
Keras call goes to a single long-lived child (spawned on first use, lower CPU priority, killed by the
kernel if the node dies) that keeps one model per architecture and the local datasets in memory.
The child only ever sees data of this node: it has no network code.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

log = logging.getLogger("collab.ml")


class MLProcessError(RuntimeError):
    pass


class MLProcess:
    def __init__(self, home: Path, nice: int = 5, threads: int = 0) -> None:
        self.home = home
        self.nice = nice
        self.threads = threads  # TensorFlow's intra-op and inter-op threads (0 = its default: every core)
        self._pool: ProcessPoolExecutor | None = None
        self.calls = 0

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            from . import mltasks

            ctx = mp.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                1, mp_context=ctx, initializer=mltasks.init, initargs=(str(self.home), self.nice, self.threads)
            )
        return self._pool

    async def call(self, fn, *args):
        """Run ``fn(*args)`` (a top-level function of `mltasks`) in the ML process."""
        loop = asyncio.get_running_loop()
        self.calls += 1
        try:
            return await loop.run_in_executor(self._get_pool(), fn, *args)
        except BrokenProcessPool:
            self._pool = None
            raise MLProcessError("the ML process died; it will be restarted on the next call") from None

    @property
    def started(self) -> bool:
        return self._pool is not None

    def pids(self) -> list[int]:
        """The ML process's PID (none before the first call): for its memory in `collab status`."""
        procs = getattr(self._pool, "_processes", None) or {}
        return [pid for pid, proc in list(procs.items()) if proc.is_alive()]

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


_shared: dict[str, MLProcess] = {}


def for_node(home: Path, threads: int | None = None) -> MLProcess:
    """One ML process per node home (shared by the jobs and training services); ``threads`` (the node's
    ``ml_threads``) applies when the process starts."""
    key = str(home)
    if key not in _shared:
        _shared[key] = MLProcess(home)
    if threads is not None:
        _shared[key].threads = int(threads)
    return _shared[key]
