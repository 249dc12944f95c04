"""`collab job report` / `collab run report`: the self-contained HTML pages (collab_tui/reports.py).

Unit tests of the HTML (escaping, what is inline, how many pictures and points), the two CLI commands
against a fake node, and the pages loaded in a real headless browser (Debian's chromium, installed by
scripts/setup.sh as root; skipped when it is not on PATH): the DOM after load has the expected number of
``<img>`` and ``<circle>``, the browser logs no console error, and a screenshot is saved and printed.
Optionally a real `faces` job on a 3-node cluster goes through `collab job report`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from collab_tui import reports
from collab_tui.cli.main import app
from collab_tui.ml.cvload import import_cv2

EVIL = '<script>alert("x")</script>&'


# --------------------------------------------------------------------------- synthetic data
def _png(path: Path, w: int, h: int, color: tuple[int, int, int]) -> Path:
    cv2 = import_cv2()
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = color
    cv2.rectangle(img, (w // 4, h // 4), (3 * w // 4, 3 * h // 4), (255, 255, 255), 3)
    assert cv2.imwrite(str(path), img)
    return path


def synthetic_job(root: Path) -> dict:
    """A faces job: 3 items with a picture (2 annotated copies, 1 original only), 1 text file, 1 error
    and 1 pending item; names and errors carry markup that must come out escaped."""
    src = root / "in"
    ann = root / "out"
    src.mkdir()
    ann.mkdir()
    a = _png(src / "a.png", 800, 600, (40, 80, 160))
    b = _png(src / 'b <i>&"odd".png', 300, 200, (10, 160, 40))
    c = _png(src / "c.jpg", 120, 90, (200, 30, 30))  # smaller than a thumbnail: kept as it is
    a_ann = _png(ann / "job1-000000.png", 800, 600, (0, 0, 255))
    b_ann = _png(ann / "job1-000001.png", 300, 200, (0, 255, 0))
    (src / "notes.txt").write_text("not a picture")
    t0 = time.time() - 10

    def done(i, path, result, worker, name, run_ms):
        result = {**result, "worker": worker, "worker_name": name, "timings": {"fetch_ms": 5.0, "run_ms": run_ms}}
        return {
            "item_id": f"{i:06d}",
            "path": str(path),
            "status": "done",
            "error": None,
            "worker": worker,
            "finished_at": t0 + 2 + i,
            "attempts": 1,
            "result": result,
        }

    face = {"label": "face", "box": [10, 10, 50, 50], "score": 0.93}
    items = [
        done(
            0,
            a,
            {"labels": ["face"], "detections": [face, {**face, "score": 0.5}], "annotated": str(a_ann)},
            "n" * 64,
            "alpha",
            120.0,
        ),
        done(1, b, {"labels": [], "detections": [], "annotated": str(b_ann)}, "m" * 64, EVIL, 80.0),
        done(2, c, {"labels": ["face"], "detections": [face]}, "n" * 64, "alpha", 40.0),
        done(3, src / "notes.txt", {"labels": [], "detections": []}, "m" * 64, EVIL, 10.0),
        {
            "item_id": "000004",
            "path": str(src / "broken.png"),
            "status": "error",
            "error": f"corrupt: {EVIL}",
            "worker": "n" * 64,
            "finished_at": t0 + 7,
            "attempts": 2,
            "result": None,
        },
    ]
    return {
        "job_id": "job1",
        "task": "faces",
        "status": "running",
        "created_at": t0,
        "total": 6,
        "counts": {"done": 4, "error": 1, "pending": 1, "cancelled": 0},
        "summary": {"items": 4, "detections": 3, "items_with_detections": 2},
        "items": items,
        "pending": [{"item_id": "000005", "path": str(src / "z.png"), "size": 10, "attempts": 0}],
    }


def synthetic_run(rounds: int = 5) -> dict:
    """A finished run: server evaluation and training metrics every round, client evaluation in the
    last round only; three clients in the ledger, one of them with markup for an id."""
    history = []
    for r in range(1, rounds + 1):
        e = {
            "round": r,
            "version": f"v{r}",
            "clients": ["a" * 64, "b" * 64],
            "samples": 200,
            "bytes": 1_500_000,
            "wall_seconds": 1.25,
            "metrics": {"train_loss": round(2.0 / r, 4), "train_accuracy": round(0.5 + r / 20, 4)},
            "server_eval": {"accuracy": round(0.4 + r / 15, 4), "loss": round(1.8 / r, 4), "n": 100},
        }
        history.append(e)
    history[-1]["client_eval"] = {"accuracy": 0.71, "loss": 0.6, "n": 300}
    history[1]["rejected"] = {EVIL: "norm too large"}
    return {
        "run_id": "run1",
        "config": {"model": "digits", "strategy": "fedavg", "rounds": rounds, "mode": "sync", "dataset": "d"},
        "status": "done",
        "round": rounds,
        "version": f"v{rounds}",
        "created": time.time() - 60,
        "history": history,
        "ledger": {
            "a" * 64: {"samples": 500, "accepted": 5, "rejected": 0, "rounds": 5},
            "b" * 64: {"samples": 450, "accepted": 5, "rejected": 0, "rounds": 5},
            EVIL: {"samples": 0, "accepted": 0, "rejected": 1, "rounds": 1},
        },
        "strategy_state": {"keys": []},
    }


def expected_points(run: dict) -> int:
    return sum(len(pts) for metric in ("accuracy", "loss") for _, pts in reports.run_series(run, metric))


# --------------------------------------------------------------------------- unit tests: job page
def test_job_page_has_one_inline_thumbnail_per_picture(tmp_path):
    page = reports.job_report_html(synthetic_job(tmp_path))
    imgs = re.findall(r"<img [^>]*>", page)
    assert len(imgs) == 3  # a (annotated), b (annotated), c (original); not the .txt, not the error
    assert all('src="data:image/png;base64,' in tag for tag in imgs)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert "<script" not in page.lower()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "a.png" in page and "c.jpg" in page and "notes.txt" in page
    assert "2 found: face 0.93, face 0.50" in page and "nothing found" in page
    assert "Not finished (1)" in page and "z.png" in page


def test_job_page_escapes_everything_from_the_data(tmp_path):
    page = reports.job_report_html(synthetic_job(tmp_path))
    assert EVIL not in page and "<i>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page  # the worker's name and the error
    assert "b &lt;i&gt;&amp;&quot;odd&quot;.png" in page
    assert "corrupt: &lt;script&gt;" in page


def test_thumbnails_are_downscaled_annotated_copies(tmp_path):
    cv2 = import_cv2()
    job = synthetic_job(tmp_path)
    uri = reports.thumbnail_data_uri(job["items"][0]["result"]["annotated"])
    import base64

    img = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (180, 240)  # 800x600 fitted to 240 wide
    assert tuple(int(v) for v in img[5, 5]) == (0, 0, 255)  # the annotated copy (red), not the blue original
    small = reports.thumbnail_data_uri(job["items"][2]["path"])
    img = cv2.imdecode(np.frombuffer(base64.b64decode(small.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (90, 120)  # never upscaled
    assert reports.thumbnail_data_uri(tmp_path / "missing.png") is None
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert reports.thumbnail_data_uri(tmp_path / "junk.png") is None


def test_timings_per_node(tmp_path):
    rows = {r["node"]: r for r in reports.node_timings(synthetic_job(tmp_path))}
    assert rows["alpha"]["items"] == 2 and rows["alpha"]["errors"] == 1  # the error item's worker is alpha's id
    assert rows["alpha"]["run_s"] == pytest.approx(0.16) and rows["alpha"]["fetch_s"] == pytest.approx(0.01)
    assert rows["alpha"]["ms_per_item"] == pytest.approx(80.0)
    assert rows[EVIL]["items"] == 2 and rows[EVIL]["run_s"] == pytest.approx(0.09)


def test_job_page_caps_the_pictures_and_handles_an_empty_job(tmp_path):
    page = reports.job_report_html(synthetic_job(tmp_path), max_images=2)
    assert page.count("<img ") == 2 and "1 more pictures not shown" in page
    empty = reports.job_report_html({"job_id": "j", "task": "faces", "status": "running", "items": []})
    assert "No item has finished yet." in empty and "<img" not in empty


def test_job_page_other_tasks(tmp_path):
    job = {
        "job_id": "j2",
        "task": "classify",
        "status": "done",
        "summary": {"items": 1, "labels": {"cat": 1}},
        "items": [
            {
                "item_id": "000000",
                "path": str(_png(tmp_path / "x.png", 50, 50, (1, 2, 3))),
                "status": "done",
                "worker": "w",
                "result": {"labels": ["cat"], "top": [{"label": "cat", "score": 0.9}, {"label": "dog", "score": 0.1}]},
            },
            {"item_id": "000001", "path": "/t/a.txt", "status": "done", "worker": "w", "result": {"words": 7}},
            {"item_id": "000002", "path": "/t/o.png", "status": "done", "worker": "w", "result": {"text": "Hi <b>"}},
        ],
    }
    page = reports.job_report_html(job)
    assert "cat 0.90, dog 0.10" in page and "7 words" in page and "text: Hi &lt;b&gt;" in page
    assert "labels <b>cat 1</b>" in page
    assert page.count("<img ") == 1


# --------------------------------------------------------------------------- unit tests: run page
def test_run_page_plots_every_point_once():
    run = synthetic_run(5)
    page = reports.run_report_html(run, names={"a" * 64: "alpha"})
    # accuracy: server 5 + clients 1 + train 5; loss: the same
    assert expected_points(run) == 22
    assert page.count("<circle ") == 22
    assert page.count("<svg ") == 2 and page.count("<polyline ") == 6
    assert ">round</text>" in page and ">accuracy</text>" in page and ">loss</text>" in page
    assert "<script" not in page.lower() and "<img" not in page
    assert "alpha" in page and "aaaaaaaaaaaaaaaa" in page and "Clients (3)" in page and "Rounds (5)" in page


def test_run_page_escapes_and_survives_odd_data():
    page = reports.run_report_html(synthetic_run(3))
    assert EVIL not in page and "&lt;script&gt;" in page
    empty = reports.run_report_html({"run_id": "r", "config": {}, "history": [], "ledger": {}})
    assert empty.count("<circle ") == 0 and "no rounds yet" in empty and "No client has contributed yet." in empty
    odd = {
        "run_id": "r",
        "history": [{"round": 1, "server_eval": None, "metrics": {"train_loss": float("nan")}}, "junk"],
        "ledger": {"x": None},
    }
    assert reports.run_report_html(odd).count("<circle ") == 0
    one = {"run_id": "r", "history": [{"round": 1, "server_eval": {"accuracy": 0.5, "loss": 3.0}}]}
    assert reports.run_report_html(one).count("<circle ") == 2


def test_plot_coordinates_follow_the_values():
    svg = reports.svg_line_plot("acc", [("s", [(1, 0.0), (2, 1.0)])], "accuracy", unit_range=True)
    (x1, y1), (x2, y2) = [(float(a), float(b)) for a, b in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg)]
    assert x2 > x1 and y1 > y2  # later round to the right, higher accuracy higher up
    assert svg.count("<text ") >= 2 + 3  # title, axis labels, ticks


# --------------------------------------------------------------------------- the CLI commands, against a fake node
class _FakeClient:
    def __init__(self, job=None, run=None):
        self.job, self.run = job, run

    def job_show(self, job_id):
        return self.job

    def run_show(self, run_id, full=False):
        return self.run

    def nodes(self):
        return [{"node_id": "a" * 64, "name": "alpha"}]


def test_cli_job_report_and_run_report(tmp_path, monkeypatch):
    from collab_tui.cli import jobs as cli_jobs
    from collab_tui.cli import training as cli_training

    fake = _FakeClient(job=synthetic_job(tmp_path), run=synthetic_run(4))
    monkeypatch.setattr(cli_jobs, "call", lambda home, out, ask: ask(fake))
    monkeypatch.setattr(cli_training, "call", lambda home, out, ask: ask(fake))
    monkeypatch.delenv("COLLAB_HOME", raising=False)
    page = tmp_path / "job.html"
    res = CliRunner().invoke(app, ["job", "report", "job1", "--html", str(page), "--home", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["images"] == 3 and info["errors"] == 1 and Path(info["path"]) == page.absolute()
    assert page.read_text(encoding="utf-8").count("<img ") == 3
    page = tmp_path / "run.html"
    res = CliRunner().invoke(app, ["run", "report", "run1", "--html", str(page), "--home", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "4 round(s)" in res.stdout and f"{expected_points(synthetic_run(4))} point(s)" in res.stdout
    assert "alpha" in page.read_text(encoding="utf-8")
    res = CliRunner().invoke(app, ["run", "report", "run1", "--html", str(tmp_path / "no" / "dir" / "r.html")])
    assert res.exit_code == 1 and "cannot write" in res.output


# --------------------------------------------------------------------------- a real headless browser
def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (scripts/setup.sh as root)")
_CONSOLE_ERROR = re.compile(r"Uncaught|:CONSOLE\(\d+\)|Refused to|Failed to load resource", re.I)


def _browser(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        page.absolute().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def load_in_browser(page: Path, tmp: Path) -> dict:
    """The page's DOM after load, a screenshot of it, and the browser's console-error lines."""
    dom = _browser(page, tmp, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    shot = tmp / (page.stem + ".png")
    res = _browser(page, tmp, f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars")
    assert res.returncode == 0 and shot.is_file() and shot.stat().st_size > 1000, res.stderr[-3000:]
    print(f"screenshot of {page.name}: {shot}")
    errors = [ln for ln in (dom.stderr + res.stderr).splitlines() if _CONSOLE_ERROR.search(ln)]
    return {"dom": dom.stdout, "screenshot": shot, "console_errors": errors}


@needs_chromium
def test_console_error_check_sees_an_error(tmp_path):
    """The check itself: a page whose script throws is reported (so a clean page means something)."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>throw new Error('boom')</script></body></html>")
    res = _browser(bad, tmp_path, "--dump-dom")
    assert res.returncode == 0
    assert any(_CONSOLE_ERROR.search(ln) for ln in res.stderr.splitlines()), res.stderr[-3000:]


