"""Federated training on three real `collab daemon` processes on 127.0.0.1 (mDNS pinned to 127.0.0.1).

One cluster for the whole module (2-core machine; every node's ML process imports TensorFlow once), the
scenarios run in order. Priorities 0 < 1 < 2: node2 is the master, node1 the runner-up; runs are submitted
from node0. Every node holds its own IID third of scikit-learn's 8x8 digits; images never leave a node.

1. A 3-round run: the held-out accuracy the clients report rises and ends above 0.5; every node has the
   same history and the registry has one version per round; `collab runs` / `collab run show` (CLI).
2. Fail-over: the master is SIGKILLed right after round 1 is committed. The new master finishes the run;
   the history has one version per round; every node's run state agrees; the registry holds exactly the
   run's lineage (initial + one per round). The killed node restarts mid-run and gets the current version.
"""

from __future__ import annotations

import time

import pytest
from conftest import run_cli_json, wait_for

from collab_tui.localcluster import LocalCluster
from collab_tui.ml.registry import ModelRegistry
from collab_tui.training.service import BUILTIN_MODELS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SUB, RUNNER_UP, MASTER = 0, 1, 2
HA_ROUNDS = 4


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster(3, priorities=[0, 1, 2], heartbeat=0.2)
    try:
        c.provision()
        c.start_all()
        assert c.index_of(c.wait_agreement(timeout=20)) == MASTER
        for i in range(3):  # each node registers only its own part; this also warms its ML process up
            part = {"scheme": "iid", "num_clients": 3, "client": i, "seed": 0}
            stats = c.call(i, "data_add", timeout=60, name="default", spec={"kind": "digits", "partition": part})
            assert stats["count"] == 599 and stats["input_shape"] == [8, 8, 1]
        yield c
    finally:
        c.close()


def _show(c: LocalCluster, i: int, run_id: str) -> dict:
    return c.call(i, "run_show", timeout=5, run_id=run_id)


def _wait_status(c: LocalCluster, i: int, run_id: str, timeout: float, status: str = "done") -> dict:
    def finished():
        st = _show(c, i, run_id)
        assert st["status"] in ("running", status), st.get("error")  # a failed run ends the wait at once
        return st if st["status"] == status else None

    return wait_for(finished, timeout, f"run {run_id[:8]} {status} on node{i}", poll=0.2)


def _rounds(st: dict) -> list[tuple[int, str]]:
    return [(h["round"], h["version"]) for h in st["history"]]


def test_three_rounds_accuracy_rises(cluster):
    c = cluster
    t0 = time.monotonic()
    res = c.call(SUB, "train", timeout=60, model="digits", rounds=3, epochs=3, lr=0.1, min_clients=3)
    assert res["master"] == c.node_id(MASTER)
    run_id = res["run_id"]
    st = _wait_status(c, SUB, run_id, 100)
    print(f"3-round run done in {time.monotonic() - t0:.1f}s (TensorFlow warm-up included)")

    hist = st["history"]
    assert [h["round"] for h in hist] == [1, 2, 3] and st["round"] == 3
    versions = [h["version"] for h in hist]
    assert len(set(versions)) == 3 and st["version"] == versions[-1] and res["version"] not in versions
    everyone = {c.node_id(i) for i in range(3)}
    for h in hist:
        assert set(h["clients"]) <= everyone and len(h["clients"]) >= 2, h
        assert h["samples"] >= 2 * 479 and "train_loss" in h["metrics"] and h["bytes"] > 0
    acc = [h["client_eval"]["accuracy"] for h in hist]
    print("held-out accuracy per round:", acc)
    assert acc[-1] > acc[0] and acc[-1] > 0.5
    assert all(h["client_eval"]["n"] == 3 * 120 for h in hist)  # every node's 20% hold-out, 120 images each
    assert set(st["ledger"]) == everyone and sum(e["rounds"] for e in st["ledger"].values()) == 9

    for i in range(3):  # replicated: the same history everywhere, the versions in every registry
        other = _wait_status(c, i, run_id, 10)
        assert _rounds(other) == _rounds(st) and other["version"] == st["version"]
        [digits] = [m for m in c.call(i, "models_list") if m["name"] == "digits"]
        assert digits["versions"] == 4 and digits["latest"] == versions[-1]

    rows = run_cli_json("runs", "--home", c.homes[SUB])
    [row] = [r for r in rows if r["run_id"] == run_id]
    assert (row["status"], row["round"], row["rounds"], row["version"]) == ("done", 3, 3, versions[-1])
    assert row["accuracy"] == acc[-1]
    shown = run_cli_json("run", "show", run_id[:8], "--home", c.homes[RUNNER_UP])
    assert shown["run_id"] == run_id and _rounds(shown) == _rounds(st) and shown["ledger"] == st["ledger"]


