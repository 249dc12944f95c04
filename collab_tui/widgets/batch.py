"""Coalescing for floods of live updates: a worker adds items, the owner drains them in batches.

The worker posts one `BatchReady` when its buffer turns non-empty (a queued one is replaced by a newer
one, toolong-style `can_replace`); the owner's handler drains the buffer at most every ``every`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from textual.message import Message
from textual.message_pump import MessagePump


@dataclass
class BatchReady(Message, bubble=False):
    batcher: Batcher

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, BatchReady) and message.batcher is self.batcher


class Batcher:
    def __init__(self, owner: MessagePump, flush: Callable[[list], None], every: float = 0.1) -> None:
        self.owner = owner
        self.flush = flush
        self.every = every
        self.items: list = []
        self._last = 0.0
        self._scheduled = False

    def add(self, item) -> None:
        """From a worker: buffer one item (posts at most one message per non-empty buffer)."""
        self.items.append(item)
        if len(self.items) == 1:
            self.owner.post_message(BatchReady(self))

    def ready(self) -> None:
        """From the owner's `on_batch_ready`: drain now, or as soon as the rate limit allows."""
        if self._scheduled:
            return
        self._scheduled = True
        delay = self._last + self.every - time.monotonic()
        if delay > 0.001:
            self.owner.set_timer(delay, self._drain)
        else:
            self.owner.call_later(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        self._last = time.monotonic()
        items, self.items = self.items, []
        if items:
            self.flush(items)
