"""The deterministic simulator (collab_tui/sim) on the real control core and the run's commit rules
(training/run_sync.py): a fixed seed set passes every invariant (one committing master per term, commits
on a true majority, agreement, no committed round lost or committed twice, rounds go on after the faults),
planted bugs are caught within it, a seed replays to the identical trace in another process, and the
grants (net/election.py, rule 11) keep two masters of one term from both committing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from collab_tui.net.control import ControlCore
from collab_tui.sim.scenarios import run

SEEDS = range(400)  # a few seconds; `python -m collab_tui.sim --sweep 100000` is the long sweep


def test_the_seed_set_keeps_every_invariant():
    failed = [r.report() for r in (run(s) for s in SEEDS) if not r.ok]
    assert not failed, "\n\n".join(failed[:3])


@pytest.mark.parametrize(
    "plant", ["skip-quorum", "no-grants", "same-term", "commit-alone", "no-sync", "record-twice", "no-reopen"]
)
def test_a_planted_bug_is_caught_within_the_seed_set(plant):
    caught = next((s for s in SEEDS if not run(s, plant=plant).ok), None)
    assert caught is not None, f"no seed of {len(SEEDS)} caught the planted bug {plant}"
    res = run(caught, plant=plant)
    assert res.violations and "VIOLATION" in res.report()


def test_a_seed_replays_to_the_identical_trace_in_another_process():
    def replay(hash_seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        cmd = [sys.executable, "-m", "collab_tui.sim", "--seed", "29", "--full"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=True).stdout

    first = replay("1")
    assert first == replay("2") and first.count("\n") > 30 and "seed 29" in first


def test_two_masters_of_one_term_never_both_commit():
    """A node that restarts before it hears the others takes a term that is already taken: it may rule for
    a moment, but the others granted that term to the first master, so only that one may commit."""
    a, b, c = (ControlCore(n, 0, interval=0.25) for n in ("a", "b", "c"))
    for core in (a, b, c):
        core.election.set_quorum_size(3)
    now = 0.0
    hb = {"cpus": 1, "load": 0.0, "mem_free": 0, "queue": 0, "capabilities": []}

    def connect(x, y):
        x.hello(y.self_id, "", "", 0, now)
        y.hello(x.self_id, "", "", 0, now)

    def report(frm, to):
        to.heartbeat_in(frm.self_id, {**hb, **frm.heartbeat(), "t": "hb"}, now)

    connect(a, b)  # c is down
    b.election._become_master(now)  # b rules in term 1 ...
    a.election_in("b", {"t": "el.coordinator", "term": 1}, now)  # ... and a grants it term 1
    report(a, b)
    assert a.heartbeat()["grant"] == [1, "b"] and b.can_commit()
    connect(c, a)
    connect(c, b)
    c.election._become_master(now)  # c restarted and claimed before it heard anyone: term 1 again
    assert c.election.term == 1 and c.election.role == "master" and c.heartbeat()["grant"] == [1, "c"]
    report(a, c)
    report(b, c)
    report(a, b)
    assert not c.can_commit() and b.can_commit()  # only b holds a majority of the grants of term 1
    # c heard that its term was granted to b: it re-asserts with a fresh term, one the others can grant it
    assert c.election.term == 2 and c.election.role == "master"
    assert any(o.msg == {"t": "el.coordinator", "term": 2} for o in c.take_outbox())
