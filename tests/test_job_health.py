"""Workers that fail loudly, in-process: the sans-IO health tracker, the worker that feeds it (bounded
logging, failure causes, attempts copied into results), the master that benches from failures and from
heartbeat reports (logging once), and the submitter that stores and adds up the retried attempts."""

from __future__ import annotations

import asyncio
import base64
import logging
from types import SimpleNamespace

import pytest
from fake_context import FakeContext

from collab_tui.jobs import types as jtypes
from collab_tui.jobs.health import FailuresSummary, KindRecovered, KindUnhealthy, WorkerHealth
from collab_tui.jobs.master_side import JobMaster
from collab_tui.jobs.scheduler import task_id_for
from collab_tui.jobs.store import JobStore
from collab_tui.jobs.submitter_side import JobSubmitter
from collab_tui.jobs.types import JobOutput, JobType
from collab_tui.jobs.worker_side import JobWorker
from collab_tui.node.context import PeerView

SUB, MASTER, W = "s" * 64, "m" * 64, "w" * 64
CV2 = "module 'cv2' has no attribute 'data'"


# --------------------------------------------------------------------------- the tracker
def test_three_failures_in_a_row_make_a_kind_unhealthy_one_success_clears_it():
    h = WorkerHealth()
    assert h.failure("faces", "boom", 0.0) == [FailuresSummary("faces", 1, "boom")]  # the first one: at once
    assert h.failure("faces", "boom", 0.1) == []
    assert h.unhealthy() == {}
    assert h.failure("faces", CV2, 0.2) == [KindUnhealthy("faces", CV2, 3)]
    assert h.unhealthy() == {"faces": CV2}
    assert isinstance(h.failure("wordcount", "x", 0.3)[0], FailuresSummary)  # per kind
    assert h.unhealthy() == {"faces": CV2}
    for k in range(100):
        assert h.failure("faces", CV2, 0.4 + k * 0.01) == []  # no line per failed task
    assert h.tick(10.0) == []
    assert h.success("faces", 20.0) == [KindRecovered("faces", 103)]
    assert h.unhealthy() == {} and h.consecutive("faces") == 0
    assert h.success("faces", 20.1) == []
    assert h.tick(100.0) == []  # the recovery line said it all


def test_summaries_are_at_most_one_per_interval_with_the_count():
    h = WorkerHealth(summary_every=30.0)
    lines = []
    t = 0.0
    for _ in range(1000):  # fails every other task: never unhealthy, yet one line per 30 s at most
        t += 0.1
        lines += h.failure("ocr", "tesseract crashed", t)
        lines += h.success("ocr", t + 0.05)
        lines += h.tick(t)
    assert h.unhealthy() == {}
    assert 1 <= len(lines) <= 1 + int(t // 30.0) + 1
    assert all(isinstance(ev, FailuresSummary) for ev in lines)
    assert sum(ev.count for ev in lines) <= 1000
    # the failures not yet summarised are, once the interval is over
    h2 = WorkerHealth(summary_every=30.0)
    h2.failure("faces", "a", 0.0)
    h2.failure("faces", "b", 1.0)
    assert h2.tick(5.0) == []
    assert h2.tick(31.0) == [FailuresSummary("faces", 1, "b")]
    assert h2.tick(100.0) == []


def test_tracker_parameters_are_checked():
    with pytest.raises(ValueError):
        WorkerHealth(threshold=0)


# --------------------------------------------------------------------------- the worker
class Broken(JobType):
    name = "broken-here"
    inline = True

    def run(self, data: bytes, options: dict) -> JobOutput:
        raise AttributeError(CV2)


class Picky(JobType):
    name = "picky"
    inline = True

    def run(self, data: bytes, options: dict) -> JobOutput:
        if data == b"bad":
            raise ValueError("not a picture")
        return JobOutput({"n": len(data)})


class NamesAModel(JobType):
    """Like classify with ``--model typo``: the job names something this node does not have."""

    name = "names-a-model"
    inline = True

    def run(self, data: bytes, options: dict) -> JobOutput:
        raise LookupError(f"model {options.get('model')!r} is not known on this node")


@pytest.fixture
def types_here(monkeypatch):
    reg = {**jtypes.registry(), "broken-here": Broken(), "picky": Picky(), "names-a-model": NamesAModel()}
    monkeypatch.setattr(jtypes, "_registry", reg)
    yield reg


def _worker():
    acks: list[dict] = []
    results: list[dict] = []

    async def send_to(node_id, msg):
        acks.append(msg)
        return True

    async def deliver_results(submitter, payloads, attachments):
        results.extend(payloads)
        return True

    async def fetch_many(submitter, job_id, item_ids):
        raise ConnectionError("submitter is not connected")

    ctx = FakeContext(W, name="w", master_id=MASTER)
    svc = SimpleNamespace(ctx=ctx, send_to=send_to, deliver_results=deliver_results, fetch_many=fetch_many)
    return JobWorker(svc, threads=1), acks, results


def _items(n: int, data: bytes = b"x", attempts: int = 0) -> list[dict]:
    out = [{"item_id": str(k), "size": len(data), "data": base64.b64encode(data).decode()} for k in range(n)]
    for it in out:
        if attempts:
            it["attempts"] = attempts
    return out


async def _settle(cond, what: str) -> None:
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_worker_that_keeps_failing_reports_itself_unhealthy_and_logs_a_few_lines(types_here, caplog):
    worker, acks, results = _worker()
    await worker.start()
    try:
        with caplog.at_level(logging.WARNING, logger="collab.jobs.worker"):
            worker.on_assign(
                MASTER, {"term": 1, "job_id": "j", "submitter": SUB, "kind": "broken-here", "items": _items(50)}
            )
            await _settle(lambda: sum(len(a["failed"]) for a in acks) == 50, "50 failures acked")
        assert worker.unhealthy() == {"broken-here": CV2}
        assert all(f["cause"] == "worker" and f["error"] == CV2 for a in acks for f in a["failed"])
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) <= 3, lines  # first failure, the transition (and no line per task)
        assert any("unhealthy" in ln and "broken-here" in ln for ln in lines)
        # a kind the node runs fine is not affected; a per-item error neither counts nor clears
        worker.on_assign(
            MASTER, {"term": 1, "job_id": "k", "submitter": SUB, "kind": "picky", "items": _items(2, b"bad")}
        )
        await _settle(lambda: len(results) == 2, "two final errors")
        assert all(r["error"] for r in results) and worker.unhealthy() == {"broken-here": CV2}
    finally:
        await worker.stop()


