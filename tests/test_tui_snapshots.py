"""Deterministic snapshots of every TUI screen at 80x24 and 120x40, without a node: a fake client returns
fixed data.

The SVG of `app.export_screenshot()` is compared with tests/snapshots/<name>-<size>.svg. Missing files are written
when COLLAB_UPDATE_SNAPSHOTS=1 (then commit them); otherwise a missing or different snapshot fails and the
actual SVG is written next to it as <name>.actual.svg for inspection. Cursor blink is off, the theme fixed,
the fake data has no clocks or random ids, and the paths shown are relative to a fixed working directory.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import re
from pathlib import Path

import pytest
from conftest import screen_text

from collab_tui import api
from collab_tui.app import CollabApp
from collab_tui.client import AsyncClient
from collab_tui.node.control import ControlError, NoNodeRunning

pytestmark = pytest.mark.timeout(60)

SNAPSHOTS = Path(__file__).parent / "snapshots"
SIZE = (80, 24)  # the smallest terminal the TUI is made for
SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
ID = {n: (c * 64) for n, c in (("node0", "a"), ("node1", "b"), ("node2", "c"), ("gone", "d"))}
T0 = 1_700_000_000.0  # a fixed timestamp (2023-11-14 22:13:20 UTC)


def _short(nid: str) -> str:
    return "-".join(nid[:12].upper()[i : i + 4] for i in (0, 4, 8))


def _node(name: str, role: str, state: str, load: float, queue: int, port: int) -> dict:
    return {
        "node_id": ID[name],
        "short_id": _short(ID[name]),
        "name": name,
        "addr": f"127.0.0.1:{port}",
        "role": role,
        "term": 3,
        "state": state,
        "cpus": 4,
        "load": load,
        "mem_free": 8 * 2**30,
        "queue": queue,
        "model_version": "f35a51623c8df5b4",
        "priority": 0,
        "last_seen": 0.25,
        "health": "ok",
        "unhealthy": {},
    }


UNHEALTHY = {"faces": "module 'cv2' has no attribute 'data'"}


def fake_data() -> dict:
    nodes = [
        _node("node0", "master", "self", 0.52, 0, 7373),
        _node("node1", "follower", "alive", 1.25, 2, 7374),
        _node("node2", "follower", "suspect", 3.5, 0, 7375),
    ]
    nodes[1].update(health="unhealthy", unhealthy=dict(UNHEALTHY))  # node1 keeps failing its face tasks
    items = [
        {
            "item_id": "000000",
            "path": "fixtures/astronaut.png",
            "status": "done",
            "error": None,
            "worker": ID["node0"],
            "result": {
                "detections": [{"box": [1, 2, 3, 4]}],
                "worker_name": "node0",
                "annotated": "fixtures/astronaut.annotated.png",
            },
        },
        {
            "item_id": "000001",
            "path": "fixtures/chelsea.png",
            "status": "done",
            "error": None,
            "worker": ID["node1"],
            "result": {"detections": [], "worker_name": "node1"},
        },
        {
            "item_id": "000002",
            "path": "fixtures/broken.png",
            "status": "error",
            "worker": ID["node1"],
            "error": "not an image: cannot decode",
            "result": None,
        },
    ]
    job = {
        "job_id": "job-0001",
        "task": "faces",
        "status": "done",
        "total": 3,
        "done": 2,
        "error": 1,
        "counts": {"done": 2, "error": 1},
        "created_at": T0,
    }
    history = [
        {
            "round": r,
            "clients": [ID["node0"], ID["node1"]],
            "samples": 1400 + r,
            "bytes": 164856,
            "wall_seconds": 1.2 + r / 10,
            "metrics": {"train_accuracy": 0.2 + r * 0.2, "train_loss": 2.2 - r * 0.5},
            "client_eval": {"accuracy": 0.3 + r * 0.18, "loss": 2.0 - r * 0.45, "n": 359},
            "stragglers": {ID["node2"]: "deadline"} if r == 2 else {},
            "rejected": {},
            "version": f"v{r:015d}",
        }
        for r in (1, 2, 3)
    ]
    run = {
        "run_id": "00112233445566ff",
        "config": {"model": "digits", "strategy": "fedavg", "rounds": 3, "dataset": "default"},
        "status": "done",
        "round": 3,
        "version": "v000000000000003",
        "term": 3,
        "history": history,
        "ledger": {
            ID["node0"]: {"samples": 4200, "accepted": 3, "rejected": 0, "rounds": 3},
            ID["node1"]: {"samples": 4150, "accepted": 3, "rejected": 0, "rounds": 3},
            ID["node2"]: {"samples": 1300, "accepted": 1, "rejected": 0, "rounds": 2},
        },
        "strategy_state": {},
        "created": T0,
        "error": "",
    }
    members = [
        {"node_id": ID[n], "short_id": _short(ID[n]), "name": n, "addr": f"127.0.0.1:{7373 + i}", "revoked": False}
        for i, n in enumerate(("node0", "node1", "node2"))
    ]
    members.append({"node_id": ID["gone"], "short_id": _short(ID["gone"]), "name": "", "addr": "", "revoked": True})
    members[1]["admin"] = True
    trust_log = [
        {
            "id": "a" * 64,
            "at": T0,
            "kind": "join",
            "by": "root",
            "node": ID["node1"],
            "name": "node1",
            "token": "0badc0de",
        },
        {"id": "b" * 64, "at": T0 + 1, "kind": "admin_add", "by": "root", "node": ID["node1"]},
        {
            "id": "c" * 64,
            "at": T0 + 2,
            "kind": "join",
            "by": ID["node1"],
            "node": ID["node2"],
            "name": "node2",
            "token": "12345678",
        },
        {
            "id": "d" * 64,
            "at": T0 + 3,
            "kind": "revoke",
            "by": ID["node1"],
            "node": ID["gone"],
            "reason": "lost laptop",
            "kept": 0,
        },
    ]
    logs = [
        {"seq": i + 1, "ts": T0 + i, "level": lv, "logger": lg, "node": "node0", "msg": msg}
        for i, (lv, lg, msg) in enumerate(
            [
                ("INFO", "collab.node", f"node {_short(ID['node0'])} (node0) listening on 127.0.0.1:7373"),
                ("INFO", "collab.node", f"peer {_short(ID['node1'])}: join"),
                ("INFO", "collab.node", f"master is now {_short(ID['node0'])} (term 3)"),
                ("INFO", "collab.jobs", "this node now schedules jobs"),
                ("WARNING", "collab.node", f"peer {_short(ID['node2'])}: suspect"),
                ("ERROR", "collab.training", "round 2: node2 left out (deadline)"),
                ("DEBUG", "collab.net", "handshake with 127.0.0.1:7375 took 4 ms"),
            ]
        )
    ]
    return {
        "status": {
            "node_id": ID["node0"],
            "short_id": _short(ID["node0"]),
            "name": "node0",
            "addr": "127.0.0.1:7373",
            "role": "master",
            "term": 3,
            "master": ID["node0"],
            "can_commit": True,
            "peers_alive": 2,
            "cluster_size": 3,
            "holds_ca": True,
        },
        "nodes": nodes,
        "jobs": [job],
        "job_show": {**job, "summary": {"items": 2, "detections": 1}, "items": items},
        "runs": [
            {
                "run_id": run["run_id"],
                "model": "digits",
                "strategy": "fedavg",
                "status": "done",
                "round": 3,
                "rounds": 3,
                "version": run["version"],
                "accuracy": 0.84,
                "created": T0,
            }
        ],
        "run_show": run,
        "trust_list": {"members": members, "denylist_version": 4},
        "trust_log": trust_log,
        "invite": {"token": "collab1.PINPINPINPIN.TOKENID.SECRETSECRETSECRET", "addr": "127.0.0.1:7373"},
        "logs_follow": logs,
        "revoke": {"version": 2, "revoked": ID["node1"]},
        "job_types": [
            {"name": t, "description": ""} for t in ["faces", "people", "identify", "classify", "ensemble", "wordcount"]
        ],
        "people_list": {
            "version": 7,
            "term": 3,
            "committed": T0,
            "people": [
                {"name": "Ada Lovelace", "embeddings": 3, "nodes": ["node0"], "added": T0, "version": 7},
                {"name": "Grace Hopper", "embeddings": 2, "nodes": ["node1", "node2"], "added": T0, "version": 7},
            ],
        },
        "people_add": {"name": "Alan Turing", "added": 2, "problems": [], "version": 8, "replicas": 3, "people": 3},
        "people_remove": {"name": "Grace Hopper", "version": 8, "replicas": 3, "people": 1},
    }


class FakeClient(AsyncClient):
    """The app's real typed client on a fake transport: fixed answers by command; streams yield their fixed
    items, then stay idle (an idle node). ``calls`` records (command, arguments) as sent on the wire."""

    def __init__(self, home: Path, running: bool = True) -> None:
        super().__init__(home)
        self.running = running
        self.data = fake_data()
        self.calls: list[tuple[str, dict]] = []

    async def _answer(self, request):
        self.calls.append((request.NAME, api.encode(request)))
        if not self.running:
            raise NoNodeRunning(self.home)
        if request.NAME not in self.data:
            raise ControlError(f"unknown command {request.NAME!r}")
        return self.data[request.NAME]

    def _call(self, request):
        return self._answer(request)

    async def _stream(self, request):
        if not self.running:
            raise NoNodeRunning(self.home)
        for item in self.data.get(request.NAME, []) if request.NAME == "logs_follow" else []:
            yield item
        await asyncio.Event().wait()


def _fixtures(root: Path) -> None:
    """Small synthetic images (no randomness) the jobs screen lists and previews."""
    import cv2
    import numpy as np

    d = root / "fixtures"
    d.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:96, 0:128]
    img = np.stack([(x * 2) % 256, (y * 2) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    cv2.rectangle(img, (40, 20), (90, 75), (0, 255, 0), 3)
    cv2.imwrite(str(d / "astronaut.png"), img)
    cv2.imwrite(str(d / "astronaut.annotated.png"), img)
    cv2.imwrite(str(d / "chelsea.png"), img[::-1])
    (d / "broken.png").write_bytes(b"not a png")


def normalise(svg: str) -> str:
    """Drop what may vary between runs of the same screen (Rich's content-hash class prefix)."""
    return re.sub(r"terminal-\d+", "terminal", svg)


async def settle(pilot, ready, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ready():
        if loop.time() > deadline:
            raise AssertionError(f"screen not ready within {timeout}s: {what}\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def compare(name: str, svg: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.svg"
    actual = normalise(svg)
    if not path.exists():
        if os.environ.get("COLLAB_UPDATE_SNAPSHOTS") == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual)
            (SNAPSHOTS / f"{name}.txt").write_text(text)
            return
        (SNAPSHOTS / f"{name}.actual.svg").write_text(actual)
        pytest.fail(f"no snapshot {path.name}: run with COLLAB_UPDATE_SNAPSHOTS=1 to write it\n{text}")
    if os.environ.get("COLLAB_UPDATE_SNAPSHOTS") == "1" and path.read_text() != actual:
        path.write_text(actual)
        (SNAPSHOTS / f"{name}.txt").write_text(text)
        return
    if path.read_text() != actual:
        (SNAPSHOTS / f"{name}.actual.svg").write_text(actual)
        old_text = (SNAPSHOTS / f"{name}.txt").read_text() if (SNAPSHOTS / f"{name}.txt").exists() else ""
        diff = "\n".join(
            difflib.unified_diff(old_text.splitlines(), text.splitlines(), "expected", "actual", lineterm="")
        )
        pytest.fail(f"snapshot {path.name} differs (actual in {name}.actual.svg)\n{diff or '(colours only)'}")
    (SNAPSHOTS / f"{name}.actual.svg").unlink(missing_ok=True)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    _fixtures(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_app(running: bool = True) -> CollabApp:
    app = CollabApp(
        client=FakeClient(Path("home"), running=running),
        theme="textual-dark",
        cursor_blink=False,
        poll_interval=0,
        browse_root=Path("fixtures"),
    )
    app.animation_level = "none"  # a tab's underline slides to it: a snapshot must not catch it halfway
    from collections import deque

    loads = {"node0": [0.2, 0.4, 0.3, 0.6, 0.5], "node1": [1.0, 1.5, 2.0, 1.1, 0.9], "node2": [3.0, 2.0, 4.0, 3.2, 3.3]}
    app.live.load_history = {ID[n]: deque(v, maxlen=60) for n, v in loads.items()}
    return app


def _rows(app, selector: str) -> int:
    try:
        return app.screen.query_one(selector).row_count
    except Exception:  # noqa: BLE001 - not mounted yet
        return 0


READY = {
    "nodes": lambda app: _rows(app, "#nodes-table") == 3 and bool(app.screen.query(".spark-line")),
    "jobs": lambda app: (
        _rows(app, "#job-results") == 3
        and bool(app.screen.query_one("#job-preview").border_subtitle)
        and len(app.screen.query_one("#job-tree").root.children) == 4
    ),
    "training": lambda app: _rows(app, "#train-history") == 3 and _rows(app, "#train-runs") == 1,
    "peers": lambda app: _rows(app, "#trust-table") == 4 and _rows(app, "#trust-log") == 4,
    "logs": lambda app: len(app.screen.query_one("#log-view").lines) == 7,
    "people": lambda app: _rows(app, "#people-table") == 2,
}


TABS = {"training-rounds": "tab-rounds", "training-clients": "tab-clients", "training-runs": "tab-runs"}


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("view", [*READY, *TABS])
async def test_screen_snapshot(workdir, view, size):
    mode = view.split("-")[0]
    app = make_app()
    async with app.run_test(size=SIZES[size]) as pilot:
        await settle(pilot, lambda: app.connected and app.live.nodes, "connected")
        await app.switch_mode(mode)
        await settle(pilot, lambda: READY[mode](app), mode)
        if view in TABS:
            app.screen.query_one("#train-tabs").active = TABS[view]
            await settle(pilot, lambda: app.screen.query_one("#train-tabs").active == TABS[view], view)
        text = screen_text(app)
        check_fits(text, SIZES[size])
        compare(f"{view}-{size}", app.export_screenshot(), text)
        assert {cmd for cmd, _ in app.client.calls} <= set(app.client.data)  # no error toast in the picture


def check_fits(text: str, size: tuple[int, int]) -> None:
    """What every screen must show at any size: the tabs on the top line, the footer's keys on the last."""
    lines = text.splitlines()
    assert len(lines) == size[1], text
    top, bottom = lines[0], lines[-1]
    if "No node" not in top:
        assert all(
            f"{k} {name}" in top for k, name in (("1", "Nodes"), ("2", "Jobs"), ("3", "Train"), ("5", "Logs"))
        ), top
    assert "q Quit" in bottom and "^p palette" in bottom, bottom


@pytest.mark.parametrize("size", list(SIZES))
async def test_start_screen_snapshot(workdir, size):
    app = make_app(running=False)
    async with app.run_test(size=SIZES[size]) as pilot:
        await settle(pilot, lambda: type(app.screen).__name__ == "StartScreen", "start screen")
        text = screen_text(app)
        check_fits(text, SIZES[size])
        compare(f"start-{size}", app.export_screenshot(), text)


@pytest.mark.parametrize("size", list(SIZES))
async def test_revoke_confirmation_snapshot(workdir, size):
    app = make_app()
    async with app.run_test(size=SIZES[size]) as pilot:
        await settle(pilot, lambda: app.connected and app.live.nodes, "connected")
        await app.switch_mode("peers")
        await settle(pilot, lambda: READY["peers"](app), "peers")
        app.screen.query_one("#trust-table").move_cursor(row=1)
        await pilot.press("r")
        await settle(pilot, lambda: type(app.screen).__name__ == "ConfirmRevoke", "confirm")
        compare(f"peers-revoke-{size}", app.export_screenshot(), screen_text(app))
        await pilot.press("escape")
        await settle(pilot, lambda: type(app.screen).__name__ == "PeersScreen", "back")


@pytest.mark.parametrize("size", list(SIZES))
async def test_unhealthy_node_details_snapshot(workdir, size):
    """The Nodes screen with the cursor on the node that keeps failing its face tasks: the reason in full."""
    app = make_app()
    async with app.run_test(size=SIZES[size]) as pilot:
        await settle(pilot, lambda: READY["nodes"](app), "nodes")
        app.screen.query_one("#nodes-table").move_cursor(row=1)
        await settle(pilot, lambda: "cv2" in str(app.screen.query_one("#nodes-details").render()), "details")
        text = screen_text(app)
        flat = " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())  # the reason may wrap in the details panel
        assert "faces failing" in text and "faces tasks fail: module 'cv2' has no attribute 'data'" in flat
        compare(f"nodes-unhealthy-{size}", app.export_screenshot(), text)


@pytest.mark.parametrize("size", list(SIZES))
async def test_light_theme_snapshot(workdir, size):
    app = make_app()
    async with app.run_test(size=SIZES[size]) as pilot:
        await settle(pilot, lambda: READY["nodes"](app), "nodes")
        await pilot.press("t")
        await settle(pilot, lambda: app.theme == "textual-light", "light theme")
        compare(f"nodes-light-{size}", app.export_screenshot(), screen_text(app))


# --------------------------------------------------------------------------- behaviour with the fake client
async def test_command_palette_makes_an_invite(workdir):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: READY["nodes"](app), "nodes")
        await pilot.press("ctrl+p")
        await settle(pilot, lambda: type(app.screen).__name__ == "CommandPalette", "the palette")
        await pilot.press(*"invite token")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot, lambda: type(app.screen).__name__ == "PeersScreen" and app.screen.token, "a token")
        assert app.screen.token == fake_data()["invite"]["token"]
        assert ("invite", {"ttl": 3600.0, "uses": 1}) in app.client.calls


async def test_logs_filter_by_level_and_node(workdir):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.connected and app.live.nodes, "connected")
        await app.switch_mode("logs")
        await settle(pilot, lambda: READY["logs"](app), "logs")
        view = app.screen.query_one("#log-view")
        app.screen.query_one("#log-level").value = "WARNING"
        await settle(pilot, lambda: len(view.lines) == 2, "warnings and errors only")
        app.screen.query_one("#log-level").value = "DEBUG"
        app.screen.query_one("#log-node").value = ID["node2"]
        await settle(pilot, lambda: len(view.lines) == 2, "the lines about node2")
        assert "suspect" in screen_text(app) and "left out" in screen_text(app)


