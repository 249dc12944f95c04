"""The README's first command runs `collab demo`: it must work as written, and leave nothing behind."""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import run_cli

from collab_tui.vlan import available

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _namespaces() -> set[str]:
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in res.stdout.splitlines() if line.strip()}


def node_tables(out: str) -> dict[str, list[dict]]:
    """The node tables of the demo's output by the line they follow ("-- all ..." / "-- failover: ..."),
    each row as a dict of the header's columns."""
    tables: dict[str, list[dict]] = {}
    lines = out.splitlines()
    for k, line in enumerate(lines):
        if not line.startswith("--") or k + 1 >= len(lines) or not lines[k + 1].lstrip().startswith("NAME"):
            continue
        head = lines[k + 1][4:]
        starts = [m.start() for m in re.finditer(r"\S+", head)]
        names = head.split()
        rows = []
        for row in lines[k + 2 :]:
            if not row.startswith("    ") or row.startswith("     "):
                break
            text = row[4:]
            cells = [text[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
            rows.append(dict(zip(names, cells, strict=True)))
        tables[line] = rows
    return tables


def assert_failover_table_agrees(out: str) -> None:
    """After the failover every live node shows one term, the new master's, and one master."""
    after = [rows for head, rows in node_tables(out).items() if head.startswith("-- failover:")]
    assert after, out
    live = [r for r in after[0] if r["STATE"] in ("alive", "self")]
    assert len(live) >= 2, after[0]
    assert len({r["TERM"] for r in live}) == 1, f"live nodes show different terms:\n{out}"
    assert [r["ROLE"] for r in live].count("master") == 1, out
    assert int(live[0]["TERM"]) > 0, out


def test_collab_demo_runs_start_to_finish_and_leaves_nothing_running():
    lan, _ = available()
    before = _namespaces() if lan else set()
    res = run_cli("demo", timeout=360)
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-2000:]
    assert ("virtual LAN" in out) == lan, out[:500]
    for needle in ("agreed on master", "-- failover:", "face at", "round 5:", "-- done: all nodes stopped"):
        assert needle in out, f"{needle!r} missing from the demo's output:\n{out}"
    assert_failover_table_agrees(out)
    assert "summary {" not in out and " 0 errors" in out, out  # the job ends with a sentence, not a dict
    if lan:
        assert "127.0.0.1" not in out.split("-- failover")[0], out  # real LAN addresses in the tables
        assert _namespaces() == before  # every namespace it made is gone
