"""The README's first command runs `collab demo`: it must work as written, and leave nothing behind."""

from __future__ import annotations

import subprocess

import pytest
from conftest import run_cli

from collab_tui.vlan import available

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _namespaces() -> set[str]:
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in res.stdout.splitlines() if line.strip()}


def test_collab_demo_runs_start_to_finish_and_leaves_nothing_running():
    lan, _ = available()
    before = _namespaces() if lan else set()
    res = run_cli("demo", timeout=360)
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-2000:]
    assert ("virtual LAN" in out) == lan, out[:500]
    for needle in ("agreed on master", "-- failover:", "face at", "round 5:", "-- done: all nodes stopped"):
        assert needle in out, f"{needle!r} missing from the demo's output:\n{out}"
    if lan:
        assert "127.0.0.1" not in out.split("-- failover")[0], out  # real LAN addresses in the tables
        assert _namespaces() == before  # every namespace it made is gone
