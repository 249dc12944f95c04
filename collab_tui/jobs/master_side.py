"""The master's part of distributed jobs: a thin driver around the sans-IO `Scheduler`.

Submitters send `job.submit` (idempotent); the master assigns batches with `job.assign` (carrying its
term: workers refuse stale terms); workers report `job.done`. Capacity comes from heartbeats. A new
master starts with an empty scheduler and is refilled by the submitters' resubmissions.

Tiny items travel inline: a first submission may carry the bytes of items of at most a few KiB
(``"data"``, base64, read while the submitter hashed them); the master keeps them until the task is
finished and passes them along in `job.assign`, which saves the worker a fetch round trip. Bigger items,
and every item of a resubmission, are fetched by the worker from the submitter.

A worker that keeps failing one kind of task (or reports in its heartbeats that it does) is benched for
that kind by the scheduler: its tasks go to the others, and it gets a single probe task after a pause
(see scheduler.py). Each bench and each return is logged once. Every assigned item carries its count of
failed attempts so far (``attempts``), which the worker copies into the item's result.

Each assigned item also carries its *ticket* for that worker (messages.py): made from the job's secret,
which the submitter sends with every submission and which goes no further than this master. A job id
belongs to the submitter that first submitted it here; a `job.done` counts only for tasks assigned to
its sender (the scheduler ignores the others).
"""

from __future__ import annotations

import logging
import time

from ..node.resources import local_resources
from .messages import short, ticket
from .scheduler import Scheduler, Task, WorkerCapacity, split_task_id, task_id_for
from .scheduler_events import TaskFailed, TaskRetried, WorkerBenched, WorkerUnbenched

log = logging.getLogger("collab.jobs.master")

# A task this master saw finish (done or given up) that its submitter still lists as pending this long
# afterwards lost its outcome on the way (the submitter restarted or was cut off): it is queued again.
# Results are recorded once per item by the submitter, so a rerun never duplicates a result.
REOPEN_AFTER = 3.0
CAPACITY_EVERY = 0.1  # seconds between two capacity refreshes (heartbeats come every ~0.25 s)


