"""The scheduler benches a worker that keeps failing one kind of task (sans-IO: the clock is passed in)."""

from __future__ import annotations

import dataclasses

import pytest

from collab_tui.jobs.scheduler import (
    Scheduler,
    SchedulerError,
    Task,
    TaskFailed,
    WorkerBenched,
    WorkerCapacity,
    WorkerUnbenched,
    task_id_for,
)

SMALL = 10


def tasks(job: str, n: int, kind: str = "faces", size: int = 1024 * 1024, start: int = 0) -> list[Task]:
    return [Task.make(job, str(i), "S", kind, size) for i in range(start, start + n)]


def two_workers(**kw) -> Scheduler:
    s = Scheduler(inflight_per_worker=4, **kw)
    s.update_worker(WorkerCapacity("bad", cpus=4), 0.0)
    s.update_worker(WorkerCapacity("good", cpus=4), 0.0)
    return s


def fail_all(s: Scheduler, worker: str, now: float, error: str = "module 'cv2' has no attribute 'data'") -> int:
    n = 0
    for tid in s.inflight_of(worker):
        assert s.fail(tid, worker, error, now)
        n += 1
    return n


def complete_all(s: Scheduler, worker: str, now: float) -> int:
    n = 0
    for tid in s.inflight_of(worker):
        assert s.complete(tid, worker, now)
        n += 1
    return n


def kinds_of(s: Scheduler, worker: str) -> list[str]:
    return [s._tasks[tid].kind for tid in s.inflight_of(worker)]


def events(s: Scheduler, kind: type) -> list:
    return [e for e in s.take_events() if type(e) is kind]


def test_three_failures_in_a_row_bench_the_worker_for_that_kind_only():
    s = two_workers()
    s.submit(tasks("j", 40), 0.0)
    s.assign(0.0)
    assert fail_all(s, "bad", 0.5) >= 3
    s.submit(tasks("k", 10, kind="wordcount"), 0.5)
    evs = s.take_events()
    benched = [e for e in evs if isinstance(e, WorkerBenched)]
    assert benched == [WorkerBenched("bad", "faces", "module 'cv2' has no attribute 'data'", 10.0, 0)]
    assert s.benched("bad") == {"faces": "module 'cv2' has no attribute 'data'"}
    assert s.benched("good") == {}
    st = s.stats()["benched"]
    assert st == {
        "bad": {
            "faces": {
                "reason": "module 'cv2' has no attribute 'data'",
                "seconds": 10.0,
                "probes_failed": 0,
                "probing": False,
            }
        }
    }
    # from now on: other kinds still go to it, faces only to the healthy worker
    for t in range(1, 40):
        s.assign(t * 0.1)
        assert "faces" not in kinds_of(s, "bad")
        complete_all(s, "good", t * 0.1)
        complete_all(s, "bad", t * 0.1)
    assert s.stats()["pending"] == 0
    assert s.stats()["done"] == 50 and s.stats()["failed"] == 0


def test_failures_that_are_not_the_workers_fault_do_not_count():
    s = two_workers()
    s.submit(tasks("j", 10), 0.0)
    s.assign(0.0)
    for tid in s.inflight_of("bad"):
        s.fail(tid, "bad", "submitter is not connected", 0.1, health=False)
    assert s.benched("bad") == {} and events(s, WorkerBenched) == []


def test_a_success_in_between_resets_the_count():
    s = Scheduler(inflight_per_worker=1)
    s.update_worker(WorkerCapacity("w", cpus=1), 0.0)
    s.update_worker(WorkerCapacity("other", cpus=1), 0.0)
    s.submit(tasks("j", 30), 0.0)
    t = 0.0
    for outcome in ["fail", "fail", "ok", "fail", "fail", "ok", "fail"]:
        t += 1.0
        s.assign(t)
        (tid,) = s.inflight_of("w")
        if outcome == "ok":
            s.complete(tid, "w", t)
        else:
            s.fail(tid, "w", "flaky", t)
        complete_all(s, "other", t)
    assert s.benched("w") == {}


def test_timeouts_count_as_failures():
    s = Scheduler(task_timeout=5.0, inflight_per_worker=1, max_attempts=10)
    s.update_worker(WorkerCapacity("hangs", cpus=1), 0.0)
    s.update_worker(WorkerCapacity("good", cpus=1), 0.0)
    s.submit(tasks("j", 20), 0.0)
    t = 0.0
    for _ in range(3):
        s.assign(t)
        complete_all(s, "good", t)
        t += 6.0
        s.assign(t)  # expires the hanging assignment
    assert "faces" in s.benched("hangs")
    assert "timeout on worker hangs" in s.benched("hangs")["faces"]


