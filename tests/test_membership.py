"""Unit tests for the sans-IO membership / failure detector."""

from __future__ import annotations

import dataclasses
import json

import pytest

from collab_tui.net.membership import (
    InvalidHeartbeat,
    Membership,
    MembershipError,
    PeerAlive,
    PeerDead,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    PeerState,
    PeerSuspect,
    heartbeat_fields,
)


def make(**kw) -> Membership:
    return Membership("self", **kw)


def hello(m: Membership, pid: str = "p1", now: float = 0.0, prio: int = 5) -> None:
    m.on_hello(pid, f"name-{pid}", "127.0.0.1:7000", prio, now)


def test_events_are_frozen_values_that_name_the_change_the_uis_know() -> None:
    classes = (PeerJoined, PeerSuspect, PeerDead, PeerAlive, PeerLeft)
    assert [c("p").change for c in classes] == ["join", "suspect", "dead", "alive", "leave"]
    ev = PeerDead("p")
    assert ev == PeerDead("p") and ev != PeerLeft("p") and ev != ("dead", "p")
    assert not hasattr(ev, "__dict__")  # slotted
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.node_id = "q"  # type: ignore[misc]


def test_peer_state_values() -> None:
    assert [s.value for s in PeerState] == ["alive", "suspect", "dead"]
    assert PeerState("suspect") is PeerState.SUSPECT


def test_hello_joins_alive() -> None:
    m = make()
    hello(m, "p1", 1.0)
    assert m.take_events() == [PeerJoined("p1")]
    info = m.get("p1")
    assert isinstance(info, PeerInfo)
    assert (info.name, info.addr, info.priority) == ("name-p1", "127.0.0.1:7000", 5)
    assert info.state is PeerState.ALIVE and info.last_seen == 1.0
    assert m.alive_ids() == {"p1"}
    hello(m, "p1", 1.1)
    assert m.take_events() == []  # no duplicate join


def test_suspect_then_dead_timeline() -> None:
    m = make(interval=0.3, suspect_after=3, dead_after=6)
    hello(m, "p1", 0.0)
    m.take_events()
    assert m.next_deadline() == pytest.approx(0.9)
    m.tick(0.89)
    assert m.take_events() == [] and m.get("p1").state is PeerState.ALIVE
    m.tick(0.9)
    assert m.take_events() == [PeerSuspect("p1")]
    assert m.alive_ids() == set()
    m.tick(1.0)
    assert m.take_events() == []  # unchanged state: no duplicate
    assert m.next_deadline() == pytest.approx(1.8)
    m.tick(1.8)
    assert m.take_events() == [PeerDead("p1")]
    m.tick(5.0)
    assert m.take_events() == []
    assert m.next_deadline() is None


def test_late_tick_goes_straight_to_dead() -> None:
    m = make()
    hello(m, "p1", 0.0)
    m.take_events()
    m.tick(10.0)
    assert m.take_events() == [PeerDead("p1")]


def test_traffic_keeps_alive_and_revives() -> None:
    m = make()
    hello(m, "p1", 0.0)
    m.take_events()
    for t in (0.5, 1.0, 1.5):
        m.on_seen("p1", t)
        m.tick(t + 0.1)
    assert m.take_events() == []
    m.tick(1.5 + 0.9)
    assert m.take_events() == [PeerSuspect("p1")]
    m.on_seen("p1", 2.5)
    assert m.take_events() == [PeerAlive("p1")]
    m.tick(10.0)
    m.on_heartbeat("p1", {"term": 1}, 10.0)
    assert m.take_events() == [PeerDead("p1"), PeerAlive("p1")]


def test_on_seen_unknown_peer_ignored() -> None:
    m = make()
    m.on_seen("ghost", 1.0)
    m.on_disconnect("ghost", 1.0)
    m.on_leave("ghost", 1.0)
    assert m.take_events() == [] and m.peers() == []


def test_disconnect_suspect_immediately_not_dead() -> None:
    m = make()
    hello(m, "p1", 0.0)
    m.take_events()
    m.on_disconnect("p1", 0.1)
    assert m.take_events() == [PeerSuspect("p1", closed=True)]  # what was sent on it may never arrive
    assert m.get("p1").state is PeerState.SUSPECT
    m.on_disconnect("p1", 0.2)
    assert m.take_events() == []
    m.tick(1.0)
    assert m.take_events() == []
    m.tick(1.8)
    assert m.take_events() == [PeerDead("p1")]


def test_leave_is_dead_at_once_and_late_traffic_does_not_revive() -> None:
    m = make()
    hello(m, "p1", 0.0)
    m.take_events()
    m.on_leave("p1", 0.1)
    assert m.take_events() == [PeerLeft("p1")]
    assert m.get("p1").state is PeerState.DEAD
    m.on_leave("p1", 0.2)
    m.on_seen("p1", 0.2)
    m.on_heartbeat("p1", {"term": 3}, 0.2)
    m.tick(10.0)
    assert m.take_events() == []
    assert m.get("p1").state is PeerState.DEAD
    hello(m, "p1", 11.0)  # comes back with a new handshake
    assert m.take_events() == [PeerAlive("p1")]
    assert m.alive_ids() == {"p1"}


