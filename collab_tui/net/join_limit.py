"""A per-address limit on failed join attempts (sans-IO): a token bucket per source address.

Each address may fail ``burst`` joins in a row and then one every ``every`` seconds (a join that
succeeds costs nothing: a classroom behind one NAT address can join at once); while an address is
over its limit every join from it is refused before its token is looked at. The table keeps at
most ``max_addrs`` addresses (the least recently seen go first), so a flood from many addresses costs
bounded memory. A token's secret has 130 bits, so guessing is hopeless anyway; the limit keeps a
scanner from spending the node's CPU on signatures and its disk on token-store reads.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["JoinLimiter"]


class JoinLimiter:
    def __init__(self, burst: int = 10, every: float = 6.0, max_addrs: int = 4096) -> None:
        self.burst, self.every, self.max_addrs = burst, every, max_addrs
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # addr -> (tokens, at)
        self.refused = 0

    def _tokens(self, addr: str, now: float) -> float:
        tokens, at = self._buckets.get(addr, (float(self.burst), now))
        return min(float(self.burst), tokens + max(0.0, now - at) / self.every)

    def wait(self, addr: str, now: float) -> float:
        """0.0 when ``addr`` may try a join now, else the seconds until it may (the refusal is counted)."""
        tokens = self._tokens(addr, now)
        if tokens >= 1.0:
            return 0.0
        self.refused += 1
        return (1.0 - tokens) * self.every

    def failed(self, addr: str, now: float) -> None:
        """A join from ``addr`` was refused (bad token, bad CSR): it spends one attempt."""
        tokens = self._tokens(addr, now)
        self._buckets.pop(addr, None)
        self._buckets[addr] = (max(0.0, tokens - 1.0), now)
        while len(self._buckets) > self.max_addrs:
            self._buckets.popitem(last=False)
