"""Sans-IO parts of the cluster-wide logs (node/cluster_logs.py drives them): `wire_line` (a record, bounded,
as it travels), `merge` (by time), `fit` (the newest lines that fit a byte budget), `TokenBucket`,
`Limiters`, `Leases` (they expire on their own), `Forwarder` (a node's bounded, rate-limited outbox of new
lines: the log handler's listener only appends to a deque, never awaits anything) and `Reorder` (holds
lines briefly so that batches of several nodes come out merged by time). No sockets, no asyncio; the
clock is passed in where it matters.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from .log_messages import MAX_BATCH, MAX_MSG

Record = dict[str, Any]  # one log line: ts, node, seq, level, logger, msg

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
NODE_RATE, NODE_BURST, NODE_QUEUE = 50.0, 50.0, 250  # lines/s a node forwards; its queue of new lines
REORDER_DELAY, REORDER_MAX = 0.5, 4000  # seconds a line waits for earlier lines of other nodes; lines held
REPLY_BYTES = 1_500_000  # JSON bytes of one query / fetch answer (far below the 4 MiB frame)
MAX_FOLLOWERS = 64  # relay leases the master holds
MAX_LIMITERS = 512


def level_no(name: str | None) -> int:
    """The number of a level name (None or "" = everything); a custom level ("Level 5") counts as its number."""
    if not name:
        return 0
    value = LEVELS.get(str(name).upper())
    if value is not None:
        return value
    number = logging.getLevelName(str(name).upper())
    if isinstance(number, int):
        return number
    custom = str(name).split()
    if len(custom) == 2 and custom[0].lower() == "level" and custom[1].isdigit():
        return int(custom[1])  # how logging names a level it has no name for
    raise ValueError(f"unknown log level {str(name)[:20]!r} (one of {', '.join(LEVELS)})")


def level_name(name: str | None) -> str:
    """The wire level (one of `LEVELS`) at or below ``name``."""
    return level_name_of(level_no(name))


def level_name_of(floor: int) -> str:
    return max((k for k, v in LEVELS.items() if v <= floor), key=LEVELS.__getitem__, default="DEBUG")


def wire_line(item: Record, node: str = "") -> Record:
    """A record (a `RingHandler` record) as it travels: only the declared fields, each cut to its bound."""
    msg = str(item.get("msg", ""))
    if len(msg) > MAX_MSG:
        msg = msg[: MAX_MSG - 1] + "…"
    try:
        ts = min(max(float(item.get("ts", 0.0)), 0.0), 1e11)
    except (TypeError, ValueError):
        ts = 0.0
    seq = item.get("seq", 0)
    return {
        "ts": ts,
        "level": str(item.get("level", "INFO"))[:16],
        "logger": str(item.get("logger", ""))[:100],
        "node": str(node or item.get("node", ""))[:64],
        "msg": msg,
        "seq": seq if isinstance(seq, int) and 0 <= seq < 2**53 else 0,
    }


def marker(node: str, dropped: int, why: str = "over the rate limit", ts: float | None = None) -> Record:
    """The line that stands for ``dropped`` lines that were not sent."""
    return {
        "ts": time.time() if ts is None else ts,
        "level": "WARNING",
        "logger": "collab.logs",
        "node": node,
        "msg": f"{dropped} lines dropped ({why})",
        "seq": 0,
    }


def _key(rec: Record) -> tuple[Any, ...]:
    return (rec.get("ts", 0.0), rec.get("node", ""), rec.get("seq", 0))


def merge(groups: Iterable[Iterable[Record]]) -> list[Record]:
    """Every record of ``groups`` in one list, by time (then node, then sequence number)."""
    return sorted(itertools.chain.from_iterable(groups), key=_key)


def matches(rec: Record, floor: int = 0, node: str | None = None) -> bool:
    try:
        lv = level_no(rec.get("level"))
    except ValueError:
        lv = 0
    return lv >= floor and (not node or rec.get("node") == node)


def fit(records: list[Record], budget: int = REPLY_BYTES) -> list[Record]:
    """The newest of ``records`` (kept in order) whose JSON takes at most ``budget`` bytes."""
    out: list[Record] = []
    used = 0
    for rec in reversed(records):
        used += len(json.dumps(rec)) + 1
        if used > budget:
            break
        out.append(rec)
    out.reverse()
    return out


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, now

    def _fill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = max(self.at, now)

    def allow(self, now: float, cost: float = 1.0) -> bool:
        self._fill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def take(self, now: float, want: int) -> int:
        """As many of ``want`` as there are whole tokens (they are spent)."""
        self._fill(now)
        n = max(0, min(want, int(self.tokens)))
        self.tokens -= n
        return n


class Limiters:
    """A `TokenBucket` per peer, bounded (past ``max_keys`` the peers share one)."""

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_LIMITERS) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self.buckets: dict[str, TokenBucket] = {}

    def allow(self, key: str, now: float) -> bool:
        if key not in self.buckets and len(self.buckets) >= self.max_keys:
            key = "(other)"
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.allow(now)


class Leases:
    """Leases by key, each with a value, that lapse at their ``until`` unless renewed; at most ``max_keys``."""

    def __init__(self, max_keys: int = MAX_FOLLOWERS) -> None:
        self.max_keys = max_keys
        self._until: dict[Any, float] = {}
        self._value: dict[Any, Any] = {}

    def grant(self, key: Any, value: Any, now: float, lease: float) -> bool:
        self.expire(now)
        if key not in self._until and len(self._until) >= self.max_keys:
            return False
        self._until[key] = now + lease
        self._value[key] = value
        return True

    def drop(self, key: Any) -> None:
        self._until.pop(key, None)
        self._value.pop(key, None)

    def expire(self, now: float) -> list[Any]:
        gone = [k for k, until in self._until.items() if until <= now]
        for k in gone:
            self.drop(k)
        return gone

    def live(self, now: float) -> dict[Any, Any]:
        self.expire(now)
        return dict(self._value)

    def __bool__(self) -> bool:
        return bool(self._until)


class Forwarder:
    """A bounded outbox of lines, drained at ``rate`` lines/s in batches of at most `MAX_BATCH`. `push` only
    appends (safe from a log handler, from any thread); when the queue is full its oldest line is dropped and
    counted. ``floor``: lines below this level are not queued at all."""

    def __init__(
        self, rate: float = NODE_RATE, burst: float = NODE_BURST, capacity: int = NODE_QUEUE, now: float = 0.0
    ) -> None:
        self.queue: collections.deque[Record] = collections.deque(maxlen=capacity)
        self.bucket = TokenBucket(rate, burst, now)
        self.dropped = 0
        self.floor = 0

    def push(self, item: Record) -> None:
        if self.floor and level_no(item.get("level")) < self.floor:
            return
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(item)

    def take(self, now: float) -> tuple[list[Record], int]:
        """The lines to send now (oldest first) and how many were dropped since the last batch. Over the rate,
        a full queue drops its oldest lines: what is sent is late at most a queue's worth."""
        n = self.bucket.take(now, min(MAX_BATCH, len(self.queue)))
        out = [self.queue.popleft() for _ in range(n)]
        dropped, self.dropped = self.dropped, 0
        return out, dropped

    def clear(self) -> None:
        self.queue.clear()
        self.dropped = 0


class Reorder:
    """Lines of several nodes, released in time order: each waits ``delay`` s after its arrival for earlier
    lines of other nodes. At most ``capacity`` are held (the oldest are dropped and counted)."""

    def __init__(self, delay: float = REORDER_DELAY, capacity: int = REORDER_MAX) -> None:
        self.delay, self.capacity = delay, capacity
        self._heap: list[tuple[tuple[Any, ...], float, int, Record]] = []
        self._n = itertools.count()
        self.dropped = 0

    def add(self, lines: Iterable[Record], now: float) -> None:
        for rec in lines:
            heapq.heappush(self._heap, (_key(rec), now, next(self._n), rec))
        while len(self._heap) > self.capacity:
            heapq.heappop(self._heap)
            self.dropped += 1

    def take(self, now: float) -> list[Record]:
        out = []
        while self._heap and self._heap[0][1] + self.delay <= now:
            out.append(heapq.heappop(self._heap)[3])
        return out

    def __len__(self) -> int:
        return len(self._heap)