def test_master_killed_after_round_one_the_run_completes_on_the_new_master(cluster):
    c = cluster
    old_master = c.node_id(MASTER)
    t0 = time.monotonic()
    # a fresh model name, so the registry holds only this run's lineage
    res = c.call(
        SUB,
        "train",
        timeout=60,
        model="digits-ha",
        arch=dict(BUILTIN_MODELS["digits"]),
        rounds=HA_ROUNDS,
        epochs=2,
        lr=0.1,
        min_clients=2,
        round_timeout=40,
    )
    run_id, initial = res["run_id"], res["version"]

    # kill the master as soon as round 1 is committed (replicated to both survivors)
    first = wait_for(
        lambda: all(_show(c, i, run_id)["round"] >= 1 for i in (SUB, RUNNER_UP)) and _show(c, SUB, run_id),
        60,
        "round 1 committed",
        poll=0.02,
    )
    c.kill(MASTER)
    assert c.wait_exit(MASTER, 10) is not None
    assert first["round"] == 1, "round 2 was committed before the kill: the test lost its race"
    print(f"round 1 committed after {time.monotonic() - t0:.1f}s; master killed")
    new_master = c.wait_agreement([SUB, RUNNER_UP], timeout=20, exclude=old_master)
    assert c.index_of(new_master) == RUNNER_UP

    # the new master resumes at round 2; once it has committed it, the killed node comes back (without
    # taking the master role back) and must get the current model version within a few seconds
    wait_for(lambda: _show(c, SUB, run_id)["round"] >= 2, 60, "round 2 on the new master", poll=0.1)
    c.start(MASTER, extra=["--no-preempt"])
    t_back = time.monotonic()

    def caught_up():
        mine, theirs = _show(c, MASTER, run_id), _show(c, RUNNER_UP, run_id)
        if mine["round"] >= 2 and mine["version"] == theirs["version"]:
            return c.call(MASTER, "models_show", ref=f"digits-ha@{mine['version']}")
        return None

    meta = wait_for(caught_up, 10, "the restarted node to get the current version", poll=0.1)
    print(
        f"restarted node caught up in {time.monotonic() - t_back:.1f}s (version {meta['version']}, "
        f"round {meta['round']})"
    )
    assert meta["run"] == run_id and meta["round"] >= 2

    st = _wait_status(c, RUNNER_UP, run_id, 100)
    print(f"fail-over run done in {time.monotonic() - t0:.1f}s")
    hist = st["history"]
    assert [h["round"] for h in hist] == list(range(1, HA_ROUNDS + 1)) and st["round"] == HA_ROUNDS
    versions = [h["version"] for h in hist]
    assert len(set(versions)) == HA_ROUNDS and st["version"] == versions[-1] and initial not in versions
    assert versions[0] == first["history"][0]["version"]  # round 1 of the old master was kept, not redone
    assert st["term"] > first["term"]  # later rounds were committed by the new master's term
    assert old_master not in hist[1]["clients"]  # it was dead during round 2

    for i in range(3):  # every node, the restarted one included, agrees on the run
        other = _wait_status(c, i, run_id, 15)
        assert _rounds(other) == _rounds(st) and other["term"] == st["term"], f"node{i}"

    lineage_rounds = list(range(HA_ROUNDS, -1, -1))
    for i in (SUB, RUNNER_UP):  # the survivors saw every commit: exactly initial + one version per round
        [ha] = [m for m in c.call(i, "models_list") if m["name"] == "digits-ha"]
        assert ha["versions"] == HA_ROUNDS + 1 and ha["latest"] == versions[-1], f"node{i}: {ha}"
        chain = ModelRegistry(c.homes[i]).lineage(f"digits-ha@{versions[-1]}")
        assert [m["version"] for m in chain] == list(reversed(versions)) + [initial]
        assert [m["round"] for m in chain] == lineage_rounds and all(m["run"] == run_id for m in chain[:-1])
    final = c.call(MASTER, "models_show", ref=f"digits-ha@{versions[-1]}")  # the restarted node has it too
    assert final["round"] == HA_ROUNDS and final["parent"] == versions[-2]

    shown = run_cli_json("run", "show", run_id, "--home", c.homes[MASTER])
    assert shown["status"] == "done" and _rounds(shown) == _rounds(st)
    assert run_id in {r["run_id"] for r in run_cli_json("runs", "--home", c.homes[MASTER])}