@needs_chromium
def test_job_page_in_headless_chromium(tmp_path):
    page = tmp_path / "job.html"
    page.write_text(reports.job_report_html(synthetic_job(tmp_path)), encoding="utf-8")
    got = load_in_browser(page, tmp_path)
    assert got["console_errors"] == []
    assert len(re.findall(r"<img\b", got["dom"])) == 3
    assert "<script" not in got["dom"].lower() and "b &lt;i&gt;" in got["dom"]
    cv2 = import_cv2()
    shot = cv2.imread(str(got["screenshot"]), cv2.IMREAD_COLOR)
    assert shot.shape[:2] == (900, 1200)
    # the red annotated thumbnail of a.png is drawn: many pure-red pixels in the screenshot
    red = np.count_nonzero((shot[:, :, 2] > 200) & (shot[:, :, 1] < 40) & (shot[:, :, 0] < 40))
    assert red > 5000, red


@needs_chromium
def test_run_page_in_headless_chromium(tmp_path):
    run = synthetic_run(6)
    page = tmp_path / "run.html"
    page.write_text(reports.run_report_html(run), encoding="utf-8")
    got = load_in_browser(page, tmp_path)
    assert got["console_errors"] == []
    assert len(re.findall(r"<circle\b", got["dom"])) == expected_points(run) == 26
    assert len(re.findall(r"<svg\b", got["dom"])) == 2


