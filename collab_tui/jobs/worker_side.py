"""A worker's part of distributed jobs: accept assignments (fenced by term), fetch each item's bytes
straight from its submitter, run the job type in a thread, send the result to the submitter and a
tiny acknowledgement to the master.

Per-item errors (a corrupt image, a text file that is not text) are final results: the job goes on.
Infrastructure errors (the bytes could not be fetched, the type is unknown here) go back to the master,
which retries the item on another worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from .scheduler import task_id_for
from .types import get_type

log = logging.getLogger("collab.jobs.worker")

FINAL_ERRORS = (ValueError,)  # ImageError is a ValueError: bad input, retrying elsewhere won't help


def _one_cv_thread() -> None:
    """One OpenCV thread per pool thread: the pool provides the parallelism (imported lazily so an idle
    daemon stays small)."""
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover
        pass


class JobWorker:
    def __init__(self, service, threads: int | None = None) -> None:
        self.svc = service
        self.node = service.node
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="collab-job", initializer=_one_cv_thread)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.running = 0
        self._runners: list[asyncio.Task] = []
        self.done_count = 0

    def depth(self) -> int:
        return self.queue.qsize() + self.running

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._runners = [loop.create_task(self._runner()) for _ in range(self.threads)]

    async def stop(self) -> None:
        for r in self._runners:
            r.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def on_assign(self, sender: str, msg: dict) -> None:
        term = msg.get("term")
        if not isinstance(term, int) or not self.node.election.accepts(term):
            log.warning("refused job.assign from %s with stale term %r", sender[:12], term)
            return
        for item in msg.get("items", []):
            self.queue.put_nowait((sender, msg, str(item["item_id"])))

    async def _runner(self) -> None:
        while True:
            sender, msg, item_id = await self.queue.get()
            self.running += 1
            try:
                await self._run_one(sender, msg, item_id)
            except Exception:
                log.exception("task %s:%s crashed", msg.get("job_id"), item_id)
            finally:
                self.running -= 1

    async def _run_type(self, jtype, data: bytes, options: dict) -> tuple[dict, bytes | None]:
        """OpenCV types run in this process's threads; Keras types in the node's ML process."""
        task = getattr(jtype, "ml_task", None)
        if task:
            from ..ml import mltasks
            from ..ml.mlproc import for_node

            return await for_node(self.node.home).call(getattr(mltasks, task), data, options), None
        out = await asyncio.get_running_loop().run_in_executor(self.pool, jtype.run, data, options)
        return out.result, out.attachment

    async def _ack(self, done: list[str], failed: list[dict]) -> None:
        """Tell the current master (which may have changed since the assignment)."""
        master = self.node.election.master_id
        if master:
            await self.svc.send_to(master, {"t": "job.done", "done": done, "failed": failed})

    async def _run_one(self, assigner: str, msg: dict, item_id: str) -> None:
        job_id, submitter, kind = msg["job_id"], msg["submitter"], msg["kind"]
        options = msg.get("options") or {}
        tid = task_id_for(job_id, item_id)
        t0 = time.perf_counter()
        try:
            jtype = get_type(kind)
            data = await self.svc.fetch(submitter, job_id, item_id)
        except Exception as exc:  # cannot even start: let the master retry elsewhere
            await self._ack([], [{"task_id": tid, "error": str(exc)}])
            return
        t1 = time.perf_counter()
        result, attachment, error = None, None, None
        loop = asyncio.get_running_loop()
        try:
            if kind == "ensemble":
                result = await self.svc.ensemble(data, options)
            else:
                result, attachment = await self._run_type(jtype, data, options)
        except FINAL_ERRORS as exc:
            code = getattr(exc, "code", type(exc).__name__)
            error = str(exc) if str(exc).startswith(f"{code}:") else f"{code}: {exc}"
        except Exception as exc:
            log.warning("task %s failed on this node: %s", tid, exc)
            await self._ack([], [{"task_id": tid, "error": str(exc)}])
            return
        t2 = time.perf_counter()
        payload = {
            "t": "job.result", "job_id": job_id, "item_id": item_id, "worker": self.node.node_id,
            "worker_name": self.node.name, "result": result, "error": error,
            "timings": {"fetch_ms": round((t1 - t0) * 1000, 2), "run_ms": round((t2 - t1) * 1000, 2)},
        }
        if not await self.svc.deliver_result(submitter, payload, attachment):
            await self._ack([], [{"task_id": tid, "error": "the result could not be sent to the submitter"}])
            return
        self.done_count += 1
        await self._ack([tid], [])
