"""Tests for the sans-IO bully election: unit tests plus a deterministic multi-node simulator."""

from __future__ import annotations

import dataclasses
import heapq
import json
import random
from itertools import count

import pytest

from collab_tui.net.election import (
    Election,
    ElectionError,
    MasterChanged,
    Outgoing,
    RoleChanged,
    TermChanged,
)


# ----------------------------------------------------------------------------- simulator
class Sim:
    """N Election nodes, a fake clock, a delayed message queue, crash/partition/restart.

    Membership is modelled as a perfect failure detector: peers learn of a crash or a
    partition ``detect`` seconds later (``peer_down``); boots and heals are ``peer_up`` at once.
    Masters broadcast heartbeats every ``hb`` seconds. Terms are persisted from the events and
    each outgoing message is checked to carry a term that was persisted before it was sent.
    """

    def __init__(
        self,
        prios: dict[str, int],
        *,
        preempt: bool = True,
        delay=(0.01, 0.01),
        seed: int = 0,
        detect: float = 0.9,
        hb: float = 0.3,
        jitter=(0.0, 0.15),
    ) -> None:
        self.prios, self.preempt, self.delay, self.detect = prios, preempt, delay, detect
        self.hb, self.jitter, self.t, self.next_hb = hb, jitter, 0.0, hb
        self.rng = random.Random(seed)
        self.seed = seed
        self.nodes: dict[str, Election] = {}
        self.up: set[str] = set()
        self.views: dict[str, set[str]] = {}
        self.persisted = {n: 0 for n in prios}
        self.groups: list[set[str]] | None = None
        self.queue: list = []
        self.seq = count()
        self.log: list[tuple] = []

    # -- topology ------------------------------------------------------------------------
    def linked(self, a: str, b: str) -> bool:
        if a not in self.up or b not in self.up or a == b:
            return False
        return self.groups is None or any(a in g and b in g for g in self.groups)

    def connect(self, a: str, b: str) -> None:
        for x, y in ((a, b), (b, a)):
            if y not in self.views[x]:
                self.views[x].add(y)
                self.nodes[x].peer_up(y, self.prios[y], self.t)
                self.pump(x)

    def boot(self, *names: str) -> None:
        for n in names:
            rng = random.Random(f"{self.seed}-{n}-{self.t}")
            self.nodes[n] = Election(
                n, self.prios[n], term=self.persisted[n], preempt=self.preempt, rng=rng, start_jitter=self.jitter
            )
            self.up.add(n)
            self.views[n] = set()
        for n in names:
            for p in sorted(self.up):
                if self.linked(n, p):
                    self.connect(n, p)
            self.nodes[n].start(self.t)
            self.pump(n)

    def _lose(self, a: str, b: str) -> None:
        """``a`` notices ``b`` is gone after the detection delay."""
        self.at(self.t + self.detect, lambda: self._down(a, b))

    def _down(self, a: str, b: str) -> None:
        if a in self.up and b in self.views[a] and not self.linked(a, b):
            self.views[a].discard(b)
            self.nodes[a].peer_down(b, self.t)
            self.pump(a)

    def crash(self, n: str) -> None:
        self.up.discard(n)
        for p in self.up:
            self._lose(p, n)

    def leave(self, n: str) -> None:
        self.nodes[n].leave(self.t)
        self.pump(n)
        self.up.discard(n)
        for p in self.up:
            self.at(self.t + self.delay[1] + 0.001, lambda p=p: self._down(p, n))

    def partition(self, *groups: set[str]) -> None:
        self.groups = [set(g) for g in groups]
        for a in self.up:
            for b in self.views[a]:
                if not self.linked(a, b):
                    self._lose(a, b)

    def heal(self) -> None:
        self.groups = None
        for a in sorted(self.up):
            for b in sorted(self.up):
                if a < b:
                    self.connect(a, b)

    # -- plumbing ------------------------------------------------------------------------
    def at(self, when: float, fn) -> None:
        heapq.heappush(self.queue, (when, next(self.seq), fn))

    def pump(self, n: str) -> None:
        node = self.nodes[n]
        for ev in node.take_events():
            self.log.append((self.t, n, ev))
            if isinstance(ev, TermChanged):
                self.persisted[n] = ev.term
        for out in node.take_outbox():
            assert isinstance(out, Outgoing)
            dest, msg = out.dest, out.msg
            json.dumps(msg)
            assert msg["term"] <= self.persisted[n], "term must be persisted before sending"
            for d in sorted(self.views[n]) if dest is None else [dest]:
                self.send(n, d, lambda d=d, m=msg, s=n: self.nodes[d].on_message(s, m, self.t))

    def send(self, src: str, dst: str, deliver) -> None:
        def fire() -> None:
            if dst in self.up and (self.groups is None or self.linked(src, dst) or src not in self.up):
                deliver()
                self.pump(dst)

        self.at(self.t + self.rng.uniform(*self.delay), fire)

    def run(self, until: float) -> None:
        for _ in range(200_000):
            cands = [self.next_hb] + ([self.queue[0][0]] if self.queue else [])
            cands += [d for n in self.up if (d := self.nodes[n].next_deadline()) is not None]
            t = min(cands)
            if t > until:
                self.t = until
                return
            self.t = max(self.t, t)
            if self.queue and self.queue[0][0] <= t:
                heapq.heappop(self.queue)[2]()
            elif self.next_hb <= t:
                self.next_hb += self.hb
                for n in sorted(self.up):
                    e = self.nodes[n]
                    if e.is_master:
                        for p in sorted(self.views[n]):
                            self.send(
                                n, p, lambda p=p, s=n, tm=e.term: self.nodes[p].on_master_heartbeat(s, tm, self.t)
                            )
            else:
                for n in sorted(self.up):
                    d = self.nodes[n].next_deadline()
                    if d is not None and d <= t:
                        self.nodes[n].tick(self.t)
                        self.pump(n)
        raise AssertionError("simulation did not settle")

    # -- observations --------------------------------------------------------------------
    def masters(self, among=None) -> set[str]:
        return {n for n in (among or self.up) if self.nodes[n].is_master}

    def agreed(self, among=None) -> str | None:
        among = set(among or self.up)
        views = {self.nodes[n].master_id for n in among}
        if len(views) != 1 or self.masters(among) != views:
            return None
        return views.pop()

    def term(self, n: str) -> int:
        return self.nodes[n].term

    def can_commit(self, n: str) -> bool:
        return self.nodes[n].can_commit(1 + len(self.views[n]))


