"""The jobs service's peer messages (issue 15), in-process: three `JobService`s on fake contexts (a
submitter, the master, a worker) wired to each other, and a rogue member. No sockets.

- every job message type is refused on a wrong field type or size, and nothing changes;
- results and fetches count only with the item's ticket, made by the master for the worker it assigned
  the item to: forged results (made-up tickets, another worker's ticket, items not assigned) are refused
  and not recorded, while the assigned worker's are;
- a member's `job.assign` and `job.item_failed` are refused (master only) and nothing runs;
- a `job.done` for another worker's task, a `job.cancel` from anybody but the submitter and a
  `job.submit` that takes another submitter's job id are refused or ignored;
- refusals are a line per kind per interval, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from fake_context import FakeContext

from collab_tui.config import NodeConfig
from collab_tui.jobs.messages import MAX_ITEMS, ticket
from collab_tui.jobs.scheduler import task_id_for
from collab_tui.jobs.service import JobService
from collab_tui.net.transport import BlobReply, RemoteError
from collab_tui.node.context import PeerView

S, M, W, R = "5" * 64, "a" * 64, "b" * 64, "e" * 64  # submitter, master, worker, rogue member
NAMES = {S: "sub", M: "master", W: "worker", R: "rogue"}
ITEM_BYTES = 6000  # above the inline size: workers fetch these from the submitter


class MiniCluster:
    """Three services whose sends are delivered to each other's handlers as the node delivers them
    (validated, sender checked); what is sent to the rogue is dropped."""

    def __init__(self, root: Path) -> None:
        self.svcs: dict[str, JobService] = {}
        view = {
            S: PeerView(S, "sub", capabilities=("faces",)),  # runs no task
            M: PeerView(M, "master", capabilities=("faces",)),
            W: PeerView(W, "worker", cpus=4, capabilities=("jobs",)),
        }
        for node_id, extra in (
            (S, {"master_id": M, "peers": [view[M], view[W]]}),
            (M, {"master_id": M, "is_master": True, "peers": [view[W]], "config": NodeConfig(job_threads=-1)}),
            (W, {"master_id": M, "peers": [view[S], view[M]], "config": NodeConfig(job_threads=1)}),
        ):
            ctx = FakeContext(node_id, name=NAMES[node_id], home=root / NAMES[node_id], **extra)
            ctx.on_send = self._sender(node_id)
            ctx.on_send_blob = self._blob_sender(node_id)
            ctx.on_request = self._requester(node_id)
            self.svcs[node_id] = JobService(ctx)

    def _sender(self, src: str):
        async def send(peer: str, msg: dict) -> bool:
            if peer in self.svcs:
                await self.svcs[peer].ctx.deliver(src, msg)
            return True

        return send

    def _blob_sender(self, src: str):
        async def send_blob(peer: str, fields: dict, data: bytes) -> None:
            if peer in self.svcs:
                await self.svcs[peer].ctx.deliver(src, {**fields, "t": fields["kind"], "data": data})

        return send_blob

    def _requester(self, src: str):
        async def request(peer: str, msg: dict, timeout: float) -> dict:
            reply = await self.svcs[peer].ctx.deliver(src, msg)
            if isinstance(reply, BlobReply):  # as the transport hands a blob answer to the requester
                return {**reply.fields, "data": reply.data, "ok": True}
            if isinstance(reply, dict) and reply.get("ok") is False:
                raise RemoteError(reply["error"])
            return {"ok": True, **(reply or {})}

        return request

    def __getitem__(self, node_id: str) -> JobService:
        return self.svcs[node_id]

    def snapshot(self, job_id: str) -> tuple:
        """What a refused message must not change: the submitter's store, the master's view, the worker."""
        sub, master, worker = self[S].submitter, self[M].master, self[W].worker
        return (
            sub.store.jobs(),
            sub.store.items(job_id),
            {j: meta["submitter"] for j, meta in master.jobs.items()} if master else None,
            master.stats() if master else None,
            worker.depth(),
            len(worker._tasks),
        )


@pytest.fixture
async def cluster(tmp_path):
    c = MiniCluster(tmp_path)
    c[M]._sync_role()
    await c[W].worker.start()
    yield c
    for svc in c.svcs.values():
        await svc.stop()


async def _job(c: MiniCluster, tmp_path: Path, n: int = 4, start: bool = True) -> str:
    """A wordcount job of ``n`` items created on the submitter; with ``start``, submitted to the master
    (which assigns its items to the worker at once). Returns its id."""
    d = tmp_path / "texts"
    d.mkdir()
    for k in range(n):
        (d / f"t{k}.txt").write_text(f"alpha beta {k} " + "x" * ITEM_BYTES)
    master_id = c[S].ctx.master_id
    if not start:
        c[S].ctx.master_id = None  # created, not submitted
    job = await c[S].submitter.create([str(d)], "wordcount", {}, None)
    c[S].ctx.master_id = master_id
    return job["job_id"]


async def _settle(cond, what: str) -> None:
    for _ in range(300):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _result(job_id: str, item_id: str, tkt: str, words: int = 2) -> dict:
    return {"job_id": job_id, "item_id": item_id, "ticket": tkt, "result": {"words": words}, "error": None}


# ----------------------------------------------------------------------------- the whole path
async def test_tickets_made_by_the_master_let_the_assigned_worker_fetch_and_deliver(cluster, tmp_path):
    c = cluster
    jid = await _job(c, tmp_path, n=3)
    await _settle(lambda: c[S].submitter.store.job(jid)["status"] == "done", "the job to finish")
    items = c[S].submitter.store.results(jid)
    assert [it["worker"] for it in items] == [W, W, W]
    assert all(it["result"]["words"] == 2 + 1 for it in items)  # alpha beta xxx..., fetched, not inline
    assert all(not svc.ctx.refused for svc in c.svcs.values())
    sent_to_w = [m for peer, m in c[M].ctx.sent if peer == W and m["t"] == "job.assign"]
    assert sent_to_w and all(len(it["ticket"]) == 64 for m in sent_to_w for it in m["items"])
    # the job's secret goes to the master, never to a worker
    key = c[S].submitter.store.job_key(jid)
    assert any(m.get("job_key") == key for _, m in c[S].ctx.sent)
    assert not any(key in repr(m) for _, m in c[M].ctx.sent)
    assert "job_key" not in c[S].submitter.store.job(jid)  # nor in the job's views


# ----------------------------------------------------------------------------- forged results
async def test_forged_results_are_refused_and_the_assigned_workers_are_recorded(cluster, tmp_path, caplog):
    c = cluster
    jid = await _job(c, tmp_path, n=4, start=False)  # nobody runs it: the test plays the master
    key = c[S].submitter.store.job_key(jid)
    w_ticket = ticket(key, jid, "000000", W)  # item 000000 was assigned to W
    forged = [
        [_result(jid, f"{k:06d}", "0" * 64, words=-1) for k in range(4)],  # made-up tickets
        [_result(jid, "000000", w_ticket, words=-1)],  # the worker's ticket, sent by the rogue
        [_result(jid, f"{k:06d}", ticket(key, jid, f"{k:06d}", W), words=-1) for k in (1, 2, 3)],  # W's, for W
        [_result(jid, "000001", ticket(key, jid, "000001", R), words=-1)],  # a key it cannot know: shown ok
    ]
    before = c[S].submitter.store.items(jid)
    with caplog.at_level(logging.WARNING, logger="collab.jobs"):
        for batch in forged[:3]:
            for _ in range(20):
                await c[S].ctx.deliver(R, {"t": "job.results", "results": batch})
        # the worker's own results, with its ticket: recorded; one for an item not assigned to it: refused
        await c[S].ctx.deliver(W, {"t": "job.results", "results": [_result(jid, "000000", w_ticket)]})
        await c[S].ctx.deliver(W, {"t": "job.results", "results": [_result(jid, "000002", w_ticket)]})
    items = {it["item_id"]: it for it in c[S].submitter.store.items(jid)}
    assert items["000000"]["status"] == "done" and items["000000"]["worker"] == W
    assert items["000000"]["result"]["words"] == 2
    assert [items[f"{k:06d}"] for k in (1, 2, 3)] == before[1:]  # unchanged
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "job.results" in refusals[0] and R[:12] in refusals[0]
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)
    # a ticket made with the rogue's own id validates only if it knows the job's key
    assert c[S].submitter.ticket_valid(jid, "000001", R, forged[3][0]["ticket"])
    assert not c[S].submitter.ticket_valid(jid, "000001", R, ticket("1" * 64, jid, "000001", R))


async def test_a_blob_of_results_is_filtered_item_by_item(cluster, tmp_path):
    c = cluster
    jid = await _job(c, tmp_path, n=2, start=False)
    key = c[S].submitter.store.job_key(jid)
    results = [_result(jid, "000000", ticket(key, jid, "000000", W)), _result(jid, "000001", "f" * 64)]
    await c[S].ctx.deliver(
        W, {"t": "job.results", "kind": "job.results", "results": results, "sizes": [2, 3], "data": b"ab" + b"cde"}
    )
    items = c[S].submitter.store.items(jid)
    assert [it["status"] for it in items] == ["done", "pending"]
    reply = await c[S].ctx.deliver(W, {"t": "job.results", "results": results[:1], "sizes": [5], "data": b"ab"})
    assert reply["ok"] is False and "sizes" in reply["error"]


# ----------------------------------------------------------------------------- fetches
async def test_a_fetch_is_served_only_with_the_tickets_of_the_sender(cluster, tmp_path):
    c = cluster
    jid = await _job(c, tmp_path, n=2, start=False)
    key = c[S].submitter.store.job_key(jid)
    fetch = {"t": "job.fetch", "job_id": jid}
    mine = [{"item_id": "000000", "ticket": ticket(key, jid, "000000", W)}]
    reply = await c[S].ctx.deliver(W, {**fetch, "items": mine})
    assert isinstance(reply, BlobReply) and reply.data.startswith(b"alpha beta 0")
    for sender, items in [
        (R, mine),  # another worker's ticket
        (W, [*mine, {"item_id": "000001", "ticket": mine[0]["ticket"]}]),  # one item not assigned to it
        (R, [{"item_id": "000000", "ticket": "0" * 64}]),
    ]:
        reply = await c[S].ctx.deliver(sender, {**fetch, "items": items})
        assert not isinstance(reply, BlobReply) and reply["ok"] is False and "not assigned" in reply["error"]
    reply = await c[S].ctx.deliver(R, {**fetch, "items": [{"item_id": "000000"}]})  # no ticket at all
    assert reply["ok"] is False and "ticket" in reply["error"] and c[S].ctx.refused
    reply = await c[S].ctx.deliver(W, {**fetch, "job_id": "nope", "items": mine})
    assert reply["ok"] is False and "no job" in reply["error"]
    # the attack of the issue: a 1 MB string where the list goes, refused at once by the schema
    reply = await c[S].ctx.deliver(R, {**fetch, "item_ids": "x" * 1024 * 1024, "items": "x" * 1024 * 1024})
    assert reply["ok"] is False and "items" in reply["error"] and len(reply["error"]) < 300
    # a repeated item is read and sent once
    reply = await c[S].ctx.deliver(W, {**fetch, "items": mine * 50})
    assert isinstance(reply, BlobReply) and reply.fields["sizes"] == [len(reply.data)]


# ----------------------------------------------------------------------------- master-only messages
async def test_a_members_assign_and_item_failed_are_refused_and_nothing_runs(cluster, tmp_path):
    c = cluster
    jid = await _job(c, tmp_path, n=2, start=False)
    before = c.snapshot(jid)
    assign = {
        "t": "job.assign",
        "term": c[W].ctx.term,
        "job_id": jid,
        "submitter": S,
        "kind": "wordcount",
        "items": [{"item_id": "000000", "ticket": "0" * 64, "size": 1, "data": "eA=="}],
    }
    reply = await c[W].ctx.deliver(R, assign)
    assert reply["ok"] is False and "not this node's master" in reply["error"]
    reply = await c[W].ctx.deliver(M, {**assign, "term": c[W].ctx.term + 5})  # the master, another term
    assert reply["ok"] is False and "term" in reply["error"]
    failed = {"t": "job.item_failed", "term": c[S].ctx.term, "job_id": jid, "item_id": "000000", "error": "x"}
    reply = await c[S].ctx.deliver(R, failed)
    assert reply["ok"] is False
    await asyncio.sleep(0.05)
    assert c.snapshot(jid) == before
    assert c[W].ctx.sent == [] and c[S].ctx.sent == []
    # the master's own: obeyed
    await c[S].ctx.deliver(M, failed)
    assert c[S].submitter.store.items(jid)[0]["status"] == "error"


async def test_done_counts_only_for_the_senders_tasks(cluster, tmp_path):
    c = cluster
    # the worker runs nothing, so that its tasks stay assigned to it
    await c[W].worker.stop()
    c[W].worker._runners = []
    jid = await _job(c, tmp_path, n=2, start=False)
    await c[S].submitter.resubmit(jid)
    master = c[M].master
    tids = [task_id_for(jid, f"{k:06d}") for k in range(2)]
    assert sorted(master.sched.inflight_of(W)) == tids
    await c[M].ctx.deliver(R, {"t": "job.done", "done": tids, "failed": []})
    await c[M].ctx.deliver(R, {"t": "job.done", "failed": [{"task_id": tids[0], "error": "x", "cause": "worker"}]})
    assert [master.sched.status(t) for t in tids] == ["assigned", "assigned"]
    assert master.sched.attempts_of(tids[0]) == 0
    await c[M].ctx.deliver(W, {"t": "job.done", "done": tids[:1]})
    assert [master.sched.status(t) for t in tids] == ["done", "assigned"]


async def test_cancel_only_from_the_submitter_and_a_job_id_belongs_to_its_submitter(cluster, tmp_path, caplog):
    c = cluster
    await c[W].worker.stop()
    c[W].worker._runners = []
    jid = await _job(c, tmp_path, n=2, start=False)
    await c[S].submitter.resubmit(jid)
    master = c[M].master
    with caplog.at_level(logging.WARNING, logger="collab.jobs"):
        reply = await c[M].ctx.deliver(R, {"t": "job.cancel", "job_id": jid})
        assert reply["ok"] is False and "not its job" in reply["error"]
        assert master.stats()["jobs"] == 1
        # the rogue takes the job id with its own key: refused, the job stays the submitter's
        take = {"t": "job.submit", "job_id": jid, "job_key": "1" * 64, "kind": "noop", "items": []}
        reply = await c[M].ctx.deliver(R, take)
        assert reply["ok"] is False and "another submitter" in reply["error"]
        assert master.submitter_of(jid) == S and master.jobs[jid]["kind"] == "wordcount"
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 2
    await c[M].ctx.deliver(S, {"t": "job.cancel", "job_id": jid})
    assert master.stats()["jobs"] == 0 and master.stats()["cancelled"] == 2


async def test_only_the_master_takes_submissions(cluster):
    reply = await cluster[W].ctx.deliver(S, {"t": "job.submit", "job_id": "j", "job_key": "1" * 64, "kind": "noop"})
    assert reply["ok"] is False and "not the master" in reply["error"]
    assert cluster[W].master is None


# ----------------------------------------------------------------------------- every type, bad fields
BIG = "A" * (1024 * 1024)
TICKET = "0" * 64


def _bad_messages(jid: str) -> list[tuple[str, str, dict]]:
    """(receiver, sender, message): each one wrong in one field, from a sender it would be taken from."""
    submit = {"t": "job.submit", "job_id": jid, "job_key": "1" * 64, "kind": "noop", "items": []}
    assign = {"t": "job.assign", "term": 1, "job_id": jid, "submitter": S, "kind": "noop", "items": []}
    item = {"item_id": "000000", "ticket": TICKET, "size": 1}
    result = _result(jid, "000000", TICKET)
    fetch = {"t": "job.fetch", "job_id": jid, "items": [{"item_id": "000000", "ticket": TICKET}]}
    failed = {"t": "job.item_failed", "term": 1, "job_id": jid, "item_id": "000000", "error": "x"}
    return [
        (M, S, {**submit, "job_id": "../x"}),
        (M, S, {**submit, "job_id": 5}),
        (M, S, {**submit, "job_key": "zz"}),
        (M, S, {**submit, "kind": "k" * 65}),
        (M, S, {**submit, "items": [{"item_id": str(k), "size": 1} for k in range(MAX_ITEMS + 1)]}),
        (M, S, {**submit, "items": [{"item_id": "0", "size": -1}]}),
        (M, S, {**submit, "items": [{"item_id": "0", "size": 1, "data": "A" * 10_000}]}),
        (M, S, {**submit, "items": [{"item_id": "0", "size": 1, "data": "not base64!"}]}),
        (M, S, {**submit, "options": {f"o{k}": k for k in range(100)}}),
        (M, S, {**submit, "options": {"model": {"nested": 1}}}),
        (M, S, {**submit, "options": {"model": BIG}}),
        (W, M, {**assign, "term": []}),
        (W, M, {**assign, "items": BIG}),
        (W, M, {**assign, "items": [{"item_id": "000000", "size": 1}]}),  # no ticket
        (W, M, {**assign, "items": [item] * (MAX_ITEMS + 1)}),
        (W, M, {**assign, "submitter": "x"}),
        (M, W, {"t": "job.done", "done": ["j:0"] * (MAX_ITEMS + 1)}),
        (M, W, {"t": "job.done", "done": ["no-colon"]}),
        (M, W, {"t": "job.done", "failed": [{"task_id": f"{jid}:000000", "cause": "bogus"}]}),
        (M, W, {"t": "job.done", "failed": [{"task_id": f"{jid}:000000", "error": BIG}]}),
        (S, W, {**fetch, "job_id": 5}),
        (S, W, {**fetch, "items": [fetch["items"][0]] * (MAX_ITEMS + 1)}),
        (S, W, {"t": "job.results", "results": BIG}),
        (S, W, {"t": "job.results", "results": [{**result, "ticket": "nope"}]}),
        (S, W, {"t": "job.results", "results": [{**result, "error": BIG}]}),
        (S, W, {"t": "job.results", "results": [{**result, "item_id": "../../x"}]}),
        (S, W, {"t": "job.results", "results": [{**result, "result": {f"k{k}": 1 for k in range(1000)}}]}),
        (S, W, {"t": "job.results", "results": [{**result, "attempts": "junk"}]}),
        (S, W, {"t": "job.results", "results": [result], "sizes": [0] * (MAX_ITEMS + 1)}),
        (S, M, {**failed, "error": BIG}),
        (S, M, {**failed, "item_id": "../../x"}),
        (S, M, {k: v for k, v in failed.items() if k != "term"}),
        (M, S, {"t": "job.cancel", "job_id": []}),
        (W, R, {"t": "job.predict", "kind": "job.predict", "options": {}}),  # no data
        (W, R, {"t": "job.predict", "data": b"x", "options": "x"}),
    ]


async def test_every_job_message_with_a_bad_field_is_refused_and_changes_nothing(cluster, tmp_path, caplog):
    c = cluster
    jid = await _job(c, tmp_path, n=2, start=False)
    before = c.snapshot(jid)
    bad = _bad_messages(jid)
    assert {m["t"] for _, _, m in bad} == set(c[S].ctx.handlers)  # every job message type
    with caplog.at_level(logging.INFO):
        for receiver, sender, msg in bad:
            n = len(c[receiver].ctx.refused)
            reply = await c[receiver].ctx.deliver(sender, msg)
            assert reply["ok"] is False, msg["t"]
            assert len(c[receiver].ctx.refused) == n + 1, msg["t"]
            exc = c[receiver].ctx.refused[-1]
            assert exc.msg_type == msg["t"] and exc.kind.startswith("field"), (msg["t"], exc.kind)
            assert len(str(exc)) < 300  # a value is never echoed beyond a short prefix
    await asyncio.sleep(0.05)
    assert c.snapshot(jid) == before
    assert all(not ctx.sent for ctx in (c[S].ctx, c[M].ctx, c[W].ctx))
    assert not any(r.exc_info for r in caplog.records)


async def test_the_submitter_checks_options_and_cuts_big_submissions(cluster, tmp_path):
    c = cluster
    with pytest.raises(ValueError, match="job options"):
        await c[S].submitter.create([str(tmp_path)], "noop", {"model": {"nested": 1}}, None)
    assert c[S].submitter.store.jobs() == []
    d = tmp_path / "many"
    d.mkdir()
    for k in range(MAX_ITEMS + 10):
        (d / f"f{k:05d}").write_bytes(b"x" * 5000)
    c[S].ctx.master_id = None
    jid = (await c[S].submitter.create([str(d)], "noop", {}, None))["job_id"]
    sent: list[dict] = []

    async def master(peer: str, msg: dict, timeout: float) -> dict:
        sent.append(msg)
        return {"ok": True, "accepted": len(msg["items"])}

    c[S].ctx.master_id, c[S].ctx.on_request = R, master  # a master that only counts
    c[S].ctx.peer_views.append(PeerView(R))
    assert await c[S].submitter.resubmit(jid)
    assert [len(m["items"]) for m in sent] == [MAX_ITEMS, 10]
    assert all(m["job_key"] == c[S].submitter.store.job_key(jid) for m in sent)


def test_a_jobs_key_is_kept_across_restarts_and_given_to_older_stores(tmp_path):
    import sqlite3

    from collab_tui.jobs.store import JobStore

    path = tmp_path / "jobs.db"
    with JobStore(path) as store:
        jid = store.create_job("noop", [("0", "/x", 1, "h")])
        key = store.job_key(jid)
        assert len(key) == 64 and "job_key" not in store.job(jid) and "job_key" not in store.jobs()[0]
    with JobStore(path) as store:
        assert store.job_key(jid) == key  # resubmissions after a restart make the same tickets
    db = sqlite3.connect(path)  # a store from before job keys
    db.execute("ALTER TABLE jobs DROP COLUMN job_key")
    db.commit()
    db.close()
    with JobStore(path) as store:
        assert len(store.job_key(jid)) == 64


# ----------------------------------------------------------------------------- random messages
class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


def test_random_job_messages_never_raise_and_refused_ones_change_nothing(tmp_path):
    """Messages of every job type, valid or not, from the master, a member or the rogue, to each of the
    three nodes: no exception escapes a handler, nothing is logged with a traceback, and a message the
    schema or the sender check refuses changes nothing."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schema_strategies import message

    from collab_tui.jobs.messages import JOB_MESSAGES
    from collab_tui.net.schema import Refused, admit

    loop = asyncio.new_event_loop()
    c = MiniCluster(tmp_path)
    c[M]._sync_role()
    jid = loop.run_until_complete(_job(c, tmp_path, n=2, start=False))
    catcher = _Tracebacks()
    logging.getLogger().addHandler(catcher)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(schema=st.sampled_from(JOB_MESSAGES), data=st.data())
    def check(schema, data):
        msg = data.draw(message(schema))
        sender = data.draw(st.sampled_from([M, R, W, S]))
        receiver = data.draw(st.sampled_from([S, M, W]))
        ctx = c[receiver].ctx
        try:
            admit(schema, sender, msg, ctx.master_id, ctx.term)
            valid = True
        except Refused:
            valid = False
        if valid and schema.type_name() == "job.predict":
            return  # a valid one starts the ML process: not here
        before = c.snapshot(jid)
        loop.run_until_complete(ctx.deliver(sender, msg))
        loop.run_until_complete(asyncio.sleep(0.001))  # what the handler spawned
        assert not catcher.records, [r.getMessage() for r in catcher.records]
        if not valid:
            assert c.snapshot(jid) == before, schema.type_name()

    try:
        check()
    finally:
        logging.getLogger().removeHandler(catcher)
        for svc in c.svcs.values():
            loop.run_until_complete(svc.stop())
        loop.close()
