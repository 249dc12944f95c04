"""A worker's part of distributed jobs: accept assignments (fenced by term, in the service's handler),
fetch each batch's bytes straight from its submitter (one request per batch; tiny items come inline with
the assignment), run the job type in a thread, send the results to the submitter and a tiny
acknowledgement to the master.

Each assigned item comes with its ticket (messages.py), which the worker hands back to the submitter with
its fetch and with the item's result: the submitter serves and records only what was assigned to it.

Results that finish together travel together: each finished item goes to a per-submitter outbox that is
flushed on the next turn of the event loop, as one `job.results` message (attachments concatenated),
followed by one `job.done` to the master. A lone item still leaves at once; a batch of no-op items
leaves as one message instead of sixteen.

A master change empties the queue of what the old master assigned and this node has not started: the new
master reassigns those items (their submitters resubmit on the change), so they do not hold up its own.

Per-item errors (a corrupt image, a text file that is not text) are final results: the job goes on.
Infrastructure errors (the bytes could not be fetched, the type is unknown here) go back to the master,
which retries the item on another worker. Each failed item says why (``cause``): ``worker`` (the type
failed or is unknown here: it counts against this node), ``options`` (something the job names, e.g. a
model, is not on this node: a LookupError from the type), ``fetch`` (the bytes did not come) or
``deliver`` (the result could not be sent); only ``worker`` failures make the master bench this node.

Health: the worker's own failures feed a `WorkerHealth` tracker (see health.py). After a few failures of
one kind in a row the node reports itself unhealthy for that kind (heartbeats, `status`, `nodes`), and the
log gets one line on the transition, one on recovery and at most one summary per interval, never one
line per failed task.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .health import FailuresSummary, HealthEvent, KindRecovered, KindUnhealthy, WorkerHealth
from .messages import MAX_ITEMS, short
from .scheduler import task_id_for
from .types import get_type

log = logging.getLogger("collab.jobs.worker")

FINAL_ERRORS = (ValueError,)  # ImageError is a ValueError: bad input, retrying elsewhere won't help


JOB_THREAD_NICE = 5  # job threads are this much nicer than the node's event loop (heartbeats, elections, fetches)


def _one_cv_thread() -> None:
    """One OpenCV thread per pool thread: the pool provides the parallelism (imported lazily so an idle
    daemon stays small). The pool's threads start together: the import goes through `import_cv2`, which
    makes the first import safe when several threads do it at once. Each job thread also runs at a lower
    priority than the event loop (Linux nices threads one by one): a machine saturated with detection
    (dlib and OpenCV let go of the GIL, so every job thread takes a core) still heartbeats on time, and
    its peers do not take it for dead in the middle of a job."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + JOB_THREAD_NICE))
    except (AttributeError, OSError):  # not Linux, or not allowed: the thread keeps the loop's priority
        pass
    try:
        from ..ml.cvload import import_cv2

        import_cv2().setNumThreads(1)
    except Exception as exc:  # no OpenCV here: the image types will say so, task by task
        log.warning("OpenCV unavailable in a job thread: %s", exc)


def _timed(fn, *args):
    """Run ``fn`` (in a pool thread) and say how long it took there."""
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


