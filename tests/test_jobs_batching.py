"""The batched job paths, in-process: progress counters in the store (and their migration), one
transaction per batch of results, batch fetches, tiny items sent inline with the submission and kept by
the master until done, the worker's outbox, the folder walk, `job_threads`, and the scheduler's
`min_inflight`."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_context import FakeContext

from collab_tui.config import ConfigError, load_config
from collab_tui.jobs import store as store_mod
from collab_tui.jobs.inputs import INLINE_ITEM_BYTES
from collab_tui.jobs.master_side import JobMaster
from collab_tui.jobs.messages import new_job_key, ticket
from collab_tui.jobs.scheduler import Scheduler, Task, WorkerCapacity, slots, task_id_for
from collab_tui.jobs.service import _split_results
from collab_tui.jobs.store import JobStore
from collab_tui.jobs.submitter_side import JobSubmitter, collect_paths
from collab_tui.jobs.types import get_type
from collab_tui.jobs.worker_side import JobWorker

SUB, MASTER, W = "s" * 64, "m" * 64, "w" * 64


# --------------------------------------------------------------------------- store
def test_batch_of_outcomes_is_exactly_once_and_counted(tmp_path):
    with JobStore(tmp_path / "jobs.db") as st:
        jid = st.create_job("noop", [(f"i{k}", f"/x/{k}", 1, "h") for k in range(4)])
        out = [
            ("i0", "done", '{"a": 1}', None, "w"),
            ("i1", "error", None, "bad", "w"),
            ("i0", "done", '{"a": 2}', None, "w2"),
            ("nope", "done", "{}", None, "w"),
        ]
        flags, job = st.record_outcomes(jid, out)
        assert flags == [True, True, False, False]
        assert job["counts"] == {"pending": 2, "done": 1, "error": 1, "cancelled": 0} and job["status"] == "running"
        assert st.finish_items(jid, [("i1", "done", "{}", None, "w")]) == [False]
        assert st.record_outcomes(jid, [("i0", "done", "{}", None, "w")]) == ([False], None)
        flags, job = st.record_outcomes(jid, [("i2", "done", "{}", None, "w"), ("i3", "done", "{}", None, "w")])
        assert flags == [True, True] and job["status"] == "done" and job["finished"] == 4
        with pytest.raises(store_mod.JobStoreError):
            st.finish_items(jid, [("i0", "cancelled", None, None, "w")])


def test_counters_follow_cancel_and_are_added_to_old_stores(tmp_path):
    path = tmp_path / "jobs.db"
    old_schema = store_mod._SCHEMA.replace(
        ",\n    n_done INTEGER NOT NULL DEFAULT 0,\n    n_error INTEGER NOT NULL DEFAULT 0,\n"
        "    n_cancelled INTEGER NOT NULL DEFAULT 0",
        "",
    )
    assert "n_done" not in old_schema
    db = sqlite3.connect(path)
    db.executescript(old_schema)
    db.execute("INSERT INTO jobs(job_id, created_at, task, total) VALUES ('j', 1, 'noop', 4)")
    for k, status in enumerate(["done", "error", "pending", "pending"]):
        db.execute("INSERT INTO items(job_id, item_id, status) VALUES ('j', ?, ?)", (str(k), status))
    db.commit()
    db.close()
    with JobStore(path) as st:
        assert st.job("j")["counts"] == {"pending": 2, "done": 1, "error": 1, "cancelled": 0}
        assert st.cancel("j") == 2
        job = st.job("j")
        assert job["counts"]["cancelled"] == 2 and job["counts"]["pending"] == 0 and job["status"] == "cancelled"
    with JobStore(path) as st:  # reopening does not migrate twice
        assert st.job("j")["cancelled"] == 2


# --------------------------------------------------------------------------- submitter
class FakeService:
    def __init__(self, ctx: FakeContext) -> None:
        self.ctx = ctx
        self.sent: list[tuple[str, dict]] = []

    async def send_to(self, node_id: str, msg: dict) -> bool:
        self.sent.append((node_id, msg))
        return True

    async def request(self, node_id: str, msg: dict, timeout: float = 10.0) -> dict:
        self.sent.append((node_id, msg))
        return {"accepted": len(msg["items"])}


@pytest.fixture
def sub(tmp_path):
    svc = FakeService(FakeContext(SUB, name="sub", home=tmp_path / "home", master_id=MASTER))
    s = JobSubmitter(svc)
    yield s
    s.store.close()


def _files(tmp_path: Path, sizes: list[int]) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for k, n in enumerate(sizes):
        (d / f"f{k}.bin").write_bytes(bytes([65 + k]) * n)
    return d


async def test_tiny_items_go_inline_with_the_first_submission_only(sub, tmp_path):
    d = _files(tmp_path, [3, INLINE_ITEM_BYTES, INLINE_ITEM_BYTES + 1, 0])
    job = await sub.create([str(d)], "noop", {}, None)
    ((to, msg),) = sub.svc.sent
    assert to == MASTER and msg["t"] == "job.submit" and msg["job_id"] == job["job_id"]
    items = {it["item_id"]: it for it in msg["items"]}
    assert base64.b64decode(items["000000"]["data"]) == b"AAA"
    assert len(base64.b64decode(items["000001"]["data"])) == INLINE_ITEM_BYTES
    assert "data" not in items["000002"] and items["000003"]["data"] == ""
    assert await sub.resubmit(job["job_id"])
    assert all("data" not in it for it in sub.svc.sent[-1][1]["items"])  # resubmissions: workers fetch


async def test_batch_results_one_transaction_events_and_results_file(sub, tmp_path):
    d = _files(tmp_path, [5, 5, 5])
    out = tmp_path / "out"
    jid = (await sub.create([str(d)], "noop", {}, str(out)))["job_id"]
    events = sub.ctx.subscribe({"job", "job_item"})

    def res(item: str, worker: str = "w1", **kw) -> dict:
        return {"job_id": jid, "item_id": item, "worker": worker, "result": {"bytes": 5}, "error": None, **kw}

    fresh = sub.on_results(
        [res("000000"), res("000001", error="ValueError: no"), res("000000", "w2"), res("000002")],
        [b"png!", None, None, None],
    )
    assert fresh == [True, True, False, True]
    kinds = [events.queue.get_nowait()["kind"] for _ in range(events.queue.qsize())]
    assert kinds == ["job_item", "job_item", "job_item", "job"]  # one progress event for the batch
    job = sub.store.job(jid)
    assert job["status"] == "done" and job["counts"]["done"] == 2 and job["counts"]["error"] == 1
    lines = (out / f"{jid}.results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and sub.repair_results_files() == 0
    annotated = Path(sub.store.results(jid)[0]["result"]["annotated"])
    assert annotated.read_bytes() == b"png!"
    assert sub.on_results([res("000000")], [None]) == [False]
    assert sub.on_results([{**res("x"), "job_id": "unknown"}], [b"a"]) == [False]  # not ours: ignored


async def test_read_items_reports_each_failure_separately(sub, tmp_path):
    d = _files(tmp_path, [4, 4])
    jid = (await sub.create([str(d)], "noop", {}, None))["job_id"]
    (d / "f1.bin").write_bytes(b"changed")
    datas, errors = sub.read_items(jid, ["000000", "000001", "nope"])
    assert datas == {"000000": b"AAAA"}
    assert "changed" in errors["000001"] and "unknown item" in errors["nope"]
    assert sub.batch_bytes(jid, ["000000", "000001", "nope"]) == 8


def test_split_results_checks_sizes():
    msg = {"results": [{"a": 1}, {"b": 2}], "sizes": [2, 0], "data": b"xy"}
    assert _split_results(msg) == ([{"a": 1}, {"b": 2}], [b"xy", None])
    assert _split_results({"results": [{"a": 1}]}) == ([{"a": 1}], [None])
    with pytest.raises(ValueError):
        _split_results({**msg, "sizes": [1, 0]})
    with pytest.raises(ValueError):
        _split_results({**msg, "sizes": [2]})


def test_folder_walk_matches_sorted_rglob(tmp_path):
    root = tmp_path / "tree"
    for rel in ["a/x.txt", "a-b/y.txt", "a.b/z.txt", "a/deep/w.txt", "b.txt", ".hidden", "a/deep/v.md"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "link.txt").symlink_to(root / "b.txt")  # a symlinked file: kept once (same target)
    (root / "linkdir").symlink_to(root / "a", target_is_directory=True)  # a symlinked folder: not entered
    expected = [p for p in sorted(root.rglob("*")) if p.is_file()]
    got = collect_paths([str(root)], "noop")
    assert [p for p in expected if p.name != "link.txt"] == got
    wc = get_type("wordcount")
    assert collect_paths([str(root)], "wordcount") == [p for p in expected if p.name != "link.txt" and wc.accepts(p)]
    assert [p.name for p in collect_paths([str(root)], "wordcount")] == [
        "v.md",
        "w.txt",
        "x.txt",
        "y.txt",
        "z.txt",
        "b.txt",
    ]


# --------------------------------------------------------------------------- master and worker
def _master(worker_enabled: bool = True) -> JobMaster:
    svc = SimpleNamespace(ctx=FakeContext(MASTER, term=3), worker=SimpleNamespace(enabled=worker_enabled))
    return JobMaster(svc)


async def test_master_passes_inline_bytes_along_and_forgets_them_when_done():
    m = _master()
    sent: list[tuple[str, dict]] = []

    async def send_to(node_id, msg):
        sent.append((node_id, msg))
        return True

    m.svc.send_to = send_to
    data = base64.b64encode(b"hi").decode()
    key = new_job_key()
    m.on_submit(
        SUB,
        {
            "job_id": "j",
            "job_key": key,
            "kind": "noop",
            "items": [{"item_id": "0", "size": 2, "data": data}, {"item_id": "1", "size": 9}],
        },
    )
    assert m.inline == {"j": {"0": data}}
    await m.pump()
    ((to, msg),) = sent
    assert to == MASTER and msg["term"] == 3
    assert msg["items"] == [
        {"item_id": "0", "ticket": ticket(key, "j", "0", MASTER), "size": 2, "data": data},
        {"item_id": "1", "ticket": ticket(key, "j", "1", MASTER), "size": 9},
    ]
    m.on_done(MASTER, {"done": [task_id_for("j", "0")], "failed": []})
    assert m.inline == {}


def test_master_without_a_local_worker_assigns_nothing_to_itself():
    m = _master(worker_enabled=False)
    m.on_submit(SUB, {"job_id": "j", "kind": "noop", "items": [{"item_id": "0", "size": 1}]})
    m._refresh_capacity(0.0)
    assert m.sched.assign(0.0) == []


def test_min_inflight_gives_a_busy_worker_a_second_batch():
    assert slots(WorkerCapacity("a", cpus=2, load=9.0)) == 1
    assert slots(WorkerCapacity("a", cpus=2, load=9.0), min_inflight=2) == 2
    assert slots(WorkerCapacity("a", cpus=2, load=9.0), max_inflight=1, min_inflight=2) == 1
    assert slots(WorkerCapacity("a", cpus=1, load=0.0, queue=1), min_inflight=2) == 0
    s = Scheduler(min_inflight=2, max_batch=1)
    s.update_worker(WorkerCapacity(W, cpus=1, load=5.0), 0.0)
    s.submit([Task.make("j", str(k), SUB, "noop", 1) for k in range(5)], 0.0)
    assert len(s.assign(0.0)) == 2 and s.assign(0.0) == []


async def test_worker_queues_inline_items_at_once_and_acks_results_in_one_message():
    ctx = FakeContext(W, name="w", master_id=MASTER)
    calls: list[tuple] = []

    async def deliver_results(submitter, payloads, attachments):
        calls.append(("results", submitter, [p["item_id"] for p in payloads]))
        return True

    async def send_to(node_id, msg):
        calls.append(("ack", node_id, msg))
        return True

    svc = SimpleNamespace(ctx=ctx, deliver_results=deliver_results, send_to=send_to)
    worker = JobWorker(svc, threads=1)
    await worker.start()
    try:
        items = [{"item_id": str(k), "size": 1, "data": base64.b64encode(b"x").decode()} for k in range(3)]
        worker.on_assign(MASTER, {"term": 1, "job_id": "j", "submitter": SUB, "kind": "noop", "items": items})
        assert worker.queue.qsize() == 3  # no fetch: the bytes came with the assignment
        for _ in range(100):
            if any(c[0] == "ack" for c in calls):
                break
            await asyncio.sleep(0.01)
        assert calls[0] == ("results", SUB, ["0", "1", "2"])
        assert calls[1][2] == {"t": "job.done", "done": [task_id_for("j", str(k)) for k in range(3)], "failed": []}
    finally:
        await worker.stop()


async def test_a_node_with_job_threads_minus_one_refuses_tasks(tmp_path):
    (tmp_path / "config.toml").write_text("[node]\njob_threads = -1\n")
    assert load_config(tmp_path).job_threads == -1
    assert load_config(tmp_path, env={"COLLAB_JOB_THREADS": "1"}).job_threads == 1
    with pytest.raises(ConfigError, match="job_threads"):
        load_config(tmp_path, env={"COLLAB_JOB_THREADS": "-2"})
    acks: list[dict] = []

    async def send_to(node_id, msg):
        acks.append(msg)
        return True

    worker = JobWorker(SimpleNamespace(ctx=FakeContext(W, master_id=MASTER), send_to=send_to), enabled=False)
    worker.on_assign(
        MASTER, {"term": 1, "job_id": "j", "submitter": SUB, "kind": "noop", "items": [{"item_id": "0", "size": 1}]}
    )
    await asyncio.sleep(0.01)
    assert acks and acks[0]["done"] == [] and "runs no job tasks" in acks[0]["failed"][0]["error"]
    assert worker.queue.qsize() == 0
    worker.pool.shutdown()
