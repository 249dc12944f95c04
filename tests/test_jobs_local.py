"""Jobs without processes or sockets: the job type registry (entry points), path collection, word count,
and the submitter / master parts driven in-process with a fake node (exactly-once results, results
file, progress stream, cancel, resubmission after a lost outcome)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_context import FakeContext

from collab_tui.jobs import types as jtypes
from collab_tui.jobs.master_side import REOPEN_AFTER, JobMaster
from collab_tui.jobs.scheduler import WorkerCapacity, task_id_for
from collab_tui.jobs.submitter_side import JobSubmitter, collect_paths
from collab_tui.jobs.wordcount import WordCount, count_words


# --------------------------------------------------------------------------- registry
@pytest.fixture
def fresh_registry(monkeypatch):
    monkeypatch.setattr(jtypes, "_registry", None)
    yield
    jtypes._registry = None


def test_wordcount_is_found_through_its_entry_point(fresh_registry):
    eps = {ep.name: ep.value for ep in entry_points(group="collab.job_types")}
    assert eps.get("wordcount") == "collab_tui.jobs.wordcount:WordCount"
    assert "wordcount" not in jtypes.BUILTIN  # so it can only come from the entry point
    reg = jtypes.registry()
    assert isinstance(reg["wordcount"], WordCount)
    assert jtypes.get_type("wordcount") is reg["wordcount"]
    assert {"faces", "people", "classify", "noop", "ocr", "wordcount", "ensemble"} <= set(jtypes.job_type_names())
    assert jtypes.get_type("ensemble") is reg["classify"]  # ensemble runs on top of classify


def test_broken_plugin_does_not_break_the_registry(fresh_registry, monkeypatch, caplog):
    class BrokenEP:
        name = "broken"

        def load(self):
            raise ImportError("no module named 'nowhere'")

    real = [ep for ep in entry_points(group="collab.job_types")]
    monkeypatch.setattr(jtypes, "entry_points", lambda group: [BrokenEP(), *real])
    with caplog.at_level("WARNING", logger="collab.jobs"):
        reg = jtypes.registry()
    assert "broken" not in reg and "wordcount" in reg and "faces" in reg
    assert "broken" in caplog.text and "nowhere" in caplog.text


def test_unknown_job_type_error_is_clear():
    with pytest.raises(LookupError) as exc:
        jtypes.get_type("telepathy")
    msg = str(exc.value)
    assert "unknown job type 'telepathy'" in msg and "wordcount" in msg and "faces" in msg
    with pytest.raises(LookupError, match="unknown job type 'telepathy'"):
        collect_paths(["."], "telepathy")


# --------------------------------------------------------------------------- collect_paths
@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "corpus"
    (root / "a" / "deep").mkdir(parents=True)
    (root / "b").mkdir()
    for rel in [
        "one.txt",
        "two.md",
        "skip.bin",
        "a/three.txt",
        "a/deep/four.csv",
        "a/deep/five.log",
        "a/image.png",
        "b/six.rst",
        "b/seven.TXT",
        "b/photo.JPG",
    ]:
        (root / rel).write_text(f"words in {rel}\n")
    return root


def _rel(root: Path, paths: list[Path]) -> list[str]:
    return [p.resolve().relative_to(root.resolve()).as_posix() for p in paths]


def test_collect_paths_folder_is_recursive_and_filtered_by_type(tree):
    got = _rel(tree, collect_paths([str(tree)], "wordcount"))
    assert got == ["a/deep/five.log", "a/deep/four.csv", "a/three.txt", "b/seven.TXT", "b/six.rst", "one.txt", "two.md"]
    assert _rel(tree, collect_paths([str(tree)], "noop")) == sorted(
        p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()
    )


def test_collect_paths_globs_files_and_duplicates(tree):
    assert _rel(tree, collect_paths([str(tree / "*.txt")], "wordcount")) == ["one.txt"]
    assert _rel(tree, collect_paths([str(tree / "**" / "*.txt")], "wordcount")) == ["a/three.txt", "one.txt"]
    # an explicitly named file is kept whatever its suffix; repeats (also via other spellings) come once
    got = collect_paths(
        [
            str(tree / "skip.bin"),
            str(tree / "one.txt"),
            str(tree / "a" / ".." / "one.txt"),
            str(tree / "*.txt"),
            str(tree),
        ],
        "wordcount",
    )
    assert _rel(tree, got)[:2] == ["skip.bin", "one.txt"]
    assert len(got) == len({p.resolve() for p in got}) == 8
    # a folder matched by a pattern is walked like a named folder
    assert _rel(tree, collect_paths([str(tree / "[ab]")], "wordcount")) == [
        "a/deep/five.log",
        "a/deep/four.csv",
        "a/three.txt",
        "b/seven.TXT",
        "b/six.rst",
    ]


def test_collect_paths_missing_input_is_an_error(tree):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        collect_paths([str(tree / "nowhere")], "wordcount")
    with pytest.raises(FileNotFoundError, match=r"\*\.nothing"):
        collect_paths([str(tree / "*.nothing")], "wordcount")
    with pytest.raises(FileNotFoundError):
        collect_paths([str(tree / "nowhere")], "faces")


def test_collect_paths_for_image_types(tree):
    assert _rel(tree, collect_paths([str(tree)], "faces")) == ["a/image.png", "b/photo.JPG"]
    assert _rel(tree, collect_paths([str(tree / "one.txt")], "faces")) == ["one.txt"]  # fails later, per item


# --------------------------------------------------------------------------- word count
def test_word_count_type():
    wc = WordCount()
    out = wc.run("It's the end — the END, l'été 42 times_two".encode(), {})
    assert out.result["counts"] == {"it's": 1, "the": 2, "end": 2, "l'été": 1, "times": 1, "two": 1}
    assert out.result["words"] == 8 and out.attachment is None
    with pytest.raises(ValueError, match="not a text file"):
        wc.run(b"\x00\x01\x02binary", {})
    merged = wc.merge([{"counts": {"a": 2, "b": 1}}, {"counts": {"a": 1}}, {}])
    assert merged == {"items": 3, "words": 4, "top": [("a", 3), ("b", 1)], "distinct": 2}
    assert count_words("Don’t STOP, don't") == Counter({"don’t": 1, "stop": 1, "don't": 1})
    assert wc.accepts(Path("x.MD")) and not wc.accepts(Path("x.png"))


# --------------------------------------------------------------------------- submitter, in-process
@pytest.fixture
def submitter(tmp_path):
    sub = JobSubmitter(SimpleNamespace(ctx=FakeContext(home=tmp_path / "home")))
    yield sub
    sub.store.close()


def _texts(tmp_path: Path, n: int) -> Path:
    d = tmp_path / "texts"
    d.mkdir()
    for k in range(n):
        (d / f"t{k}.txt").write_text(f"alpha beta {k}\n")
    return d


def _result(job_id: str, item_id: str, worker: str = "w1", **extra) -> dict:
    """One entry of a worker's `job.results` message."""
    return {
        "job_id": job_id,
        "item_id": item_id,
        "worker": worker,
        "worker_name": worker,
        "result": {"words": 2, "counts": {"alpha": 1, "beta": 1}},
        "error": None,
        **extra,
    }


