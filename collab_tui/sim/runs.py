"""A federated run in the simulator: the rules of training/run_sync.py (the order of copies, the majority a
round needs, a new master's adoption) run by each virtual node as the training service and its run
coordinator run them (training/service.py, coordinator.py), with the fits replaced by a timer.

- The master (once synced for its term, rule 3) stores round r+1 when it may commit (`can_commit`) and
  round r is on a majority, then sends it to every connected node (``fl.commit``, a request) and sends
  again every `RETRY` s to the nodes that have not confirmed; a majority of confirmations commits it.
  A round's fits take `FIT` s from the previous round's store, beside its replication.
- A node that becomes master asks every connected node for its digest (``fl.sync``), fetches what is newer
  (``fl.pull``) and is synced once a majority answered; an attempt that gets no majority within
  `SYNC_TIMEOUT` s starts again.
- Replicas take a master's message only from the master they follow, in a term they accept (``fenced``);
  they answer whether they now hold that copy. Every node's copy is on disk: it survives a crash.

`RunLedger` is the invariant: every round a master saw committed is recorded with its history (the
versions of rounds 1..r); a round committed twice with another version, or a committed round that a later
commit or the final state does not carry, is a violation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..training.run_sync import CommitTally, SyncTally, digest_of, replaces

RUN_ID = "0123456789abcdef"
FIT = 0.3  # seconds of a round's fits
RETRY = 0.5  # coordinator.py / service.py: RETRY_EVERY
SYNC_TIMEOUT = 1.0
ROUNDS = 10_000  # a run that outlasts every scenario


@dataclass
class _Pending:
    state: dict[str, Any]
    tally: CommitTally
    sent_at: float


@dataclass
class _Sync:
    term: int
    tally: SyncTally
    started: float
    waiting: set[str]  # requests not answered yet (fl.sync, then fl.pull)


@dataclass
class RunNode:
    """One node's part: its copy on disk, and (as master) its round in flight and its adoption."""

    disk: dict[str, Any] | None = None
    synced_term: int = -1
    pending: _Pending | None = None
    last_store: float = float("-inf")
    sync: _Sync | None = None


@dataclass
class RunLedger:
    committed: dict[int, tuple[str, ...]] = field(default_factory=dict)  # round -> history when committed
    violations: list[str] = field(default_factory=list)

    def commit(self, history: tuple[str, ...]) -> str | None:
        r = len(history)
        seen = self.committed.get(r)
        if seen is not None and seen != history:
            return f"round {r} committed twice: {seen[-1]} and {history[-1]}"
        self.committed[r] = history
        return self.carries(history, "a later commit")

    def carries(self, history: tuple[str, ...], what: str) -> str | None:
        """A violation if ``history`` lacks a committed round it should hold (every one up to its length)."""
        for r, h in sorted(self.committed.items()):
            if r <= len(history) and history[:r] != h:
                return f"{what} (round {len(history)}) lost committed round {r} ({h[-1]})"
        return None

    @property
    def top(self) -> int:
        return max(self.committed, default=0)


