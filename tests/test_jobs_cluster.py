"""Distributed jobs on three real `collab daemon` processes on 127.0.0.1 (mDNS pinned to 127.0.0.1).

One cluster is shared by the module (2-core machine). Priorities 0 < 1 < 2: node2 is the natural master,
node1 the runner-up; jobs are submitted from node1 (or node0), never from the master, unless a test says
otherwise. Every test first brings the cluster back to "all three up, one agreed master" (``_all_up``), so
the tests do not depend on each other's outcome. No TensorFlow here (faces / wordcount only).
"""

from __future__ import annotations

import json
import signal
import struct
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli, three_node_cluster, wait_for, wait_job

from collab_tui.jobs.wordcount import count_words
from collab_tui.localcluster import LocalCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MASTER, SUB, WORKER = 2, 1, 0  # natural master, submitter (runner-up), plain worker


# --------------------------------------------------------------------------- corpus
def _astronaut() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _chelsea() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR)


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def _jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _bomb_png(side: int = 100_000) -> bytes:
    """A tiny, well-formed PNG whose IHDR declares side x side pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("jobs-corpus")
    astro, cat = _astronaut(), _chelsea()
    (root / "single").mkdir()
    (root / "single" / "astronaut.png").write_bytes(_png(astro))
    (root / "single" / "chelsea.png").write_bytes(_png(cat))

    many = root / "many"  # 200 small astronaut variants (160..256 px, some mirrored / cropped)
    many.mkdir()
    for k in range(200):
        side = 160 + (k * 7) % 97
        img = astro if k % 3 else astro[32:480, 48:464]
        img = cv2.resize(img, (side, side))
        if k % 2:
            img = cv2.flip(img, 1)
        (many / f"astro{k:03d}.png").write_bytes(_png(img))

    bad = root / "bad"
    bad.mkdir()
    small = cv2.resize(astro, (192, 192))
    good_png, good_jpg = _png(small), _jpeg(small)
    (bad / "good1.png").write_bytes(good_png)
    (bad / "good2.jpg").write_bytes(good_jpg)
    (bad / "good3.png").write_bytes(_png(cv2.resize(cat, (200, 133))))
    (bad / "empty.png").write_bytes(b"")
    (bad / "random.jpg").write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (bad / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (bad / "truncated.jpg").write_bytes(good_jpg[: len(good_jpg) // 2])
    (bad / "text.png").write_text("this is not an image, it is a text file\n" * 20)
    (bad / "bomb.png").write_bytes(_bomb_png())
    gif = root / "anim.gif"  # not an image suffix collab walks into: named explicitly on the command line
    gif.write_bytes(
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
        b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )

    words = root / "words"
    (words / "sub").mkdir(parents=True)
    texts = [
        "The quick brown fox jumps over the lazy dog. The dog sleeps.",
        "It's a truth universally acknowledged, that a single man in possession of a good fortune...",
        "Über straße café naïve façade — l'été est là; c'est déjà ça.",
        "numbers 123 and 4.5 are not words; but words_with_underscores split",
        "Ünïcödé ΑΒΓ δέλτα καλημέρα κόσμε мир привет Привет",
        "\n".join(f"line {i} repeats the word collab collab" for i in range(50)),
        "",
    ]
    for i, t in enumerate(texts):
        (words / f"t{i}.txt").write_text(t, encoding="utf-8")
    (words / "sub" / "notes.md").write_text("# Notes\nthe cluster counts the words, the words count.\n")
    (words / "sub" / "data.csv").write_text("name,count\nfox,1\ndog,2\n")
    (words / "ignored.bin").write_bytes(b"\x00\x01binary words here")  # not a text suffix: skipped
    return {"root": root, "single": root / "single", "many": many, "bad": bad, "gif": gif, "words": words}


# --------------------------------------------------------------------------- cluster
@pytest.fixture(scope="module")
def cluster():
    yield from three_node_cluster()


def _all_up(c: LocalCluster) -> str:
    for i in range(c.n):
        if i not in c.running():
            c.start(i)
    master = c.wait_agreement(list(range(c.n)), timeout=25)
    # every node has the agreed master as its jobs master (the jobs loop polls the role every 0.1 s)
    wait_for(
        lambda: all(c.call(i, "status", timeout=3.0)["master"] == master for i in range(c.n)),
        5.0,
        "every node to know the master",
    )
    return master


def _home(c: LocalCluster, i: int) -> str:
    return str(c.homes[i])


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _assert_exactly_once(job: dict, n: int) -> None:
    ids = [it["item_id"] for it in job["items"]]
    assert len(ids) == n and len(set(ids)) == n, f"{len(ids)} items, {len(set(ids))} distinct"
    assert job["total"] == n
    assert Counter(it["status"] for it in job["items"]) == Counter({"done": n}), [
        (it["item_id"], it["status"], it["error"]) for it in job["items"] if it["status"] != "done"
    ][:10]
    assert job["counts"]["done"] == n and job["counts"]["pending"] == 0


# --------------------------------------------------------------------------- 1. faces
def test_face_in_astronaut_none_in_cat_via_cli(cluster, corpus, tmp_path):
    master = _all_up(cluster)
    assert master == cluster.node_id(MASTER)
    out = tmp_path / "out"
    res = run_cli(
        "submit",
        str(corpus["single"]),
        "--task",
        "faces",
        "--home",
        _home(cluster, SUB),
        "--json",
        "--out",
        str(out),
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    summary = lines[-1]
    assert summary["kind"] == "summary" and summary["status"] == "done"
    assert summary["counts"]["done"] == 2 and summary["counts"]["error"] == 0
    assert summary["summary"]["items_with_detections"] == 1
    items = [ev for ev in lines if ev.get("kind") == "job_item"]
    assert sorted(ev["item_id"] for ev in items) == ["000000", "000001"]  # every item once in the stream

    job = cluster.call(SUB, "job_show", job_id=summary["job_id"])
    by_name = {Path(it["path"]).name: it for it in job["items"]}
    astro, cat = by_name["astronaut.png"]["result"], by_name["chelsea.png"]["result"]
    assert len(astro["detections"]) >= 1 and astro["labels"] == ["face"]
    x, y, w, h = astro["detections"][0]["box"]
    assert 120 < x + w / 2 < 300 and 30 < y + h / 2 < 200  # the astronaut's face, upper middle of the picture
    assert cat["detections"] == [] and cat["labels"] == []

    annotated = Path(astro["annotated"])
    assert annotated.parent == out and annotated.exists()
    ann = cv2.imread(str(annotated), cv2.IMREAD_COLOR)
    src = cv2.imread(str(corpus["single"] / "astronaut.png"), cv2.IMREAD_COLOR)
    assert ann is not None and ann.shape == src.shape
    assert annotated.read_bytes() != (corpus["single"] / "astronaut.png").read_bytes()
    assert np.count_nonzero(np.any(ann != src, axis=2)) > 100  # a box was drawn
    rows = _jsonl(out / f"{job['job_id']}.results.jsonl")
    assert sorted(r["item_id"] for r in rows) == ["000000", "000001"]


# --------------------------------------------------------------------------- 3. bad images
def test_bad_images_fail_per_item_and_node_keeps_serving(cluster, corpus, tmp_path):
    _all_up(cluster)
    out = tmp_path / "out"
    res = run_cli(
        "submit",
        str(corpus["bad"]),
        str(corpus["gif"]),
        "--task",
        "faces",
        "--home",
        _home(cluster, WORKER),
        "--json",
        "--out",
        str(out),
        timeout=60,
    )
    assert res.returncode == 5, res.stderr  # finished with per-item errors
    summary = json.loads(res.stdout.splitlines()[-1])
    job = cluster.call(WORKER, "job_show", job_id=summary["job_id"])
    by_name = {Path(it["path"]).name: it for it in job["items"]}
    assert set(by_name) == {
        "good1.png",
        "good2.jpg",
        "good3.png",
        "empty.png",
        "random.jpg",
        "truncated.png",
        "truncated.jpg",
        "text.png",
        "bomb.png",
        "anim.gif",
    }
    expected = {
        "empty.png": "empty: no image data",
        "random.jpg": "unsupported: unknown image format",
        "truncated.png": "corrupt: PNG truncated",
        "truncated.jpg": "corrupt: JPEG truncated",
        "text.png": "unsupported: unknown image format",
        "bomb.png": "bomb: png declares 100000x100000",
        "anim.gif": "unsupported: unknown image format (magic b'GIF89a",
    }
    for name, prefix in expected.items():
        it = by_name[name]
        assert it["status"] == "error", (name, it)
        assert it["error"].startswith(prefix), (name, it["error"])
        assert it["result"] is None
    for name in ("good1.png", "good2.jpg", "good3.png"):
        assert by_name[name]["status"] == "done" and by_name[name]["error"] is None, by_name[name]
    assert job["counts"] == {"pending": 0, "done": 3, "error": 7, "cancelled": 0}
    assert by_name["good1.png"]["result"]["detections"]  # a 192 px astronaut still has its face

    # every node is still up and the submitter still serves a second job
    assert sorted(cluster.running()) == [0, 1, 2]
    job2 = cluster.call(WORKER, "submit", paths=[str(corpus["single"])], task="faces")
    job2 = wait_job(cluster, WORKER, job2["job_id"], 30)
    _assert_exactly_once(job2, 2)


# --------------------------------------------------------------------------- 5. word count
def test_wordcount_equals_local_count(cluster, corpus, tmp_path):
    _all_up(cluster)
    res = run_cli(
        "submit", str(corpus["words"]), "--task", "wordcount", "--home", _home(cluster, SUB), "--json", timeout=60
    )
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    summary = lines[-1]
    job = cluster.call(SUB, "job_show", job_id=summary["job_id"])
    streamed = Counter(ev["item_id"] for ev in lines if ev.get("kind") == "job_item")
    assert set(streamed) == {it["item_id"] for it in job["items"]} and set(streamed.values()) == {1}, streamed

    files = sorted(p for p in corpus["words"].rglob("*") if p.suffix in {".txt", ".md", ".csv"})
    local: Counter = Counter()
    for f in files:
        local += count_words(f.read_bytes().decode("utf-8", errors="replace"))
    _assert_exactly_once(job, len(files))
    assert sorted(it["path"] for it in job["items"]) == sorted(str(f.resolve()) for f in files)

    remote: Counter = Counter()
    for it in job["items"]:
        remote.update(it["result"]["counts"])
    assert remote == local
    assert job["summary"]["words"] == sum(local.values())
    assert job["summary"]["distinct"] == len(local)
    assert [tuple(x) for x in job["summary"]["top"]] == local.most_common(20)
    assert local["collab"] == 100 and local["it's"] == 1 and local["straße"] == 1


# --------------------------------------------------------------------------- 4. concurrent submitters
def test_two_concurrent_submitters_both_complete_interleaved(cluster, corpus):
    _all_up(cluster)
    files = sorted(corpus["many"].iterdir())
    halves = {WORKER: [str(p) for p in files[:70]], SUB: [str(p) for p in files[70:140]]}
    jobs: dict[int, str] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def submit(i: int) -> None:
        try:
            barrier.wait(5)
            jobs[i] = cluster.call(i, "submit", paths=halves[i], task="faces", timeout=20)["job_id"]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(jobs) == 2, errors

    final = {i: wait_job(cluster, i, jobs[i], 60) for i in jobs}
    for i, job in final.items():
        _assert_exactly_once(job, 70)
        assert sorted(it["path"] for it in job["items"]) == sorted(str(Path(p).resolve()) for p in halves[i])
        assert job["submitter"] == cluster.node_id(i)

    # interleaving: when the first of the two jobs finished, the other had made real progress too
    ends = {i: max(it["finished_at"] for it in job["items"]) for i, job in final.items()}
    first_end = min(ends.values())
    for i, job in final.items():
        before = sum(1 for it in job["items"] if it["finished_at"] <= first_end)
        assert before >= 20, f"job of node{i} had only {before}/70 items done when the other finished"
    workers = Counter(it["result"]["worker_name"] for job in final.values() for it in job["items"])
    assert len(workers) == 3, workers  # the work was spread over the whole cluster


# --------------------------------------------------------------------------- 6. CLI views, cancel, restart
def test_jobs_cli_show_cancel_and_results_survive_submitter_restart(cluster, corpus, tmp_path):
    _all_up(cluster)
    home = _home(cluster, SUB)
    done = cluster.call(SUB, "submit", paths=[str(corpus["single"])], task="faces", out=str(tmp_path / "o"))
    done = wait_job(cluster, SUB, done["job_id"], 30)
    _assert_exactly_once(done, 2)

    # a long job, cancelled right away from the CLI
    res = run_cli("submit", str(corpus["many"]), "--task", "faces", "--home", home, "--no-wait", "--json")
    assert res.returncode == 0, res.stderr
    long_id = json.loads(res.stdout)["job_id"]
    res = run_cli("job", "cancel", long_id, "--home", home, "--json")
    assert res.returncode == 0, res.stderr
    cancel = json.loads(res.stdout)
    assert cancel["job_id"] == long_id and cancel["cancelled_items"] > 0
    time.sleep(1.0)  # results still in flight must not resurrect cancelled items
    shown = json.loads(run_cli("job", "show", long_id, "--home", home, "--json").stdout)
    assert shown["status"] == "cancelled"
    assert shown["counts"]["cancelled"] == cancel["cancelled_items"]
    assert shown["counts"]["done"] + shown["counts"]["cancelled"] == 200 and shown["counts"]["pending"] == 0
    res = run_cli("job", "cancel", "0123456789abcdef0123", "--home", home)
    assert res.returncode == 4 and "unknown job" in res.stderr

    res = run_cli("jobs", "--home", home, "--json")
    assert res.returncode == 0, res.stderr
    listed = {j["job_id"]: j for j in json.loads(res.stdout)}
    assert listed[done["job_id"]]["status"] == "done" and listed[done["job_id"]]["done"] == 2
    assert listed[long_id]["status"] == "cancelled"
    res = run_cli("job", "show", "nope", "--home", home, "--json")
    assert res.returncode == 4 and "unknown job" in res.stderr
    res = run_cli("submit", str(corpus["words"]), "--task", "nosuchtype", "--home", home, "--json")
    assert res.returncode == 4 and "unknown job type 'nosuchtype'" in res.stderr and "wordcount" in res.stderr

    # restart the submitter: the durable store still has every result
    cluster.kill(SUB, signal.SIGTERM)
    assert cluster.wait_exit(SUB, 10) is not None
    cluster.start(SUB)
    res = run_cli("job", "show", done["job_id"], "--home", home, "--json")
    assert res.returncode == 0, res.stderr
    again = json.loads(res.stdout)
    assert [(it["item_id"], it["status"], it["result"]) for it in again["items"]] == [
        (it["item_id"], it["status"], it["result"]) for it in done["items"]
    ]
    assert again["summary"] == done["summary"]
    assert {j["job_id"] for j in json.loads(run_cli("jobs", "--home", home, "--json").stdout)} >= {
        done["job_id"],
        long_id,
    }
    _all_up(cluster)


# --------------------------------------------------------------------------- 2. failover mid-job
def test_kill_master_and_worker_mid_job_exactly_one_result_per_item(cluster, corpus, tmp_path):
    _all_up(cluster)
    out = tmp_path / "out"
    job = cluster.call(SUB, "submit", paths=[str(corpus["many"])], task="faces", out=str(out))
    job_id = job["job_id"]
    assert job["total"] == 200

    def progress() -> dict:
        return cluster.call(SUB, "job_show", job_id=job_id, timeout=5.0)

    at_master_kill = wait_for(
        lambda: (lambda j: j if j["counts"]["done"] >= 25 else None)(progress()),
        30,
        "25 results before killing the master",
        poll=0.02,
    )
    cluster.kill(MASTER)  # SIGKILL: no goodbye
    assert at_master_kill["status"] == "running" and at_master_kill["counts"]["done"] < 200
    n0 = at_master_kill["counts"]["done"]

    at_worker_kill = wait_for(
        lambda: (lambda j: j if j["counts"]["done"] >= n0 + 25 else None)(progress()),
        30,
        "25 more results after the master died",
        poll=0.02,
    )
    cluster.kill(WORKER)
    assert at_worker_kill["status"] == "running" and at_worker_kill["counts"]["done"] < 200

    final = wait_job(cluster, SUB, job_id, 90)
    _assert_exactly_once(final, 200)
    names = Counter(it["result"]["worker_name"] for it in final["items"])
    assert names[cluster.names[SUB]] > 0 and names[cluster.names[MASTER]] + names[cluster.names[WORKER]] > 0, names

    rows = _jsonl(out / f"{job_id}.results.jsonl")
    per_item = Counter(r["item_id"] for r in rows)
    assert len(per_item) == 200 and set(per_item.values()) == {1}, [k for k, v in per_item.items() if v > 1]
    assert {r["item_id"] for r in rows} == {it["item_id"] for it in final["items"]}
    annotated = sorted(p.name for p in out.glob("*.annotated.png"))
    assert len(annotated) == 200

    _all_up(cluster)  # the killed nodes come back and the cluster converges again


# --------------------------------------------------------------------------- 6b. submitter restart mid-job
def test_submitter_killed_mid_job_resumes_after_restart(cluster, corpus, tmp_path):
    _all_up(cluster)
    out = tmp_path / "out"
    files = sorted(corpus["many"].iterdir())[:120]
    job = cluster.call(SUB, "submit", paths=[str(p) for p in files], task="faces", out=str(out))
    job_id = job["job_id"]
    at_kill = wait_for(
        lambda: (lambda j: j if j["counts"]["done"] >= 20 else None)(
            cluster.call(SUB, "job_show", job_id=job_id, timeout=5.0)
        ),
        30,
        "20 results",
        poll=0.02,
    )
    cluster.kill(SUB)  # SIGKILL: workers are still busy with its items
    assert at_kill["status"] == "running"
    assert cluster.wait_exit(SUB, 10) is not None
    time.sleep(1.0)  # the others finish what they were given while the submitter is away
    cluster.start(SUB)
    final = wait_job(cluster, SUB, job_id, 45)
    _assert_exactly_once(final, 120)
    per_item = Counter(r["item_id"] for r in _jsonl(out / f"{job_id}.results.jsonl"))
    assert set(per_item.values()) == {1}, [k for k, v in per_item.items() if v > 1]
    assert len(per_item) == 120
