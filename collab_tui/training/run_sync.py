"""Sans-IO rules that keep a federated run's committed rounds: which copy of a run state wins, when a round
counts as committed, and what a new master adopts before it resumes anything. The training service
(service.py, coordinator.py) and the simulator (sim/runs.py) both run them.

1. **Order.** Of two copies of one run's state the newer is the one with the higher ``(term, round)``: the
   term of the master that wrote it first, then its round. A copy from an older term loses to any copy from
   a newer one, even one of a lower round: rounds an old master stored on too few nodes were never
   committed, and the new master's rounds replace them (Raft's rule for a log). Equal keys: the copy that
   arrives later wins (the master's own next write: a status change, an evaluation attached).
2. **Commit.** The master writes a round (or a status change) locally, then sends it to every connected
   peer and waits for their acknowledgements. It is *committed* once a strict majority of `quorum_size`
   nodes (the master included) hold it; only then is it reported to the operator and does the next round
   start. A round that cannot reach a majority is retried while the node may commit, and dropped with the
   master's role otherwise: the next master decides.
3. **Adoption.** A node that becomes master asks every live node for its runs (a digest per run: term,
   round, status) before it resumes or starts anything, and adopts the newest copy of each run (fetching
   its model version from the node that holds it). It counts as synced for its term once a majority
   (itself included) answered: a committed round is on a majority, and any two majorities meet, so the
   new master holds every committed round before it commits one of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUS_CHARS = 16


def key(state: dict[str, Any]) -> tuple[int, int]:
    """The order of copies of one run's state (rule 1)."""
    return int(state.get("term", 0)), int(state.get("round", 0))


def replaces(mine: dict[str, Any] | None, theirs: dict[str, Any]) -> bool:
    """Whether ``theirs`` replaces the copy this node holds (``mine``, or None)."""
    if mine is None:
        return True
    if key(mine) != key(theirs):
        return key(theirs) > key(mine)
    return digest_of(mine) != digest_of(theirs) or mine.get("history") != theirs.get("history")


def digest_of(state: dict[str, Any]) -> dict[str, Any]:
    """What a node tells a new master about one run it holds (rule 3)."""
    return {
        "run_id": state["run_id"],
        "term": int(state.get("term", 0)),
        "round": int(state.get("round", 0)),
        "status": str(state.get("status", ""))[:STATUS_CHARS],
        "version": str(state.get("version", "")),
    }


def majority(quorum_size: int) -> int:
    """How many nodes (the master included) must hold a write for it to be committed."""
    return quorum_size // 2 + 1


@dataclass
class CommitTally:
    """The acknowledgements of one write (rule 2): the master holds it; each peer that confirms adds one."""

    quorum_size: int
    held_by: set[str] = field(default_factory=set)

    def ack(self, node: str) -> None:
        self.held_by.add(node)

    @property
    def held(self) -> int:
        return 1 + len(self.held_by)

    @property
    def needed(self) -> int:
        return majority(self.quorum_size)

    @property
    def committed(self) -> bool:
        return self.held >= self.needed


@dataclass
class SyncTally:
    """A new master's adoption (rule 3): the digests of the nodes that answered; which runs it must fetch,
    and from whom; whether a majority answered."""

    quorum_size: int
    mine: dict[str, dict[str, Any]]  # run_id -> this node's digest
    answered: set[str] = field(default_factory=set)
    best: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)  # run_id -> (digest, holder)

    def reply(self, node: str, digests: list[dict[str, Any]]) -> None:
        self.answered.add(node)
        for d in digests:
            run_id = d["run_id"]
            held = self.best.get(run_id)
            current = held[0] if held is not None else self.mine.get(run_id)
            if current is None or key(d) > key(current):
                self.best[run_id] = (d, node)

    def to_fetch(self) -> list[tuple[str, str]]:
        """(run_id, node) for every run a peer holds newer than this node does."""
        return sorted((run_id, node) for run_id, (_, node) in self.best.items())

    @property
    def synced(self) -> bool:
        return 1 + len(self.answered) >= majority(self.quorum_size)
