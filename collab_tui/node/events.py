"""The runtime's event stream: what the CLI (`--watch`, `logs -f`) and the TUI subscribe to.

Each subscriber has a bounded queue; when a slow reader falls behind, the oldest events are dropped
and a single ``{"kind": "dropped", "count": n}`` marker tells it so (the UI then refreshes in full).
"""

from __future__ import annotations

import asyncio
import time


class Subscription:
    def __init__(self, bus: EventBus, kinds: set[str] | None, maxsize: int) -> None:
        self.bus = bus
        self.kinds = kinds
        self.queue: asyncio.Queue[dict] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, event: dict) -> None:
        if self.kinds is not None and event["kind"] not in self.kinds:
            return
        if self.queue.full():
            try:
                self.queue.get_nowait()
            except asyncio.QueueEmpty:  # pragma: no cover
                pass
            self.dropped += 1
        self.queue.put_nowait(event)

    async def get(self, timeout: float | None = None) -> dict:
        event = await asyncio.wait_for(self.queue.get(), timeout)
        if self.dropped:
            n, self.dropped = self.dropped, 0
            return {"kind": "dropped", "count": n, "ts": time.time()}
        return event

    def close(self) -> None:
        self.bus.subscribers.discard(self)


class EventBus:
    def __init__(self, history: int = 200) -> None:
        self.subscribers: set[Subscription] = set()
        self.history: list[dict] = []
        self.history_size = history

    def publish(self, kind: str, **data) -> dict:
        event = {"kind": kind, "ts": time.time(), **data}
        self.history.append(event)
        if len(self.history) > self.history_size:
            del self.history[: len(self.history) - self.history_size]
        for sub in list(self.subscribers):
            sub.offer(event)
        return event

    def subscribe(self, kinds: set[str] | None = None, maxsize: int = 1000) -> Subscription:
        sub = Subscription(self, kinds, maxsize)
        self.subscribers.add(sub)
        return sub


async def each_event(sub: Subscription, step, what: str, idle: float = 1.0) -> None:
    """Call ``await step(event)`` for each event of `sub`, and ``step(None)`` after `idle` seconds without
    one, forever; a step that raises is logged (``what`` names the loop) and the loop goes on."""
    import logging

    while True:
        try:
            try:
                ev = await sub.get(timeout=idle)
            except TimeoutError:
                ev = None
            await step(ev)
        except asyncio.CancelledError:
            raise
        except Exception:
            logging.getLogger("collab").exception("%s error", what)