async def test_a_type_unknown_here_counts_a_fetch_failure_does_not(types_here):
    worker, acks, _ = _worker()
    await worker.start()
    try:
        worker.on_assign(
            MASTER,
            {
                "term": 1,
                "job_id": "j",
                "submitter": SUB,
                "kind": "telepathy",
                "items": [{"item_id": str(k), "size": 1} for k in range(3)],
            },
        )
        await _settle(lambda: len(acks) == 1, "the refusal")
        assert {f["cause"] for f in acks[0]["failed"]} == {"worker"}
        assert "telepathy" in worker.unhealthy()
        worker.on_assign(
            MASTER,
            {
                "term": 1,
                "job_id": "k",
                "submitter": SUB,
                "kind": "picky",
                "items": [{"item_id": str(k), "size": 1} for k in range(5)],
            },
        )  # not inline
        await _settle(lambda: len(acks) == 2, "the fetch failure")
        assert {f["cause"] for f in acks[1]["failed"]} == {"fetch"}
        assert "picky" not in worker.unhealthy() and worker.health.consecutive("picky") == 0
    finally:
        await worker.stop()


async def test_a_job_naming_a_model_this_node_lacks_is_retried_but_not_held_against_the_node(types_here):
    """One user's typo must not bench every worker for every job of that kind."""
    worker, acks, _ = _worker()
    await worker.start()
    try:
        msg = {"term": 1, "job_id": "j", "submitter": SUB, "kind": "names-a-model", "items": _items(6)}
        worker.on_assign(MASTER, {**msg, "options": {"model": "typo"}})
        await _settle(lambda: sum(len(a["failed"]) for a in acks) == 6, "six refusals")
        assert {f["cause"] for a in acks for f in a["failed"]} == {"options"}
        assert worker.unhealthy() == {} and worker.health.consecutive("names-a-model") == 0
    finally:
        await worker.stop()


async def test_the_worker_copies_the_attempts_into_results_and_a_success_clears(types_here):
    worker, acks, results = _worker()
    await worker.start()
    try:
        for _ in range(3):
            worker.health.failure("picky", "earlier trouble", 0.0)
        assert "picky" in worker.unhealthy()
        worker.on_assign(
            MASTER, {"term": 1, "job_id": "j", "submitter": SUB, "kind": "picky", "items": _items(2, attempts=2)}
        )
        await _settle(lambda: len(results) == 2, "two results")
        assert [r["attempts"] for r in results] == [2, 2] and results[0]["result"] == {"n": 1}
        assert worker.unhealthy() == {}
    finally:
        await worker.stop()


# --------------------------------------------------------------------------- the master
def _master(peers: list | None = None):
    ctx = FakeContext(MASTER, name="m", term=3, peers=peers or [])
    sent: list[tuple[str, dict]] = []

    async def send_to(node_id, msg):
        sent.append((node_id, msg))
        return True

    svc = SimpleNamespace(ctx=ctx, worker=SimpleNamespace(enabled=False), send_to=send_to)
    return JobMaster(svc), sent


def _peer(node_id: str, name: str, unhealthy: dict | None = None) -> PeerView:
    return PeerView(node_id, name, cpus=4, load=0.0, capabilities=("jobs",), unhealthy=unhealthy or {})