ABC = {"a": 1, "b": 1, "c": 1}


def booted(prios=ABC, until: float = 3.0, **kw) -> Sim:
    sim = Sim(prios, **kw)
    sim.boot(*prios)
    sim.run(until)
    return sim


# ----------------------------------------------------------------------- simulator tests
@pytest.mark.parametrize("preempt", [True, False])
def test_boot_three_nodes_agree_on_highest(preempt: bool) -> None:
    sim = booted(preempt=preempt)
    assert sim.agreed() == "c"
    assert {sim.term(n) for n in "abc"} == {1}
    assert all(sim.persisted[n] == 1 for n in "abc")


def test_crash_master_next_highest_with_higher_term() -> None:
    sim = booted()
    sim.crash("c")
    sim.run(6.0)
    assert sim.agreed() == "b"
    assert sim.term("b") == sim.term("a") == 2


def test_graceful_leave_handover_in_one_message_delay() -> None:
    d = 0.05
    sim = booted(delay=(d, d))
    t0 = sim.t
    sim.leave("c")
    sim.run(t0 + d + 1e-6)
    assert sim.nodes["b"].is_master and sim.term("b") == 2
    sim.run(t0 + 2 * d + 1e-6)
    assert sim.agreed() == "b" and sim.term("a") == 2
    sim.run(t0 + 5.0)  # later peer_down/heartbeats change nothing
    assert sim.agreed() == "b" and sim.term("b") == 2


@pytest.mark.parametrize("preempt, winner, term", [(True, "c", 3), (False, "b", 2)])
def test_rejoin_of_higher_node(preempt: bool, winner: str, term: int) -> None:
    sim = booted(preempt=preempt)
    sim.crash("c")
    sim.run(6.0)
    assert sim.agreed() == "b"
    sim.boot("c")  # restarts with its persisted term (1)
    sim.run(10.0)
    assert sim.agreed() == winner
    assert {sim.term(n) for n in "abc"} == {term}


@pytest.mark.parametrize("seed", range(25))
def test_concurrent_elections_converge(seed: int) -> None:
    prios = {n: 1 for n in "abcde"}
    sim = Sim(prios, seed=seed, delay=(0.001, 0.08), jitter=(0.0, 0.0))
    sim.boot(*prios)
    sim.run(4.0)
    assert sim.agreed() == "e"
    assert len({sim.term(n) for n in prios}) == 1


