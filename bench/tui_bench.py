"""The `tui` group: how fast the TUI answers a key while the node is busy.

One real node (`LocalCluster(1)`, loopback, mDNS off) holds the 8x8 digits. The TUI runs headless in this
process (Textual's `run_test`, 100x30) on its Jobs screen: it submits a folder of 500 small PNGs (64-96 px)
for face detection through its form, then jobs of that folder are resubmitted back to back (whenever none
is in flight) so results keep flooding the screen (event stream + job watch stream), and a digits run
trains on the node at the same time (ML process, TensorFlow). Meanwhile the bench presses Down/Up in the
Jobs screen's file tree ``PRESSES`` times, ~50 ms apart.

Latency of one press = from injecting the key (as Pilot does, but without Pilot's wait-for-idle, which
waits up to 1 s whenever the process is busy) to the first frame the app composes after the tree's cursor
moved (`App._display` is called with every compositor update, also headless). A second, informational
figure times screen switches (keys 3/2, Training <-> Jobs) from the key to the first frame after the switch.
The TUI shares the machine's CPUs with the node and its ML process: the load average is in the runner's
footer. Nothing here imports TensorFlow (the node's ML process does).
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
        crop = cv2.resize(astro[y : y + 300, x : x + 300], (side, side), interpolation=cv2.INTER_AREA)
        if i % 2:
            crop = crop[:, ::-1]
        cv2.imwrite(str(folder / f"img{i:04d}.png"), crop)


async def _wait(pred, timeout: float, what: str, pilot) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


async def _keep_jobs_running(app, folder: Path, state: dict) -> None:
    """Whenever no job is in flight, submit the folder again (the Jobs screen picks each one up)."""
    while not state["stop"]:
        jobs = await app.client.jobs()
        state["in_flight"] = any(j.get("status") == "running" for j in jobs)
        if not state["in_flight"] and state["submitted"] >= 1:
            await app.client.using(timeout=120.0).submit([str(folder)], task="faces")
            state["submitted"] += 1
            state["in_flight"] = True
        await asyncio.sleep(0.1)


class FrameClock:
    """Times of the frames the app composes (`App._display` is called with each compositor update, also
    headless, where nothing is written)."""

    def __init__(self, app) -> None:
        self.last = 0.0
        original = app._display

        def display(screen, renderable):
            if renderable is not None:
                self.last = time.perf_counter()
            return original(screen, renderable)

        app._display = display

    async def after(self, t: float, timeout: float = 10.0) -> float:
        """Wait for the first frame composed after ``t``; its time."""
        deadline = time.perf_counter() + timeout
        while self.last <= t:
            if time.perf_counter() > deadline:
                raise TimeoutError("no frame was composed")
            await asyncio.sleep(0.001)
        return self.last


def _send_key(app, key: str) -> None:
    """Inject a key the way Pilot does, without Pilot's wait-for-idle (which waits up to 1 s while the
    process is busy, i.e. exactly when we measure)."""
    from textual import events

    event = events.Key(key, None)
    event.set_sender(app)
    app._driver.send_message(event)


async def _drive(home: Path, folder: Path) -> dict:
    from collab_tui.app import CollabApp

    app = CollabApp(home=home, cursor_blink=False, browse_root=folder)
    out: dict = {"key": [], "switch": [], "busy_job": 0}
    busy = {"stop": False, "in_flight": False, "submitted": 0}
    async with app.run_test(size=(100, 30)) as pilot:
        await _wait(lambda: app.connected, 20, "the TUI to connect", pilot)
        await app.switch_mode("jobs")
        await pilot.pause()
        jobs = app.screen
        jobs.query_one("#job-path").value = str(folder)
        jobs.query_one("#job-task").value = "faces"
        run = await app.client.using(timeout=60.0).train(
            model="digits", dataset="default", rounds=500, epochs=2, min_clients=1
        )
        tree = jobs.query_one("#job-tree")
        await _wait(lambda: len(tree.root.children) >= 2, 30, "the file tree", pilot)
        await pilot.press("ctrl+s")  # the first job goes through the Jobs screen's form
        await _wait(lambda: jobs.job is not None, 60, "the job to start", pilot)
        busy["submitted"] = 1
        feeder = asyncio.ensure_future(_keep_jobs_running(app, folder, busy))
        tree.focus()
        tree.move_cursor_to_line(1)
        frames = FrameClock(app)
        changed = {"t": 0.0}
        app.watch(tree, "cursor_line", lambda: changed.__setitem__("t", time.perf_counter()), init=False)
        switch_mode = app.switch_mode

        def timed_switch(mode: str):
            result = switch_mode(mode)
            changed["mode"] = time.perf_counter()  # the new screen is current from here on
            return result

        app.switch_mode = timed_switch
        first = await app.client.run_show(run["run_id"])
        progress(
            f"tui: {PRESSES} presses while {IMAGES}-image jobs run back to back and run {run['run_id'][:8]} trains"
        )
        t_start = time.monotonic()
        for _ in range(PRESSES):
            await asyncio.sleep(0.05)
            down = tree.cursor_line == 1  # Down/Up in the file tree, while results flood the table below
            want = tree.cursor_line + (1 if down else -1)
            running = busy["in_flight"]
            t0 = time.perf_counter()
            _send_key(app, "down" if down else "up")
            deadline = t0 + 10
            while tree.cursor_line != want and time.perf_counter() < deadline:
                await asyncio.sleep(0.001)
            shown = await frames.after(changed["t"])
            out["key"].append((shown - t0) * 1000)
            out["busy_job"] += running
        out["press_s"] = time.monotonic() - t_start
        busy["stop"] = True
        await asyncio.wait_for(feeder, 130)
        out["jobs"] = busy["submitted"]
        last = await app.client.run_show(run["run_id"])
        out["rounds"] = (last.get("round", 0) - first.get("round", 0), last.get("status"))
        for i in range(SWITCHES):
            await asyncio.sleep(0.05)
            key, mode = ("3", "training") if i % 2 == 0 else ("2", "jobs")
            t0 = time.perf_counter()
            _send_key(app, key)
            while app.current_mode != mode and time.perf_counter() < t0 + 10:
                await asyncio.sleep(0.001)
            shown = await frames.after(changed["mode"])
            out["switch"].append((shown - t0) * 1000)
        await app.client.run_stop(run["run_id"])
    return out


def run() -> list[Figure]:
    from collab_tui.localcluster import LocalCluster

    base = Path(tempfile.mkdtemp(prefix="collab-tui-bench-"))
    keys = [
        ("tui.key_p50_ms", "TUI key → screen (p50), node busy"),
        ("tui.key_p95_ms", "TUI key → screen (p95), node busy"),
    ]
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
    load = (
        f"{len(key)} presses ~50 ms apart over {res['press_s']:.1f} s while {IMAGES}-image faces jobs ran back to "
        f"back ({res['jobs']} jobs; one in flight during {res['busy_job']} presses) and a digits run trained "
        f"({res['rounds'][0]} rounds committed meanwhile, run {res['rounds'][1]})"
    )
    return [
        Figure(
            G,
            "tui.key_p50_ms",
            "TUI key → screen (p50), node busy",
            statistics.median(key),
            "ms",
            TARGET_MS,
            detail=f"Down/Up in the Jobs screen's file tree; {load}; min {min(key):.1f} max {max(key):.1f} ms",
            samples=key,
        ),
        Figure(
            G,
            "tui.key_p95_ms",
            "TUI key → screen (p95), node busy",
            _percentile(key, 95),
            "ms",
            TARGET_MS,
            detail="same presses; p95 by nearest rank",
            samples=key,
        ),
        Figure(
            G,
            "tui.switch_p95_ms",
            "TUI screen switch (p95)",
            _percentile(sw, 95),
            "ms",
            None,
            detail=f"keys 3/2 (Training ↔ Jobs), {len(sw)} switches after the presses; "
            f"median {statistics.median(sw):.1f} ms, max {max(sw):.1f} ms",
            samples=sw,
        ),
    ]