def test_remove_forgets() -> None:
    m = make()
    hello(m, "p1")
    m.remove("p1")
    m.remove("p1")
    assert m.get("p1") is None and m.peers() == [] and m.next_deadline() is None


def test_heartbeat_updates_fields() -> None:
    m = make()
    hello(m, "p1", 0.0)
    m.take_events()
    hb = heartbeat_fields("master", 4, 8, 0.75, 1 << 30, 2, ["tf", "gpu"], "v3", extra={"gpu": "none"})
    hb["custom"] = 1
    m.on_heartbeat("p1", hb, 0.5)
    info = m.get("p1")
    assert (info.role, info.term, info.cpus, info.load) == ("master", 4, 8, 0.75)
    assert (info.mem_free, info.queue, info.model_version) == (1 << 30, 2, "v3")
    assert info.capabilities == ["tf", "gpu"]
    assert info.extra == {"gpu": "none", "custom": 1}
    assert info.last_seen == 0.5
    assert m.take_events() == []


def test_heartbeat_from_unknown_peer_joins() -> None:
    m = make()
    m.on_heartbeat("p2", {"t": "hb", "role": "follower", "load": 1}, 2.0)
    assert m.take_events() == [PeerJoined("p2")]
    assert m.get("p2").load == 1.0 and isinstance(m.get("p2").load, float)


@pytest.mark.parametrize(
    "fields",
    [
        {"term": -1},
        {"term": "3"},
        {"cpus": True},
        {"load": "high"},
        {"capabilities": "tf"},
        {"capabilities": [1]},
        {"model_version": 3},
        {"extra": []},
    ],
)
def test_invalid_heartbeat_rejected_atomically(fields) -> None:
    m = make()
    hello(m, "p1", 0.0)
    with pytest.raises(InvalidHeartbeat):
        m.on_heartbeat("p1", {"role": "master", **fields}, 0.5)
    assert m.get("p1").role == "follower" and m.get("p1").last_seen == 0.0


def test_bad_inputs() -> None:
    with pytest.raises(MembershipError):
        Membership("s", interval=0)
    with pytest.raises(MembershipError):
        Membership("s", suspect_after=6, dead_after=3)
    m = make()
    with pytest.raises(MembershipError):
        hello(m, "self")
    with pytest.raises(MembershipError):
        m.on_hello("p1", "n", "a:1", "high", 0.0)
    with pytest.raises(InvalidHeartbeat):
        m.on_heartbeat("p1", ["not", "a", "dict"], 0.0)  # type: ignore[arg-type]
    assert issubclass(InvalidHeartbeat, MembershipError)
    assert issubclass(MembershipError, ValueError)


def test_heartbeat_fields_is_json_message() -> None:
    msg = heartbeat_fields("follower", 2, 4, 0.5, 1000, 0, ("a",), None)
    assert msg == {
        "t": "hb",
        "role": "follower",
        "term": 2,
        "cpus": 4,
        "load": 0.5,
        "mem_free": 1000,
        "queue": 0,
        "capabilities": ["a"],
        "model_version": None,
    }
    assert json.loads(json.dumps(msg)) == msg
    assert Membership.heartbeat_fields("x", 0, 1, 0, 0, 0) == heartbeat_fields("x", 0, 1, 0, 0, 0)
    assert heartbeat_fields("x", 0, 1, 0, 0, 0, extra={"k": 1})["extra"] == {"k": 1}


def test_peers_sorted_and_next_deadline_min() -> None:
    m = make(interval=1.0)
    hello(m, "b", 1.0)
    hello(m, "a", 0.0)
    hello(m, "c", 2.0)
    assert [p.node_id for p in m.peers()] == ["a", "b", "c"]
    assert m.next_deadline() == pytest.approx(3.0)
    m.tick(3.0)
    assert m.take_events()[-1] == PeerSuspect("a")
    assert m.next_deadline() == pytest.approx(4.0)  # b suspects at 4, a dies at 6


def test_multiple_peers_independent() -> None:
    m = make()
    hello(m, "a", 0.0)
    hello(m, "b", 0.0)
    m.take_events()
    t = 0.0
    while t < 3.0:
        t += 0.3
        m.on_heartbeat("a", {"term": 0}, t)
        m.tick(t)
    assert m.alive_ids() == {"a"}
    assert m.take_events() == [PeerSuspect("b"), PeerDead("b")]


def test_a_peer_whose_process_is_gone_is_dead_at_once_not_a_graceful_leave():
    m = Membership("self", interval=0.25, suspect_after=3, dead_after=6)
    m.on_hello("p1", "n1", "10.0.0.2:7373", 0, 0.0)
    m.take_events()
    m.on_disconnect("p1", 0.1)
    m.on_gone("p1", 0.2)
    assert m.take_events() == [PeerSuspect("p1", closed=True), PeerDead("p1")]
    m.on_gone("p1", 0.3)
    assert m.take_events() == []
    m.on_heartbeat("p1", {"role": "follower"}, 5.0)  # restarted: its heartbeats revive it
    assert m.take_events() == [PeerAlive("p1")]
