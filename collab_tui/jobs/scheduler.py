"""Sans-IO scheduler of distributed job tasks (runs on the master).

Inputs in, outputs out, clock (`now`, monotonic seconds) passed in: no IO, no sleeps.
The submitter owns its job durably; the master only keeps this in-memory view and a
new master rebuilds it from the submitters' resubmissions (`submit` is idempotent).

Model:
- A *task* is one item of one job, id ``f"{job_id}:{item_id}"``.
- An *assignment* is a batch of tasks sent to one worker at once; it occupies ONE
  in-flight slot of that worker (small items are batched, big ones go alone).
- ``attempts`` counts failed tries (worker error, worker death, timeout); a task whose
  attempts reach ``max_attempts`` is reported as ``("failed", task_id, error)``.
- Events from `take_events`: ``("failed", task_id, error)`` and
  ``("retry", task_id, reason)`` (task requeued after an error, a death or a timeout).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace


class SchedulerError(ValueError):
    """Bad input given to the scheduler (e.g. an inconsistent task id)."""


def task_id_for(job_id: str, item_id: str) -> str:
    """Stable task id of one item of one job."""
    return f"{job_id}:{item_id}"


def split_task_id(task_id: str) -> tuple[str, str]:
    """Inverse of `task_id_for` (job ids never contain ':', item ids may)."""
    job_id, sep, item_id = task_id.partition(":")
    if not sep:
        raise SchedulerError(f"malformed task id {task_id!r} (expected 'job:item')")
    return job_id, item_id


@dataclass
class WorkerCapacity:
    """Capacity report of a worker: cpu count, 1-min loadavg, locally queued tasks."""
    node_id: str
    cpus: int = 1
    load: float = 0.0
    queue: int = 0
    alive: bool = True


def slots(cap: WorkerCapacity, per_cpu: int = 1, max_inflight: int = 4, min_inflight: int = 1) -> int:
    """Free task slots of a worker.

    ``free = floor(cpus * per_cpu - load - queue)`` clamped to ``[low, max_inflight]``
    where ``low`` is ``min_inflight`` (at most ``max_inflight``) when nothing is queued
    on the worker (so every live node, the master included, always works on at least
    one task even when its load is high; with 2, the next batch is already there when
    one finishes) and 0 otherwise. Dead workers and workers with ``cpus < 1`` have 0 slots.
    """
    if not cap.alive or cap.cpus < 1:
        return 0
    raw = math.floor(cap.cpus * per_cpu - max(0.0, cap.load) - max(0, cap.queue))
    low = min(min_inflight, max_inflight) if cap.queue <= 0 else 0
    return max(low, min(max_inflight, raw))


@dataclass
class Task:
    """One item to process; `assigned_*` are maintained by the scheduler."""
    task_id: str
    job_id: str
    item_id: str
    submitter: str
    kind: str
    size_bytes: int = 0
    attempts: int = 0
    assigned_to: str | None = None
    assigned_at: float | None = None

    @classmethod
    def make(cls, job_id: str, item_id: str, submitter: str, kind: str,
             size_bytes: int = 0) -> "Task":
        return cls(task_id_for(job_id, item_id), job_id, str(item_id), submitter, kind,
                   size_bytes)


@dataclass
class Assignment:
    """A batch of tasks for one worker (copies; mutate freely)."""
    worker: str
    tasks: list[Task]
    batch_id: int = 0

    @property
    def task_ids(self) -> list[str]:
        return [t.task_id for t in self.tasks]


@dataclass
class _Batch:
    worker: str
    assigned_at: float
    task_ids: list[str] = field(default_factory=list)


class Scheduler:
    """Spreads tasks over workers by free capacity; see the module docstring."""

    def __init__(self, inflight_per_worker: int = 4, task_timeout: float = 30.0,
                 batch_bytes: int = 256 * 1024, max_batch: int = 16,
                 max_attempts: int = 5, per_cpu: int = 1, min_inflight: int = 1) -> None:
        if min(inflight_per_worker, max_batch, max_attempts, per_cpu, min_inflight) < 1 or task_timeout <= 0:
            raise SchedulerError("counts must be >= 1 and task_timeout > 0")
        self.inflight_per_worker = inflight_per_worker
        self.min_inflight = min_inflight
        self.task_timeout = float(task_timeout)
        self.batch_bytes = int(batch_bytes)
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.per_cpu = per_cpu
        self._workers: dict[str, WorkerCapacity] = {}
        self._own_at_report: dict[str, int] = {}     # our assignments when it reported
        self._tasks: dict[str, Task] = {}            # live tasks: pending or assigned
        self._pending: dict[str, deque[str]] = {}    # job_id -> task ids, in order
        self._jobs_rr: deque[str] = deque()          # jobs with pending tasks, round-robin
        self._batches: dict[int, _Batch] = {}
        self._batch_of: dict[str, int] = {}
        self._finished: dict[str, str] = {}          # task_id -> done | failed | cancelled
        self._avoid: dict[str, set[str]] = {}        # task_id -> workers that failed it
        self._events: list[tuple[str, str, str]] = []
        self._next_batch = 1
        self._rr = 0

    def update_worker(self, cap: WorkerCapacity, now: float) -> None:
        """Record a capacity report; a report with ``alive=False`` is a death."""
        if not cap.alive:
            self.worker_dead(cap.node_id, now)
            return
        self._workers[cap.node_id] = replace(cap)
        self._own_at_report[cap.node_id] = self._own(cap.node_id)

    def worker_dead(self, node_id: str, now: float) -> None:
        """Forget a worker; its tasks go back to the front of the queue (attempts += 1)."""
        self._workers.pop(node_id, None)
        self._own_at_report.pop(node_id, None)
        bids = sorted(b for b, batch in self._batches.items() if batch.worker == node_id)
        tids = [tid for b in bids for tid in self._batches[b].task_ids]
        for tid in reversed(tids):
            self._requeue(self._tasks[tid], f"worker {node_id} died", node_id)

    def free_slots(self, node_id: str) -> int:
        """Slots left for new assignments on a worker (0 if unknown or dead).

        Our own assignments are not counted twice: with ``r`` = our in-flight
        assignments when the worker reported and ``own`` = now,
        ``free = slots(cap with load-r, queue-r) - own`` (``slots`` capped by
        inflight_per_worker), so a stale report cannot block a worker.
        """
        cap = self._workers.get(node_id)
        if cap is None:
            return 0
        r = self._own_at_report.get(node_id, 0)
        adj = WorkerCapacity(node_id, cap.cpus, max(0.0, cap.load - r), max(0, cap.queue - r))
        return slots(adj, self.per_cpu, self.inflight_per_worker, self.min_inflight) - self._own(node_id)

    def _own(self, node_id: str) -> int:
        return sum(1 for b in self._batches.values() if b.worker == node_id)

    def submit(self, tasks: list[Task], now: float) -> int:
        """Queue tasks; known (pending/assigned/finished) ids are ignored. Returns #new."""
        added = 0
        for t in tasks:
            if t.task_id != task_id_for(t.job_id, t.item_id):
                raise SchedulerError(f"task id {t.task_id!r} != '{t.job_id}:{t.item_id}'")
            if t.task_id in self._tasks or t.task_id in self._finished:
                continue
            task = replace(t, assigned_to=None, assigned_at=None)
            self._tasks[task.task_id] = task
            self._push(task, front=False)
            added += 1
        return added

    def complete(self, task_id: str, worker: str, now: float) -> bool:
        """Mark a task done (from any worker, late results included). False if not live."""
        task = self._tasks.pop(task_id, None)
        if task is None:
            return False
        if task.assigned_to is not None:
            self._unassign(task)
        else:
            self._unqueue(task)
        self._finish(task_id, "done")
        return True

    def fail(self, task_id: str, worker: str, error: str, now: float) -> bool:
        """A worker failed a task: retry elsewhere, or report it failed after max_attempts.

        Ignored (False) unless the task is currently assigned to `worker` (a stale
        failure from a timed-out assignment must not disturb the new one).
        """
        task = self._tasks.get(task_id)
        if task is None or task.assigned_to != worker:
            return False
        self._requeue(task, str(error), worker)
        return True

    def cancel_job(self, job_id: str) -> int:
        """Drop every live task of a job (late results are then ignored). Returns #dropped."""
        tids = [tid for tid, t in self._tasks.items() if t.job_id == job_id]
        for tid in tids:
            task = self._tasks.pop(tid)
            if task.assigned_to is not None:
                self._unassign(task)
            self._finish(tid, "cancelled")
        self._pending.pop(job_id, None)
        if job_id in self._jobs_rr:
            self._jobs_rr.remove(job_id)
        return len(tids)

    def drop_submitter(self, node_id: str) -> int:
        """Cancel every job of a submitter that went away (it resubmits when back)."""
        jobs = {t.job_id for t in self._tasks.values() if t.submitter == node_id}
        return sum(self.cancel_job(j) for j in jobs)

    def forget_job(self, job_id: str) -> None:
        """Drop the finished-task records of a job (memory bound on long-lived masters)."""
        self.cancel_job(job_id)
        for tid in [tid for tid in self._finished if split_task_id(tid)[0] == job_id]:
            del self._finished[tid]

    def reopen(self, task_id: str) -> bool:
        """Forget that a task finished as done or failed, so that the next `submit` queues it again
        (its submitter never received the outcome). Cancelled tasks stay cancelled. Returns True if
        the task was reopened."""
        if self._finished.get(task_id) not in ("done", "failed"):
            return False
        del self._finished[task_id]
        return True

    def status(self, task_id: str) -> str | None:
        """pending | assigned | done | failed | cancelled | None (unknown)."""
        task = self._tasks.get(task_id)
        if task is not None:
            return "pending" if task.assigned_to is None else "assigned"
        return self._finished.get(task_id)

    def inflight_of(self, node_id: str) -> list[str]:
        """Task ids currently assigned to a worker."""
        return [tid for b in self._batches.values() if b.worker == node_id for tid in b.task_ids]

    def assign(self, now: float) -> list[Assignment]:
        """Expire slow assignments, then hand pending tasks to workers with free slots.

        Rounds: in each round every worker with free slots (most free first, ties
        rotated between calls) gets one batch from the next job in round-robin order,
        so work spreads proportionally to free capacity and concurrent jobs interleave.
        """
        self._expire(now)
        alive = frozenset(self._workers)
        free = {w: self.free_slots(w) for w in alive}
        free = {w: n for w, n in free.items() if n > 0}
        if not free or not self._jobs_rr:
            return []
        self._rr += 1
        names = sorted(free)
        rank = {w: (i - self._rr) % len(names) for i, w in enumerate(names)}
        out: list[Assignment] = []
        while self._jobs_rr:
            order = sorted((w for w, n in free.items() if n > 0), key=lambda w: (-free[w], rank[w]))
            if not order:
                break
            for w in order:
                tasks = self._next_batch_for(w, alive)
                if not tasks:
                    free[w] = 0          # nothing eligible for this worker now
                    continue
                free[w] -= 1
                out.append(self._record(w, tasks, now))
        return out

    def _next_batch_for(self, worker: str, alive: frozenset[str]) -> list[Task]:
        for _ in range(len(self._jobs_rr)):
            job_id = self._jobs_rr[0]
            self._jobs_rr.rotate(-1)     # this job goes to the back: round-robin
            tasks = self._take_batch(job_id, worker, alive)
            if tasks:
                if not self._pending[job_id]:
                    del self._pending[job_id]
                    self._jobs_rr.remove(job_id)
                return tasks
        return []

    def _take_batch(self, job_id: str, worker: str, alive: frozenset[str]) -> list[Task]:
        """Consecutive eligible tasks of one job and kind, sizes summing <= batch_bytes."""
        dq = self._pending[job_id]
        picked: list[int] = []
        tasks: list[Task] = []
        total = 0
        for i, tid in enumerate(dq):
            task = self._tasks[tid]
            avoid = self._avoid.get(tid)
            if avoid and worker in avoid and not alive <= avoid:
                continue                 # retry elsewhere while another worker exists
            if tasks and (task.kind != tasks[0].kind or len(tasks) >= self.max_batch
                          or total + task.size_bytes > self.batch_bytes):
                break
            picked.append(i)
            tasks.append(task)
            total += task.size_bytes
            if total > self.batch_bytes:
                break                    # a big item travels alone
        for i in reversed(picked):
            del dq[i]
        return tasks

    def _record(self, worker: str, tasks: list[Task], now: float) -> Assignment:
        bid = self._next_batch
        self._next_batch += 1
        self._batches[bid] = _Batch(worker, now, [t.task_id for t in tasks])
        for t in tasks:
            t.assigned_to, t.assigned_at = worker, now
            self._batch_of[t.task_id] = bid
        return Assignment(worker, [replace(t) for t in tasks], bid)

    def _expire(self, now: float) -> None:
        late = [b for b, batch in self._batches.items()
                if batch.assigned_at + self.task_timeout < now]
        for bid in sorted(late, reverse=True):
            batch = self._batches[bid]
            for tid in reversed(list(batch.task_ids)):
                self._requeue(self._tasks[tid], f"timeout on worker {batch.worker}", batch.worker)

    def _push(self, task: Task, front: bool) -> None:
        dq = self._pending.get(task.job_id)
        if dq is None:
            dq = self._pending[task.job_id] = deque()
            (self._jobs_rr.appendleft if front else self._jobs_rr.append)(task.job_id)
        (dq.appendleft if front else dq.append)(task.task_id)

    def _unqueue(self, task: Task) -> None:
        dq = self._pending.get(task.job_id)
        if dq is not None and task.task_id in dq:
            dq.remove(task.task_id)
            if not dq:
                del self._pending[task.job_id]
                self._jobs_rr.remove(task.job_id)

    def _unassign(self, task: Task) -> None:
        bid = self._batch_of.pop(task.task_id, -1)
        batch = self._batches.get(bid)
        if batch is not None:
            batch.task_ids.remove(task.task_id)
            if not batch.task_ids:
                del self._batches[bid]
        task.assigned_to = task.assigned_at = None

    def _requeue(self, task: Task, reason: str, worker: str | None) -> None:
        self._unassign(task)
        task.attempts += 1
        if worker:
            self._avoid.setdefault(task.task_id, set()).add(worker)
        if task.attempts >= self.max_attempts:
            del self._tasks[task.task_id]
            self._unqueue(task)
            self._finish(task.task_id, "failed")
            self._events.append(("failed", task.task_id, reason))
            return
        self._events.append(("retry", task.task_id, reason))
        self._push(task, front=True)

    def _finish(self, task_id: str, how: str) -> None:
        self._finished[task_id] = how
        self._avoid.pop(task_id, None)

    def take_events(self) -> list[tuple[str, str, str]]:
        """Drain ``("failed", task_id, error)`` / ``("retry", task_id, reason)`` events."""
        events, self._events = self._events, []
        return events

    def stats(self) -> dict:
        """Counts: pending, inflight tasks per worker, done, failed, cancelled, free slots."""
        inflight: dict[str, int] = {w: 0 for w in self._workers}
        for batch in self._batches.values():
            inflight[batch.worker] = inflight.get(batch.worker, 0) + len(batch.task_ids)
        fin = list(self._finished.values())
        return {"pending": sum(len(dq) for dq in self._pending.values()), "inflight": inflight,
                **{k: fin.count(k) for k in ("done", "failed", "cancelled")},
                "jobs": len({t.job_id for t in self._tasks.values()}),
                "free": {w: self.free_slots(w) for w in self._workers}}
