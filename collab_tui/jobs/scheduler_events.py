"""Typed events of the sans-IO scheduler (:mod:`collab_tui.jobs.scheduler`), drained with
``Scheduler.take_events()``. Frozen, slotted, compared by value."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskFailed", "TaskRetried", "WorkerBenched", "WorkerUnbenched", "SchedulerEvent"]


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """A task was given up (``max_attempts`` reached, or no live worker can run its kind)."""

    task_id: str
    error: str


@dataclass(frozen=True, slots=True)
class TaskRetried:
    """A task was requeued after an error, a worker's death or a timeout."""

    task_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class WorkerBenched:
    """``worker`` gets no ``kind`` task for ``seconds``, then one probe; ``probes_failed`` > 0: a renewed bench."""

    worker: str
    kind: str
    reason: str
    seconds: float
    probes_failed: int


@dataclass(frozen=True, slots=True)
class WorkerUnbenched:
    """``worker`` is back in the pool for ``kind`` (``why``: what cleared the bench)."""

    worker: str
    kind: str
    why: str


SchedulerEvent = TaskFailed | TaskRetried | WorkerBenched | WorkerUnbenched