async def test_revoke_after_confirmation_calls_the_node(workdir):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.connected and app.live.nodes, "connected")
        await app.switch_mode("peers")
        await settle(pilot, lambda: READY["peers"](app), "peers")
        app.screen.query_one("#trust-table").move_cursor(row=1)
        await pilot.press("r")
        await settle(pilot, lambda: type(app.screen).__name__ == "ConfirmRevoke", "confirm")
        await pilot.press(*"lost laptop")
        await pilot.click("#confirm-yes")
        await settle(
            pilot,
            lambda: ("revoke", {"node": ID["node1"], "reason": "lost laptop"}) in app.client.calls,
            "the revoke call",
        )
        assert type(app.screen).__name__ == "PeersScreen"


async def test_enrol_and_remove_from_the_people_screen(workdir):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.connected and app.live.nodes, "connected")
        await app.switch_mode("people")
        await settle(pilot, lambda: READY["people"](app), "people")
        app.screen.query_one("#enrol-name").value = "Alan Turing"
        app.screen.query_one("#enrol-paths").value = "fixtures/astronaut.png 'fixtures/my photos/'"
        await pilot.click("#enrol-add")
        want = ("people_add", {"name": "Alan Turing", "paths": ["fixtures/astronaut.png", "fixtures/my photos/"]})
        await settle(
            pilot, lambda: any(c[:1] == want[:1] and c[1].items() >= want[1].items() for c in app.client.calls), "enrol"
        )
        await settle(pilot, lambda: "2 photo(s) enrolled, version 8" in screen_text(app), "the enrolment result")
        app.screen.query_one("#people-table").focus()
        app.screen.query_one("#people-table").move_cursor(row=1)
        await pilot.press("r")
        await settle(pilot, lambda: type(app.screen).__name__ == "ConfirmAction", "confirm")
        await pilot.click("#confirm-yes")
        await settle(pilot, lambda: ("people_remove", {"name": "Grace Hopper"}) in app.client.calls, "the remove call")
        assert type(app.screen).__name__ == "PeopleScreen"


def test_app_import_stays_light():
    """The TUI's import path loads Textual but neither OpenCV nor TensorFlow (the preview loads cv2 lazily)."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys; import collab_tui.app; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {'cv2', 'tensorflow', 'keras'})))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []
