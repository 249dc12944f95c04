"""Random fault schedules from a seed, run against the invariants; a failing run names its seed and keeps a
minimal trace (the faults, the role and master changes, the violation).

A scenario: 3 to 12 nodes (9 and 12 past the full-mesh limit) boot within 0.2 s and settle; then 1 to 4 faults, each in its own slot of a few
seconds: the master or another node crashes (its process, or silently) and restarts later, a partition
(a random split, or one way) that heals, a spell of message loss and duplication, a slow node; every
node's clock drifts by up to ±1 %. After the last fault the network is healed, every node restarted, and
the cluster must agree on one master within `AGREEMENT_BOUND` s.

A federated run goes on throughout (sim/runs.py): a round every 0.3 s whenever a synced master may commit.
No committed round may be lost or committed twice, and within `ROUND_BOUND` s of the agreement the
master commits a new round.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .cluster import SimCluster
from .invariants import Invariants
from .jobs import DONE_BOUND, SimJobs
from .runs import SimRuns

AGREEMENT_BOUND = 6.0  # seconds after the faults stop (detection 1.5 s, election and redial within it)
ROUND_BOUND = 3.0  # seconds after the agreement within which the master commits a round
SETTLE = 2.0
SLOT = 3.0


@dataclass
class Result:
    seed: int
    n: int
    faults: list[str]
    violations: list[str]
    agreed_after: float | None
    trace: list[str] = field(default_factory=list)
    messages: int = 0
    shared_terms: list[int] = field(default_factory=list)
    rounds: int = 0  # the run's committed rounds
    duplicate_results: int = 0  # job results the submitter's store refused (the item had its outcome)

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self, trace: bool = False) -> str:
        head = f"seed {self.seed}: {self.n} nodes, faults: {'; '.join(self.faults) or 'none'}"
        if self.ok:
            head += (
                f"\n  ok: agreed {self.agreed_after:.2f} s after the faults stopped; {self.rounds} rounds"
                f" committed; job done ({self.duplicate_results} duplicate results refused); {self.messages} messages"
            )
            if self.shared_terms:
                head += f"; terms claimed by two nodes for a moment (never both committing): {self.shared_terms}"
        lines = [head, *(f"  VIOLATION {v}" for v in self.violations)]
        if trace or not self.ok:
            lines += ["  trace:", *(f"  {line}" for line in self.trace)]
        return "\n".join(lines)


def run(seed: int, n: int | None = None, plant: str = "", full_trace: bool = False) -> Result:
    """One scenario. ``plant`` breaks a rule on purpose (the invariants must catch it): ``skip-quorum``
    lets a master commit without seeing a majority; ``no-grants`` lets it commit on its view of a majority
    alone (without election rule 11); ``same-term`` lets a new master keep the old term; ``commit-alone``
    and ``no-sync`` break the run's rules (sim/runs.py), ``record-twice`` and ``no-reopen`` the job's
    (sim/jobs.py)."""
    rng = random.Random(seed)
    n = n or rng.choice([3, 3, 4, 5, 5, 7, 9, 12])  # 9 and 12: past MESH_LIMIT, heartbeats fan in
    cluster = SimCluster(n, seed, core_factory=_planted(plant))
    inv = Invariants(stale_allowance=cluster.interval * 6 + 1.0)
    cluster.observers.append(inv)
    runs = SimRuns(cluster, lambda text: inv._fail(cluster, text), plant if plant in SimRuns.PLANTS else "")
    jobs = SimJobs(cluster, lambda text: inv._fail(cluster, text), seed, plant if plant in SimJobs.PLANTS else "")
    try:
        return _play(rng, n, seed, cluster, inv, runs, jobs, full_trace)
    finally:
        jobs.close()


def _play(rng, n, seed, cluster, inv, runs, jobs, full_trace) -> Result:
    for node in cluster.nodes.values():
        node.drift = rng.uniform(-0.01, 0.01)
    cluster.start_all()
    cluster.run_until(SETTLE)
    faults: list[str] = []
    t = SETTLE
    for _ in range(rng.randint(1, 4)):
        t += rng.uniform(0.2, SLOT)
        cluster.run_until(t)
        faults.append(f"t={t:.2f} " + _fault(rng, cluster, inv, t))
    t += rng.uniform(0.5, SLOT)
    cluster.run_until(t)
    cluster.net.heal()
    cluster.net.loss = cluster.net.duplicate = 0.0
    cluster.net.slow.clear()
    for nid in cluster.ids:
        if not cluster.nodes[nid].up:
            cluster.restart(nid)
    inv.fault(t)
    cluster.log("faults stop: healed, every node restarted")
    agreed = inv.check_agreement(cluster, t, AGREEMENT_BOUND)
    top = runs.ledger.top
    cluster.run_until(cluster.now + 1.0)  # and it holds
    if agreed is not None and cluster.agreement() is None:
        inv._fail(cluster, "agreement did not hold for 1 s")
    cluster.run_until(cluster.now + ROUND_BOUND - 1.0)
    if agreed is not None and runs.ledger.top <= top:
        inv._fail(cluster, f"no round committed within {ROUND_BOUND:g} s of the agreement (still {top})")
    runs.check_end()
    t_end = cluster.now + DONE_BOUND - ROUND_BOUND
    while jobs.outstanding() and cluster.now < t_end:
        cluster.run_until(cluster.now + 0.25)
    if agreed is not None:
        jobs.check_end()
    keep = cluster.trace if full_trace else [line for line in cluster.trace if _minimal(line)]
    shared = sorted(inv.shared_terms)
    return Result(
        seed,
        n,
        faults,
        inv.violations,
        agreed,
        keep,
        sum(cluster.sent.values()),
        shared,
        runs.ledger.top,
        jobs.duplicates,
    )


def _minimal(line: str) -> bool:
    """The lines of a minimal trace: faults, boots, role changes, violations."""
    marks = (" role=", "VIOLATION", " up (", "crash", "dies", "faults stop", "FAULT", " committed round", " synced")
    return any(mark in line for mark in marks)


def _fault(rng: random.Random, c: SimCluster, inv: Invariants, t: float) -> str:
    inv.fault(t)
    up = c.up_ids()
    kind = rng.choice(["crash-master", "crash", "partition", "one-way", "lossy", "slow", "restart"])
    master = c.agreement()
    text = kind
    if kind in ("crash-master", "crash") and len(up) > 1:
        victim = master if kind == "crash-master" and master else rng.choice(up)
        silent = rng.random() < 0.4
        c.crash(victim, silent=silent)
        back = t + rng.uniform(0.5, 2 * SLOT)
        c.call_at(back, lambda: (c.restart(victim), inv.fault(c.now)))
        text = f"{'silent ' if silent else ''}crash of {victim}{' (master)' if victim == master else ''}, back at {back:.2f}"
    elif kind in ("partition", "one-way"):
        ids = list(c.ids)
        rng.shuffle(ids)
        k = rng.randint(1, len(ids) - 1)
        side, others = sorted(ids[:k]), sorted(ids[k:])
        c.net.partition(side, others, one_way=kind == "one-way")
        heal = t + rng.uniform(0.5, 2 * SLOT)
        c.call_at(heal, lambda: (c.net.heal(), inv.fault(c.now)))
        text = f"{kind} partition {side} | {others}, healed at {heal:.2f}"
    elif kind == "lossy":
        c.net.loss, c.net.duplicate = rng.uniform(0.05, 0.3), rng.uniform(0.0, 0.2)
        end = t + rng.uniform(0.5, SLOT)
        c.call_at(end, lambda: (setattr(c.net, "loss", 0.0), setattr(c.net, "duplicate", 0.0), inv.fault(c.now)))
        text = f"loss {c.net.loss:.2f}, duplication {c.net.duplicate:.2f} until {end:.2f}"
    elif kind == "slow":
        victim = rng.choice(c.ids)
        c.net.slow[victim] = rng.uniform(0.05, 0.3)
        text = f"{victim} slow (+{c.net.slow[victim] * 1000:.0f} ms a message)"
    else:
        down = [nid for nid in c.ids if not c.nodes[nid].up]
        if down:
            c.restart(down[0])
            text = f"restart of {down[0]}"
        else:
            text = "restart (none down)"
    c.log(f"FAULT {text}")
    return text


def _planted(plant: str):
    from ..net.control import ControlCore

    if not plant or plant in SimRuns.PLANTS or plant in SimJobs.PLANTS:
        return ControlCore
    if plant == "skip-quorum":

        class SkipQuorum(ControlCore):
            def can_commit(self) -> bool:  # the bug: no majority needed
                return self.election.role == "master"

        return SkipQuorum
    if plant == "no-grants":

        class NoGrants(ControlCore):
            def can_commit(self) -> bool:  # the gap the grants close: a view majority alone
                return self.election.can_commit(len(self.membership.alive_ids()) + 1)

        return NoGrants
    if plant == "same-term":

        class SameTerm(ControlCore):
            def __init__(self, *a, **kw) -> None:
                super().__init__(*a, **kw)
                el = self.election
                original = el._become_master

                def become(now: float) -> None:  # the bug: a new reign keeps the old term
                    before = el.term
                    original(now)
                    el.term = before

                el._become_master = become  # type: ignore[method-assign]

        return SameTerm
    known = ", ".join(("skip-quorum", "no-grants", "same-term", *SimRuns.PLANTS, *SimJobs.PLANTS))
    raise ValueError(f"unknown planted bug {plant!r} ({known})")