async def test_master_benches_a_failing_worker_logs_once_and_passes_attempts_along(caplog):
    bad, good = "b" * 64, "g" * 64
    m, sent = _master([_peer(bad, "node-bad"), _peer(good, "node-good")])
    m.on_submit(SUB, {"job_id": "j", "kind": "faces", "items": [{"item_id": str(k), "size": 10} for k in range(40)]})
    with caplog.at_level(logging.INFO, logger="collab.jobs.master"):
        await m.pump()
        to_bad = [msg for to, msg in sent if to == bad]
        failed = [
            {"task_id": task_id_for("j", it["item_id"]), "error": CV2, "cause": "worker"}
            for msg in to_bad
            for it in msg["items"]
        ]
        assert len(failed) >= 3
        m.on_done(bad, {"done": [], "failed": failed})
        sent.clear()
        await m.pump()
    assert m.sched.benched(bad) == {"faces": CV2}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "node-bad" in warnings[0] and "faces" in warnings[0]
    # the retried items go to the healthy worker, with their attempt count
    m.on_done(
        good,
        {
            "done": [
                task_id_for("j", str(k))
                for k in range(40)
                if m.sched.status(task_id_for("j", str(k))) == "assigned"
                and task_id_for("j", str(k)) in m.sched.inflight_of(good)
            ],
            "failed": [],
        },
    )
    m._capacity_at = float("-inf")
    await m.pump()
    retried = [it for to, msg in sent if to == good for it in msg["items"] if it.get("attempts")]
    assert retried and all(it["attempts"] == 1 for it in retried)
    assert all(to != bad for to, _ in sent)


async def test_master_benches_a_worker_whose_heartbeat_reports_a_kind_unhealthy():
    bad, good = "b" * 64, "g" * 64
    m, sent = _master([_peer(bad, "node-bad", {"faces": CV2}), _peer(good, "node-good", {})])
    m.on_submit(SUB, {"job_id": "j", "kind": "faces", "items": [{"item_id": str(k), "size": 10} for k in range(5)]})
    await m.pump()
    assert "faces" in m.sched.benched(bad) and CV2 in m.sched.benched(bad)["faces"]
    assert sent and all(to == good for to, _ in sent)


async def test_fetch_delivery_and_options_failures_do_not_bench():
    bad = "b" * 64
    m, sent = _master([_peer(bad, "node-bad")])
    m.on_submit(SUB, {"job_id": "j", "kind": "faces", "items": [{"item_id": str(k), "size": 10} for k in range(20)]})
    await m.pump()
    failed = [
        {"task_id": task_id_for("j", it["item_id"]), "error": "gone", "cause": cause}
        for (_, msg), cause in zip(sent, ["fetch", "deliver", "options"] * 10)
        for it in msg["items"]
    ]
    m.on_done(bad, {"done": [], "failed": failed})
    assert m.sched.benched(bad) == {}


# --------------------------------------------------------------------------- the submitter's store
def test_store_keeps_attempts_per_item_and_adds_them_up(tmp_path):
    with JobStore(tmp_path / "jobs.db") as store:
        jid = store.create_job("faces", [(str(k), f"/x/{k}.png", 1, "h") for k in range(4)])
        store.finish_items(jid, [("0", "done", "{}", None, "w", 2), ("1", "done", "{}", None, "w")])
        store.record_error(jid, "2", "gave up", "", attempts=5)
        assert store.retried(jid) == {"retried_attempts": 7, "retried_items": 2}
        assert [it["attempts"] for it in store.items(jid)] == [2, 0, 5, 0]


def test_store_without_the_attempts_column_is_migrated(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with JobStore(path) as store:
        jid = store.create_job("faces", [("0", "/x.png", 1, "h")])
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE items DROP COLUMN attempts")
    db.commit()
    db.close()
    with JobStore(path) as store:
        assert store.items(jid)[0]["attempts"] == 0
        store.finish_items(jid, [("0", "done", "{}", None, "w", 1)])
        assert store.retried(jid)["retried_attempts"] == 1


async def test_job_show_reports_the_retried_attempts(tmp_path):
    import json

    sub = JobSubmitter(SimpleNamespace(ctx=FakeContext(home=tmp_path / "home")))
    try:
        d = tmp_path / "texts"
        d.mkdir()
        for k in range(3):
            (d / f"t{k}.txt").write_text(f"alpha beta {k}\n")
        jid = (await sub.create([str(d)], "wordcount", {}, str(tmp_path / "out")))["job_id"]
        res = {
            "job_id": jid,
            "worker": "w1",
            "worker_name": "w1",
            "error": None,
            "result": {"words": 2, "counts": {"alpha": 1, "beta": 1}},
        }
        sub.on_results(
            [
                {**res, "item_id": "000000", "attempts": 2},
                {**res, "item_id": "000001"},
                {**res, "item_id": "000002", "attempts": "junk"},
            ],
            [None, None, None],
        )
        shown = sub.show(jid)
        assert shown["retried_attempts"] == 2 and shown["retried_items"] == 1
        assert shown["summary"]["retried_attempts"] == 2 and shown["summary"]["words"] == 6
        assert [it["attempts"] for it in shown["items"]] == [2, 0, 0]
        assert shown["items"][0]["result"]["attempts"] == 2
        lines = [json.loads(ln) for ln in (tmp_path / "out" / f"{jid}.results.jsonl").read_text().splitlines()]
        assert [ln["attempts"] for ln in lines] == [2, 0, 0]
    finally:
        sub.store.close()
