"""A member is not the master (issue 15), on the sans-IO election: a claim counts only from the node that
ranks highest in the receiver's own view (or one a majority reports), terms advance by a bounded step
unless a majority reports them, a heartbeat's role grants nothing, priorities come from the records."""

from __future__ import annotations

import random

import pytest

from collab_tui.net.election import MAX_TERM_STEP, Election, MessageRefused, Outgoing


def node(nid: str, prio: int = 1, peers: dict | None = None, **kw) -> Election:
    e = Election(nid, prio, rng=random.Random(1), **kw)
    for p, pr in (peers or {}).items():
        e.peer_up(p, pr, 0.0)
    return e


def follower_of(nid: str, master: str, peers: dict, term: int = 3) -> Election:
    e = node(nid, peers=peers)
    e.on_message(master, {"t": "el.coordinator", "term": term}, 0.0)
    assert (e.master_id, e.term) == (master, term)
    e.take_events(), e.take_outbox()
    return e


def refused(e: Election) -> list[MessageRefused]:
    return [ev for ev in e.take_events() if isinstance(ev, MessageRefused)]


# m ranks highest (priority 5); x is a member with priority 0 that wants to rule
PEERS = {"m": 5, "x": 0, "c": 1}


def test_an_outranked_member_cannot_claim_mastership() -> None:
    e = follower_of("b", "m", PEERS)
    e.on_message("x", {"t": "el.coordinator", "term": 4}, 1.0)
    assert (e.master_id, e.term) == ("m", 3)
    assert refused(e) == [MessageRefused("x", "el.coordinator", 4, "outranked")]
    assert e.take_outbox() == []  # and no election: our master is alive and outranks it


@pytest.mark.parametrize("kind", ["coordinator", "election", "answer", "leave"])
@pytest.mark.parametrize("jump", [MAX_TERM_STEP + 1, 10**12])
def test_a_term_jump_past_the_step_is_refused(kind: str, jump: int) -> None:
    e = follower_of("b", "m", PEERS)
    e.on_message("x", {"t": f"el.{kind}", "term": 3 + jump}, 1.0)
    assert (e.master_id, e.term) == ("m", 3)
    assert refused(e) == [MessageRefused("x", f"el.{kind}", 3 + jump, "term jump")]
    # even the highest-ranked node cannot jump alone
    e.on_message("m", {"t": "el.coordinator", "term": 3 + jump}, 1.0)
    assert e.term == 3


def test_a_heartbeat_saying_master_grants_nothing() -> None:
    e = follower_of("b", "m", PEERS)
    e.on_report("x", "master", 4, "x", 1.0)
    assert (e.master_id, e.term) == ("m", 3)
    assert refused(e) == [MessageRefused("x", "el.coordinator", 4, "outranked")]
    e.on_report("x", "master", 10**12, "x", 1.0)
    assert e.term == 3 and refused(e) == [MessageRefused("x", "hb", 10**12, "term jump")]
    # the master's own heartbeat still refreshes its term
    e.on_report("m", "master", 4, "m", 1.1)
    assert (e.master_id, e.term) == ("m", 4)


def test_a_term_far_ahead_counts_when_a_majority_reports_it() -> None:
    """A node back from a long partition is many terms behind: the others' reports carry it over."""
    e = node("b", peers=PEERS)  # 4 members: 3 voices are a majority
    far = 3 + 10 * MAX_TERM_STEP
    e.on_message("m", {"t": "el.coordinator", "term": far}, 0.0)
    assert e.master_id is None and e.term == 0
    e.on_report("m", "master", far, "m", 0.1)
    e.on_report("c", "follower", far, "m", 0.1)
    assert e.master_id is None  # two voices of four
    e.on_report("x", "follower", far, "m", 0.1)
    assert (e.master_id, e.term) == ("m", far)


def test_a_claim_held_back_stands_once_the_node_that_outranked_it_is_gone() -> None:
    e = follower_of("b", "m", PEERS)
    e.on_message("c", {"t": "el.coordinator", "term": 4}, 1.0)  # m outranks c: held
    assert e.master_id == "m"
    e.peer_down("m", 2.0)
    assert (e.master_id, e.term) == ("c", 4)


def test_priorities_are_the_records_and_a_change_applies() -> None:
    e = follower_of("b", "m", PEERS)
    e.on_message("x", {"t": "el.coordinator", "term": 4}, 1.0)
    assert e.master_id == "m"
    e.peer_down("m", 2.0)  # now c (1) outranks x (0): x's held claim still does not stand
    assert e.master_id is None
    e.set_priority("x", 9, 2.1)  # the CA signs x a higher priority: x may rule
    assert (e.master_id, e.term) == ("x", 4)


def test_a_master_re_asserts_at_most_once_a_second_over_an_outranked_claim() -> None:
    e = node("m", prio=5, peers={"b": 1, "x": 0, "c": 1})
    e.start(0.0)
    e.tick(1.0)
    assert e.is_master and e.term == 1
    e.take_events(), e.take_outbox()
    e.on_message("x", {"t": "el.coordinator", "term": 3}, 2.0)  # c outranks x: refused; m re-asserts above it
    assert e.is_master and e.term == 4
    assert e.take_outbox() == [Outgoing(None, {"t": "el.coordinator", "term": 4})]
    e.on_message("x", {"t": "el.coordinator", "term": 6}, 2.1)
    assert e.is_master and e.term == 4  # not again within coordinator_timeout
