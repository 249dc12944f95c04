"""The control plane as it was before fan-in (bench `scale` prints it beside today's): full-mesh heartbeats at
every size, no indirect probes, and after the master's death a jittered bully election on every node (each
asks every higher one). The grants stay (they are about safety, not cost). Simulator only."""

from __future__ import annotations

from ..net.control import ControlCore
from ..net.election import FOLLOWER, Election


class _LegacyElection(Election):
    def peer_down(self, peer_id: str, now: float) -> None:
        if peer_id == self.master_id:
            self._alive.discard(peer_id)
            self._reports.pop(peer_id, None)
            self._grants.pop(peer_id, None)
            self._pending.pop(peer_id, None)
            self._lost_master = peer_id
            self._set_master(None)
            if self.role == FOLLOWER and self._election_at is None and self._coord_deadline is None:
                self._election_at = now + self._jitter()
            self._recheck_pending(now)
            return
        super().peer_down(peer_id, now)


class LegacyCore(ControlCore):
    def __init__(self, self_id: str, priority: int, term: int = 0, **kw) -> None:
        super().__init__(self_id, priority, term, **kw)
        old = self.election
        self.election = _LegacyElection(
            self_id,
            priority,
            term=term,
            preempt=old.preempt,
            rng=old.rng,
            answer_timeout=old.answer_timeout,
            coordinator_timeout=old.coordinator_timeout,
        )

    def fan_in(self) -> bool:
        return False
