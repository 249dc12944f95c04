"""Three real `collab daemon` processes on 127.0.0.1 (mDNS pinned to 127.0.0.1): discovery, election,
failover, graceful leave, preemption, and the CLI against a live node.

One cluster is shared by the whole module (2-core machine). Every test first brings the cluster into
the state it needs (``_all_up`` / ``_down``), so the tests do not depend on each other's outcome.
Priorities 0 < 1 < 2: node2 is the natural master, node1 the runner-up.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from conftest import three_node_cluster, wait_for

from collab_tui.localcluster import LocalCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TOP, SECOND = 2, 1


@pytest.fixture(scope="module")
def cluster():
    yield from three_node_cluster()


def _status(c: LocalCluster, i: int) -> dict:
    return c.call(i, "status", timeout=3.0)


def _down(c: LocalCluster, i: int) -> None:
    """Node i is not running (graceful stop if it was), and the others agree on a master."""
    if i in c.running():
        c.kill(i, signal.SIGTERM)
        assert c.wait_exit(i, 10) is not None
    c.wait_agreement([j for j in range(c.n) if j != i], timeout=15)


def _roles_settled(c: LocalCluster, master: str) -> bool:
    """Every running node's `nodes` table shows `master` as the only master (roles come from heartbeats)."""
    for i in c.running():
        roles = {r["node_id"]: r["role"] for r in c.call(i, "nodes", timeout=3.0)}
        if roles.get(master) != "master" or list(roles.values()).count("master") != 1:
            return False
    return True


def _all_up(c: LocalCluster, extra: dict[int, list[str]] | None = None) -> str:
    for i in range(c.n):
        if i not in c.running():
            c.start(i, extra=(extra or {}).get(i))
    master = c.wait_agreement(list(range(c.n)), timeout=20)
    wait_for(lambda: _roles_settled(c, master), 3.0, "every node to show the master in `nodes`")
    return master


def test_three_nodes_discover_each_other_and_agree_on_one_master(cluster):
    master = _all_up(cluster)
    assert master == cluster.node_id(TOP)  # highest (priority, id) wins
    ids = {cluster.node_id(i) for i in range(3)}
    terms = set()
    for i in range(3):
        st = _status(cluster, i)
        assert st["master"] == master
        assert st["mdns"] is True
        assert st["peers_alive"] == 2
        terms.add(st["term"])
        rows = cluster.call(i, "nodes")
        assert {r["node_id"] for r in rows} == ids
        assert {r["state"] for r in rows if r["node_id"] != cluster.node_id(i)} == {"alive"}
    assert len(terms) == 1 and terms.pop() >= 1
    assert _roles_settled(cluster, master)
    # node1 and node2 joined while node0 was alone: they learned of each other by mDNS / gossip
    logs = "\n".join(item["msg"] for item in cluster.call(1, "logs", n=500))
    assert "mDNS: advertising" in logs


def test_cli_status_nodes_logs_against_a_live_node(cluster, cli, cli_json):
    master = _all_up(cluster)
    home = cluster.homes[0]
    st = cli_json("status", "--home", home)
    assert st["node_id"] == cluster.node_id(0)
    assert st["name"] == "node0" and st["holds_ca"] is True
    assert st["master"] == master and st["role"] == "follower"
    assert st["addr"] == cluster.info[0]["addr"] and st["pid"] == cluster.procs[0].pid

    rows = cli_json("nodes", "--home", home)
    assert len(rows) == 3
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"node0", "node1", "node2"}
    assert by_name["node0"]["state"] == "self"
    assert by_name["node2"]["role"] == "master" and by_name["node2"]["priority"] == 2
    for r in rows:
        assert len(r["node_id"]) == 64 and r["short_id"].count("-") == 2
        assert r["addr"].startswith("127.0.0.1:")
        assert isinstance(r["cpus"], int) and r["cpus"] >= 1

    human = cli("nodes", "--home", home)
    assert human.returncode == 0 and "NAME" in human.stdout and "node2" in human.stdout

    res = cli("logs", "--home", home, "-n", "20", "--json")
    assert res.returncode == 0, res.stderr
    items = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert 0 < len(items) <= 20
    assert all({"ts", "level", "logger", "msg"} <= set(it) for it in items)

    trust = cli_json("trust", "list", "--home", home)
    assert {m["name"] for m in trust["members"]} >= {"node0", "node1", "node2"}
    # the priorities are trust-log entries (node1's and node2's), beside the three certificates (the root's
    # own and two joins); none is revoked
    assert {m["name"]: m["priority"] for m in trust["members"]} == {"node0": 0, "node1": 1, "node2": 2}
    assert trust["denylist_version"] == 5 and not any(m["revoked"] for m in trust["members"])