class JobMaster:
    def __init__(
        self,
        service,
        task_timeout: float = 60.0,
        inflight_per_worker: int = 4,
        min_inflight: int = 2,
        clock=time.monotonic,
    ) -> None:
        self.svc = service
        self.ctx = service.ctx
        self.clock = clock  # monotonic seconds (the simulator's virtual clock in sim/jobs.py)
        self.term = self.ctx.term  # the reign it schedules for (jobs/service.py, ``_sync_role``)
        # min_inflight 2: even a busy worker holds a second batch, fetched while the first one runs, so it
        # never waits for a round trip to the master between two batches
        self.sched = Scheduler(
            inflight_per_worker=inflight_per_worker, task_timeout=task_timeout, min_inflight=min_inflight
        )
        self.jobs: dict[str, dict] = {}  # job_id -> {submitter, kind, options, key}
        self.finished_at: dict[str, float] = {}  # task_id -> when it was done or given up (monotonic)
        self.inline: dict[str, dict[str, str]] = {}  # job_id -> item_id -> bytes (base64) of live tasks
        self._capacity_at = float("-inf")

    # ----------------------------------------------------------------- inputs
    def on_submit(self, submitter: str, msg: dict) -> int:
        """A (re)submission (a validated `job.submit`); returns how many tasks are new. PermissionError if
        the job id belongs to another submitter. (A submission without ``job_key``, made in-process by a
        test, gets tickets that no submitter accepts.)"""
        job_id, kind = msg["job_id"], msg["kind"]
        meta = self.jobs.get(job_id)
        if meta is not None and meta["submitter"] != submitter:
            raise PermissionError(f"job {job_id} belongs to another submitter")
        self.jobs[job_id] = {
            "submitter": submitter,
            "kind": kind,
            "options": msg.get("options", {}),
            "key": msg.get("job_key", ""),
        }
        now = self.clock()
        tasks = []
        for item in msg["items"]:
            item_id = item["item_id"]
            tid = task_id_for(job_id, item_id)
            if (
                self.sched.status(tid) in ("done", "failed")
                and now - self.finished_at.get(tid, float("-inf")) >= REOPEN_AFTER
            ):
                self.sched.reopen(tid)
                log.info("task %s: the submitter never got its outcome; queued again", tid)
            tasks.append(Task(tid, job_id, item_id, submitter, kind, item["size"]))
        added = self.sched.submit(tasks, now)
        for item in msg["items"]:
            data = item.get("data")
            if data is not None and self.sched.status(task_id_for(job_id, item["item_id"])) == "pending":
                self.inline.setdefault(job_id, {})[item["item_id"]] = data
        return added

    def submitter_of(self, job_id: str) -> str | None:
        meta = self.jobs.get(job_id)
        return meta["submitter"] if meta is not None else None

    def _drop_inline(self, task_id: str) -> None:
        job_id, item_id = split_task_id(task_id)
        held = self.inline.get(job_id)
        if held is not None and held.pop(item_id, None) is not None and not held:
            del self.inline[job_id]

    def on_done(self, worker: str, msg: dict) -> None:
        """A worker's `job.done`: only its own tasks count (the scheduler ignores the others)."""
        now = self.clock()
        for tid in msg["done"]:
            if self.sched.complete(tid, worker, now):
                self.finished_at[tid] = now
                self._drop_inline(tid)
        for item in msg["failed"]:
            # a fetch or a delivery that failed, or a job naming what this node lacks (a model), is not the
            # worker's fault: retried, but not held against it
            health = item.get("cause", "worker") not in ("fetch", "deliver", "options")
            self.sched.fail(item["task_id"], worker, item.get("error", ""), now, health=health)

    def on_cancel(self, job_id: str) -> None:
        self.sched.cancel_job(job_id)
        self.jobs.pop(job_id, None)
        self.inline.pop(job_id, None)

    def peer_dead(self, node_id: str) -> None:
        self.sched.worker_dead(node_id, self.clock())
        # Its own jobs wait for it instead of burning their retries on fetches that cannot succeed (and
        # being reported failed to it when it is back): it resubmits what is unfinished when it returns.
        for job_id in [j for j, meta in self.jobs.items() if meta["submitter"] == node_id]:
            self.sched.forget_job(job_id)
            del self.jobs[job_id]
            self.inline.pop(job_id, None)
            prefix = task_id_for(job_id, "")
            for tid in [t for t in self.finished_at if t.startswith(prefix)]:
                del self.finished_at[tid]
            log.info("job %s waits for its submitter %s to come back", job_id, node_id[:12])

    def connection_lost(self, node_id: str) -> None:
        """The connection to a worker closed: assignments sent on it may never have arrived (the worker
        would not know of them, and this master would wait out the task timeout), so they go back to the
        queue. One that did arrive may be done twice; its submitter records one result."""
        if self.sched.inflight_of(node_id):
            log.info("connection to %s closed: its %d assigned task(s) are queued again", self._name(node_id),
                     len(self.sched.inflight_of(node_id)))  # fmt: skip
        self.sched.worker_dead(node_id, self.clock())

    # ----------------------------------------------------------------- the loop
    def _refresh_capacity(self, now: float) -> None:
        """Capacity reports (heartbeats, every ~0.25 s) into the scheduler, at most every CAPACITY_EVERY s:
        pump runs after every submission and every finished batch."""
        if now - self._capacity_at < CAPACITY_EVERY:
            return
        self._capacity_at = now
        res = local_resources()
        if self.svc.worker.enabled:
            self.sched.update_worker(WorkerCapacity(self.ctx.node_id, res["cpus"], res["load"], 0, True), now)
            health = getattr(self.svc.worker, "unhealthy", None)
            self.sched.report_health(self.ctx.node_id, health() if callable(health) else {}, now)
        for p in self.ctx.peers():
            if p.alive and "jobs" in (p.capabilities or ("jobs",)) and self.follows(p.master, p.term):
                self.sched.update_worker(WorkerCapacity(p.node_id, max(1, p.cpus), p.load, 0, True), now)
                self.sched.report_health(p.node_id, p.unhealthy, now)
            elif self.sched.free_slots(p.node_id) or self.sched.inflight_of(p.node_id):
                self.sched.worker_dead(p.node_id, now)

    def follows(self, master: str | None, term: int) -> bool:
        """Whether a peer's heartbeat says it follows this master in this reign: an assignment to a node that
        does not yet (it holds the claim back until its peers report it, net/election.py rule 9; or it has
        not heard it) would be refused (fenced) and wait out the task timeout. ``""``: not reported."""
        return master == "" or (master == self.ctx.node_id and term == self.term)

    def _item(self, job_id: str, task: Task, worker: str, key: str) -> dict:
        item = {"item_id": task.item_id, "ticket": ticket(key, job_id, task.item_id, worker), "size": task.size_bytes}
        if task.attempts:  # failed tries so far (absent: none), copied by the worker into the result
            item["attempts"] = task.attempts
        data = self.inline.get(job_id, {}).get(task.item_id)
        if data is not None:
            item["data"] = data
        return item

    async def pump(self) -> None:
        """Assign what can be assigned; report items that failed for good to their submitters."""
        for dest, msg in self.plan():
            if not await self.svc.send_to(dest, msg) and msg["t"] == "job.assign":
                self.sched.worker_dead(dest, self.clock())

    def plan(self) -> list[tuple[str, dict]]:
        """What to send now, in order: (worker, `job.assign`) per batch the scheduler assigns, (submitter,
        `job.item_failed`) per item it gave up on; the events are logged. A worker an assignment cannot
        reach is to be told to the scheduler (`pump`)."""
        now = self.clock()
        self._refresh_capacity(now)
        out: list[tuple[str, dict]] = []
        for a in self.sched.assign(now):
            job_id = a.tasks[0].job_id
            meta = self.jobs.get(job_id)
            if meta is None:
                continue
            msg = {
                "t": "job.assign",
                "term": self.ctx.term,
                "job_id": job_id,
                "submitter": meta["submitter"],
                "kind": meta["kind"],
                "options": meta["options"],
                "items": [self._item(job_id, t, a.worker, meta["key"]) for t in a.tasks],
            }
            out.append((a.worker, msg))
        for ev in self.sched.take_events():
            match ev:
                case TaskFailed(task_id=tid, error=error):
                    self.finished_at[tid] = now
                    self._drop_inline(tid)
                    job_id, item_id = split_task_id(tid)
                    meta = self.jobs.get(job_id)
                    if meta:
                        failed = {
                            "t": "job.item_failed",
                            "job_id": job_id,
                            "item_id": item_id,
                            "error": short(f"gave up after retries: {error}"),
                            "term": self.ctx.term,
                            "attempts": self.sched.attempts_of(tid),
                        }
                        out.append((meta["submitter"], failed))
                case TaskRetried(task_id=tid, reason=reason):
                    log.info("task %s requeued: %s", tid, reason)
                case WorkerBenched(
                    worker=worker, kind=kind, reason=reason, seconds=seconds, probes_failed=probes_failed
                ):
                    if probes_failed:
                        log.info(
                            "worker %s still fails %s tasks (its probe failed): benched again for %.0f s",
                            self._name(worker),
                            kind,
                            seconds,
                        )
                    else:
                        log.warning(
                            "worker %s keeps failing %s tasks: it gets none for %.0f s, then one probe (%s)",
                            self._name(worker),
                            kind,
                            seconds,
                            reason,
                        )
                case WorkerUnbenched(worker=worker, kind=kind, why=why):
                    log.info("worker %s runs %s tasks again (%s): back in the pool", self._name(worker), kind, why)
        return out

    def _name(self, node_id: str) -> str:
        if node_id == self.ctx.node_id:
            return f"{self.ctx.name} ({node_id[:12]}, this node)"
        info = self.ctx.peer(node_id)
        name = info.name if info is not None else ""
        return f"{name} ({node_id[:12]})" if name else node_id[:12]

    def stats(self) -> dict:
        return self.sched.stats()