class SimRuns:
    """Attach with ``SimRuns(cluster)``: the cluster hands it ``fl.*`` messages and each node's ticks."""

    PLANTS = ("commit-alone", "no-sync")

    def __init__(self, cluster, on_violation: Callable[[str], None], plant: str = "") -> None:
        """``plant`` breaks a rule on purpose: ``commit-alone`` counts a round committed on the master's own
        copy (rule 2), ``no-sync`` lets a new master resume from its own copy (rule 3)."""
        self.c = cluster
        self.plant = plant
        self.nodes = {nid: RunNode() for nid in cluster.ids}
        self.ledger = RunLedger()
        self.on_violation = on_violation
        self._ids = 0
        self._requests: dict[int, tuple[str, str, dict]] = {}  # id -> (requester, peer, message)
        cluster.apps.append(self)

    # ------------------------------------------------------------------ the cluster's hooks
    def crashed(self, nid: str) -> None:
        node = self.nodes[nid]
        node.synced_term, node.pending, node.sync, node.last_store = -1, None, None, float("-inf")

    def tick(self, nid: str) -> None:
        sim, node = self.c.nodes[nid], self.nodes[nid]
        core = sim.core
        if core is None or core.election.role != "master":
            node.pending, node.sync = None, None
            return
        now, term = self.c.now, core.election.term
        if node.pending is not None and node.pending.state["term"] != term:
            node.pending = None  # a new term: the coordinator stops; the run resumes after the sync (rule 3)
        if node.synced_term != term:
            if node.sync is None or node.sync.term != term or now - node.sync.started > SYNC_TIMEOUT:
                self._start_sync(nid, term)
            return
        if node.pending is not None:
            if now - node.pending.sent_at >= RETRY:
                self._send_commit(nid, node.pending)
            return
        if core.can_commit() and now - node.last_store >= FIT and self._round(node) < ROUNDS:
            self._store_next(nid, term)

    def peer_events(self, nid: str, events: list) -> None:
        pass

    def message(self, src: str, dst: str, msg: dict[str, Any]) -> None:
        if not (msg["t"] == "re" or msg["t"].startswith("fl.")):
            return
        if msg["t"] == "re":
            self._reply(dst, src, msg)
            return
        sim = self.c.nodes[dst]
        core, node = sim.core, self.nodes[dst]
        if core is None:
            return
        fenced = src == core.election.master_id and core.election.accepts(msg["term"])
        reply: dict[str, Any] = {"t": "re", "re": msg["id"], "ok": fenced}
        if fenced and msg["t"] == "fl.commit":
            if replaces(node.disk, msg["run"]):
                node.disk = msg["run"]
            reply["held"] = node.disk is not None and digest_of(node.disk) == digest_of(msg["run"])
        elif fenced and msg["t"] == "fl.sync":
            reply["runs"] = [digest_of(node.disk)] if node.disk else []
        elif fenced and msg["t"] == "fl.pull":
            reply["run"] = node.disk
        self.c._send(sim, src, reply)

    # ------------------------------------------------------------------ master
    @staticmethod
    def _round(node: RunNode) -> int:
        return int(node.disk["round"]) if node.disk else 0

    def _request(self, nid: str, peer: str, msg: dict[str, Any]) -> None:
        self._ids += 1
        msg = {**msg, "id": self._ids}
        self._requests[self._ids] = (nid, peer, msg)
        self.c._send(self.c.nodes[nid], peer, msg)

    def _start_sync(self, nid: str, term: int) -> None:
        node = self.nodes[nid]
        mine = {RUN_ID: digest_of(node.disk)} if node.disk else {}
        peers = sorted(self.c.nodes[nid].conns)
        node.sync = _Sync(term, SyncTally(1 if self.plant == "no-sync" else self.c.n, mine), self.c.now, set(peers))
        for p in peers:
            self._request(nid, p, {"t": "fl.sync", "term": term})
        self._sync_done(nid)

    def _store_next(self, nid: str, term: int) -> None:
        node = self.nodes[nid]
        history = list(node.disk["history"]) if node.disk else []
        history.append(f"r{len(history) + 1}.{nid}.t{term}")
        node.disk = {"run_id": RUN_ID, "term": term, "round": len(history), "status": "running",
                     "version": "", "history": history}  # fmt: skip
        node.last_store = self.c.now
        node.pending = _Pending(node.disk, CommitTally(1 if self.plant == "commit-alone" else self.c.n), self.c.now)
        self.c.log(f"{nid} stores round {len(history)} (term {term})")
        self._send_commit(nid, node.pending)

    def _send_commit(self, nid: str, pending: _Pending) -> None:
        pending.sent_at = self.c.now
        for p in sorted(self.c.nodes[nid].conns - pending.tally.held_by):
            self._request(nid, p, {"t": "fl.commit", "term": pending.state["term"], "run": pending.state})
        self._committed(nid)

    def _committed(self, nid: str) -> None:
        node = self.nodes[nid]
        if node.pending is None or not node.pending.tally.committed:
            return
        history = tuple(node.pending.state["history"])
        node.pending = None
        self.c.log(f"{nid} committed round {len(history)}")
        if (bad := self.ledger.commit(history)) is not None:
            self._violate(bad)

    def _reply(self, nid: str, peer: str, msg: dict[str, Any]) -> None:
        asked = self._requests.pop(msg.get("re", -1), None)
        if asked is None or asked[0] != nid or asked[1] != peer or not msg.get("ok"):
            return
        node, sent = self.nodes[nid], asked[2]
        if sent["t"] == "fl.commit":
            if node.pending is not None and node.pending.state is sent["run"] and msg.get("held"):
                node.pending.tally.ack(peer)
                self._committed(nid)
            return
        sync = node.sync
        if sync is None or sync.term != sent["term"]:
            return
        sync.waiting.discard(peer)
        if sent["t"] == "fl.sync":
            sync.tally.reply(peer, msg["runs"])
            for run_id, holder in sync.tally.to_fetch():
                if holder == peer:
                    sync.waiting.add(peer)
                    self._request(nid, peer, {"t": "fl.pull", "term": sync.term, "run_id": run_id})
        elif msg.get("run") is not None and replaces(node.disk, msg["run"]):
            node.disk = msg["run"]
        self._sync_done(nid)

    def _sync_done(self, nid: str) -> None:
        node, core = self.nodes[nid], self.c.nodes[nid].core
        sync = node.sync
        if sync is None or core is None or not sync.tally.synced:
            return
        if any(holder in sync.waiting for _, holder in sync.tally.to_fetch()):
            return  # a newer copy is still on its way
        if core.election.role == "master" and core.election.term == sync.term:
            node.synced_term, node.sync = sync.term, None
            self.c.log(f"{nid} synced for term {sync.term} at round {self._round(node)}")

    def _violate(self, text: str) -> None:
        self.on_violation(text)

    # ------------------------------------------------------------------ the end of a scenario
    def check_end(self) -> None:
        """After agreement: the master's copy carries every committed round."""
        master = self.c.agreement()
        if master is None:
            return
        disk = self.nodes[master].disk
        history = tuple(disk["history"]) if disk else ()
        if len(history) < self.ledger.top:
            self._violate(
                f"the final master {master} is at round {len(history)}, round {self.ledger.top} was committed"
            )
        elif (bad := self.ledger.carries(history, f"the final master {master}")) is not None:
            self._violate(bad)
