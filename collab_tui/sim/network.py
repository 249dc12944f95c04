"""The simulator's seeded network: per-message delay and jitter, loss, duplication (reordering follows from
the jitter), partitions as blocked directed links (a split or one way), and slow nodes. Sans-IO: it only
decides, from its own `random.Random`, what happens to each message. The services' messages (jobs, runs)
travel as on TCP instead (`stream`): in order, never lost nor duplicated, held while the link is cut."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Network:
    rng: random.Random
    delay: float = 0.0005  # seconds, one way, on a LAN
    jitter: float = 0.0005  # uniform extra delay: messages overtake each other
    loss: float = 0.0
    duplicate: float = 0.0
    blocked: set[tuple[str, str]] = field(default_factory=set)  # (src, dst) links that carry nothing
    slow: dict[str, float] = field(default_factory=dict)  # node -> extra delay of everything it sends or gets
    _last: dict[tuple[str, str], float] = field(default_factory=dict)  # link -> when its last in-order copy lands

    def link(self, src: str, dst: str) -> bool:
        return (src, dst) not in self.blocked

    def both_ways(self, a: str, b: str) -> bool:
        return self.link(a, b) and self.link(b, a)

    def partition(self, side: list[str], others: list[str], one_way: bool = False) -> None:
        """Cut the links from ``side`` to ``others`` (and back, unless ``one_way``)."""
        for a in side:
            for b in others:
                self.blocked.add((a, b))
                if not one_way:
                    self.blocked.add((b, a))

    def heal(self) -> None:
        self.blocked.clear()

    def transit(self, src: str, dst: str) -> list[float]:
        """The delays after which copies of one message from ``src`` arrive at ``dst`` (none: lost)."""
        if not self.link(src, dst) or (self.loss and self.rng.random() < self.loss):
            return []
        base = self.delay + self.slow.get(src, 0.0) + self.slow.get(dst, 0.0)
        copies = 2 if self.duplicate and self.rng.random() < self.duplicate else 1
        return [base + self.rng.random() * self.jitter for _ in range(copies)]

    def stream(self, src: str, dst: str, now: float) -> float | None:
        """When a message on an open TCP connection reaches ``dst`` (it is neither lost nor duplicated, and
        arrives after the ones sent before it on that link), or None while the link is cut: the sender's
        kernel retransmits it until the link heals or the connection is closed (`SimCluster`)."""
        if not self.link(src, dst):
            return None
        base = self.delay + self.slow.get(src, 0.0) + self.slow.get(dst, 0.0) + self.rng.random() * self.jitter
        at = max(now + base, self._last.get((src, dst), 0.0) + 1e-6)
        self._last[(src, dst)] = at
        return at
