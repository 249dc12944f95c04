"""`collab train --secure` on four real `collab daemon` processes on 127.0.0.1 (mDNS pinned to 127.0.0.1).

Priorities 0 < 1 < 2 < 3: node3 is the master; runs are submitted from node0. Every node holds its own IID
quarter of scikit-learn's 8x8 digits. The scenarios run in order on one cluster:

1. A 2-round secure FedAvgM run: done, every round a secure sum of the four clients with no dropout, every
   version marked secure and evaluated by the master (`--eval-dataset`, in its ML process's evaluation
   thread), the held-out accuracy above chance; the CLI says so (`train`, `run show`).
2. A client is SIGKILLed while it trains round 2 (after its keys and shares): the round is committed from
   the three survivors, its masks taken off from their shares; the run ends done.
"""

from __future__ import annotations

import time

import pytest
from conftest import run_cli, run_cli_json, wait_for

from collab_tui.localcluster import LocalCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SUB, VICTIM, MASTER = 0, 1, 3


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster(4, priorities=[0, 1, 2, 3], heartbeat=0.2)
    try:
        c.provision()
        c.start_all()
        assert c.index_of(c.wait_agreement(timeout=30)) == MASTER
        for i in range(4):  # each node registers only its own part; this also warms its ML process up
            part = {"scheme": "iid", "num_clients": 4, "client": i, "seed": 0}
            c.call(i, "data_add", timeout=90, name="default", spec={"kind": "digits", "partition": part})
        yield c
    finally:
        c.close()


def _show(c: LocalCluster, i: int, run_id: str) -> dict:
    return c.call(i, "run_show", timeout=5, run_id=run_id)


def _done(c: LocalCluster, run_id: str, timeout: float) -> dict:
    def finished():
        st = _show(c, SUB, run_id)
        assert st["status"] in ("running", "done"), st.get("error")
        return st if st["status"] == "done" else None

    return wait_for(finished, timeout, f"run {run_id[:8]} done", poll=0.2)


def test_a_secure_run_sums_four_clients_and_marks_every_version(cluster):
    c = cluster
    proc = run_cli(
        "train",
        "--model",
        "digits-secure",
        "--secure",
        "--strategy",
        "fedavgm",
        "--rounds",
        "2",
        "--epochs",
        "3",
        "--lr",
        "0.1",
        "--eval-dataset",
        "default",
        "--home",
        c.homes[SUB],
        timeout=150,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "the master sees only the sum" in out and "secure sum of 4" in out, out
    runs = [r for r in run_cli_json("runs", "--home", c.homes[SUB]) if r["model"] == "digits-secure"]
    st = _show(c, SUB, runs[-1]["run_id"])
    assert st["status"] == "done" and st["config"]["secure"] and st["config"]["min_clients"] == 3
    everyone = sorted(c.node_id(i) for i in range(4))
    for h in st["history"]:
        assert h["secure"]["participants"] == 4 and h["secure"]["recovered"] == [] and h["secure"]["threshold"] == 3
        assert sorted(h["clients"]) == everyone and h["samples"] > 0
    assert st["history"][-1]["client_eval"]["accuracy"] > 0.3  # ten classes: chance is 0.1
    # the master evaluated every version on its own quarter, beside the next round's fits
    assert all(h["server_eval"]["n"] > 0 and h["timing"]["server_eval"] > 0 for h in st["history"]), st["history"]
    assert "eval acc" in out
    for h in st["history"]:
        meta = run_cli_json("models", "show", f"digits-secure@{h['version']}", "--home", c.homes[VICTIM])
        assert (meta.get("extra") or {}).get("secure") is True, meta
    assert "secure aggregation" in run_cli("run", "show", st["run_id"][:8], "--home", c.homes[SUB]).stdout


def test_a_client_killed_while_it_trains_is_recovered_from_the_survivors_shares(cluster):
    c = cluster
    res = c.call(
        SUB,
        "train",
        timeout=60,
        model="digits-secure-drop",
        arch={"name": "small-cnn", "input_shape": [8, 8, 1], "num_classes": 10},
        rounds=2,
        epochs=40,
        lr=0.05,
        secure=True,
        round_timeout=60,
    )
    run_id = res["run_id"]
    first = wait_for(lambda: (s := _show(c, SUB, run_id))["round"] >= 1 and s, 120, "round 1 committed", poll=0.05)
    fit = first["history"][0]["fit_seconds_max"]
    assert fit > 1.0, f"a fit of {fit:.2f}s leaves no time to kill a client mid-training"
    time.sleep(min(1.0, fit / 3))  # round 2's keys and shares take milliseconds; its fits take seconds
    c.kill(VICTIM)
    assert c.wait_exit(VICTIM, 10) is not None
    st = _done(c, run_id, 150)
    assert st["history"][0]["secure"]["recovered"] == []
    second = st["history"][1]
    assert second["round"] == 2, "round 2 was committed before the kill: the test lost its race"
    victim = c.node_id(VICTIM)
    assert second["secure"]["recovered"] == [victim] and second["secure"]["participants"] == 4
    assert victim in second["stragglers"] and victim not in second["clients"] and len(second["clients"]) == 3
