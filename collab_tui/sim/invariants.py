"""The properties a simulated run must keep, checked after every step a node takes (`SimCluster.observers`):

1. **One committing master per term**: no two nodes may ever commit (`ControlCore.can_commit`) in the same
   term. The bully lets two nodes claim one term for a moment (net/election.py, rule 2); the grants
   (rule 11) keep all but one of them from committing. Such overlaps are counted (`shared_terms`).
2. **Commits need a quorum**: a node that may commit cluster state (`ControlCore.can_commit`: the master,
   seeing a strict majority) does reach a strict majority of the cluster, in truth, both ways, except
   within `stale_allowance` seconds of the last fault (the time its failure detector needs to notice).
3. **Agreement after faults**: once faults stop, every up node follows one up master within a bound
   (checked at the end of a run, `check_agreement`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .cluster import SimCluster


class InvariantViolated(AssertionError):
    pass


@dataclass
class Invariants:
    stale_allowance: float
    last_fault: float = 0.0
    masters: dict[int, str] = field(default_factory=dict)  # term -> the first node that was master in it
    committers: dict[int, str] = field(default_factory=dict)  # term -> the node that could commit in it
    shared_terms: set[int] = field(default_factory=set)  # terms two nodes claimed (not a violation by itself)
    violations: list[str] = field(default_factory=list)

    def fault(self, t: float) -> None:
        self.last_fault = max(self.last_fault, t)

    def __call__(self, cluster: SimCluster, nid: str) -> None:
        node = cluster.nodes[nid]
        core = node.core
        if core is None or core.election.role != "master":
            return
        term = core.election.term
        if self.masters.setdefault(term, nid) != nid:
            self.shared_terms.add(term)
        if not core.can_commit():
            return
        first = self.committers.setdefault(term, nid)
        if first != nid:
            self._fail(cluster, f"two masters may commit in term {term}: {first} and {nid}")
        if cluster.now - self.last_fault > self.stale_allowance:
            reach = 1 + sum(
                1 for p in cluster.ids if p != nid and cluster.nodes[p].up and cluster.net.both_ways(nid, p)
            )
            if 2 * reach <= cluster.n:
                self._fail(cluster, f"{nid} may commit in term {term} but reaches {reach} of {cluster.n} nodes")

    def _fail(self, cluster: SimCluster, text: str) -> None:
        if text not in self.violations:
            self.violations.append(text)
            cluster.log(f"VIOLATION {text}")

    def check_agreement(self, cluster: SimCluster, since: float, bound: float) -> float | None:
        """Run until every up node follows one master (at most ``bound`` s after ``since``); the time it
        took, or a violation."""
        step = 0.05
        t = max(cluster.now, since)
        while t <= since + bound:
            cluster.run_until(t)
            if cluster.agreement() is not None:
                return t - since
            t += step
        self._fail(cluster, f"no agreement on a master {bound:g} s after the faults stopped")
        return None