def test_probe_after_the_pause_success_unbenches():
    s = two_workers()
    s.submit(tasks("j", 200), 0.0)
    s.assign(0.0)
    fail_all(s, "bad", 0.5)
    s.take_events()
    s.assign(5.0)
    assert kinds_of(s, "bad") == []  # benched: nothing during the pause
    complete_all(s, "good", 5.0)
    s.assign(10.6)  # pause over: exactly one probe task
    assert len(s.inflight_of("bad")) == 1
    assert s.stats()["benched"]["bad"]["faces"]["probing"] is True
    complete_all(s, "good", 10.7)
    s.assign(10.8)
    assert len(s.inflight_of("bad")) == 1  # nothing more while the probe is out
    (probe,) = s.inflight_of("bad")
    assert s.complete(probe, "bad", 11.0)
    assert events(s, WorkerUnbenched) == [WorkerUnbenched("bad", "faces", "a task succeeded")]
    assert s.benched("bad") == {}
    s.assign(11.0)
    assert len(s.inflight_of("bad")) == 4  # back to full speed


def test_probe_failure_rebenches_with_a_doubling_capped_pause():
    s = two_workers(bench_for=10.0, bench_max=30.0)
    s.submit(tasks("j", 500), 0.0)
    s.assign(0.0)
    fail_all(s, "bad", 0.0)
    assert [e.seconds for e in events(s, WorkerBenched)] == [10.0]
    now, pauses = 0.0, []
    for _ in range(4):
        now += 200.0  # well past any pause
        complete_all(s, "good", now)
        s.assign(now)
        assert len(s.inflight_of("bad")) == 1  # one probe
        fail_all(s, "bad", now)
        (ev,) = events(s, WorkerBenched)
        pauses.append(ev.seconds)
        assert ev.probes_failed >= 1  # a renewed bench: its probe failed
        s.assign(now + ev.seconds - 0.01)
        assert s.inflight_of("bad") == []  # still benched just before the end
    assert pauses == [20.0, 30.0, 30.0, 30.0]


def test_late_failures_of_earlier_batches_do_not_extend_the_bench():
    s = two_workers(max_batch=1)
    s.submit(tasks("j", 20), 0.0)
    s.assign(0.0)
    inflight = s.inflight_of("bad")
    assert len(inflight) == 4
    for tid in inflight[:3]:
        s.fail(tid, "bad", "boom", 0.1)
    assert len(events(s, WorkerBenched)) == 1
    s.fail(inflight[3], "bad", "boom", 0.2)  # assigned before the bench
    assert events(s, WorkerBenched) == []
    assert s.stats()["benched"]["bad"]["faces"]["seconds"] == 10.0


def test_every_failed_task_goes_to_the_healthy_worker_and_attempts_are_kept():
    s = two_workers(max_batch=1)
    s.submit(tasks("j", 12), 0.0)
    s.assign(0.0)
    failed = s.inflight_of("bad")
    fail_all(s, "bad", 0.1)
    for t in range(1, 20):
        s.assign(t * 0.1)
        for tid in s.inflight_of("good"):
            task = s._tasks[tid]
            assert task.attempts == (1 if tid in failed else 0)
            s.complete(tid, "good", t * 0.1)
    assert s.stats()["done"] == 12 and s.stats()["pending"] == 0


def test_worker_report_benches_once_per_change():
    s = two_workers()
    s.report_health("bad", {"faces": "cv2 broken"}, 0.0)
    assert events(s, WorkerBenched) == [WorkerBenched("bad", "faces", "the worker reports it: cv2 broken", 10.0, 0)]
    s.report_health("bad", {"faces": "cv2 broken"}, 0.1)  # the same report again: nothing new
    assert events(s, WorkerBenched) == []
    s.submit(tasks("j", 30), 0.2)
    s.assign(0.2)
    assert kinds_of(s, "bad") == []
    complete_all(s, "good", 0.3)
    s.assign(10.5)
    (probe,) = s.inflight_of("bad")
    s.complete(probe, "bad", 10.6)
    assert events(s, WorkerUnbenched)
    # its heartbeat still says unhealthy (sent before the probe ran): no new bench for a stale report
    s.report_health("bad", {"faces": "cv2 broken"}, 10.7)
    assert s.benched("bad") == {}
    s.report_health("bad", {}, 11.0)
    s.report_health("bad", {"faces": "broken again"}, 12.0)  # a new transition: benched again
    assert s.benched("bad") == {"faces": "the worker reports it: broken again"}
    s.report_health("bad", "garbage", 12.1)  # a malformed report is an empty one
    assert "faces" in s.benched("bad")


