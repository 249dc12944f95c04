"""A distributed job in the simulator: the real `JobMaster` (jobs/master_side.py: submissions, reopening,
the submitter's death) around the real `Scheduler` on whichever node is master, on the virtual clock; the
submitter's real `JobStore` (SQLite in a temporary folder: durable through its crashes, exactly one
outcome per item); workers as the daemon's (jobs/worker_side.py) with the work replaced by a timer.

- One node submits a job of `ITEMS_PER_NODE` items a node at `SUBMIT_AT` s; it (re)submits the unfinished items to its
  master whenever its master changes (its restart included) and every `RESUBMIT` s (jobs/service.py).
- The master assigns batches (``job.assign``, carrying its term); a worker takes one only from the master
  it follows, in a term it accepts (``fenced``), works `WORK` s an item (one at a time, in order), then
  sends the result to the submitter (``job.results``) and ``job.done`` to its current master.
- The master's scheduler learns capacity from the membership (every live node is a 2-cpu worker), and a
  peer's death from it (`JobMaster.peer_dead`): the dead worker's tasks go back to the queue, the dead
  submitter's jobs are forgotten until it resubmits.

The invariant (`check`): the store records one outcome per item, never two (a duplicated or late result
is refused by the store's rule, and counted), and once the faults stop every item gets its outcome within
`DONE_BOUND` s. Job messages travel as on TCP (network.py, `stream`): held while a link is cut, lost
only with the connection.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..jobs.master_side import REOPEN_AFTER, JobMaster
from ..jobs.scheduler import WorkerCapacity, task_id_for
from ..jobs.store import JobStore
from ..net.membership_events import PeerDead, PeerLeft, PeerRestarted, PeerSuspect

ITEMS_PER_NODE = 16  # a job of 16 items a node, WORK s each: ~4 s of the whole cluster, through the faults
SUBMIT_AT = 2.0  # when the faults may begin (scenarios.py, SETTLE)
RESUBMIT = 5.0  # jobs/service.py
RETRY = 0.1  # a submission the master has not accepted is sent again at the next turn of the jobs loop
WORK = 0.25  # seconds an item takes a worker
PHOTO_BYTES = 200_000  # a photo: one a batch (scheduler.py batches small items up to 256 KiB)
TASK_TIMEOUT = 60.0  # jobs/master_side.py
# seconds after the agreement: a result lost with its connection (the worker had written it, the master saw
# the item done) is queued again at the submitter's next resubmission once REOPEN_AFTER s have passed
DONE_BOUND = RESUBMIT + REOPEN_AFTER + 2.0


class _SimMaster(JobMaster):
    """`JobMaster` with its capacity read from the simulated membership instead of this machine and its
    peers' heartbeats."""

    def _refresh_capacity(self, now: float) -> None:
        core = self.svc.core()
        self.sched.update_worker(WorkerCapacity(self.ctx.node_id, 2, 0.0, 0, True), now)
        for p in sorted(core.membership.alive_ids()):
            info = core.membership.get(p)
            if info is not None and self.follows(info.extra.get("master", ""), info.term):
                self.sched.update_worker(WorkerCapacity(p, 2, 0.0, 0, True), now)
            elif self.sched.free_slots(p) or self.sched.inflight_of(p):
                self.sched.worker_dead(p, now)


@dataclass
class JobNode:
    master: JobMaster | None = None
    last_master: tuple[str, int] | None = None  # (master, term) that accepted the last submission
    next_resubmit: float = 0.0
    retry_at: float = 0.0
    # (job, item, submitter, (its master, term)) to work
    queue: list[tuple[str, str, str, tuple[str, int]]] = field(default_factory=list)
    busy_until: float | None = None  # when the item at the head of the queue is done


