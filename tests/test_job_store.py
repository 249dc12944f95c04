"""Tests of the submitter's durable SQLite job store."""

from __future__ import annotations

import threading
import time

import pytest

from collab_tui.jobs.store import JobStore, JobStoreError, UnknownJobError, new_job_id


def items(n: int) -> list[tuple[str, str, int, str]]:
    return [(f"i{k}", f"/img/{k}.jpg", 1000 + k, f"{k:064x}") for k in range(n)]


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.db")
    yield s
    s.close()


def test_wal_mode_on(store):
    assert store.journal_mode() == "wal"


def test_job_ids_sortable_and_unique():
    a = new_job_id(1000.0)
    b = new_job_id(1000.5)
    assert a < b and len(a) == len(b) == 20
    assert set(a + b) <= set("0123456789abcdef")
    # 12 hex digits of milliseconds since the epoch, then 8 random ones
    assert a[:12] == f"{1_000_000:012x}" and b[:12] == f"{1_000_500:012x}"
    assert new_job_id(1000.0)[:12] == a[:12] and new_job_id(1000.0)[12:] != a[12:]  # the tail is random
    assert len({new_job_id() for _ in range(200)}) == 200


def test_create_and_job_counts(store):
    jid = store.create_job("classify", items(3), {"top": 5}, model="mobilenet", submitter="NODE", out_dir="/out")
    j = store.job(jid)
    assert j["task"] == "classify" and j["model"] == "mobilenet" and j["total"] == 3
    assert j["options"] == {"top": 5} and j["status"] == "running"
    assert j["counts"] == {"pending": 3, "done": 0, "error": 0, "cancelled": 0}
    assert [x["job_id"] for x in store.jobs()] == [jid]
    with pytest.raises(UnknownJobError):
        store.job("nope")
    with pytest.raises(JobStoreError):
        store.create_job("t", [("a", "p", 1, "h"), ("a", "q", 1, "h")])


def test_exactly_once_record_result(store):
    jid = store.create_job("classify", items(2), {})
    assert store.record_result(jid, "i0", {"label": "cat"}, "w1") is True
    assert store.record_result(jid, "i0", {"label": "dog"}, "w2") is False
    assert store.record_error(jid, "i0", "boom", "w3") is False
    assert store.record_result(jid, "missing", {}, "w1") is False
    assert store.record_result("nojob", "i0", {}, "w1") is False
    (r,) = store.results(jid)
    assert r["result"] == {"label": "cat"} and r["worker"] == "w1" and r["status"] == "done"
    assert store.record_error(jid, "i1", "bad image", "w2") is True
    assert store.record_result(jid, "i1", {"label": "x"}, "w1") is False
    j = store.job(jid)
    assert j["status"] == "done" and j["done"] == 1 and j["error"] == 1
    assert [r["item_id"] for r in store.results(jid)] == ["i0", "i1"]


def test_unfinished_lists(store):
    a = store.create_job("classify", items(3), {}, now=100.0)
    b = store.create_job("classify", items(2), {}, now=200.0)
    c = store.create_job("classify", items(1), {}, now=300.0)
    store.record_result(c, "i0", {}, "w")
    store.record_result(a, "i1", {}, "w")
    assert store.unfinished_jobs() == [a, b]
    assert [x["item_id"] for x in store.unfinished(a)] == ["i0", "i2"]
    u = store.unfinished(a)[0]
    assert u["path"] == "/img/0.jpg" and u["size"] == 1000 and u["sha256"] == f"{0:064x}"
    assert store.cancel(b) == 2
    assert store.unfinished_jobs() == [a]
    assert store.job(b)["status"] == "cancelled" and store.job(b)["cancelled"] == 2
    assert store.record_result(b, "i0", {}, "w") is False
    with pytest.raises(UnknownJobError):
        store.cancel("nope")


def test_reopen_keeps_results(tmp_path):
    path = tmp_path / "sub" / "jobs.db"
    s1 = JobStore(path)
    jid = s1.create_job("classify", items(3), {"k": 1})
    s1.record_result(jid, "i0", {"label": "cat", "p": 0.9}, "w1")
    s1.close()
    with pytest.raises(JobStoreError):
        s1.job(jid)
    s2 = JobStore(path)
    try:
        assert s2.results(jid)[0]["result"] == {"label": "cat", "p": 0.9}
        assert s2.unfinished_jobs() == [jid]
        assert [x["item_id"] for x in s2.unfinished(jid)] == ["i1", "i2"]
        assert s2.record_result(jid, "i0", {"label": "dog"}, "w2") is False
        assert s2.job(jid)["options"] == {"k": 1}
    finally:
        s2.close()


def _hammer(store: JobStore, jid: str, names: list[str], worker: str, wins: list) -> None:
    for n in names:
        if store.record_result(jid, n, {"by": worker}, worker):
            wins.append((n, worker))


def test_concurrent_writers_same_store(store):
    jid = store.create_job("classify", items(200), {})
    names = [f"i{k}" for k in range(200)]
    wins: list = []
    threads = [threading.Thread(target=_hammer, args=(store, jid, names, w, wins)) for w in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert sorted(n for n, _ in wins) == sorted(names)  # each item won exactly once
    assert store.job(jid)["status"] == "done" and len(store.results(jid)) == 200


def test_concurrent_writers_two_connections(tmp_path):
    path = tmp_path / "jobs.db"
    s1, s2 = JobStore(path), JobStore(path)
    try:
        jid = s1.create_job("classify", items(100), {})
        names = [f"i{k}" for k in range(100)]
        wins: list = []
        threads = [threading.Thread(target=_hammer, args=(s, jid, names, w, wins)) for s, w in ((s1, "w1"), (s2, "w2"))]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive()
        assert time.monotonic() - start < 60
        assert sorted(n for n, _ in wins) == sorted(names)
        assert s2.job(jid)["done"] == 100
    finally:
        s1.close()
        s2.close()