@pytest.mark.parametrize("seed", range(10))
def test_random_boot_order_and_crashes_converge(seed: int) -> None:
    rnd = random.Random(seed)
    prios = {n: rnd.randint(0, 2) for n in "abcdef"}
    sim = Sim(prios, seed=seed, delay=(0.001, 0.05))
    order = list(prios)
    rnd.shuffle(order)
    for n in order:
        sim.boot(n)
        sim.run(sim.t + rnd.uniform(0, 0.2))
    sim.run(sim.t + 3)
    best = max(prios, key=lambda n: (prios[n], n))
    assert sim.agreed() == best
    sim.crash(best)
    sim.run(sim.t + 4)
    second = max(set(prios) - {best}, key=lambda n: (prios[n], n))
    assert sim.agreed() == second


def test_two_node_cluster_survivor_master_but_no_commit() -> None:
    sim = booted({"a": 1, "b": 1})
    assert sim.agreed() == "b" and sim.can_commit("b")
    assert not sim.can_commit("a")
    sim.crash("b")
    sim.run(6.0)
    assert sim.agreed() == "a"
    assert sim.nodes["a"].quorum_size == 2 and not sim.can_commit("a")
    sim.nodes["a"].set_quorum_size(1)
    assert sim.can_commit("a")


@pytest.mark.parametrize("preempt, winner, term", [(True, "c", 3), (False, "b", 2)])
def test_partition_only_majority_commits_then_heals(preempt: bool, winner: str, term: int) -> None:
    sim = booted(preempt=preempt)
    sim.partition({"a", "b"}, {"c"})
    sim.run(6.0)
    assert sim.masters() == {"b", "c"}
    assert sim.agreed({"a", "b"}) == "b" and sim.term("b") == 2
    assert sim.can_commit("b") and not sim.can_commit("c")
    sim.heal()
    sim.run(9.0)
    assert sim.agreed() == winner and {sim.term(n) for n in "abc"} == {term}
    assert sim.can_commit(winner) and sim.masters() == {winner}


def test_priority_beats_node_id() -> None:
    sim = booted({"a": 10, "m": 5, "z": 1})
    assert sim.agreed() == "a"
    sim.crash("a")
    sim.run(6.0)
    assert sim.agreed() == "m"


# ----------------------------------------------------------------------------- unit tests
def node(nid: str = "b", prio: int = 1, peers: dict | None = None, **kw) -> Election:
    e = Election(nid, prio, rng=random.Random(1), **kw)
    for p, pr in (peers or {}).items():
        e.peer_up(p, pr, 0.0)
    return e


def make_master(e: Election, now: float = 0.0) -> Election:
    e.start(now)
    e.tick(now + 5)
    e.tick(now + 10)
    assert e.is_master
    e.take_events(), e.take_outbox()
    return e


def msg(t: str, term: int) -> dict:
    return {"t": f"el.{t}", "term": term}


