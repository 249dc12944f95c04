"""The TUI in a real terminal: tmux runs `python -m collab_tui --home H` against a real local node.

Skipped when tmux is missing. A private tmux server (-L) is used and always killed by name in `finally`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collab_tui.localcluster import LocalCluster

pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is missing")]

REPO = Path(__file__).resolve().parents[1]


def _tmux(sock: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=10)
    if check and res.returncode != 0:
        raise AssertionError(f"tmux {' '.join(args)} failed: {res.stderr}")
    return res


def _wait(pred, timeout: float, what: str, show=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{show()}")


def test_tui_runs_in_a_real_terminal(tmp_path):
    sock, session = f"collab-test-{os.getpid()}", f"collab-tui-{os.getpid()}"
    rc_file = tmp_path / "rc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    with LocalCluster(1, mdns=False) as cluster:
        cluster.provision()  # node0 is serving now
        home = cluster.homes[0]
        cmd = (
            f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m collab_tui --home "
            f"{shlex.quote(str(home))}; echo $? > {shlex.quote(str(rc_file))}"
        )

        def screen() -> str:
            res = _tmux(sock, "capture-pane", "-p", "-t", session, check=False)
            return res.stdout

        try:
            subprocess.run(
                [
                    "tmux",
                    "-L",
                    sock,
                    "-f",
                    "/dev/null",
                    "new-session",
                    "-d",
                    "-s",
                    session,
                    "-x",
                    "100",
                    "-y",
                    "30",
                    cmd,
                ],
                check=True,
                timeout=10,
                env={**env, "TERM": "xterm-256color"},
            )
            _wait(lambda: "priority" in screen() and "node0" in screen(), 40, "the Nodes screen", screen)
            top = screen().splitlines()[0]
            assert all(tab in top for tab in ("1 Nodes", "2 Jobs", "3 Train", "4 Peers", "5 Logs")), top
            for key, marker in [
                ("2", "Submit"),
                ("3", "Start run"),
                ("4", "Make invite"),
                ("5", "filter text"),
                ("1", "priority"),
            ]:
                _tmux(sock, "send-keys", "-t", session, key)
                _wait(lambda m=marker: m in screen(), 15, f"{marker!r} after pressing {key}", screen)
            _tmux(sock, "send-keys", "-t", session, "q")
            _wait(rc_file.exists, 20, "the TUI to exit", screen)
            assert rc_file.read_text().strip() == "0"
            _wait(
                lambda: _tmux(sock, "has-session", "-t", session, check=False).returncode != 0,
                10,
                "the tmux session to end",
            )
            assert cluster.call(0, "status")["name"] == "node0"  # quitting the TUI leaves the node running
        finally:
            _tmux(sock, "kill-session", "-t", session, check=False)
            _tmux(sock, "kill-server", check=False)
            (Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / sock).unlink(missing_ok=True)