# --------------------------------------------------------------------------- optional: a real job on 3 nodes
@pytest.mark.slow
@pytest.mark.timeout(180)
@needs_chromium
def test_real_faces_job_report_on_a_cluster(tmp_path):
    """A real `faces` job on 3 nodes (the astronaut has a face, the cat none, one file is broken), then
    `collab job report`: two annotated thumbnails, the face with its score, the error, the timings."""
    from conftest import run_cli, three_node_cluster, wait_job

    data = pytest.importorskip("skimage.data")
    cv2 = import_cv2()
    src = tmp_path / "pics"
    src.mkdir()
    cv2.imwrite(str(src / "astronaut.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(src / "chelsea.png"), cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    gen = three_node_cluster(agreed=True)
    cluster = next(gen)
    try:
        home = str(cluster.homes[0])
        args = ["submit", str(src), "--task", "faces", "--out", str(tmp_path / "out"), "--home", home]
        res = run_cli(*args, "--no-wait", "--json", timeout=60)
        assert res.returncode == 0, res.stderr
        job_id = json.loads(res.stdout)["job_id"]
        job = wait_job(cluster, 0, job_id, timeout=90)
        assert job["counts"]["done"] == 2 and job["counts"]["error"] == 1
        assert all(Path(it["result"]["annotated"]).is_file() for it in job["items"] if it["status"] == "done")
        page = tmp_path / "real.html"
        res = run_cli("job", "report", job_id, "--html", str(page), "--home", home, "--json", timeout=60)
        assert res.returncode == 0, res.stderr
        info = json.loads(res.stdout)
        assert info["images"] == 2 and info["errors"] == 1
    finally:
        gen.close()
    text = page.read_text(encoding="utf-8")
    assert re.search(r"[1-9] found: face \d+\.\d\d", text) and "Errors (1)" in text and "broken.png" in text
    got = load_in_browser(page, tmp_path)
    assert got["console_errors"] == [] and len(re.findall(r"<img\b", got["dom"])) == 2
    assert cv2.imread(str(got["screenshot"])) is not None