def _record(submitter: JobSubmitter, result: dict, attachment: bytes | None = None) -> bool:
    """Deliver one result as a one-entry `job.results` message; True if it was new."""
    (fresh,) = submitter.on_results([result], [attachment])
    return fresh


async def test_results_are_exactly_once_per_item_also_in_the_results_file(submitter, tmp_path):
    out = tmp_path / "out"
    job = await submitter.create([str(_texts(tmp_path, 3))], "wordcount", {}, str(out))
    jid = job["job_id"]
    assert job["total"] == 3 and job["status"] == "running"
    assert _record(submitter, _result(jid, "000000")) is True
    assert _record(submitter, _result(jid, "000000", worker="w2")) is False  # late duplicate
    assert _record(submitter, _result(jid, "000001", error="corrupt: nope")) is True
    assert _record(submitter, _result(jid, "000001")) is False  # first outcome wins
    assert _record(submitter, _result(jid, "000002"), b"\x89PNG fake attachment") is True
    shown = submitter.show(jid)
    assert shown["status"] == "done" and shown["counts"]["done"] == 2 and shown["counts"]["error"] == 1
    assert shown["items"][0]["worker"] == "w1" and shown["summary"]["words"] == 4
    annotated = Path(shown["items"][2]["result"]["annotated"])  # stored, so `job show` points at it
    assert annotated.parent == out and annotated.read_bytes() == b"\x89PNG fake attachment"
    rows = [json.loads(line) for line in (out / f"{jid}.results.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == ["000000", "000002"]
    assert rows[1]["annotated"] == str(annotated)


async def test_results_file_is_repaired_from_the_store(submitter, tmp_path):
    out = tmp_path / "out"
    jid = (await submitter.create([str(_texts(tmp_path, 3))], "wordcount", {}, str(out)))["job_id"]
    for k in range(3):
        _record(submitter, _result(jid, f"{k:06d}"))
    path = out / f"{jid}.results.jsonl"
    good = path.read_text()
    assert submitter.repair_results_files() == 0
    path.write_text(good.splitlines(keepends=True)[0] + '{"job_id": "torn')  # a crash mid-append
    assert submitter.repair_results_files() == 1
    assert path.read_text() == good


async def test_cancel_stops_serving_items_even_once_cached(submitter, tmp_path):
    jid = (await submitter.create([str(_texts(tmp_path, 3))], "wordcount", {}, None))["job_id"]
    assert submitter.read_item(jid, "000000") == b"alpha beta 0\n"  # fills the item cache
    assert submitter.cancel(jid) == 3
    with pytest.raises(LookupError, match="cancelled"):
        submitter.read_item(jid, "000001")
    assert _record(submitter, _result(jid, "000001")) is False
    assert submitter.store.job(jid)["status"] == "cancelled"


async def test_watch_reports_every_item_once_including_those_finished_before(submitter, tmp_path):
    jid = (await submitter.create([str(_texts(tmp_path, 4))], "wordcount", {}, None))["job_id"]
    _record(submitter, _result(jid, "000000"))  # finished before anybody watches
    submitter.store.record_error(jid, "000001", "gave up after retries: x", "")  # no event for this one

    watch = submitter.watch(jid)

    async def next_event() -> dict:
        return await asyncio.wait_for(anext(watch), 5.0)

    async def rest() -> list[dict]:
        return [ev async for ev in watch]

    try:
        # the first event means the watcher is subscribed; then the backlog replayed from the store
        first = await next_event()
        assert first["kind"] == "job" and (first["done"], first["errors"]) == (1, 1)
        backlog = [await next_event(), await next_event()]
        assert [(ev["kind"], ev["item_id"]) for ev in backlog] == [("job_item", "000000"), ("job_item", "000001")]
        # from here on results arrive while the watcher waits: they come as live events, in order
        _record(submitter, _result(jid, "000002"))
        live = [await next_event(), await next_event()]
        assert [ev["kind"] for ev in live] == ["job_item", "job"] and live[0]["item_id"] == "000002"
        assert (live[1]["state"], live[1]["done"], live[1]["errors"]) == ("running", 2, 1)  # only a live one
        _record(submitter, _result(jid, "000002", worker="w2"))  # a late duplicate: no event
        _record(submitter, _result(jid, "000003"))
        events = [first, *backlog, *live, *await asyncio.wait_for(rest(), 5.0)]
    finally:
        await watch.aclose()
    items = Counter(ev["item_id"] for ev in events if ev["kind"] == "job_item")
    assert items == Counter({"000000": 1, "000001": 1, "000002": 1, "000003": 1})
    assert [ev["kind"] for ev in events[-2:]] == ["job_item", "job_finished"]
    assert events[-2]["item_id"] == "000003" and events[-2]["worker"] == "w1"
    assert events[-1]["status"] == "done"


async def test_unknown_type_is_refused_before_anything_is_stored(submitter, tmp_path):
    with pytest.raises(LookupError, match="unknown job type 'nope'"):
        await submitter.create([str(_texts(tmp_path, 1))], "nope", {}, None)
    with pytest.raises(ValueError, match="no input files"):
        await submitter.create([str(tmp_path / "texts")], "faces", {}, None)  # no image in there
    assert submitter.store.jobs() == []


# --------------------------------------------------------------------------- master, in-process
def _assign_to(m: JobMaster, worker: str) -> None:
    """Hand every pending task to ``worker`` (a `job.done` counts only for the tasks assigned to its sender)."""
    m.sched.update_worker(WorkerCapacity(worker, cpus=64), time.monotonic())
    m.sched.assign(time.monotonic())


def test_master_requeues_an_item_whose_outcome_never_reached_the_submitter():
    m = JobMaster(SimpleNamespace(ctx=FakeContext("m" * 64)))
    sub = "s" * 64
    msg = {"job_id": "job1", "kind": "noop", "items": [{"item_id": "0", "size": 1}, {"item_id": "1", "size": 1}]}
    assert m.on_submit(sub, msg) == 2
    _assign_to(m, "w" * 64)
    m.on_done("w" * 64, {"done": [task_id_for("job1", "0")], "failed": []})
    # the submitter's periodic resubmission can cross the result on the way: no rerun right away
    assert m.on_submit(sub, {**msg, "items": msg["items"][:1]}) == 0
    assert m.sched.status(task_id_for("job1", "0")) == "done"
    # still pending on the submitter long after it was done here: the result was lost, run it again
    m.finished_at[task_id_for("job1", "0")] -= REOPEN_AFTER + 1
    assert m.on_submit(sub, {**msg, "items": msg["items"][:1]}) == 1
    assert m.sched.status(task_id_for("job1", "0")) == "pending"
    # cancelled tasks never come back
    m.on_cancel("job1")
    assert m.on_submit(sub, msg) == 0


def test_master_forgets_the_jobs_of_a_dead_submitter_until_it_resubmits():
    m = JobMaster(SimpleNamespace(ctx=FakeContext("m" * 64)))
    sub, other = "s" * 64, "o" * 64
    items = [{"item_id": str(k), "size": 1} for k in range(3)]
    m.on_submit(sub, {"job_id": "mine", "kind": "noop", "items": items})
    m.on_submit(other, {"job_id": "theirs", "kind": "noop", "items": items})
    m.on_done("w" * 64, {"done": [task_id_for("mine", "0")], "failed": []})
    m.peer_dead(sub)
    assert set(m.jobs) == {"theirs"} and m.stats()["pending"] == 3
    assert all(m.sched.status(task_id_for("mine", str(k))) is None for k in range(3))
    # back: it resubmits what it has not got yet, attempts start afresh
    assert m.on_submit(sub, {"job_id": "mine", "kind": "noop", "items": items[1:]}) == 2
    assert m.stats()["pending"] == 5
