"""What the simulator's job invariant (sim/jobs.py: every item gets exactly one recorded outcome, soon after
the faults stop) found in the job path, each rule on the real parts, in-process:

- a worker that restarts before anyone found it dead says so in its HELLO (a new boot id): its queue is
  gone, so the master queues its tasks again (``restart``), as it does for a closed connection;
- the master assigns only to workers whose heartbeats say they follow it in its term (others refuse the
  assignment, fenced, and the task would wait out its timeout);
- a master's scheduler lives for one term, and a submitter resubmits to the same master in a new term;
- a worker does not run what a master it no longer follows queued on it.
"""

from __future__ import annotations

import asyncio
import base64
from types import SimpleNamespace

from fake_context import FakeContext

from collab_tui.jobs.master_side import JobMaster
from collab_tui.jobs.scheduler import task_id_for
from collab_tui.jobs.worker_side import JobWorker
from collab_tui.net.membership import Membership, PeerRestarted, PeerSuspect
from collab_tui.node.context import PeerView

SUB, MASTER, W, X = "s" * 64, "m" * 64, "w" * 64, "x" * 64


def test_a_hello_with_a_new_boot_id_is_a_restart_and_the_same_one_a_reconnection():
    m = Membership("self", interval=0.25)
    m.on_hello("p1", "n1", "h:1", 0, 0.0, boot="aa")
    m.take_events()
    m.on_disconnect("p1", 0.1)
    m.on_hello("p1", "n1", "h:1", 0, 0.2, boot="aa")  # the network blinked: same process
    assert not any(isinstance(e, PeerRestarted) for e in m.take_events())
    m.on_hello("p1", "n1", "h:1", 0, 0.3, boot="bb")  # a new process, back before it was found dead
    assert PeerRestarted("p1") in m.take_events()
    m.on_hello("p1", "n1", "h:1", 0, 0.4)  # a HELLO without a boot id says nothing either way
    assert m.take_events() == [] and m.get("p1").boot == "bb"


def test_a_closed_connection_is_a_suspect_whose_messages_may_be_lost():
    m = Membership("self", interval=0.25)
    m.on_hello("p1", "n1", "h:1", 0, 0.0)
    m.take_events()
    m.on_disconnect("p1", 0.1)
    assert m.take_events() == [PeerSuspect("p1", closed=True)]


def _master(peers: list[PeerView], term: int = 3) -> JobMaster:
    ctx = FakeContext(MASTER, term=term, is_master=True, peers=peers)
    now = [0.0]

    def clock() -> float:  # a second a call: every plan() reads fresh capacity
        now[0] += 1.0
        return now[0]

    return JobMaster(SimpleNamespace(ctx=ctx, worker=SimpleNamespace(enabled=False)), clock=clock)


def _submit(m: JobMaster, n: int = 8) -> None:
    """``n`` photo-sized items: one to a batch, so that the workers' slots fill up."""
    items = [{"item_id": str(k), "size": 200_000} for k in range(n)]
    m.on_submit(SUB, {"job_id": "j", "kind": "noop", "items": items})


def test_the_master_assigns_only_to_workers_that_follow_it_in_its_term():
    peers = [
        PeerView(W, cpus=2, term=3, master=MASTER),  # follows it
        PeerView(X, cpus=2, term=3, master=None),  # its master is suspect: would refuse an assignment
        PeerView(SUB, cpus=2, term=2, master=MASTER),  # has not heard of the new term yet
    ]
    m = _master(peers)
    _submit(m)
    assert {dest for dest, msg in m.plan() if msg["t"] == "job.assign"} == {W}
    m.ctx.peer_views[1] = PeerView(X, cpus=2, term=3, master=MASTER)  # its next heartbeat
    assert {dest for dest, msg in m.plan() if msg["t"] == "job.assign"} == {X}


def test_a_worker_restart_or_a_closed_connection_puts_its_tasks_back_in_the_queue():
    m = _master([PeerView(W, cpus=1, term=3, master=MASTER)])
    _submit(m, 2)
    sent = [msg for dest, msg in m.plan() if dest == W]
    assert sent and m.sched.inflight_of(W)
    m.connection_lost(W)
    assert m.sched.inflight_of(W) == [] and m.sched.stats()["pending"] >= 1
    resent = [msg for dest, msg in m.plan() if dest == W]
    assert resent  # assigned again (to the only worker there is)
    m.peer_dead(W)  # what jobs/service.py does on "restart"
    assert m.sched.inflight_of(W) == []


async def test_a_master_schedules_one_term_only_and_a_submitter_resubmits_in_a_new_term(tmp_path):
    from collab_tui.jobs.service import JobService

    ctx = FakeContext(MASTER, home=tmp_path, term=3, is_master=True, master_id=MASTER)
    svc = JobService(ctx)
    try:
        svc._sync_role()
        first = svc.master
        assert first is not None and first.term == 3
        svc._sync_role()
        assert svc.master is first
        ctx.term = 5  # it lost the role and won it back between two turns of the loop
        svc._sync_role()
        assert svc.master is not first and svc.master.term == 5
        sub = svc.submitter
        sub._sent_to["j"] = (MASTER, 3)
        assert sub._sent_to.get("j") != (ctx.master_id, ctx.term)  # resubmit_all sends it again
    finally:
        svc.worker.pool.shutdown()
        svc.submitter.store.close()


async def test_a_worker_does_not_run_what_a_master_it_no_longer_follows_queued():
    ctx = FakeContext(W, name="w", term=3, master_id=MASTER)
    ran: list[str] = []

    async def deliver_results(submitter, payloads, attachments):
        ran.extend(p["item_id"] for p in payloads)
        return True

    async def send_to(node_id, msg):
        return True

    worker = JobWorker(SimpleNamespace(ctx=ctx, deliver_results=deliver_results, send_to=send_to), threads=1)
    data = base64.b64encode(b"x").decode()
    items = [{"item_id": str(k), "size": 1, "data": data} for k in range(3)]
    worker.on_assign(MASTER, {"term": 3, "job_id": "j", "submitter": SUB, "kind": "noop", "items": items})
    ctx.master_id, ctx.term = X, 4  # a new master before the runners took them
    new = [{"item_id": "9", "size": 1, "data": data}]
    worker.on_assign(X, {"term": 4, "job_id": "j", "submitter": SUB, "kind": "noop", "items": new})
    await worker.start()
    try:
        for _ in range(200):
            if ran:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert ran == ["9"] and worker.stale_skipped == 3
        assert task_id_for("j", "9")
    finally:
        await worker.stop()
