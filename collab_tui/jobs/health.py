"""Sans-IO health of this node as a worker: which task kinds it keeps failing (clock passed in).

Fed by the worker with its *infrastructure* failures only: a job type that raises something other than a
per-item error (a broken library, a missing tool), or a type unknown on this node. Not with fetch failures
(the submitter is unreachable: not this node's fault) nor with per-item final errors (a corrupt image:
the type works, the input is bad).

Rules, per task kind: ``threshold`` (3) consecutive failures make the kind unhealthy, with the last
reason; one success of that kind clears it. `unhealthy()` is what the node reports in its heartbeats and
its status (``{kind: reason}``).

Logging is bounded: the events returned (frozen dataclasses, below) tell the driver what to log, never
one line per failed task: `KindUnhealthy` once on the transition, `KindRecovered` once when it clears,
and `FailuresSummary` at most once per ``summary_every`` seconds per kind with the number of failures
since the previous line (the first failure of a quiet kind is reported at once, with count 1).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FailuresSummary", "HealthEvent", "KindRecovered", "KindUnhealthy", "WorkerHealth"]

THRESHOLD = 3
SUMMARY_EVERY = 30.0


@dataclass(frozen=True, slots=True)
class KindUnhealthy:
    """``kind`` failed ``consecutive`` times in a row (the threshold): this node is unhealthy for it."""

    kind: str
    reason: str
    consecutive: int


@dataclass(frozen=True, slots=True)
class KindRecovered:
    """A task of ``kind`` ran fine again, after ``failures`` failures since it turned unhealthy."""

    kind: str
    failures: int


@dataclass(frozen=True, slots=True)
class FailuresSummary:
    """``count`` failures of ``kind`` since the previous line (``reason``: the last one's)."""

    kind: str
    count: int
    reason: str


HealthEvent = KindUnhealthy | KindRecovered | FailuresSummary


@dataclass
class _Kind:
    consecutive: int = 0
    reason: str = ""
    unhealthy: bool = False
    unlogged: int = 0  # failures not yet in a log line
    logged_at: float = float("-inf")
    failures_while_unhealthy: int = 0


class WorkerHealth:
    def __init__(self, threshold: int = THRESHOLD, summary_every: float = SUMMARY_EVERY) -> None:
        if threshold < 1 or summary_every <= 0:
            raise ValueError("threshold must be >= 1 and summary_every > 0")
        self.threshold = threshold
        self.summary_every = float(summary_every)
        self._kinds: dict[str, _Kind] = {}

    def failure(self, kind: str, reason: str, now: float) -> list[HealthEvent]:
        """An infrastructure failure of a task of ``kind`` on this node."""
        k = self._kinds.setdefault(kind, _Kind())
        k.consecutive += 1
        k.reason = str(reason) or "failed"
        k.unlogged += 1
        if k.unhealthy:
            k.failures_while_unhealthy += 1
        if not k.unhealthy and k.consecutive >= self.threshold:
            k.unhealthy = True
            k.failures_while_unhealthy = k.consecutive
            k.unlogged, k.logged_at = 0, now
            return [KindUnhealthy(kind, k.reason, k.consecutive)]
        return self._summary(kind, k, now)

    def success(self, kind: str, now: float) -> list[HealthEvent]:
        """A task of ``kind`` ran fine here: the kind is healthy again. (Failures not logged yet are still
        summarised by `tick`, so that a kind that fails every other task still gets one line per interval.)"""
        k = self._kinds.get(kind)
        if k is None:
            return []
        out: list[HealthEvent] = []
        if k.unhealthy:  # the recovery line counts the failures since the transition
            out.append(KindRecovered(kind, k.failures_while_unhealthy))
            k.unlogged, k.logged_at = 0, now
        k.consecutive, k.unhealthy, k.failures_while_unhealthy = 0, False, 0
        if not k.unlogged and now - k.logged_at >= self.summary_every:
            del self._kinds[kind]  # nothing left to say about it
        return out

    def tick(self, now: float) -> list[HealthEvent]:
        """Summary lines that are due (failures counted since the last line, interval elapsed)."""
        out: list[HealthEvent] = []
        for kind, k in self._kinds.items():
            out += self._summary(kind, k, now)
        return out

    def _summary(self, kind: str, k: _Kind, now: float) -> list[HealthEvent]:
        if not k.unlogged or now - k.logged_at < self.summary_every:
            return []
        n, k.unlogged, k.logged_at = k.unlogged, 0, now
        return [FailuresSummary(kind, n, k.reason)]

    def unhealthy(self) -> dict[str, str]:
        """``{kind: last reason}`` of the kinds this node is failing now."""
        return {kind: k.reason for kind, k in self._kinds.items() if k.unhealthy}

    def consecutive(self, kind: str) -> int:
        k = self._kinds.get(kind)
        return k.consecutive if k else 0