def test_outputs_are_frozen_slotted_values() -> None:
    for ev in (TermChanged(1), RoleChanged("master"), MasterChanged(None, 1), Outgoing(None, msg("leave", 1))):
        assert not hasattr(ev, "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(ev, dataclasses.fields(ev)[0].name, "x")
    assert TermChanged(1) != ("term", 1) and MasterChanged("a", 1) != MasterChanged("a", 2)


def test_alone_becomes_master_and_term_event_comes_first() -> None:
    e = node("a")
    e.start(0.0)
    dl = e.next_deadline()
    assert dl is not None and 0.0 <= dl <= 0.15
    e.tick(dl)
    assert e.take_events() == [RoleChanged("candidate"), TermChanged(1), RoleChanged("master"), MasterChanged("a", 1)]
    assert e.take_outbox() == [Outgoing(None, msg("coordinator", 1))]
    assert e.next_deadline() is None


def test_bully_answer_timeout_then_master() -> None:
    e = node("a", peers={"b": 1, "c": 1})
    e.start(0.0)
    e.tick(1.0)
    assert e.role == "candidate"
    assert e.take_outbox() == [Outgoing("b", msg("election", 0)), Outgoing("c", msg("election", 0))]
    assert e.next_deadline() == pytest.approx(1.3)
    e.tick(1.3)
    assert e.is_master and e.term == 1


def test_answer_then_coordinator_timeout_restarts() -> None:
    e = node("a", peers={"b": 1})
    e.start(0.0)
    e.tick(1.0)
    e.take_outbox()
    e.on_message("b", msg("answer", 0), 1.1)
    assert e.next_deadline() == pytest.approx(2.1) and e.role == "candidate"
    e.tick(2.1)
    assert e.take_outbox() == [Outgoing("b", msg("election", 0))]
    e.on_message("b", msg("coordinator", 1), 2.2)
    assert (e.role, e.master_id, e.term) == ("follower", "b", 1)
    assert e.next_deadline() is None


def test_election_from_lower_node() -> None:
    e = node("b", peers={"a": 1, "c": 1})
    e.on_message("a", msg("election", 0), 0.0)
    assert e.take_outbox() == [Outgoing("a", msg("answer", 0)), Outgoing("c", msg("election", 0))]
    assert e.role == "candidate"
    e.on_message("a", msg("election", 0), 0.1)
    assert e.take_outbox() == [Outgoing("a", msg("answer", 0))]
    m = make_master(node("c", peers={"a": 1, "b": 1}))
    m.on_message("a", msg("election", 1), 0.0)
    assert m.take_outbox() == [Outgoing("a", msg("coordinator", 1))]


def test_follower_of_higher_master_only_answers() -> None:
    for preempt in (True, False):
        e = node("b", peers={"a": 1, "c": 1}, preempt=preempt)
        e.on_master_heartbeat("c", 1, 0.0)
        e.on_message("a", msg("election", 1), 0.1)
        assert e.take_outbox() == [Outgoing("a", msg("answer", 1))] and e.role == "follower"


def test_no_preempt_follower_of_lower_master_stays_silent() -> None:
    e = node("c", peers={"a": 1, "b": 1}, preempt=False)
    e.start(0.0)
    assert e.next_deadline() >= 1.0  # listens for a master first
    e.on_master_heartbeat("a", 3, 0.2)  # b outranks a, and nobody else says a rules: not followed yet
    assert e.master_id is None and e.term == 0
    e.on_report("b", "follower", 3, "a", 0.2)  # b follows a: with a's own voice, 2 of 3 say a rules
    assert (e.master_id, e.term, e.next_deadline()) == ("a", 3, None)
    e.on_message("b", msg("election", 3), 0.3)
    assert e.take_outbox() == [] and e.role == "follower"


def test_preempt_follower_bullies_lower_master() -> None:
    e = node("c", peers={"a": 1, "b": 1})
    e.on_message("a", msg("coordinator", 4), 0.0)  # b outranks a: refused; c outranks a: c bullies
    assert e.is_master and e.term == 5  # above the claim it refused
    ev = e.take_events()
    assert MasterChanged("a", 4) not in ev and ev[-1] == MasterChanged("c", 5)


def test_stale_term_coordinator_and_heartbeat_ignored() -> None:
    e = node("b", peers={"a": 1, "c": 1}, term=5)
    e.on_message("c", msg("coordinator", 3), 0.0)
    e.on_master_heartbeat("c", 4, 0.0)
    assert e.master_id is None and e.take_events() == [] and e.take_outbox() == []
    m = make_master(node("b", peers={"a": 1, "c": 1}, term=5))
    m.on_message("c", msg("coordinator", 2), 0.0)
    assert m.is_master and m.term == 6
    assert m.take_outbox() == [Outgoing("c", msg("coordinator", 6))]  # tells the stale master


@pytest.mark.parametrize("via", ["coordinator", "heartbeat"])
def test_master_steps_down_on_higher_term(via: str) -> None:
    m = make_master(node("c", peers={"a": 1, "b": 1}, preempt=False))
    if via == "coordinator":
        m.on_message("b", msg("coordinator", 7), 1.0)
    else:
        m.on_master_heartbeat("b", 7, 1.0)
    assert (m.role, m.master_id, m.term) == ("follower", "b", 7)
    assert m.take_events() == [TermChanged(7), RoleChanged("follower"), MasterChanged("b", 7)]
    assert not m.accepts(6) and m.accepts(7) and m.accepts(8)


def test_same_term_tie_break_by_rank() -> None:
    e = node("a", peers={"b": 1, "c": 1})
    e.on_message("b", msg("coordinator", 2), 0.0)
    e.on_message("c", msg("coordinator", 2), 0.1)
    assert e.master_id == "c"
    e.on_message("b", msg("coordinator", 2), 0.2)
    assert e.master_id == "c"
    m = make_master(node("c", peers={"a": 1, "b": 1}, term=1))  # term 2
    m.on_message("b", msg("coordinator", 2), 0.0)
    assert m.is_master and m.term == 3  # won the tie: re-asserts with a fresh term
    assert m.take_outbox() == [Outgoing(None, msg("coordinator", 3))]
    low = make_master(node("b", peers={"a": 1, "c": 1}, term=1))
    low.on_master_heartbeat("c", 2, 0.0)
    assert (low.role, low.master_id) == ("follower", "c")


def test_master_sees_higher_term_in_election_reasserts() -> None:
    m = make_master(node("c", peers={"a": 1, "b": 1}))
    m.on_message("a", msg("election", 9), 0.0)
    assert m.is_master and m.term == 10
    assert m.take_outbox() == [Outgoing(None, msg("coordinator", 10))]


def test_heartbeat_before_jitter_cancels_boot_election() -> None:
    e = node("a", peers={"c": 1})
    e.start(0.0)
    e.on_master_heartbeat("c", 2, 0.01)
    assert e.next_deadline() is None and e.master_id == "c" and e.term == 2
    e.tick(5.0)
    assert e.take_outbox() == []


def test_peer_down_of_master_the_highest_live_node_claims_at_once() -> None:
    """One broadcast, not every node bullying every higher one: the highest live node in the view claims
    at once; a lower one waits a coordinator timeout for its claim, then elects."""
    e = node("b", peers={"a": 1, "c": 1})
    e.on_master_heartbeat("c", 1, 0.0)
    e.take_events()
    e.peer_down("c", 2.0)
    assert e.is_master and e.term == 2
    assert [o.msg["t"] for o in e.take_outbox()] == ["el.coordinator"]
    a = node("a", peers={"b": 1, "c": 1})
    a.on_master_heartbeat("c", 1, 0.0)
    a.peer_down("c", 2.0)
    assert not a.is_master and a.take_outbox() == [] and a.next_deadline() == pytest.approx(2.0 + a.coordinator_timeout)
    a.peer_down("b", 2.1)  # the successor died too: no coordinator comes, so it elects
    a.tick(a.next_deadline())
    assert a.is_master and a.term == 2


@pytest.mark.parametrize("down_first", [False, True])
def test_leave_of_master_immediate_successor(down_first: bool) -> None:
    e = node("b", peers={"a": 1, "c": 1})
    e.on_message("c", msg("coordinator", 1), 0.0)
    if down_first:
        e.peer_down("c", 0.5)
    e.on_message("c", msg("leave", 1), 0.5)
    assert e.is_master and e.term == 2
    a = node("a", peers={"b": 1, "c": 1})
    a.on_message("c", msg("coordinator", 1), 0.0)
    if down_first:
        a.peer_down("c", 0.5)
    a.on_message("c", msg("leave", 1), 0.5)
    assert a.role == "follower" and a.next_deadline() == pytest.approx(1.5)
    a.tick(1.5)  # no coordinator arrived: normal election
    assert a.take_outbox() == [Outgoing("b", msg("election", 1))]


def test_leave_goes_quiet() -> None:
    m = make_master(node("c", peers={"a": 1, "b": 1}))
    m.leave(1.0)
    assert m.take_outbox() == [Outgoing(None, msg("leave", 1))]
    assert m.role == "follower" and m.master_id is None and m.next_deadline() is None
    m.on_message("a", msg("election", 1), 1.1)
    m.tick(9.0)
    assert m.take_outbox() == []


def test_master_greets_new_peer() -> None:
    m = make_master(node("c", peers={"a": 1}))
    m.peer_up("b", 1, 1.0)
    assert m.take_outbox() == [Outgoing("b", msg("coordinator", 1))]


@pytest.mark.parametrize(
    "quorum, alive, ok",
    [
        (1, 1, True),
        (2, 1, False),
        (2, 2, True),
        (3, 1, False),
        (3, 2, True),
        (4, 2, False),
        (4, 3, True),
        (5, 3, True),
        (5, 2, False),
    ],
)
def test_can_commit_strict_majority(quorum: int, alive: int, ok: bool) -> None:
    m = make_master(node("c"))
    m.set_quorum_size(quorum)
    assert m.can_commit(alive) is ok
    f = node("a")
    f.set_quorum_size(quorum)
    assert not f.can_commit(alive)


def test_quorum_size_defaults_to_known_members() -> None:
    e = node("a", peers={"b": 1, "c": 1})
    e.peer_down("c", 1.0)
    assert e.quorum_size == 3


@pytest.mark.parametrize(
    "bad",
    [
        "x",
        {"t": "el.nope", "term": 1},
        {"t": "el.answer"},
        {"t": "el.answer", "term": -1},
        {"t": "el.answer", "term": True},
        {"t": "el.answer", "term": "1"},
    ],
)
def test_malformed_messages_raise(bad) -> None:
    with pytest.raises(ElectionError):
        node().on_message("a", bad, 0.0)


def test_bad_parameters_raise() -> None:
    with pytest.raises(ElectionError):
        Election("a", 1, term=-1)
    with pytest.raises(ElectionError):
        Election("a", 1, start_jitter=(0.5, 0.1))
    with pytest.raises(ElectionError):
        node().set_quorum_size(0)
    with pytest.raises(ElectionError):
        node().on_master_heartbeat("a", None, 0.0)  # type: ignore[arg-type]
    assert issubclass(ElectionError, ValueError)
