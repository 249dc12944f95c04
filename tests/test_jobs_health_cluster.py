"""A job type broken on ONE node only, on three real `collab daemon` processes on 127.0.0.1 (mDNS pinned to
127.0.0.1): the broken node says so (its `status`, every node's `nodes`, `collab nodes`), the master stops
giving it that kind of task, and every item still gets exactly one result, from the healthy nodes, with the
retried attempts reported in the job's results.

The job type is a tiny plugin package put on PYTHONPATH for every daemon (a module plus a ``*.dist-info``
with its ``collab.job_types`` entry point); it fails on the node whose environment sets ``FLAKY_BROKEN``
(the way a broken library fails: the same error for every task) and logs each of its failed runs there.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import run_cli, wait_for, wait_job

from collab_tui.localcluster import LocalCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MASTER, SUB, BROKEN = 2, 1, 0  # priorities 0 < 1 < 2: node2 is the master; node0 has the broken type
KIND = "flaky"
ERROR = "module 'cv2' has no attribute 'data'"

PLUGIN = f'''
"""Test plugin: a job type that fails on the node whose environment sets FLAKY_BROKEN."""
import os
import time

from collab_tui.jobs.types import JobOutput, JobType


class Flaky(JobType):
    name = "{KIND}"
    description = "fails on one node (tests)"

    def run(self, data, options):
        if os.environ.get("FLAKY_BROKEN") == "1":
            with open(os.environ["FLAKY_LOG"], "a") as fh:
                fh.write("failed\\n")
            raise AttributeError("{ERROR}")
        time.sleep(0.02)  # a little work: the job lasts long enough for the bench to matter
        return JobOutput({{"bytes": len(data)}})

    def merge(self, results):
        return {{"items": len(results)}}
'''


class PerNodeEnvCluster(LocalCluster):
    """A LocalCluster whose node i also gets ``per_node[i]`` in its environment."""

    def __init__(self, *args, per_node: dict[int, dict] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.per_node = per_node or {}

    def node_env(self, i: int) -> dict:
        return {**super().node_env(i), **self.per_node.get(i, {})}


def _plugin(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "collab_flaky_plugin.py").write_text(PLUGIN)
    info = root / "collab_flaky_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: collab-flaky-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[collab.job_types]\n{KIND} = collab_flaky_plugin:Flaky\n")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("health")
    plugin = _plugin(base / "plugin")
    failures_log = base / "broken-runs.log"
    pythonpath = os.pathsep.join(p for p in (str(plugin), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": pythonpath, "FLAKY_LOG": str(failures_log), "COLLAB_DIAGNOSTICS": "1"}  # sched_stats
    c = PerNodeEnvCluster(3, priorities=[0, 1, 2], heartbeat=0.2, env=env, per_node={BROKEN: {"FLAKY_BROKEN": "1"}})
    try:
        c.provision()
        c.start_all()
        master = c.wait_agreement(list(range(3)), timeout=25)
        assert master == c.node_id(MASTER)
        wait_for(
            lambda: all(c.call(i, "status", timeout=3.0)["master"] == master for i in range(3)),
            10.0,
            "every node to know the master",
        )
        yield c, base, failures_log
    finally:
        c.close()


def _inputs(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for k in range(n):
        (folder / f"item{k:03d}.txt").write_text(f"item {k}\n")
    return folder


def _failed_runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def _row(c: LocalCluster, seen_from: int, node: int) -> dict:
    return next(r for r in c.call(seen_from, "nodes", timeout=3.0) if r["node_id"] == c.node_id(node))


def _assert_every_item_once_from_healthy_nodes(c: LocalCluster, job: dict, n: int) -> None:
    ids = [it["item_id"] for it in job["items"]]
    assert len(ids) == n and len(set(ids)) == n and job["total"] == n
    bad = [(it["item_id"], it["status"], it["error"]) for it in job["items"] if it["status"] != "done"]
    assert not bad, bad[:5]
    assert job["counts"]["done"] == n and job["counts"]["pending"] == 0
    workers = {it["worker"] for it in job["items"]}
    assert workers <= {c.node_id(MASTER), c.node_id(SUB)} and c.node_id(BROKEN) not in workers


def test_a_type_broken_on_one_node_is_reported_benched_and_retried_elsewhere(setup):
    c, base, failures_log = setup
    healthy = {c.node_id(i) for i in (MASTER, SUB)}

    # -- job 1: the broken node fails what it gets and reports itself unhealthy within seconds
    job1 = c.call(SUB, "submit", paths=[str(_inputs(base / "in1", 120))], task=KIND)
    st = wait_for(
        lambda: (s := c.call(BROKEN, "status", timeout=3.0))["health"] == "unhealthy" and s,
        10.0,
        "the broken node to report itself unhealthy",
    )
    assert st["unhealthy"] == {KIND: ERROR}
    for seen_from in (MASTER, SUB):  # the others see it in its heartbeats
        row = wait_for(
            lambda i=seen_from: (r := _row(c, i, BROKEN))["health"] == "unhealthy" and r,
            5.0,
            f"node{seen_from} to see node{BROKEN} unhealthy",
        )
        assert row["unhealthy"] == {KIND: ERROR}
        assert _row(c, seen_from, seen_from)["health"] == "ok"
    assert c.call(MASTER, "status")["health"] == "ok" and c.call(MASTER, "status")["unhealthy"] == {}

    job1 = wait_job(c, SUB, job1["job_id"])
    _assert_every_item_once_from_healthy_nodes(c, job1, 120)
    after_job1 = _failed_runs(failures_log)
    assert after_job1 >= 3
    # bounded: what it held when its first failures came back (batches in flight), not a retry storm
    assert after_job1 <= 80, after_job1
    assert job1["retried_attempts"] == sum(it["attempts"] for it in job1["items"]) >= 3
    assert job1["summary"]["retried_attempts"] == job1["retried_attempts"]
    assert all(it["result"]["attempts"] == it["attempts"] for it in job1["items"])

    # the master benched it for that kind (and said so once in its log)
    stats = c.call(MASTER, "sched_stats")
    assert KIND in stats["benched"].get(c.node_id(BROKEN), {}), stats["benched"]
    assert set(stats["benched"]) == {c.node_id(BROKEN)}

    # -- job 2, during the bench: the broken node gets (almost) nothing of it; at most a probe or two
    job2 = c.call(SUB, "submit", paths=[str(_inputs(base / "in2", 60))], task=KIND)
    job2 = wait_job(c, SUB, job2["job_id"])
    _assert_every_item_once_from_healthy_nodes(c, job2, 60)
    assert _failed_runs(failures_log) <= after_job1 + 2
    # every failed run on the broken node is one retried attempt of some item, and the results say so
    assert job1["retried_attempts"] + job2["retried_attempts"] == _failed_runs(failures_log)
    assert {it["worker"] for it in job1["items"] + job2["items"]} <= healthy

    # -- the broken node logged a few lines, not one per failed task; the master logged the bench once
    log = (c.homes[BROKEN] / "logs" / "collab.log").read_text()
    worker_lines = [ln for ln in log.splitlines() if "collab.jobs.worker" in ln and KIND in ln]
    assert 1 <= len(worker_lines) <= 4, worker_lines
    assert any("unhealthy" in ln for ln in worker_lines)
    master_log = (c.homes[MASTER] / "logs" / "collab.log").read_text()
    bench_lines = [ln for ln in master_log.splitlines() if "keeps failing" in ln and KIND in ln]
    assert len(bench_lines) == 1, bench_lines

    # -- where the operator looks: `collab nodes` (HEALTH column + the reason), `collab status`, `job show`
    res = run_cli("nodes", "--home", str(c.homes[SUB]), timeout=30)
    assert res.returncode == 0, res.stderr
    head, *rows = res.stdout.splitlines()
    assert "HEALTH" in head
    broken_row = next(r for r in rows if r.startswith("node0 "))
    assert f"{KIND} failing" in broken_row
    assert any(r.startswith("node0 (") and "is unhealthy" in r and ERROR in r for r in rows), res.stdout
    assert sum(1 for r in rows if r.startswith(("node1 ", "node2 ")) and " ok " in r) == 2, res.stdout
    res = run_cli("status", "--home", str(c.homes[BROKEN]), timeout=30)
    assert res.returncode == 0 and "unhealthy" in res.stdout and ERROR in res.stdout, res.stdout
    res = run_cli("status", "--home", str(c.homes[BROKEN]), "--json", timeout=30)
    st = json.loads(res.stdout)
    assert st["health"] == "unhealthy" and st["unhealthy"] == {KIND: ERROR} and "role" in st and "term" in st
    res = run_cli("job", "show", job1["job_id"], "--home", str(c.homes[SUB]), timeout=30)
    assert res.returncode == 0, res.stderr
    assert f"{job1['retried_attempts']} failed attempts retried" in res.stdout

    # the rest of the cluster is fine and keeps serving
    assert sorted(c.running()) == [0, 1, 2]
    t0 = time.monotonic()
    job3 = c.call(SUB, "submit", paths=[str(_inputs(base / "in3", 3))], task="noop")
    _assert_every_item_once = wait_job(c, SUB, job3["job_id"], 30)
    assert _assert_every_item_once["counts"]["done"] == 3 and time.monotonic() - t0 < 30
