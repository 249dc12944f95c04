"""The `tui` group: how fast the TUI answers a key while the node is busy.

One real node (`LocalCluster(1)`, loopback, mDNS off) holds the 8x8 digits; the TUI (headless, Textual's
`run_test`, 100x30, in this process) submits a folder of 500 small PNGs for face detection from its Jobs
screen and a training run is started on the node. While results flood in (the node's event stream and
the job's watch stream both feed the screen) and the round trains, the bench presses Down/Up in the live
results table ``PRESSES`` times, ~50 ms apart, and times each press: from the key being posted until the
table's cursor is on the new row and every message the key caused has been handled (Pilot's
`press` waits for the screen to be idle). A second figure times screen switches (keys 2/3) the same way.
Definitions: bench/README.md (section `tui`). Nothing here imports TensorFlow (the node's ML process does).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from . import Figure, progress

G = "tui"
PRESSES = 50
SWITCHES = 20
IMAGES = 500
TARGET_MS = 100.0


def _percentile(samples: list[float], q: float) -> float:
    s = sorted(samples)
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]


def _write_images(folder: Path, n: int) -> None:
    """n small PNGs (64..96 px crops of scikit-image's astronaut, some mirrored): real faces, tiny files."""
    import cv2
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    astro = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    for i in range(n):
        side = 64 + (i * 7) % 33
        x, y = (i * 13) % 200, (i * 29) % 150
        crop = cv2.resize(astro[y:y + 300, x:x + 300], (side, side), interpolation=cv2.INTER_AREA)
        if i % 2:
            crop = crop[:, ::-1]
        cv2.imwrite(str(folder / f"img{i:04d}.png"), crop)


async def _wait(pred, timeout: float, what: str, pilot) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


async def _drive(home: Path, folder: Path) -> dict:
    from collab_tui.app import CollabApp

    app = CollabApp(home=home, cursor_blink=False)
    out: dict = {"key": [], "switch": [], "busy_job": 0, "busy_train": 0}
    async with app.run_test(size=(100, 30)) as pilot:
        await _wait(lambda: app.connected, 20, "the TUI to connect", pilot)
        await app.switch_mode("jobs")
        await pilot.pause()
        jobs = app.screen
        jobs.query_one("#job-path").value = str(folder)
        jobs.query_one("#job-task").value = "faces"
        run = await app.client.call("train", model="digits", dataset="default", rounds=50, epochs=2,
                                    min_clients=1, timeout=60.0)
        await pilot.press("ctrl+s")
        table = jobs.query_one("#job-results")
        await _wait(lambda: table.row_count >= 3, 60, "the first results", pilot)
        table.focus()
        await pilot.pause()
        progress(f"tui: {PRESSES} presses while the job runs ({table.row_count}/{IMAGES} done) and run "
                 f"{run['run_id'][:8]} trains")
        for i in range(PRESSES):
            await asyncio.sleep(0.05)
            down = table.cursor_row < table.row_count - 1 and (i // 10) % 2 == 0 or table.cursor_row == 0
            want = table.cursor_row + (1 if down else -1)
            running = bool(jobs.job) and jobs.job.get("status") not in ("done", "cancelled")
            t0 = time.perf_counter()
            await pilot.press("down" if down else "up")
            while table.cursor_row != want:
                await asyncio.sleep(0)
            out["key"].append((time.perf_counter() - t0) * 1000)
            out["busy_job"] += running
        out["rows_at_end"] = table.row_count
        for i in range(SWITCHES):
            await asyncio.sleep(0.05)
            key, mode = ("3", "training") if i % 2 == 0 else ("2", "jobs")
            t0 = time.perf_counter()
            await pilot.press(key)
            while app.current_mode != mode:
                await asyncio.sleep(0)
            out["switch"].append((time.perf_counter() - t0) * 1000)
        try:
            state = await app.client.call("run_show", run_id=run["run_id"])
            out["rounds_done"] = state.get("round", 0)
            await app.client.call("run_stop", run_id=run["run_id"])
        except Exception:  # noqa: BLE001 - the figures do not depend on it
            out["rounds_done"] = None
    return out


def run() -> list[Figure]:
    from collab_tui.localcluster import LocalCluster

    base = Path(tempfile.mkdtemp(prefix="collab-tui-bench-"))
    keys = [("tui.key_p50_ms", "TUI key → screen (p50), node busy"), ("tui.key_p95_ms", "TUI key → screen (p95), node busy")]
    try:
        progress(f"tui: writing {IMAGES} small PNGs")
        _write_images(base / "images", IMAGES)
        with LocalCluster(1, base=base / "cluster", mdns=False) as cluster:
            cluster.provision()
            cluster.wait_agreement(timeout=20)
            progress("tui: data add digits (the node's ML process loads TensorFlow)")
            cluster.call(0, "data_add", name="default", spec={"kind": "digits"}, timeout=120)
            res = asyncio.run(_drive(cluster.homes[0], base / "images"))
    except Exception as exc:  # noqa: BLE001 - report, don't crash the other groups
        why = f"failed: {type(exc).__name__}: {exc}"[:300]
        return [Figure(G, k, n, None, "ms", TARGET_MS, detail=why) for k, n in keys]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    key, sw = res["key"], res["switch"]
    load = (f"while a {IMAGES}-image faces job ran for {res['busy_job']}/{len(key)} presses and a digits run "
            f"trained ({res.get('rounds_done')} round(s) done by the end); {len(key)} presses ~50 ms apart")
    return [
        Figure(G, "tui.key_p50_ms", "TUI key → screen (p50), node busy", statistics.median(key), "ms", TARGET_MS,
               detail=f"Down/Up in the live results table; {load}; min {min(key):.1f} max {max(key):.1f} ms",
               samples=key),
        Figure(G, "tui.key_p95_ms", "TUI key → screen (p95), node busy", _percentile(key, 95), "ms", TARGET_MS,
               detail=f"same presses; p95 by nearest rank", samples=key),
        Figure(G, "tui.switch_p95_ms", "TUI screen switch (p95)", _percentile(sw, 95), "ms", None,
               detail=f"keys 3/2 (Training ↔ Jobs), {len(sw)} switches after the presses; "
                      f"median {statistics.median(sw):.1f} ms, max {max(sw):.1f} ms", samples=sw),
    ]
