"""Sans-IO scheduler of distributed job tasks (runs on the master).

Inputs in, outputs out, clock (`now`, monotonic seconds) passed in: no IO, no sleeps.
The submitter owns its job durably; the master only keeps this in-memory view and a
new master rebuilds it from the submitters' resubmissions (`submit` is idempotent).

Model:
- A *task* is one item of one job, id ``f"{job_id}:{item_id}"``.
- An *assignment* is a batch of tasks sent to one worker at once; it occupies ONE
  in-flight slot of that worker (small items are batched, big ones go alone).
- ``attempts`` counts failed tries (worker error, worker death, timeout); a task whose
  attempts reach ``max_attempts`` is reported as ``TaskFailed(task_id, error)``.
- Events from `take_events` (frozen dataclasses declared in `scheduler_events.py`, re-exported here):
  ``TaskFailed(task_id, error)`` and ``TaskRetried(task_id, reason)`` (task requeued after an error,
  a death or a timeout), ``WorkerBenched(worker, kind, reason, seconds, probes_failed)`` and
  ``WorkerUnbenched(worker, kind, why)`` (see below).

Benching (a worker that keeps failing one kind of task stops getting it):
- Per (worker, kind), the scheduler counts consecutive failures: `fail` (unless the worker says the
  failure was not its fault, ``health=False``: the bytes could not be fetched, the result could not be
  delivered) and timeouts. A worker's death is not a failure of the kind.
- After ``bench_after`` (3) in a row the worker is *benched* for that kind for ``bench_for`` (10 s): it gets
  no task of that kind; they stay pending for the other workers (and the other kinds still go to it).
  A worker whose own heartbeat reports the kind unhealthy (`report_health`) is benched the same way.
- When the pause ends, the worker gets ONE *probe*: a batch of a single task of that kind. A success
  (of any task of that kind by that worker, late results included) clears the bench; a failed or timed
  out probe benches it again for twice as long (capped at ``bench_max``, 120 s).
- If EVERY live worker is benched for a kind and each of them has failed its probe too (that is, the kind
  fails everywhere, again after a pause), the pending tasks of that kind fail at once with a clear error
  (``no live worker can run KIND tasks ...``) instead of waiting forever: a cluster without tesseract
  answers an OCR job in seconds. Until then (a worker is still to be probed, or none is alive) they wait,
  so that a short outage of every worker loses nothing.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from .scheduler_events import SchedulerEvent, TaskFailed, TaskRetried, WorkerBenched, WorkerUnbenched

__all__ = [
    "SchedulerError",
    "Scheduler",
    "Task",
    "Assignment",
    "WorkerCapacity",
    "slots",
    "task_id_for",
    "split_task_id",
    "SchedulerEvent",
    "TaskFailed",
    "TaskRetried",
    "WorkerBenched",
    "WorkerUnbenched",
]


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
    def make(cls, job_id: str, item_id: str, submitter: str, kind: str, size_bytes: int = 0) -> Task:
        return cls(task_id_for(job_id, item_id), job_id, str(item_id), submitter, kind, size_bytes)


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
class _Bench:
    """Health of one worker for one task kind, as the master sees it."""

    failures: int = 0  # consecutive failures (fail path, timeouts)
    reason: str = ""  # the last one
    until: float | None = None  # benched until then (monotonic); None: not benched
    backoff: float = 0.0  # length of the current bench
    probe: str | None = None  # task id of the probe in flight
    probes_failed: int = 0
    reported: bool = False  # the worker's own last report says the kind is unhealthy

    def idle(self) -> bool:
        return self.failures == 0 and self.until is None and not self.reported


@dataclass
class _Batch:
    worker: str
    assigned_at: float
    task_ids: list[str] = field(default_factory=list)


class Scheduler:
    """Spreads tasks over workers by free capacity; see the module docstring."""

    def __init__(
        self,
        inflight_per_worker: int = 4,
        task_timeout: float = 30.0,
        batch_bytes: int = 256 * 1024,
        max_batch: int = 16,
        max_attempts: int = 5,
        per_cpu: int = 1,
        min_inflight: int = 1,
        bench_after: int = 3,
        bench_for: float = 10.0,
        bench_max: float = 120.0,
    ) -> None:
        if (
            min(inflight_per_worker, max_batch, max_attempts, per_cpu, min_inflight, bench_after) < 1
            or task_timeout <= 0
            or bench_for <= 0
            or bench_max < bench_for
        ):
            raise SchedulerError("counts must be >= 1, task_timeout and bench_for > 0, bench_max >= bench_for")
        self.bench_after = bench_after
        self.bench_for = float(bench_for)
        self.bench_max = float(bench_max)
        self.inflight_per_worker = inflight_per_worker
        self.min_inflight = min_inflight
        self.task_timeout = float(task_timeout)
        self.batch_bytes = int(batch_bytes)
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.per_cpu = per_cpu
        self._workers: dict[str, WorkerCapacity] = {}
        self._own_at_report: dict[str, int] = {}  # our assignments when it reported
        self._tasks: dict[str, Task] = {}  # live tasks: pending or assigned
        self._pending: dict[str, deque[str]] = {}  # job_id -> task ids, in order
        self._jobs_rr: deque[str] = deque()  # jobs with pending tasks, round-robin
        self._batches: dict[int, _Batch] = {}
        self._batch_of: dict[str, int] = {}
        self._finished: dict[str, str] = {}  # task_id -> done | failed | cancelled
        # task_id -> workers that held it and lost it (failed it, timed out, died): retried elsewhere, and
        # the only ones besides its current worker whose `complete` counts
        self._avoid: dict[str, set[str]] = {}
        self._failed_attempts: dict[str, int] = {}  # task_id -> its attempts, for tasks given up
        self._kinds: dict[str, set[str]] = {}  # job_id -> kinds of its pending tasks
        self._health: dict[tuple[str, str], _Bench] = {}  # (worker, kind) -> failures, bench
        self._events: list[SchedulerEvent] = []
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
            self._requeue(self._tasks[tid], f"worker {node_id} died", node_id, now, health=False)

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
        """Mark a task done by ``worker``, which holds it or held it before (a late result from an
        assignment that timed out, or from a worker thought dead, wins). False (ignored) if the task is not
        live, or was never assigned to ``worker``: nobody completes another worker's task."""
        task = self._tasks.get(task_id)
        if task is None or (task.assigned_to != worker and worker not in self._avoid.get(task_id, ())):
            return False
        del self._tasks[task_id]
        if task.assigned_to is not None:
            self._unassign(task)
        else:
            self._unqueue(task)
        self._finish(task_id, "done")
        self._succeeded(worker, task.kind)
        return True

    def fail(self, task_id: str, worker: str, error: str, now: float, health: bool = True) -> bool:
        """A worker failed a task: retry elsewhere, or report it failed after max_attempts.

        ``health=False``: not the worker's fault (it could not fetch the bytes, or deliver the
        result): retried all the same, but not counted towards benching the worker.
        Ignored (False) unless the task is currently assigned to `worker` (a stale
        failure from a timed-out assignment must not disturb the new one).
        """
        task = self._tasks.get(task_id)
        if task is None or task.assigned_to != worker:
            return False
        self._requeue(task, str(error), worker, now, health=health)
        return True

    # ------------------------------------------------------------- health, benching
    def report_health(self, worker: str, unhealthy: dict[str, str], now: float) -> None:
        """The worker's own report (``{kind: reason}`` from its heartbeat). A kind that turns unhealthy in
        the report benches the worker for it (once per report change: a stale report that still lists a
        kind after a probe succeeded does not bench it again)."""
        items = list(unhealthy.items())[:32] if isinstance(unhealthy, dict) else []  # a peer's report: bounded
        bad = {str(k)[:64]: str(v)[:300] for k, v in items}
        for (w, kind), h in list(self._health.items()):
            if w == worker and h.reported and kind not in bad:
                h.reported = False
                if h.idle():
                    del self._health[(w, kind)]
        for kind, reason in bad.items():
            h = self._health.setdefault((worker, kind), _Bench())
            if h.reported:
                continue
            h.reported = True
            if h.until is None:
                h.reason = f"the worker reports it: {reason}"
                self._bench(worker, kind, h, now)

    def benched(self, worker: str) -> dict[str, str]:
        """``{kind: reason}`` of the kinds a worker is benched for now (probe due or in flight included)."""
        return {kind: h.reason for (w, kind), h in self._health.items() if w == worker and h.until is not None}

    def _state(self, worker: str, kind: str) -> _Bench:
        return self._health.setdefault((worker, kind), _Bench())

    def _bench(self, worker: str, kind: str, h: _Bench, now: float) -> None:
        h.backoff = self.bench_for if h.until is None else min(self.bench_max, h.backoff * 2)
        h.until = now + h.backoff
        self._events.append(WorkerBenched(worker, kind, h.reason, h.backoff, h.probes_failed))

    def _failed(self, worker: str, kind: str, reason: str, was_probe: bool, now: float) -> None:
        h = self._state(worker, kind)
        h.failures += 1
        h.reason = reason
        if h.until is None:
            if h.failures >= self.bench_after:
                self._bench(worker, kind, h, now)
        elif was_probe:
            h.probes_failed += 1
            self._bench(worker, kind, h, now)
        # else: a failure of an assignment made before the bench: it changes nothing

    def _succeeded(self, worker: str, kind: str) -> None:
        h = self._health.get((worker, kind))
        if h is None:
            return
        if h.until is not None:
            self._events.append(WorkerUnbenched(worker, kind, "a task succeeded"))
        self._health[(worker, kind)] = fresh = _Bench(reported=h.reported)
        if fresh.idle():
            del self._health[(worker, kind)]

    def _allowance(self, worker: str, kind: str, now: float) -> str | None:
        """ "ok", "probe" (one task, the bench is over) or None (benched, or its probe is out)."""
        h = self._health.get((worker, kind))
        if h is None or h.until is None:
            return "ok"
        if h.probe is not None or now < h.until:
            return None
        return "probe"

    def _given_up(self, worker: str, kind: str, now: float) -> bool:
        h = self._health.get((worker, kind))
        return h is not None and h.until is not None and h.probe is None and h.probes_failed >= 1 and now < h.until

    def _fail_unrunnable(self, alive: frozenset[str], now: float) -> None:
        """Pending tasks of a kind that every live worker keeps failing, even after a pause, fail now."""
        if not alive or not self._pending:
            return
        kinds = set().union(*(self._kinds.get(j, ()) for j in self._pending))
        for kind in sorted(kinds):
            if not all(self._given_up(w, kind, now) for w in alive):
                continue
            why = "; ".join(f"{w[:12]}: {self._health[(w, kind)].reason[:200]}" for w in sorted(alive))
            error = f"no live worker can run {kind} tasks (each one keeps failing them, even after a pause; {why})"
            for job_id in list(self._pending):
                for tid in [t for t in self._pending[job_id] if self._tasks[t].kind == kind]:
                    task = self._tasks.pop(tid)
                    self._unqueue(task)
                    self._finish(tid, "failed", task.attempts)
                    self._events.append(TaskFailed(tid, error))

    def cancel_job(self, job_id: str) -> int:
        """Drop every live task of a job (late results are then ignored). Returns #dropped."""
        tids = [tid for tid, t in self._tasks.items() if t.job_id == job_id]
        for tid in tids:
            task = self._tasks.pop(tid)
            if task.assigned_to is not None:
                self._unassign(task)
            self._finish(tid, "cancelled")
        self._pending.pop(job_id, None)
        self._kinds.pop(job_id, None)
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
            self._failed_attempts.pop(tid, None)

    def reopen(self, task_id: str) -> bool:
        """Forget that a task finished as done or failed, so that the next `submit` queues it again
        (its submitter never received the outcome). Cancelled tasks stay cancelled. Returns True if
        the task was reopened."""
        if self._finished.get(task_id) not in ("done", "failed"):
            return False
        del self._finished[task_id]
        self._failed_attempts.pop(task_id, None)
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
        self._fail_unrunnable(alive, now)
        free = {w: self.free_slots(w) for w in alive}
        free = {w: n for w, n in free.items() if n > 0}
        if not free or not self._jobs_rr:
            return []
        self._rr += 1
        names = sorted(free)
        rank = {w: (i - self._rr) % len(names) for i, w in enumerate(names)}
        out: list[Assignment] = []
        able: dict[str, frozenset[str]] = {}  # kind -> live workers not benched for it (this call)
        while self._jobs_rr:
            order = sorted((w for w, n in free.items() if n > 0), key=lambda w: (-free[w], rank[w]))
            if not order:
                break
            for w in order:
                tasks = self._next_batch_for(w, alive, now, able)
                if not tasks:
                    free[w] = 0  # nothing eligible for this worker now
                    continue
                free[w] -= 1
                out.append(self._record(w, tasks, now))
        return out

    def _next_batch_for(
        self, worker: str, alive: frozenset[str], now: float, able: dict[str, frozenset[str]]
    ) -> list[Task]:
        for _ in range(len(self._jobs_rr)):
            job_id = self._jobs_rr[0]
            self._jobs_rr.rotate(-1)  # this job goes to the back: round-robin
            kinds = self._kinds.get(job_id)
            if kinds and all(self._allowance(worker, k, now) is None for k in kinds):
                continue  # benched for everything this job has: no need to look at its tasks
            tasks = self._take_batch(job_id, worker, alive, now, able)
            if tasks:
                if not self._pending[job_id]:
                    del self._pending[job_id]
                    self._kinds.pop(job_id, None)
                    self._jobs_rr.remove(job_id)
                return tasks
        return []

    def _able(self, kind: str, alive: frozenset[str], now: float, able: dict[str, frozenset[str]]) -> frozenset[str]:
        if kind not in able:
            able[kind] = frozenset(w for w in alive if self._allowance(w, kind, now) is not None)
        return able[kind]

    def _take_batch(
        self, job_id: str, worker: str, alive: frozenset[str], now: float, able: dict[str, frozenset[str]]
    ) -> list[Task]:
        """Consecutive eligible tasks of one job and kind, sizes summing <= batch_bytes (a probe: one task)."""
        dq = self._pending[job_id]
        picked: list[int] = []
        tasks: list[Task] = []
        total = 0
        allowed: dict[str, str | None] = {}
        for i, tid in enumerate(dq):
            task = self._tasks[tid]
            if task.kind not in allowed:
                allowed[task.kind] = self._allowance(worker, task.kind, now)
            if allowed[task.kind] is None:
                continue  # benched for this kind: left for the other workers
            avoid = self._avoid.get(tid)
            if avoid and worker in avoid and not self._able(task.kind, alive, now, able) <= avoid:
                continue  # retry elsewhere while another (unbenched) worker exists
            if tasks and (
                task.kind != tasks[0].kind or len(tasks) >= self.max_batch or total + task.size_bytes > self.batch_bytes
            ):
                break
            picked.append(i)
            tasks.append(task)
            total += task.size_bytes
            if total > self.batch_bytes or allowed[task.kind] == "probe":
                break  # a big item travels alone, and so does a probe
        for i in reversed(picked):
            del dq[i]
        if tasks and allowed[tasks[0].kind] == "probe":
            self._health[(worker, tasks[0].kind)].probe = tasks[0].task_id
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
        late = [b for b, batch in self._batches.items() if batch.assigned_at + self.task_timeout < now]
        for bid in sorted(late, reverse=True):
            batch = self._batches[bid]
            for tid in reversed(list(batch.task_ids)):
                self._requeue(self._tasks[tid], f"timeout on worker {batch.worker}", batch.worker, now)

    def _push(self, task: Task, front: bool) -> None:
        dq = self._pending.get(task.job_id)
        if dq is None:
            dq = self._pending[task.job_id] = deque()
            (self._jobs_rr.appendleft if front else self._jobs_rr.append)(task.job_id)
        (dq.appendleft if front else dq.append)(task.task_id)
        self._kinds.setdefault(task.job_id, set()).add(task.kind)

    def _unqueue(self, task: Task) -> None:
        dq = self._pending.get(task.job_id)
        if dq is not None and task.task_id in dq:
            dq.remove(task.task_id)
            if not dq:
                del self._pending[task.job_id]
                self._kinds.pop(task.job_id, None)
                self._jobs_rr.remove(task.job_id)

    def _unassign(self, task: Task) -> bool:
        """Take a task off its worker; True if it was that worker's probe for its kind."""
        was_probe = False
        h = self._health.get((task.assigned_to, task.kind)) if task.assigned_to else None
        if h is not None and h.probe == task.task_id:
            h.probe, was_probe = None, True
        bid = self._batch_of.pop(task.task_id, -1)
        batch = self._batches.get(bid)
        if batch is not None:
            batch.task_ids.remove(task.task_id)
            if not batch.task_ids:
                del self._batches[bid]
        task.assigned_to = task.assigned_at = None
        return was_probe

    def _requeue(self, task: Task, reason: str, worker: str | None, now: float, health: bool = True) -> None:
        was_probe = self._unassign(task)
        task.attempts += 1
        if worker:
            self._avoid.setdefault(task.task_id, set()).add(worker)
            if health:
                self._failed(worker, task.kind, reason, was_probe, now)
        if task.attempts >= self.max_attempts:
            del self._tasks[task.task_id]
            self._unqueue(task)
            self._finish(task.task_id, "failed", task.attempts)
            self._events.append(TaskFailed(task.task_id, reason))
            return
        self._events.append(TaskRetried(task.task_id, reason))
        self._push(task, front=True)

    def _finish(self, task_id: str, how: str, attempts: int = 0) -> None:
        self._finished[task_id] = how
        self._avoid.pop(task_id, None)
        if how == "failed":
            self._failed_attempts[task_id] = attempts

    def attempts_of(self, task_id: str) -> int:
        """Failed attempts of a task: live, or given up (0 if unknown)."""
        task = self._tasks.get(task_id)
        return task.attempts if task is not None else self._failed_attempts.get(task_id, 0)

    def take_events(self) -> list[SchedulerEvent]:
        """Drain ``TaskFailed(task_id, error)`` / ``TaskRetried(task_id, reason)`` /
        ``WorkerBenched(worker, kind, reason, seconds, probes_failed)`` / ``WorkerUnbenched(worker, kind, why)``."""
        events, self._events = self._events, []
        return events

    def stats(self) -> dict[str, Any]:
        """Counts: pending, inflight tasks per worker, done, failed, cancelled, free slots; ``benched``:
        ``{worker: {kind: {reason, seconds, probes_failed, probing}}}``."""
        inflight: dict[str, int] = {w: 0 for w in self._workers}
        for batch in self._batches.values():
            inflight[batch.worker] = inflight.get(batch.worker, 0) + len(batch.task_ids)
        fin = list(self._finished.values())
        return {
            "pending": sum(len(dq) for dq in self._pending.values()),
            "inflight": inflight,
            **{k: fin.count(k) for k in ("done", "failed", "cancelled")},
            "jobs": len({t.job_id for t in self._tasks.values()}),
            "free": {w: self.free_slots(w) for w in self._workers},
            "benched": self._bench_stats(),
        }

    def _bench_stats(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for (w, kind), h in sorted(self._health.items()):
            if h.until is not None:
                out.setdefault(w, {})[kind] = {
                    "reason": h.reason,
                    "seconds": h.backoff,
                    "probes_failed": h.probes_failed,
                    "probing": h.probe is not None,
                }
        return out