def test_diagnostics_commands_are_not_served_by_a_production_node(cluster):
    from collab_tui.node.control import ControlError

    for cmd in ("job_probe", "sched_stats"):
        with pytest.raises(ControlError, match="unknown command"):
            cluster.call(0, cmd)


def test_cli_without_a_running_node_exits_3(tmp_path, cli):
    for args in (["nodes"], ["status"], ["nodes", "--json"]):
        res = cli(*args, "--home", tmp_path / "nothing-here")
        assert res.returncode == 3, (args, res.stdout, res.stderr)
        assert "no collab node is running" in res.stderr
        assert res.stdout == ""


def test_sigkill_of_the_master_elects_one_new_master_with_a_higher_term(cluster):
    master = _all_up(cluster)
    assert master == cluster.node_id(TOP)
    old_term = _status(cluster, TOP)["term"]
    t0 = time.monotonic()
    cluster.kill(TOP, signal.SIGKILL)
    new = cluster.wait_agreement([0, 1], timeout=10, exclude=master)
    took = time.monotonic() - t0
    assert new == cluster.node_id(SECOND)
    terms = {_status(cluster, i)["term"] for i in (0, 1)}
    assert len(terms) == 1 and terms.pop() > old_term
    for i in (0, 1):
        row = {r["node_id"]: r for r in cluster.call(i, "nodes")}[master]
        assert row["state"] in ("dead", "suspect")
    assert took < 8, f"failover took {took:.1f}s"


def test_restarted_higher_priority_node_takes_over_with_preempt(cluster):
    _down(cluster, TOP)
    old_term = _status(cluster, SECOND)["term"]
    assert _status(cluster, SECOND)["role"] == "master"
    cluster.start(TOP)
    master = cluster.wait_agreement([0, 1, 2], timeout=15, exclude=cluster.node_id(SECOND))
    assert master == cluster.node_id(TOP)
    assert _status(cluster, TOP)["term"] > old_term
    assert _status(cluster, SECOND)["role"] == "follower"


def test_graceful_leave_of_the_master_hands_over(cluster):
    master = _all_up(cluster)
    assert master == cluster.node_id(TOP)
    old_term = _status(cluster, TOP)["term"]
    t0 = time.monotonic()
    cluster.kill(TOP, signal.SIGTERM)
    new = cluster.wait_agreement([0, 1], timeout=10, exclude=master)
    took = time.monotonic() - t0
    assert cluster.wait_exit(TOP, 10) == 0
    assert new == cluster.node_id(SECOND)
    assert min(_status(cluster, i)["term"] for i in (0, 1)) > old_term
    for i in (0, 1):
        row = {r["node_id"]: r for r in cluster.call(i, "nodes")}[master]
        assert row["state"] == "dead"  # it said goodbye: no waiting for missed heartbeats
    assert took < 5, f"handover took {took:.1f}s"


def test_restarted_higher_priority_node_with_no_preempt_keeps_the_master(cluster):
    _down(cluster, TOP)
    master = cluster.node_id(SECOND)
    assert _status(cluster, SECOND)["role"] == "master"
    term = _status(cluster, SECOND)["term"]
    cluster.start(TOP, extra=["--no-preempt"])
    try:
        assert cluster.wait_agreement([0, 1, 2], timeout=15) == master
        deadline = time.monotonic() + 2.0  # stays that way (no late takeover)
        while time.monotonic() < deadline:
            assert _status(cluster, TOP)["role"] == "follower"
            assert _status(cluster, SECOND)["role"] == "master"
            time.sleep(0.1)
        assert cluster.agreement([0, 1, 2]) == master
        assert {_status(cluster, i)["term"] for i in range(3)} == {term}
    finally:
        cluster.kill(TOP, signal.SIGTERM)
        cluster.wait_exit(TOP, 10)