def test_when_every_worker_fails_the_kind_even_after_a_pause_its_tasks_fail_clearly():
    s = two_workers(max_attempts=5)
    s.submit(tasks("ocr-job", 40, kind="ocr"), 0.0)
    s.assign(0.0)
    for w in ("bad", "good"):
        for tid in s.inflight_of(w):
            if s._tasks[tid].kind == "ocr":
                s.fail(tid, w, "OCR needs tesseract", 0.1)
    s.take_events()
    s.submit(tasks("wc", 2, kind="wordcount"), 0.5)
    s.assign(1.0)
    assert s.stats()["failed"] == 0 and s.stats()["pending"] > 0  # a first pause: they wait
    assert all(s._tasks[t].kind != "ocr" for w in ("bad", "good") for t in s.inflight_of(w))
    s.assign(10.5)  # probes, one each
    probes = {w: s.inflight_of(w) for w in ("bad", "good")}
    assert all(len([t for t in v if s._tasks[t].kind == "ocr"]) == 1 for v in probes.values())
    for w, tids in probes.items():
        for tid in tids:
            if s._tasks[tid].kind == "ocr":
                s.fail(tid, w, "OCR needs tesseract", 10.6)
    s.take_events()
    s.assign(10.7)  # every worker failed its probe: give up
    failed = [e for e in s.take_events() if isinstance(e, TaskFailed)]
    assert failed and all("no live worker can run ocr tasks" in e.error and "tesseract" in e.error for e in failed)
    assert s.stats()["pending"] == 0 or all(s._tasks[t].kind != "ocr" for dq in s._pending.values() for t in dq)
    assert all(s.status(task_id_for("ocr-job", str(i))) in ("failed", "done") for i in range(40))
    assert s.attempts_of(failed[0].task_id) >= 0
    # other kinds are not affected
    for w in ("bad", "good"):
        complete_all(s, w, 11.0)
    assert s.status(task_id_for("wc", "0")) == "done" and s.status(task_id_for("wc", "1")) == "done"


def test_tasks_wait_while_a_benched_worker_is_still_to_be_probed():
    s = Scheduler()
    s.update_worker(WorkerCapacity("only", cpus=4), 0.0)
    s.submit(tasks("j", 10), 0.0)
    s.assign(0.0)
    fail_all(s, "only", 0.1)
    s.take_events()
    s.assign(5.0)
    assert s.stats()["failed"] == 0 and s.stats()["pending"] == 10  # nothing lost, nothing run
    s.assign(10.2)
    (probe,) = s.inflight_of("only")
    s.complete(probe, "only", 10.3)  # it works again
    s.assign(10.3)
    assert len(s.inflight_of("only")) == 4


def test_no_live_worker_is_not_a_reason_to_fail():
    s = Scheduler()
    s.submit(tasks("j", 3), 0.0)
    assert s.assign(100.0) == [] and s.stats()["failed"] == 0


def test_the_probe_of_a_dead_worker_is_no_failure_and_it_is_probed_again_when_back():
    s = two_workers()
    s.submit(tasks("j", 50), 0.0)
    s.assign(0.0)
    fail_all(s, "bad", 0.0)
    s.assign(10.5)
    assert len(s.inflight_of("bad")) == 1
    s.take_events()
    s.worker_dead("bad", 11.0)
    assert events(s, WorkerBenched) == []
    s.update_worker(WorkerCapacity("bad", cpus=4), 12.0)
    s.assign(12.0)
    assert len(s.inflight_of("bad")) == 1  # still benched: one probe only


def test_events_are_frozen_slotted_values():
    ev = WorkerBenched("bad", "faces", "boom", 10.0, 0)
    assert ev == WorkerBenched("bad", "faces", "boom", 10.0, 0) and ev != ("benched", "bad", "faces", "boom", 10.0, 0)
    assert TaskFailed("j:1", "x") != WorkerUnbenched("j:1", "x", "")
    assert not hasattr(ev, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.seconds = 20.0  # type: ignore[misc]


def test_bench_parameters_are_checked():
    with pytest.raises(SchedulerError):
        Scheduler(bench_after=0)
    with pytest.raises(SchedulerError):
        Scheduler(bench_for=10.0, bench_max=5.0)