class JobWorker:
    def __init__(self, service, threads: int | None = None, enabled: bool = True) -> None:
        self.svc = service
        self.ctx = service.ctx
        self.enabled = enabled  # False (config job_threads = -1): this node runs no task
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="collab-job", initializer=_one_cv_thread)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.stale_skipped = 0  # queued items not run: their master was replaced meanwhile
        self.running = 0
        self.fetching = 0  # items whose bytes are on the way
        self._runners: list[asyncio.Task] = []
        self._tasks: set[asyncio.Task] = set()
        self._outbox: dict[str, list[tuple[str, dict, bytes | None]]] = {}  # submitter -> finished items
        self.health = WorkerHealth()

    def unhealthy(self) -> dict[str, str]:
        """``{kind: reason}`` of the task kinds this node keeps failing (the node's ``unhealthy`` hook)."""
        return self.health.unhealthy()

    def tick(self) -> None:
        """Summary lines of failures that are due (called by the jobs loop)."""
        self._log_health(self.health.tick(time.monotonic()))

    def _failed_here(self, kind: str, tid: str, reason: str) -> None:
        log.debug("task %s failed on this node: %s", tid, reason)
        self._log_health(self.health.failure(kind, reason, time.monotonic()))

    def _log_health(self, events: list[HealthEvent]) -> None:
        for ev in events:
            match ev:
                case KindUnhealthy(kind=kind, reason=reason, consecutive=n):
                    log.warning(
                        "%s tasks keep failing on this node (%d in a row): %s; this node now reports "
                        "itself unhealthy for %s tasks",
                        kind,
                        n,
                        reason,
                        kind,
                    )
                case KindRecovered(kind=kind, failures=n):
                    log.info("%s tasks run on this node again (after %d failures): healthy", kind, n)
                case FailuresSummary(kind=kind, count=n, reason=reason) if kind in self.health.unhealthy():
                    log.warning("%d more %s task(s) failed on this node (still unhealthy): %s", n, kind, reason)
                case FailuresSummary(kind=kind, count=n, reason=reason):
                    log.warning(
                        "%d %s task(s) failed on this node: %s (failures are summarised, at most one "
                        "line every %.0f s)",
                        n,
                        kind,
                        reason,
                        self.health.summary_every,
                    )

    def depth(self) -> int:
        return self.queue.qsize() + self.running + self.fetching

    async def start(self) -> None:
        # one runner more than threads: while a thread runs an item, the next one already waits in the
        # pool's queue, so the thread goes on without waiting for the event loop to hand it over
        loop = asyncio.get_running_loop()
        self._runners = [loop.create_task(self._runner()) for _ in range(self.threads + 1)]

    async def stop(self) -> None:
        for r in self._runners:
            r.cancel()
        for t in list(self._tasks):
            t.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_assign(self, sender: str, msg: dict) -> None:
        """A `job.assign` (validated, its sender and term checked: `JobService` handles it ``@fenced``)."""
        items = msg["items"]
        item_ids = [item["item_id"] for item in items]
        if not item_ids:
            return
        if not self.enabled:
            why = "this node runs no job tasks (job_threads = -1)"
            failed = [{"task_id": task_id_for(msg["job_id"], i), "error": why, "cause": "worker"} for i in item_ids]
            self._spawn(self._ack([], failed))
            return
        msg["_master"] = sender  # a queued item of a master this node no longer follows is not run (`_runner`)
        # failed attempts of each item before this one (retried elsewhere or here): copied into its result
        msg["_attempts"] = {item["item_id"]: item.get("attempts", 0) for item in items}
        msg["_tickets"] = {item["item_id"]: item.get("ticket", "") for item in items}  # back to the submitter
        inline = {item["item_id"]: item["data"] for item in items if item.get("data") is not None}
        if len(inline) == len(item_ids):
            try:  # every byte is here already: queue at once (no fetch, no task)
                get_type(msg["kind"])
                datas = {i: base64.b64decode(inline[i], validate=True) for i in item_ids}
            except Exception:
                pass  # the slow path below reports the error to the master
            else:
                for item_id in item_ids:
                    self.queue.put_nowait((msg, item_id, datas[item_id], 0.0))
                return
        self.fetching += len(item_ids)
        self._spawn(self._prepare(msg, item_ids, inline))

    async def _prepare(self, msg: dict, item_ids: list[str], inline: dict[str, str]) -> None:
        """Fetch the bytes of a whole batch in one request (tiny items came inline), then queue its items
        for the runners."""
        job_id = msg["job_id"]
        t0 = time.perf_counter()
        try:
            try:
                get_type(msg["kind"])
            except LookupError as exc:  # this node lacks the type: its fault, let the master retry elsewhere
                for i in item_ids:
                    self._failed_here(msg["kind"], task_id_for(job_id, i), str(exc))
                await self._ack(
                    [], [{"task_id": task_id_for(job_id, i), "error": str(exc), "cause": "worker"} for i in item_ids]
                )
                return
            try:
                datas = {i: base64.b64decode(inline[i], validate=True) for i in item_ids if i in inline}
                errors: dict[str, str] = {}
                missing = [i for i in item_ids if i not in datas]
                if missing:
                    tickets = {i: msg["_tickets"][i] for i in missing}
                    fetched, errors = await self.svc.fetch_many(msg["submitter"], job_id, tickets)
                    datas.update(fetched)
            except Exception as exc:  # cannot even start (not this node's fault): let the master retry
                await self._ack(
                    [], [{"task_id": task_id_for(job_id, i), "error": str(exc), "cause": "fetch"} for i in item_ids]
                )
                return
            fetch_ms = round((time.perf_counter() - t0) * 1000, 2)
            if errors:
                await self._ack(
                    [], [{"task_id": task_id_for(job_id, i), "error": e, "cause": "fetch"} for i, e in errors.items()]
                )
            for item_id in item_ids:
                if item_id in datas:
                    self.queue.put_nowait((msg, item_id, datas[item_id], fetch_ms))
        finally:
            self.fetching -= len(item_ids)

    async def _runner(self) -> None:
        while True:
            msg, item_id, data, fetch_ms = await self.queue.get()
            master = self.ctx.master_id  # None for a moment (its master is suspect): then it goes on as before
            if (master is not None and msg.get("_master", master) != master) or msg.get("term", 0) < self.ctx.term:
                # assigned by a master that is gone: the new one reassigns it (its submitter resubmits
                # on the change), and running it first would hold up what the new master gives us
                self.stale_skipped += 1
                continue
            self.running += 1
            try:
                await self._run_one(msg, item_id, data, fetch_ms)
            except Exception:
                log.exception("task %s:%s crashed", msg.get("job_id"), item_id)
            finally:
                self.running -= 1

    async def _run_type(self, jtype, data: bytes, options: dict) -> tuple[dict, bytes | None, float | None]:
        """OpenCV types run in this process's threads; Keras types in the node's ML process; types that
        declare ``inline`` (microseconds of work, e.g. noop) on the event loop itself. Also returns the
        seconds the pool thread spent on it (None elsewhere): the item may wait in the pool's queue."""
        task = getattr(jtype, "ml_task", None)
        if task:
            from ..ml import mltasks
            from ..ml.mlproc import for_node

            return await for_node(self.ctx.home).call(getattr(mltasks, task), data, options), None, None
        if getattr(jtype, "inline", False):
            out = jtype.run(data, options)
            return out.result, out.attachment, None
        run = functools.partial(jtype.run_at, self.ctx.home) if getattr(jtype, "uses_home", False) else jtype.run
        out, seconds = await asyncio.get_running_loop().run_in_executor(self.pool, _timed, run, data, options)
        return out.result, out.attachment, seconds

    async def _ack(self, done: list[str], failed: list[dict]) -> None:
        """Tell the current master (which may have changed since the assignment)."""
        master = self.ctx.master_id
        if master:
            failed = [{**f, "error": short(f["error"])} for f in failed]
            await self.svc.send_to(master, {"t": "job.done", "done": done, "failed": failed})

    async def _run_one(self, msg: dict, item_id: str, data: bytes, fetch_ms: float) -> None:
        job_id, submitter, kind = msg["job_id"], msg["submitter"], msg["kind"]
        options = msg.get("options", {})
        tid = task_id_for(job_id, item_id)
        t1 = time.perf_counter()
        result, attachment, error, seconds = None, None, None, None
        try:
            jtype = None if kind == "ensemble" else get_type(kind)
        except LookupError as exc:  # the type is not installed here: that is this node's failure
            self._failed_here(kind, tid, str(exc))
            await self._ack([], [{"task_id": tid, "error": str(exc), "cause": "worker"}])
            return
        try:
            if jtype is None:
                result = await self.svc.ensemble(data, options)
            else:
                result, attachment, seconds = await self._run_type(jtype, data, options)
        except FINAL_ERRORS as exc:
            code = getattr(exc, "code", type(exc).__name__)
            error = str(exc) if str(exc).startswith(f"{code}:") else f"{code}: {exc}"
        except LookupError as exc:
            # something this job names is not here (a model not known on this node): retried elsewhere, but
            # not held against the node's health, which would bench it for every job of this kind
            await self._ack([], [{"task_id": tid, "error": str(exc) or type(exc).__name__, "cause": "options"}])
            return
        except Exception as exc:  # an infrastructure failure here: counted, summarised, retried elsewhere
            reason = str(exc) or type(exc).__name__
            self._failed_here(kind, tid, reason)
            await self._ack([], [{"task_id": tid, "error": reason, "cause": "worker"}])
            return
        if error is None:
            self._log_health(self.health.success(kind, time.monotonic()))
        t2 = time.perf_counter()
        if seconds is not None:
            t1 = t2 - seconds
        payload = {
            "job_id": job_id,
            "item_id": item_id,
            "worker": self.ctx.node_id,
            "worker_name": self.ctx.name,
            "result": result,
            "error": None if error is None else short(error),
            "timings": {"fetch_ms": fetch_ms, "run_ms": round((t2 - t1) * 1000, 2)},
            "attempts": msg["_attempts"].get(item_id, 0),
            "ticket": msg["_tickets"].get(item_id, ""),
        }
        self._post(submitter, tid, payload, attachment)

    # ----------------------------------------------------------------- results out
    def _post(self, submitter: str, tid: str, payload: dict, attachment: bytes | None) -> None:
        box = self._outbox.get(submitter)
        if box is None:  # first result since the last flush: flush on the next turn of the loop
            box = self._outbox[submitter] = []
            self._spawn(self._flush(submitter))
        box.append((tid, payload, attachment))

    async def _flush(self, submitter: str) -> None:
        """Send what the outbox holds for one submitter (what finished before this task got its turn on
        the loop) as one message, or a few of at most MAX_ITEMS results, each acknowledged to the master
        once sent (an item counts as done only once its result is on its way to the submitter)."""
        box = self._outbox.pop(submitter, [])
        for k in range(0, len(box), MAX_ITEMS):
            await self._send_box(submitter, box[k : k + MAX_ITEMS])

    async def _send_box(self, submitter: str, box: list[tuple[str, dict, bytes | None]]) -> None:
        tids = [tid for tid, _, _ in box]
        try:
            sent = await self.svc.deliver_results(submitter, [p for _, p, _ in box], [a for _, _, a in box])
        except Exception:
            log.exception("delivering %d results to %s failed", len(tids), submitter[:12])
            sent = False
        if sent:
            await self._ack(tids, [])
        else:
            why = "the result could not be sent to the submitter"
            await self._ack([], [{"task_id": tid, "error": why, "cause": "deliver"} for tid in tids])