def _live(c: LocalCluster) -> int:
    """A running node to talk to (the fail-over scenario may have restarted nodes)."""
    return c.running()[0]


def test_async_buffered_run_completes(cluster):
    """Async mode: every client trains continuously; each aggregation of K=2 buffered updates (stale
    ones discounted) makes one version."""
    c = cluster
    i = _live(c)
    res = c.call(
        i, "train", timeout=60, model="digits", rounds=3, epochs=2, lr=0.1, min_clients=2, mode="async", buffer_k=2
    )
    st = _wait_status(c, i, res["run_id"], 120)
    hist = st["history"]
    assert [h["round"] for h in hist] == [1, 2, 3]
    assert len({h["version"] for h in hist}) == 3
    for h in hist:
        assert len(h["clients"]) >= 1 and set(h["lags"]) == set(h["clients"])
        assert all(lag >= 0 for lag in h["lags"].values())


def test_stop_then_resume_continues_at_the_last_committed_round(cluster):
    c = cluster
    i = _live(c)
    res = c.call(i, "train", timeout=60, model="digits", rounds=6, epochs=1, lr=0.1, min_clients=2)
    run_id = res["run_id"]
    wait_for(lambda: _show(c, i, run_id)["round"] >= 1, 90, "round 1 committed", poll=0.1)
    c.call(i, "run_stop", timeout=30, run_id=run_id)
    stopped = _wait_status(c, i, run_id, 90, status="stopped")
    assert 1 <= stopped["round"] < 6
    time.sleep(1.0)
    assert _show(c, i, run_id)["round"] == stopped["round"]  # nothing runs while stopped

    resumed = c.call(i, "train_resume", timeout=30, run_id=run_id)
    assert resumed["round"] == stopped["round"]
    st = _wait_status(c, i, run_id, 120)
    assert [h["round"] for h in st["history"]] == list(range(1, 7))
    assert len({h["version"] for h in st["history"]}) == 6
    # the rounds committed before the stop are kept as they were
    assert _rounds(st)[: stopped["round"]] == _rounds(stopped)


def test_differential_privacy_says_what_it_spends_and_when_noise_swamps_the_updates(cluster):
    """`collab train --dp-clip 1 --dp-noise 0.5` on three nodes (the setting that drove the digits model to
    chance without a word): the CLI says the epsilon before the first round and warns that the noise swamps
    the updates; each round and each version record the epsilon spent. A mild noise gives no warning."""
    from conftest import run_cli

    from collab_tui.training.privacy import DEFAULT_DELTA, spent

    c = cluster
    args = ["train", "--model", "digits", "--rounds", "2", "--min-clients", "3", "--dp-clip", "1"]
    loud = run_cli(*args, "--dp-noise", "0.5", "--home", c.homes[SUB], timeout=120)
    assert loud.returncode == 0, loud.stderr
    assert "differential privacy: epsilon" in loud.stderr and "after 2 round(s)" in loud.stderr, loud.stderr
    assert "warning: differential privacy: the noise swamps the updates" in loud.stderr, loud.stderr
    assert "epsilon " in loud.stdout  # on every round line
    runs = sorted(c.call(SUB, "runs"), key=lambda r: r.get("created", 0))
    run_id = runs[-1]["run_id"]
    st = _wait_status(c, SUB, run_id, 10)
    assert [h["privacy"]["epsilon"] for h in st["history"]] == [round(spent(0.5, r, DEFAULT_DELTA), 4) for r in (1, 2)]
    assert st["warnings"] and "clients at this noise" in st["warnings"][0]
    meta = ModelRegistry(c.homes[MASTER]).resolve("digits", st["version"])
    assert meta["extra"]["dp"]["epsilon"] == st["history"][-1]["privacy"]["epsilon"]

    mild = run_cli(*args, "--dp-noise", "0.001", "--home", c.homes[SUB], timeout=120)
    assert mild.returncode == 0 and "differential privacy: epsilon" in mild.stderr, mild.stderr
    assert "warning" not in mild.stderr, mild.stderr
    runs = sorted(c.call(SUB, "runs"), key=lambda r: r.get("created", 0))
    assert _wait_status(c, SUB, runs[-1]["run_id"], 10)["warnings"] == []
    mem = c.call(MASTER, "status")["memory"]  # TensorFlow lives in the ML process only
    assert mem["ml_rss"] > 200 * 2**20 and 0 < mem["node_rss"] < mem["ml_rss"], mem
