"""The TUI driven by Pilot against REAL local nodes (LocalCluster on 127.0.0.1, mDNS off).

One 2-node cluster for the module; every app attaches to node0 (which holds the cluster CA). Each test
drives one screen's main action; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import screen_text

from collab_tui.app import CollabApp
from collab_tui.localcluster import LocalCluster
from collab_tui.net.tokens import parse_token

pytestmark = pytest.mark.timeout(120)

SIZE = (100, 30)


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster(2, mdns=False)
    try:
        c.provision()
        c.start_all()
        c.wait_agreement(timeout=30)
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three real photos as PNG (scikit-image ships them): astronaut, chelsea, astronaut mirrored."""
    import cv2
    from skimage import data

    folder = tmp_path_factory.mktemp("tui-images")
    astro = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "astronaut.png"), astro)
    cv2.imwrite(str(folder / "chelsea.png"), cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "astronaut-mirrored.png"), astro[:, ::-1])
    return folder


async def wait_until(pilot, pred, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            if pred():
                return
        except Exception:  # noqa: BLE001 - widgets not mounted yet
            pass
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{screen_text(pilot.app)}")
        await pilot.pause(0.1)


def new_app(home: Path, **kw) -> CollabApp:
    return CollabApp(home=home, cursor_blink=False, **kw)


async def open_mode(app, pilot, mode: str) -> None:
    await wait_until(pilot, lambda: app.connected, 15, "the app to connect")
    await app.switch_mode(mode)
    await pilot.pause()


def cells(table, column: str) -> list:
    return [str(table.get_cell(row_key, column)) for row_key in table.rows]


async def test_nodes_screen_shows_both_nodes(cluster):
    app = new_app(cluster.homes[0])
    async with app.run_test(size=SIZE) as pilot:
        await open_mode(app, pilot, "nodes")
        table = app.screen.query_one("#nodes-table")
        await wait_until(pilot, lambda: table.row_count == 2, 20, "two node rows")
        assert sorted(cells(table, "name")) == ["node0", "node1"]
        assert set(cells(table, "state")) == {"self", "alive"}
        assert "master" in cells(table, "role")
        await wait_until(pilot, lambda: len(app.screen.query(".spark-line")) == 2, 10, "one sparkline per node")
        await pilot.press("down")
        details = app.screen.query_one("#nodes-details")
        await wait_until(pilot, lambda: "node1" in str(details.render()), 5, "details of node1")
        assert "master" in app.sub_title or "follower" in app.sub_title


async def test_jobs_screen_submits_a_folder_of_three_images(cluster, images):
    app = new_app(cluster.homes[0])
    async with app.run_test(size=SIZE) as pilot:
        await open_mode(app, pilot, "jobs")
        app.screen.query_one("#job-path").value = str(images)
        app.screen.query_one("#job-task").value = "faces"
        await pilot.click("#job-submit")
        table = app.screen.query_one("#job-results")
        await wait_until(
            pilot, lambda: table.row_count == 3 and cells(table, "status") == ["done"] * 3, 60, "three finished rows"
        )
        await wait_until(pilot, lambda: all(c != "…" for c in cells(table, "file")), 10, "file names")
        assert sorted(cells(table, "file")) == ["astronaut-mirrored.png", "astronaut.png", "chelsea.png"]
        found = dict(zip(cells(table, "file"), cells(table, "found")))
        assert int(found["astronaut.png"]) >= 1  # the astronaut's face
        assert app.screen.query_one("#job-progress").percentage == 1.0
        preview = app.screen.query_one("#job-preview")
        await wait_until(pilot, lambda: str(preview.border_subtitle).endswith(".png"), 20, "the image preview")


async def test_peers_screen_makes_an_invite_token(cluster):
    app = new_app(cluster.homes[0])
    async with app.run_test(size=SIZE) as pilot:
        await open_mode(app, pilot, "peers")
        table = app.screen.query_one("#trust-table")
        await wait_until(pilot, lambda: table.row_count == 2, 15, "the two members")
        await pilot.press("i")
        await wait_until(pilot, lambda: app.screen.token is not None, 15, "an invite token")
        token = parse_token(app.screen.token)
        assert token.pin_hex
        assert app.screen.token in screen_text(app).replace("\n", "") or app.screen.token[:40] in screen_text(app)


async def test_peers_screen_revoke_can_be_cancelled(cluster):
    app = new_app(cluster.homes[0])
    async with app.run_test(size=SIZE) as pilot:
        await open_mode(app, pilot, "peers")
        table = app.screen.query_one("#trust-table")
        await wait_until(pilot, lambda: table.row_count == 2, 15, "the two members")
        row = cells(table, "name").index("node1")
        table.move_cursor(row=row)
        await pilot.press("r")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ConfirmRevoke", 5, "the confirmation")
        await pilot.click("#confirm-no")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "PeersScreen", 5, "back on peers")
        assert "revoked" not in cells(table, "trust")
        assert not any(r["kind"] == "revoke" for r in cluster.call(0, "trust_log"))


