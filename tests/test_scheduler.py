"""Tests of the sans-IO job scheduler."""

from __future__ import annotations

import pytest

from collab_tui.jobs.scheduler import (
    Assignment,
    Scheduler,
    SchedulerError,
    Task,
    TaskFailed,
    TaskRetried,
    WorkerCapacity,
    slots,
    split_task_id,
    task_id_for,
)

BIG = 1024 * 1024


def tasks(job: str, n: int, size: int = BIG, kind: str = "classify", sub: str = "S") -> list[Task]:
    return [Task.make(job, str(i), sub, kind, size) for i in range(n)]


def per_worker(assignments: list[Assignment]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in assignments:
        out[a.worker] = out.get(a.worker, 0) + len(a.tasks)
    return out


def test_slots_function():
    assert slots(WorkerCapacity("a", cpus=4, load=0.0)) == 4
    assert slots(WorkerCapacity("a", cpus=8, load=0.0), max_inflight=4) == 4
    assert slots(WorkerCapacity("a", cpus=4, load=2.5)) == 1
    # an overloaded worker with nothing queued still takes one task
    assert slots(WorkerCapacity("a", cpus=1, load=7.0)) == 1
    assert slots(WorkerCapacity("a", cpus=1, load=0.0, queue=3)) == 0
    assert slots(WorkerCapacity("a", cpus=4, load=0.0, alive=False)) == 0
    assert slots(WorkerCapacity("a", cpus=0)) == 0
    assert slots(WorkerCapacity("a", cpus=2, load=0.0), per_cpu=2) == 4


def test_task_ids():
    assert task_id_for("j1", "a:b") == "j1:a:b"
    assert split_task_id("j1:a:b") == ("j1", "a:b")
    with pytest.raises(SchedulerError):
        split_task_id("nocolon")
    with pytest.raises(SchedulerError):
        Scheduler().submit([Task("x", "j", "1", "S", "k")], 0.0)


def test_spread_proportional_to_capacity():
    s = Scheduler()
    s.update_worker(WorkerCapacity("big", cpus=4, load=0.0), 0.0)
    s.update_worker(WorkerCapacity("small", cpus=1, load=1.5), 0.0)
    s.submit(tasks("j", 20), 0.0)
    got = per_worker(s.assign(0.0))
    assert got == {"big": 4, "small": 1}
    assert s.stats()["pending"] == 15


def test_few_tasks_go_to_most_free_first():
    s = Scheduler()
    s.update_worker(WorkerCapacity("big", cpus=4), 0.0)
    s.update_worker(WorkerCapacity("small", cpus=1, load=1.5), 0.0)
    s.submit(tasks("j", 3), 0.0)
    got = per_worker(s.assign(0.0))
    assert got["big"] > got.get("small", 0)
    assert sum(got.values()) == 3


def test_master_is_just_another_worker():
    s = Scheduler()
    s.update_worker(WorkerCapacity("master", cpus=1, load=3.0), 0.0)  # busy master
    s.update_worker(WorkerCapacity("w1", cpus=8), 0.0)
    s.submit(tasks("j", 10), 0.0)
    got = per_worker(s.assign(0.0))
    assert got["master"] >= 1 and got["w1"] == 4


def test_inflight_cap_respected_and_freed_on_complete():
    s = Scheduler(inflight_per_worker=3)
    s.update_worker(WorkerCapacity("w", cpus=16), 0.0)
    s.submit(tasks("j", 10), 0.0)
    first = s.assign(0.0)
    assert len(first) == 3 and len(s.inflight_of("w")) == 3
    assert s.assign(1.0) == []  # full
    assert s.complete(first[0].tasks[0].task_id, "w", 2.0)
    again = s.assign(2.0)
    assert len(again) == 1 and len(s.inflight_of("w")) == 3


def test_worker_report_queue_not_double_counted():
    s = Scheduler()
    s.update_worker(WorkerCapacity("w", cpus=4), 0.0)
    s.submit(tasks("j", 10), 0.0)
    assert len(s.assign(0.0)) == 4
    # the worker now reports our 4 tasks as queue and load: no new slots, none lost
    s.update_worker(WorkerCapacity("w", cpus=4, load=4.0, queue=4), 1.0)
    assert s.free_slots("w") == 0
    s.complete(task_id_for("j", "0"), "w", 2.0)
    assert s.free_slots("w") == 1


def test_batching_small_items_not_big_ones():
    s = Scheduler(batch_bytes=100_000, max_batch=4)
    s.update_worker(WorkerCapacity("w", cpus=1), 0.0)
    s.submit(tasks("small", 10, size=10_000), 0.0)
    a = s.assign(0.0)
    assert len(a) == 1 and len(a[0].tasks) == 4  # max_batch
    assert [t.item_id for t in a[0].tasks] == ["0", "1", "2", "3"]

    s2 = Scheduler(batch_bytes=100_000, max_batch=16)
    s2.update_worker(WorkerCapacity("w", cpus=1), 0.0)
    s2.submit(tasks("small", 10, size=30_000), 0.0)
    assert len(s2.assign(0.0)[0].tasks) == 3  # 3 * 30k <= 100k < 4 * 30k

    s3 = Scheduler(batch_bytes=100_000)
    s3.update_worker(WorkerCapacity("w", cpus=4), 0.0)
    s3.submit(tasks("big", 10, size=BIG), 0.0)
    a3 = s3.assign(0.0)
    assert len(a3) == 4 and all(len(x.tasks) == 1 for x in a3)


def test_batch_does_not_mix_kinds():
    s = Scheduler()
    s.update_worker(WorkerCapacity("w", cpus=1), 0.0)
    mixed = tasks("j", 2, size=10, kind="a") + [Task.make("j", "x", "S", "b", 10)]
    s.submit(mixed, 0.0)
    a = s.assign(0.0)
    assert [t.kind for t in a[0].tasks] == ["a", "a"]


def test_batch_uses_one_slot_and_completes_per_task():
    s = Scheduler(inflight_per_worker=1)
    s.update_worker(WorkerCapacity("w", cpus=1), 0.0)
    s.submit(tasks("j", 3, size=10), 0.0)
    a = s.assign(0.0)
    assert len(a) == 1 and len(a[0].tasks) == 3
    for t in a[0].tasks:
        assert s.complete(t.task_id, "w", 1.0)
    assert s.stats()["done"] == 3 and s.inflight_of("w") == []


def test_worker_death_requeues_front():
    s = Scheduler()
    s.update_worker(WorkerCapacity("a", cpus=2), 0.0)
    s.update_worker(WorkerCapacity("b", cpus=2), 0.0)
    s.submit(tasks("j", 6), 0.0)
    got = s.assign(0.0)
    a_tasks = [t.task_id for x in got if x.worker == "a" for t in x.tasks]
    assert len(a_tasks) == 2
    s.worker_dead("a", 1.0)
    assert s.inflight_of("a") == []
    events = s.take_events()
    assert {e.task_id for e in events if isinstance(e, TaskRetried)} == set(a_tasks)
    for tid in s.inflight_of("b"):
        s.complete(tid, "b", 2.0)
    again = s.assign(2.0)
    ids = [t.task_id for x in again for t in x.tasks]
    assert ids[:2] == a_tasks  # requeued at the front
    assert all(x.worker == "b" for x in again)
    assert all(t.attempts == 1 for x in again for t in x.tasks if t.task_id in a_tasks)


def test_dead_report_equals_worker_dead():
    s = Scheduler()
    s.update_worker(WorkerCapacity("a", cpus=1), 0.0)
    s.submit(tasks("j", 1), 0.0)
    s.assign(0.0)
    s.update_worker(WorkerCapacity("a", cpus=1, alive=False), 1.0)
    assert s.status(task_id_for("j", "0")) == "pending"
    assert s.assign(1.0) == []  # no live worker


def test_timeout_reassigns_and_late_result_accepted():
    s = Scheduler(task_timeout=10.0)
    s.update_worker(WorkerCapacity("slow", cpus=1), 0.0)
    s.submit(tasks("j", 1), 0.0)
    (a,) = s.assign(0.0)
    assert a.worker == "slow"
    s.update_worker(WorkerCapacity("fast", cpus=1), 5.0)
    assert s.assign(9.0) == []  # not yet late
    (b,) = s.assign(10.5)
    assert b.worker == "fast" and b.tasks[0].attempts == 1  # avoids the slow one
    assert s.fail(b.tasks[0].task_id, "slow", "late error", 11.0) is False  # stale
    assert s.complete(b.tasks[0].task_id, "slow", 12.0) is True  # late result wins
    assert s.complete(b.tasks[0].task_id, "fast", 13.0) is False  # duplicate
    assert s.inflight_of("fast") == [] and s.stats()["done"] == 1


def test_timeout_same_worker_when_alone():
    s = Scheduler(task_timeout=1.0)
    s.update_worker(WorkerCapacity("only", cpus=1), 0.0)
    s.submit(tasks("j", 1), 0.0)
    s.assign(0.0)
    (b,) = s.assign(5.0)
    assert b.worker == "only"


def test_idempotent_submit_and_complete():
    s = Scheduler()
    s.update_worker(WorkerCapacity("w", cpus=4), 0.0)
    assert s.submit(tasks("j", 3), 0.0) == 3
    assert s.submit(tasks("j", 3), 0.0) == 0
    (a, b, c) = s.assign(0.0)
    assert s.submit(tasks("j", 3), 1.0) == 0  # assigned: no-op
    assert s.stats()["pending"] == 0
    assert s.complete(a.tasks[0].task_id, "w", 1.0) is True
    assert s.complete(a.tasks[0].task_id, "w", 1.0) is False
    assert s.complete("j:nope", "w", 1.0) is False
    assert s.submit(tasks("j", 3), 2.0) == 0  # finished one ignored
    assert s.stats()["pending"] == 0 and s.status(a.tasks[0].task_id) == "done"


def test_two_jobs_interleave():
    s = Scheduler(inflight_per_worker=4)
    s.update_worker(WorkerCapacity("w", cpus=4), 0.0)
    s.submit(tasks("jobA", 20, sub="alice"), 0.0)
    s.submit(tasks("jobB", 20, sub="bob"), 0.0)
    got = s.assign(0.0)
    jobs = [x.tasks[0].job_id for x in got]
    assert jobs.count("jobA") == 2 and jobs.count("jobB") == 2
    assert jobs[0] != jobs[1]


def test_max_attempts_failed_event():
    s = Scheduler(max_attempts=3)
    s.update_worker(WorkerCapacity("w1", cpus=1), 0.0)
    s.update_worker(WorkerCapacity("w2", cpus=1), 0.0)
    s.submit(tasks("j", 1), 0.0)
    tid = task_id_for("j", "0")
    seen = []
    for i in range(3):
        (a,) = s.assign(float(i))
        seen.append(a.worker)
        assert s.fail(tid, a.worker, f"boom{i}", float(i))
    assert seen[0] != seen[1]  # retried elsewhere
    events = s.take_events()
    assert events[-1] == TaskFailed(tid, "boom2")
    assert [type(e) for e in events].count(TaskRetried) == 2
    assert s.status(tid) == "failed" and s.stats()["failed"] == 1
    assert s.assign(5.0) == [] and s.take_events() == []
    assert s.submit(tasks("j", 1), 6.0) == 0


def test_cancel_job():
    s = Scheduler()
    s.update_worker(WorkerCapacity("w", cpus=2), 0.0)
    s.submit(tasks("j", 5), 0.0)
    s.submit(tasks("k", 1), 0.0)
    got = s.assign(0.0)
    assert s.cancel_job("j") == 5
    assert all(tid.startswith("k:") for tid in s.inflight_of("w"))
    assert (
        s.complete(got[0].tasks[0].task_id if got[0].tasks[0].job_id == "j" else got[1].tasks[0].task_id, "w", 1.0)
        is False
    )
    assert s.stats()["pending"] == 0 and s.stats()["cancelled"] == 5
    s.forget_job("j")
    assert s.status(task_id_for("j", "0")) is None


def test_round_robin_among_equal_workers():
    s = Scheduler()
    for w in ("a", "b", "c"):
        s.update_worker(WorkerCapacity(w, cpus=1), 0.0)
    firsts = []
    for i in range(3):
        s.submit([Task.make("j", str(i), "S", "k", BIG)], float(i))
        (a,) = s.assign(float(i))
        firsts.append(a.worker)
        s.complete(a.tasks[0].task_id, a.worker, float(i))
    assert sorted(firsts) == ["a", "b", "c"]


def test_stats_shape():
    s = Scheduler()
    s.update_worker(WorkerCapacity("w", cpus=2), 0.0)
    s.submit(tasks("j", 3), 0.0)
    s.assign(0.0)
    st = s.stats()
    assert st["pending"] == 1 and st["inflight"] == {"w": 2}
    assert st["done"] == 0 and st["failed"] == 0 and st["free"] == {"w": 0}


def test_drop_submitter_cancels_its_jobs():
    s = Scheduler()
    s.update_worker(WorkerCapacity("w", cpus=1), 0.0)
    s.submit(tasks("ja", 3, sub="alice") + tasks("jb", 2, sub="bob"), 0.0)
    s.assign(0.0)
    assert s.drop_submitter("alice") == 3
    assert s.stats()["pending"] + len(s.inflight_of("w")) == 2