class SimJobs:
    PLANTS = ("record-twice", "no-reopen")

    def __init__(self, cluster, on_violation: Callable[[str], None], seed: int, plant: str = "") -> None:
        """``plant`` breaks a rule on purpose: ``record-twice`` records every result that arrives (the store's
        once-per-item rule skipped), ``no-reopen`` never queues again a task the master saw finish (a result lost
        with its connection stays lost)."""
        self.c = cluster
        self.plant = plant
        self.on_violation = on_violation
        self.nodes = {nid: JobNode() for nid in cluster.ids}
        self.submitter = cluster.ids[seed % cluster.n]
        self.job_id = f"{seed:016x}"
        self.items = ITEMS_PER_NODE * cluster.n
        self.dir = Path(tempfile.mkdtemp(prefix="collab-sim-jobs-"))
        self.store = JobStore(self.dir / "jobs.db")
        self.submitted = False
        self.duplicates = 0  # results the store refused: the item had its outcome already
        self.recorded: dict[str, int] = {}  # item -> outcomes the store took (must stay 1)
        cluster.apps.append(self)

    def close(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ the cluster's hooks
    def crashed(self, nid: str) -> None:
        self.nodes[nid] = JobNode()  # memory only: the submitter's store is on disk

    def peer_events(self, nid: str, events: list) -> None:
        node = self.nodes[nid]
        if node.master is None:
            return
        for ev in events:
            if isinstance(ev, (PeerDead, PeerLeft, PeerRestarted)):  # as jobs/service.py
                node.master.peer_dead(ev.node_id)
            elif isinstance(ev, PeerSuspect) and ev.closed:
                node.master.connection_lost(ev.node_id)

    def tick(self, nid: str) -> None:
        sim, node = self.c.nodes[nid], self.nodes[nid]
        core = sim.core
        if core is None:
            return
        now = self.c.now
        self._sync_role(nid)
        if node.master is not None:
            for dest, msg in node.master.plan():
                if not self._to(nid, dest, msg) and msg["t"] == "job.assign":
                    node.master.sched.worker_dead(dest, now)  # as `JobMaster.pump` does
        self._work(nid)
        if nid == self.submitter:
            self._submit(nid)

    def _sync_role(self, nid: str) -> None:
        """A `JobMaster` while this node is master (jobs/service.py, ``_sync_role``)."""
        core, node = self.c.nodes[nid].core, self.nodes[nid]
        if core is None:
            return
        if core.election.role == "master" and (node.master is None or node.master.term != core.election.term):
            svc = SimpleNamespace(
                ctx=SimpleNamespace(node_id=nid, name=nid, term=core.election.term, peer=lambda _id: None),
                worker=SimpleNamespace(enabled=True),
                core=lambda: self.c.nodes[nid].core,
            )
            node.master = _SimMaster(svc, task_timeout=TASK_TIMEOUT, clock=lambda: self.c.now)
            if self.plant == "no-reopen":
                node.master.sched.reopen = lambda task_id: False  # type: ignore[method-assign]
        elif core.election.role != "master":
            node.master = None

    def message(self, src: str, dst: str, msg: dict[str, Any]) -> None:
        if not msg["t"].startswith("job."):
            return
        core, node = self.c.nodes[dst].core, self.nodes[dst]
        if core is None:
            return
        fenced = src == core.election.master_id and core.election.accepts(msg.get("term", -1))
        if msg["t"] == "job.assign" and fenced:
            self._on_assign(dst, src, msg)
        elif msg["t"] == "job.submit":
            self._sync_role(dst)  # just elected: it schedules now rather than refuse (jobs/service.py)
            if node.master is not None:
                node.master.on_submit(src, msg)
                self._to(dst, src, {"t": "job.accepted", "job_id": msg["job_id"], "term": node.master.term})
        elif msg["t"] == "job.accepted" and dst == self.submitter and src == core.election.master_id:
            node.last_master, node.next_resubmit = (src, msg["term"]), self.c.now + RESUBMIT
        elif msg["t"] == "job.done" and node.master is not None:
            node.master.on_done(src, msg)
        elif msg["t"] == "job.results" and dst == self.submitter:
            self._record(msg["item_id"], "done", json.dumps({"worker": src}), None, src)
        elif msg["t"] == "job.item_failed" and fenced and dst == self.submitter:
            self._record(msg["item_id"], "error", None, msg["error"], "")

    # ------------------------------------------------------------------ submitter
    def _submit(self, nid: str) -> None:
        core, node, now = self.c.nodes[nid].core, self.nodes[nid], self.c.now
        if now < SUBMIT_AT or core is None:
            return
        if not self.submitted:
            items = [(str(k), f"item-{k}.jpg", PHOTO_BYTES, f"{k:064x}") for k in range(self.items)]
            self.store.create_job("faces", items, job_id=self.job_id, submitter=nid, now=now)
            self.submitted = True
        master = core.election.master_id
        reign = (master, core.election.term)
        if master is None or (reign == node.last_master and now < node.next_resubmit) or now < node.retry_at:
            return
        node.retry_at = now + RETRY  # until the master accepts it (`job.accepted`, the request's answer)
        pending = self.store.unfinished(self.job_id)
        if not pending:
            return
        msg = {
            "t": "job.submit",
            "job_id": self.job_id,
            "job_key": self.store.job_key(self.job_id),
            "kind": "faces",
            "options": {},
            "items": [{"item_id": it["item_id"], "size": it["size"]} for it in pending],
        }
        self._to(nid, master, msg)

    def _record(self, item_id: str, status: str, result: str | None, error: str | None, worker: str) -> None:
        (fresh,), _ = self.store.record_outcomes(self.job_id, [(item_id, status, result, error, worker)])
        if not fresh and self.plant != "record-twice":
            self.duplicates += 1
            return
        self.recorded[item_id] = self.recorded.get(item_id, 0) + 1
        if self.recorded[item_id] > 1:
            self.on_violation(f"item {item_id} recorded {self.recorded[item_id]} times")

    # ------------------------------------------------------------------ worker
    def _on_assign(self, nid: str, master: str, msg: dict[str, Any]) -> None:
        node = self.nodes[nid]
        for item in msg["items"]:
            node.queue.append((msg["job_id"], item["item_id"], msg["submitter"], (master, msg["term"])))
        if node.busy_until is None:
            node.busy_until = self.c.now + WORK

    def _work(self, nid: str) -> None:
        """Finish the items whose time is up, one after the other."""
        sim, node = self.c.nodes[nid], self.nodes[nid]
        master = sim.core.election.master_id if sim.core is not None else None
        term = sim.core.election.term if sim.core is not None else 0

        def current(q) -> bool:  # not assigned by another master, nor in an older term (jobs/worker_side.py)
            return (master is None or q[3][0] == master) and q[3][1] >= term

        # not started, and assigned by a master (or in a term) this node no longer follows: not run
        node.queue = (
            [q for q in node.queue if current(q)]
            if node.busy_until is None
            else [node.queue[0], *(q for q in node.queue[1:] if current(q))]
        )
        while node.queue and node.busy_until is not None and self.c.now >= node.busy_until:
            job_id, item_id, submitter, _ = node.queue.pop(0)
            node.busy_until = node.busy_until + WORK if node.queue else None
            delivered = self._to(nid, submitter, {"t": "job.results", "job_id": job_id, "item_id": item_id})
            tid = task_id_for(job_id, item_id)
            done = {"t": "job.done", "done": [tid], "failed": []}
            if not delivered:  # no connection to the submitter: retried, not held against this worker
                done = {**done, "done": [], "failed": [{"task_id": tid, "error": "not delivered", "cause": "deliver"}]}
            if master is not None:  # the current master, which may have changed since the assignment
                self._to(nid, master, done)

    def _to(self, nid: str, dest: str, msg: dict[str, Any]) -> bool:
        """Send, or hand to this node itself; False if there is no connection to ``dest``."""
        if dest == nid:
            self.message(nid, nid, msg)
            return True
        sim = self.c.nodes[nid]
        if dest not in sim.conns:
            return False
        self.c._send(sim, dest, msg)
        return True

    # ------------------------------------------------------------------ the end of a scenario
    def outstanding(self) -> int:
        return len(self.store.unfinished(self.job_id)) if self.submitted else self.items

    def check_end(self) -> None:
        left = self.outstanding()
        if left:
            self.on_violation(f"{left} of {self.items} job items have no outcome {DONE_BOUND:g} s after the agreement")