async def test_training_form_validates_and_shows_the_nodes_error(cluster):
    app = new_app(cluster.homes[0])
    async with app.run_test(size=SIZE) as pilot:
        await open_mode(app, pilot, "training")
        screen = app.screen
        status = screen.query_one("#train-form-status")
        screen.query_one("#train-rounds").value = "0"
        await pilot.click("#train-start")
        await wait_until(pilot, lambda: "rounds must be at least 1" in str(status.render()), 5, "a form error")
        assert screen.run_id is None
        screen.query_one("#train-rounds").value = "1"
        screen.query_one("#train-dataset").value = "no-such-dataset"
        await pilot.press("ctrl+r")  # the Start binding (a second click within 0.2 s is ignored by Button)
        await wait_until(
            pilot, lambda: "no live node holds a dataset" in str(status.render()), 30, "the node's refusal"
        )
        assert screen.run_id is None
        form = screen.query_one("#train-form")
        assert "secure" not in form.collect().args
        screen.query_one("#train-secure").value = True  # the master learns only the sum of the updates
        assert form.collect().args["secure"] is True


@pytest.mark.slow
async def test_training_screen_runs_one_round_of_digits(cluster):
    for i in (0, 1):  # each node keeps its own half of the 8x8 digits (they never leave it)
        part = {"scheme": "iid", "num_clients": 2, "client": i, "seed": 0}
        cluster.call(i, "data_add", name="default", spec={"kind": "digits", "partition": part}, timeout=60)
    app = new_app(cluster.homes[0])
    async with app.run_test(size=SIZE) as pilot:
        await open_mode(app, pilot, "training")
        screen = app.screen
        screen.query_one("#train-rounds").value = "1"
        screen.query_one("#train-dataset").value = "default"
        await pilot.click("#train-start")
        await wait_until(
            pilot,
            lambda: screen.run is not None and screen.run.get("status") == "done",
            90,
            "the 1-round run to finish",
        )
        assert screen.query_one("#train-history").row_count == 1
        ledger = screen.query_one("#train-ledger")
        assert sorted(cells(ledger, "node")) == ["node0", "node1"]
        plot = screen.query_one("#train-plot")
        assert "round" in str(plot.render())
        assert "done" in str(screen.query_one("#train-run").render())


async def test_logs_screen_shows_lines(cluster):
    app = new_app(cluster.homes[0])
    async with app.run_test(size=SIZE) as pilot:
        await open_mode(app, pilot, "logs")
        view = app.screen.query_one("#log-view")
        await wait_until(pilot, lambda: len(view.lines) >= 1, 15, "log lines")
        assert "collab" in screen_text(app)
        app.screen.query_one("#log-level").value = "ERROR"
        await pilot.pause(0.3)
        before = len(view.lines)
        app.screen.query_one("#log-level").value = "DEBUG"
        await wait_until(pilot, lambda: len(view.lines) >= before, 5, "lines back after the filter")


def _write_loopback_config(home: Path) -> None:
    from collab_tui.config import write_config

    write_config(home, {"name": "solo", "host": "127.0.0.1", "port": 0, "mdns": False})


async def test_start_screen_starts_a_node(tmp_path):
    from collab_tui.net.identity import create_cluster
    from collab_tui.node.control import ControlClient

    home = tmp_path / "solo"
    create_cluster(home, "solo")
    _write_loopback_config(home)
    app = new_app(home)
    pid = None
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: type(app.screen).__name__ == "StartScreen", 10, "the start screen")
            assert "No collab node is running" in screen_text(app)
            await pilot.press("s")
            await wait_until(
                pilot, lambda: app.connected and type(app.screen).__name__ == "NodesScreen", 40, "the started node"
            )
            await wait_until(pilot, lambda: app.screen.query_one("#nodes-table").row_count == 1, 10, "its row")
            pid = json.loads((home / "run" / "node.json").read_text())["pid"]
    finally:
        if pid is None and (home / "run" / "node.json").exists():
            pid = json.loads((home / "run" / "node.json").read_text())["pid"]
        if pid is not None:
            try:
                with ControlClient(home, timeout=5) as c:
                    c.call("stop")
            except Exception:  # noqa: BLE001
                pass
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break
                except ChildProcessError:
                    pass
                await asyncio.sleep(0.1)
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)


async def test_peers_screen_revokes_a_node_after_confirmation(cluster):
    """Kept last in the module: node1 stays revoked afterwards."""
    app = new_app(cluster.homes[0])
    async with app.run_test(size=SIZE) as pilot:
        await open_mode(app, pilot, "peers")
        table = app.screen.query_one("#trust-table")
        await wait_until(pilot, lambda: table.row_count == 2, 15, "the two members")
        table.move_cursor(row=cells(table, "name").index("node1"))
        await pilot.press("r")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ConfirmRevoke", 5, "the confirmation")
        await pilot.press(*"test")
        await pilot.click("#confirm-yes")
        await wait_until(pilot, lambda: "revoked" in cells(table, "trust"), 15, "node1 shown as revoked")
        assert dict(zip(cells(table, "name"), cells(table, "trust")))["node1"] == "revoked"
        await wait_until(
            pilot,
            lambda: not any(r["node_id"] == cluster.node_id(1) and r["state"] == "alive" for r in app.live.nodes),
            15,
            "node1 cut off",
        )
    revocations = [r for r in cluster.call(0, "trust_log") if r["kind"] == "revoke"]
    assert [(r["node"], r["reason"]) for r in revocations] == [(cluster.node_id(1), "test")]
