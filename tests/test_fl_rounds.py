"""The sans-IO core of federated runs (`training/rounds.py`, `training/runstore.py`) plus the round loop of
`training/coordinator.py` driven by a fake service: no TensorFlow, no sockets.

Aggregates are hand-computed. Deltas are multiples of 1/8 so every value is exact in float32 and float64
(Krum's ties are exact ties, broken by order as documented).
"""

from __future__ import annotations

import asyncio
import json
import os
import random

import numpy as np
import pytest
from fake_context import FakeContext

from collab_tui.ml.registry import ModelRegistry
from collab_tui.ml.updates import ClientUpdate
from collab_tui.node.context import PeerView
from collab_tui.training import rounds
from collab_tui.training.coordinator import RunCoordinator
from collab_tui.training.rounds import (
    RoundFailed,
    RoundReady,
    RoundTracker,
    RoundWaiting,
    RunConfig,
    RunState,
    select_clients,
)
from collab_tui.training.run_sync import CommitTally
from collab_tui.training.runstore import RunStore
from collab_tui.training.service import TrainingService

# Reference (global) weights: two tensors, norm sqrt(3); with max_norm_ratio 10 a delta may reach 17.3.
REF = [np.ones(2, np.float32), np.ones(1, np.float32)]

# Five honest clients: each delta is a permutation of (1/8, 2/8, 3/8) over the 3 coordinates (equal norms,
# so the norm-outlier screen keeps all of them), with 10..50 examples.
HONEST = {
    "u1": ((0.125, 0.25, 0.375), 10),
    "u2": ((0.25, 0.375, 0.125), 20),
    "u3": ((0.375, 0.125, 0.25), 30),
    "u4": ((0.125, 0.375, 0.25), 40),
    "u5": ((0.25, 0.125, 0.375), 50),
}


def upd(node: str, delta, n: int = 10, base: str = "v0", ref=REF) -> ClientUpdate:
    d = np.asarray(delta, np.float64)
    return ClientUpdate(node, [(ref[0] + d[:2]).astype(np.float32), (ref[1] + d[2:]).astype(np.float32)], n, base)


def honest() -> list[ClientUpdate]:
    return [upd(k, d, n) for k, (d, n) in HONEST.items()]


def flat(weights) -> np.ndarray:
    return np.concatenate([np.asarray(w, np.float64).ravel() for w in weights])


def nan_update() -> ClientUpdate:
    u = upd("evil", (0.1, 0.1, 0.1))
    u.weights[0][1] = np.nan
    return u


# Hand computation (sum of n_i * delta_i over n = 150):
#   coord0: 10*.125 + 20*.25  + 30*.375 + 40*.125 + 50*.25  = 35
#   coord1: 10*.25  + 20*.375 + 30*.125 + 40*.375 + 50*.125 = 35
#   coord2: 10*.375 + 20*.125 + 30*.25  + 40*.25  + 50*.375 = 42.5
FEDAVG_DELTA = (35 / 150, 35 / 150, 42.5 / 150)


def _adam(d: float, eta: float = 0.1, b1: float = 0.9, b2: float = 0.99, tau: float = 1e-3) -> float:
    # first round from m = v = 0: m = (1-b1) d, v = (1-b2) d^2, step = eta * m / (sqrt(v) + tau)
    return eta * (1 - b1) * d / (np.sqrt(1 - b2) * abs(d) + tau)


EXPECTED = {
    "fedavg": ({}, FEDAVG_DELTA),
    "fedprox": ({"mu": 0.1}, FEDAVG_DELTA),  # the server side of FedProx is FedAvg
    # sorted per coordinate: (.125 .125 .25 .25 .375), (.125 .125 .25 .375 .375), (.125 .25 .25 .375 .375)
    "fedmedian": ({}, (0.25, 0.25, 0.25)),
    # beta .2 of 5 -> drop 1 low + 1 high: (.125 .25 .25)/3, (.125 .25 .375)/3, (.25 .25 .375)/3
    "trimmed-mean": ({"beta": 0.2}, (0.625 / 3, 0.75 / 3, 0.875 / 3)),
    # squared distances (x 1/64): d12=d13=d23=d45=6, d14=d15=d24=d35=2, d25=d34=8; n=5 > 2f+2 so each
    # scores its 2 nearest: u1=4, u2=8, u3=8, u4=4, u5=4 -> tie u1/u4/u5, the earliest (u1) wins
    "krum": ({"f": 1}, (0.125, 0.25, 0.375)),
    # multi-Krum m=3 averages u1, u4, u5 weighted 10/40/50:
    #   (1.25+5+12.5)/100, (2.5+15+6.25)/100, (3.75+10+18.75)/100
    "krum-m3": ({"f": 1, "m": 3}, (0.1875, 0.2375, 0.325)),
    "fedadam": ({"eta": 0.1}, tuple(_adam(d) for d in FEDAVG_DELTA)),
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_every_strategy_reaches_the_hand_computed_aggregate_through_screening(case):
    options, delta = EXPECTED[case]
    strategy = case.split("-m3")[0]
    cfg = RunConfig(strategy=strategy, strategy_options=options).validate()
    updates = honest()
    updates.insert(2, nan_update())  # a poisoned update in the middle must not disturb anything
    new, kept, rejected = rounds.aggregate(cfg.make_strategy(), REF, updates, cfg)
    assert [u.node_id for u in kept] == list(HONEST)
    assert rejected == {"evil": "tensor 0: contains NaN"}
    assert [w.dtype for w in new] == [np.float32, np.float32] and [w.shape for w in new] == [(2,), (1,)]
    np.testing.assert_allclose(flat(new), 1.0 + np.asarray(delta), rtol=1e-6, atol=1e-7)


def test_fedadam_moments_carry_into_the_next_round():
    cfg = RunConfig(strategy="fedadam", strategy_options={"eta": 0.1}).validate()
    strat = cfg.make_strategy()
    first, _, _ = rounds.aggregate(strat, REF, honest(), cfg)
    d = 0.125  # round 2: every client moves every coordinate by 1/8 from the new global
    second, _, _ = rounds.aggregate(strat, first, [upd("a", (d, d, d), 1, ref=first)], cfg)
    for got, d1 in zip(flat(second) - flat(first), FEDAVG_DELTA):
        m = 0.9 * (0.1 * d1) + 0.1 * d
        v = 0.99 * (0.01 * d1 * d1) + 0.01 * d * d
        assert got == pytest.approx(0.1 * m / (np.sqrt(v) + 1e-3), rel=1e-5)


# ----------------------------------------------------------------------------- poisoned updates
def _wrong_shape() -> ClientUpdate:
    return ClientUpdate("evil", [np.ones(3, np.float32), np.ones(1, np.float32)], 10, "v0")


def _missing_tensor() -> ClientUpdate:
    return ClientUpdate("evil", [np.ones(2, np.float32)], 10, "v0")


def _inf() -> ClientUpdate:
    u = upd("evil", (0.1, 0.1, 0.1))
    u.weights[1][0] = np.inf
    return u


POISON = {
    "nan": (nan_update, "tensor 0: contains NaN"),
    "inf": (_inf, "tensor 1: contains Inf"),
    "wrong shape": (_wrong_shape, "tensor 0: wrong shape (3,), expected (2,)"),
    "missing tensor": (_missing_tensor, "wrong number of tensors: expected 2, got 1"),
    "huge norm": (lambda: upd("evil", (100.0, 0.0, 0.0)), "delta norm too large"),
    "no examples": (lambda: upd("evil", (0.1, 0.1, 0.1), n=0), "num_examples must be > 0"),
    "int weights": (
        lambda: ClientUpdate("evil", [np.ones(2, np.int64), np.ones(1, np.float32)], 5, "v0"),
        "tensor 0: non-float dtype int64",
    ),
}


@pytest.mark.parametrize("kind", sorted(POISON))
def test_poisoned_update_is_refused_with_its_reason_and_the_round_goes_on(kind):
    make, reason = POISON[kind]
    cfg = RunConfig().validate()
    new, kept, rejected = rounds.aggregate(cfg.make_strategy(), REF, [make(), *honest()], cfg)
    assert list(rejected) == ["evil"] and rejected["evil"].startswith(reason), rejected
    assert len(kept) == 5
    np.testing.assert_allclose(flat(new), 1.0 + np.asarray(FEDAVG_DELTA), rtol=1e-6)


def test_norm_outlier_among_four_honest_updates_is_dropped():
    # honest delta norms .17 .21 .24 .28 (robust z <= 0.7); the attacker's 1.73 is within 10x the
    # reference norm (so validation passes) but has robust z ~ 29 > 3.5.
    cfg = RunConfig().validate()
    good = [upd(f"h{i}", (s, s, s), n=1) for i, s in enumerate((0.1, 0.12, 0.14, 0.16))]
    boosted = upd("boost", (1.0, 1.0, 1.0), n=1000)  # claims many examples to dominate FedAvg
    new, kept, rejected = rounds.aggregate(cfg.make_strategy(), REF, [good[0], boosted, *good[1:]], cfg)
    assert list(rejected) == ["boost"] and rejected["boost"].startswith("norm outlier"), rejected
    assert [u.node_id for u in kept] == ["h0", "h1", "h2", "h3"]
    np.testing.assert_allclose(flat(new), [1.13, 1.13, 1.13], rtol=1e-6)


def test_norm_outliers_need_three_updates_and_everything_rejected_gives_none():
    cfg = RunConfig().validate()
    # with two updates there is no majority: a large (but valid) one is kept
    new, kept, rejected = rounds.aggregate(cfg.make_strategy(), REF, [upd("a", (0.1,) * 3), upd("b", (1.0,) * 3)], cfg)
    assert rejected == {} and len(kept) == 2
    new, kept, rejected = rounds.aggregate(cfg.make_strategy(), REF, [nan_update(), _inf()], cfg)
    assert new is None and kept == [] and list(rejected) == ["evil"]


# ----------------------------------------------------------------------------- async staleness
def test_async_staleness_discount_through_aggregate():
    cfg = RunConfig(mode="async", staleness_alpha=0.5).validate()
    index = {"v0": 0, "v1": 1, "v2": 2, "v3": 3}
    fresh = upd("fresh", (0.125,) * 3, n=10, base="v3")  # lag 0 -> weight 10
    stale = upd("stale", (0.375,) * 3, n=10, base="v0")  # lag 3 -> weight 10 / sqrt(4) = 5
    unknown = upd("unknown", (0.25,) * 3, n=5, base="zzz")  # unknown base: treated as current (lag 0)
    new, kept, rejected = rounds.aggregate(
        cfg.make_strategy(), REF, [fresh, stale, nan_update(), unknown], cfg, version_index=index, current_index=3
    )
    assert list(rejected) == ["evil"]
    assert {u.node_id: u.lag for u in kept} == {"fresh": 0, "stale": 3, "unknown": 0}
    # (10*.125 + 5*.375 + 5*.25) / 20 = (1.25 + 1.875 + 1.25) / 20
    np.testing.assert_allclose(flat(new), [1 + 4.375 / 20] * 3, rtol=1e-6)
    # sync mode ignores staleness: plain num_examples weights (10*.125 + 10*.375 + 5*.25) / 25
    sync = RunConfig().validate()
    new, _, _ = rounds.aggregate(sync.make_strategy(), REF, [fresh, stale, unknown], sync, index, 3)
    np.testing.assert_allclose(flat(new), [1 + 6.25 / 25] * 3, rtol=1e-6)


# ----------------------------------------------------------------------------- round rule
def test_round_closes_when_everyone_answered():
    t = RoundTracker(1, ["a", "b", "c"], now=100.0, timeout=10.0, min_clients=2)
    assert t.decide(100.0) == RoundWaiting()
    t.add(upd("a", (0.1,) * 3))
    t.add(upd("b", (0.1,) * 3))
    assert t.decide(101.0) == RoundWaiting()  # quorum reached, but c may still answer before the deadline
    t.add(upd("c", (0.1,) * 3))
    assert t.decide(101.0) == RoundReady(1, {}) and t.stragglers() == {}


def test_deadline_with_quorum_aggregates_and_records_stragglers():
    t = RoundTracker(2, ["a", "b", "c", "d"], now=0.0, timeout=5.0, min_clients=2)
    t.add(upd("a", (0.1,) * 3))
    t.add(upd("b", (0.1,) * 3))
    assert t.decide(4.99) == RoundWaiting()
    assert t.decide(5.0) == RoundReady(2, {"c": "deadline", "d": "deadline"})
    assert t.stragglers() == {"c": "deadline", "d": "deadline"}


def test_deadline_without_quorum_fails():
    t = RoundTracker(1, ["a", "b", "c"], now=0.0, timeout=5.0, min_clients=2)
    t.add(upd("a", (0.1,) * 3))
    assert t.decide(5.0) == RoundFailed(1, 1, 2, {"b": "deadline", "c": "deadline"})
    t2 = RoundTracker(1, ["a", "b"], now=0.0, timeout=5.0, min_clients=2)
    t2.add(upd("a", (0.1,) * 3))
    t2.drop("b", "ConnectionClosed: peer went away")  # everyone answered, but too few valid updates
    assert t2.decide(1.0) == RoundFailed(1, 1, 2, {"b": "ConnectionClosed: peer went away"})


def test_dropped_clients_do_not_block_the_round():
    t = RoundTracker(1, ["a", "b", "c"], now=0.0, timeout=60.0, min_clients=2)
    t.add(upd("a", (0.1,) * 3))
    t.drop("c", "RemoteError: no dataset named 'default'")
    assert t.decide(1.0) == RoundWaiting()
    t.add(upd("b", (0.1,) * 3))
    assert t.decide(1.0) == RoundReady(1, {"c": "RemoteError: no dataset named 'default'"})  # before the deadline
    assert t.stragglers() == {"c": "RemoteError: no dataset named 'default'"}
    # a late update from a dropped client, a drop after an update and a stranger are all ignored
    t.add(upd("c", (0.1,) * 3))
    t.drop("a", "late error")
    t.add(upd("zed", (0.1,) * 3))
    assert sorted(t.updates) == ["a", "b"] and t.dropped == {"c": "RemoteError: no dataset named 'default'"}


# ----------------------------------------------------------------------------- client selection
def test_select_clients_fraction_and_min_clients():
    pool = [f"n{i:03d}" for i in range(10)]
    rng = random.Random(1)
    assert select_clients(pool, 1.0, 1, rng) == sorted(pool)
    picked = select_clients(list(reversed(pool)), 0.3, 1, rng)
    assert len(picked) == 3 and picked == sorted(picked) and set(picked) <= set(pool)
    assert len(select_clients(pool, 0.3, 5, rng)) == 5  # min_clients wins over the fraction
    assert len(select_clients(pool, 0.01, 1, rng)) == 1  # ceil: never zero
    assert select_clients(pool[:2], 0.5, 3, rng) == pool[:2]  # asking for more than exist: everyone
    assert select_clients(pool, 0.5, 1, random.Random(7)) == select_clients(pool, 0.5, 1, random.Random(7))
    seen = set()
    for seed in range(30):
        seen.update(select_clients(pool, 0.2, 1, random.Random(seed)))
    assert seen == set(pool)  # the sample does move around


def test_select_clients_fraction_is_not_inflated_by_float_error():
    # 0.07 * 100 == 7.000000000000001 in floating point: must still select 7, not 8
    pool = [f"n{i:03d}" for i in range(100)]
    assert len(select_clients(pool, 0.07, 1, random.Random(0))) == 7
    assert len(select_clients(pool[:25], 0.28, 1, random.Random(0))) == 7


# ----------------------------------------------------------------------------- run configuration
@pytest.mark.parametrize(
    "bad, message",
    [
        ({"strategy": "fedsgd"}, "unknown strategy"),
        ({"mode": "semi"}, "mode must be sync or async"),
        ({"rounds": 0}, "at least 1"),
        ({"epochs": 0}, "at least 1"),
        ({"batch_size": 0}, "at least 1"),
        ({"min_clients": 0}, "at least 1"),
        ({"fraction": 0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"lr": 0}, "positive"),
        ({"round_timeout": -1}, "positive"),
        ({"dp_noise": 1.0}, "dp_clip > 0"),
        ({"dp_clip": -1.0}, "differential privacy"),
        ({"strategy": "trimmed-mean", "strategy_options": {"beta": 0.9}}, "beta"),
        ({"strategy": "krum", "strategy_options": {"f": -1}}, "f >= 0"),
        ({"strategy": "fedavg", "strategy_options": {"eta": 1}}, "bad options"),
    ],
)
def test_run_config_validation_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(bad)


def test_run_config_from_dict_ignores_unknown_keys_and_sets_fedprox_mu():
    cfg = RunConfig.from_dict({"strategy": "fedprox", "rounds": 2, "no_such_field": 1, "strategy_options": {"mu": 0.3}})
    assert cfg.rounds == 2 and cfg.mu == 0.3 and cfg.make_strategy().mu == 0.3
    assert RunConfig.from_dict({"strategy": "fedprox"}).mu == 0.01
    assert RunConfig.from_dict(RunConfig(rounds=4).__dict__) == RunConfig(rounds=4)  # state round-trips


# ----------------------------------------------------------------------------- run store
def _state(round_no: int, term: int, status: str = "running", run_id: str = "0123456789abcdef") -> RunState:
    hist = [{"round": r, "version": f"{r:016x}"} for r in range(1, round_no + 1)]
    return RunState(
        run_id=run_id,
        config={"rounds": 5},
        status=status,
        round=round_no,
        term=term,
        version=hist[-1]["version"] if hist else "",
        history=hist,
    )


def test_accept_replica_keeps_the_newer_term_then_the_higher_round(tmp_path):
    """run_sync.py, rule 1: a copy from a newer term wins even with a lower round (the old master stored its
    later rounds on too few nodes: never committed), and within a term the higher round wins."""
    store = RunStore(tmp_path)
    assert store.accept_replica(_state(2, 3).to_dict())
    assert not store.accept_replica(_state(1, 3).to_dict())  # older round, same term
    assert not store.accept_replica(_state(3, 2).to_dict())  # an older term, even with a higher round
    assert not store.accept_replica(_state(2, 3).to_dict())  # identical: nothing to do
    assert store.get("0123456789abcdef").round == 2
    assert store.accept_replica(_state(1, 4).to_dict())  # a newer master that resumed at round 1
    assert store.get("0123456789abcdef").round == 1
    assert store.accept_replica(_state(3, 4).to_dict())  # its next rounds
    assert store.accept_replica(_state(3, 4, status="done").to_dict())  # status change
    got = store.get("01234567")  # a unique prefix is enough
    assert (got.round, got.term, got.status) == (3, 4, "done")
    assert [h["round"] for h in got.history] == [1, 2, 3]


def test_run_store_commit_is_atomic(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    store.commit(_state(1, 1))
    path = store.dir / "0123456789abcdef.json"
    before = path.read_bytes()

    def crash(src, dst):  # the process "dies" between writing the temp file and the rename
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.commit(_state(2, 1))
    monkeypatch.undo()
    assert path.read_bytes() == before  # the committed state is untouched ...
    assert sorted(p.name for p in store.dir.iterdir()) == [path.name]  # ... and no temp file is left
    assert json.loads(before)["round"] == 1 and store.get("0123456789abcdef").round == 1
    store.commit(_state(2, 1))
    assert store.get("0123456789abcdef").round == 2 and [s.round for s in store.list()] == [2]


def test_run_store_lookup_errors(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(LookupError):
        store.get("0123456789abcdef")
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")
    store.commit(_state(1, 1, run_id="aaaa000000000001"))
    store.commit(_state(1, 1, run_id="aaaa000000000002"))
    with pytest.raises(LookupError):
        store.get("aaaa0000")  # ambiguous prefix
    (store.dir / "ffffffffffffffff.json").write_text("{not json")
    assert sorted(s.run_id for s in store.list()) == ["aaaa000000000001", "aaaa000000000002"]


# ----------------------------------------------------------------------------- the coordinator's round loop
class FakeService:
    """What `RunCoordinator` uses of `TrainingService`, with a real registry and run store on disk and the
    real `train_candidates`; clients are functions. The master ("m") holds the data itself."""

    def __init__(self, home, clients: dict, capabilities: dict[str, list[str]]) -> None:
        self.ctx = FakeContext(
            "m",
            term=7,
            is_master=True,
            capabilities=capabilities.pop("m"),
            peers=[PeerView(n, capabilities=tuple(c)) for n, c in capabilities.items()],
        )
        self.registry = ModelRegistry(home)
        self.runs = RunStore(home)
        self.clients = clients
        self.asked: list[tuple[int, str]] = []
        self.events: list[tuple[str, dict]] = []
        self.replicated: list[tuple[int, str | None]] = []
        self.evaluated: list[tuple[str, str]] = []  # ("start" | "result", key) of the server evaluations
        self.eval_fails = False
        self._pending: dict[str, float] = {}

    train_candidates = TrainingService.train_candidates

    def publish(self, st, what, **data):
        self.events.append((what, data))

    async def commit_replicated(self, st, version, check=None, wait=None):
        self.replicated.append((st.round, version))
        return CommitTally(1)  # a cluster of one: the master's own copy is the majority

    async def client_train(self, node, st, cfg, r, payload, participants=None):
        self.asked.append((r, node))
        _, ref = self.registry.get(cfg.model, st.version)
        return await self.clients[node](node, ref, st.version), 100, {"accuracy": 0.5, "loss": 1.0, "n": 10}

    async def collect_evals(self, st, cfg):
        return [{"accuracy": 0.9, "loss": 0.1, "n": 10}]

    # the master's evaluation of each version: started at its commit, collected at the next
    async def start_evaluation(self, key, cfg, weights, dataset):
        self.evaluated.append(("start", key))
        self._pending[key] = float(np.asarray(weights[0]).ravel()[0])

    async def evaluation_result(self, key):
        self.evaluated.append(("result", key))
        if self.eval_fails:
            raise KeyError(f"no evaluation {key!r} in this ML process (it may have restarted)")
        return {"accuracy": min(1.0, self._pending.pop(key) / 10), "loss": 0.5, "n": 7, "seconds": 0.01}


def _client(step: float, n: int = 10):
    async def train(node, ref, version):
        return ClientUpdate(node, [w + np.float32(step) for w in ref], n, version, {"loss": 1.0, "accuracy": 0.5})

    return train


async def _never(node, ref, version):
    await asyncio.sleep(3600)


async def _crash(node, ref, version):
    raise ConnectionError("node went away")


async def _poison(node, ref, version):
    return ClientUpdate(node, [np.full_like(w, np.nan) for w in ref], 10, version)


def _start(svc: FakeService, **cfg) -> RunCoordinator:
    config = RunConfig(model="toy", arch={"toy": 1}, **cfg).validate()
    v0 = svc.registry.put("toy", REF, {"toy": 1}, round=0, extra={"initial": True})
    st = RunState(run_id="feedfacecafebeef", config=config.__dict__.copy(), version=v0, term=7)
    svc.runs.commit(st)
    return RunCoordinator(svc, st)


DATA = ["train", "data:default"]


async def test_coordinator_rounds_with_a_dead_a_poisoned_and_a_dataless_node(tmp_path):
    clients = {"m": _client(0.125), "a": _client(0.375), "dead": _crash, "bad": _poison, "nodata": _client(9.0)}
    svc = FakeService(tmp_path, clients, {"m": DATA, "a": DATA, "dead": DATA, "bad": DATA, "nodata": ["train"]})
    coord = _start(svc, rounds=3, min_clients=2, round_timeout=30)
    await asyncio.wait_for(coord.run(), 10)
    st = svc.runs.get("feedfacecafebeef")
    assert st.status == "done" and st.round == 3, st.error
    assert "nodata" not in {n for _, n in svc.asked}  # a node without the run's dataset is never asked
    assert [h["round"] for h in st.history] == [1, 2, 3]
    for h in st.history:
        assert sorted(h["clients"]) == ["a", "m"] and h["samples"] == 20
        assert h["stragglers"] == {"dead": "ConnectionError: node went away"}
        assert h["rejected"] == {"bad": "tensor 0: contains NaN"}
    assert st.ledger["bad"] == {"samples": 0, "accepted": 0, "rejected": 3, "rounds": 3}
    assert st.ledger["a"]["accepted"] == 3 and "dead" not in st.ledger
    # FedAvg of +1/8 and +3/8 with equal counts: each round moves every weight by 1/4
    _, final = svc.registry.get("toy", st.version)
    np.testing.assert_allclose(flat(final), [1.75] * 3)
    chain = svc.registry.lineage(f"toy@{st.version}")
    assert [m["round"] for m in chain] == [3, 2, 1, 0] and [m["version"] for m in chain[:3]] == [
        h["version"] for h in reversed(st.history)
    ]
    assert [r for r, _ in svc.replicated] == [1, 2, 3, 3]  # one commit per round, then the final state
    # client_eval: of version r reported in round r+1; of the last version by the final evaluation
    assert [h["client_eval"]["accuracy"] for h in st.history] == [0.5, 0.5, 0.9]


async def test_coordinator_closes_a_round_at_its_deadline_without_the_straggler(tmp_path):
    svc = FakeService(
        tmp_path, {"m": _client(0.125), "a": _client(0.125), "slow": _never}, {"m": DATA, "a": DATA, "slow": DATA}
    )
    coord = _start(svc, rounds=1, min_clients=2, round_timeout=0.3)
    await asyncio.wait_for(coord.run(), 10)
    st = svc.runs.get("feedfacecafebeef")
    assert st.status == "done" and st.history[0]["stragglers"] == {"slow": "deadline"}
    assert sorted(st.history[0]["clients"]) == ["a", "m"] and 0.3 <= st.history[0]["wall_seconds"] < 3


async def test_coordinator_fails_the_run_after_three_rounds_without_quorum(tmp_path):
    svc = FakeService(tmp_path, {"m": _client(0.125), "a": _crash}, {"m": DATA, "a": DATA})
    coord = _start(svc, rounds=2, min_clients=2, round_timeout=5)
    await asyncio.wait_for(coord.run(), 10)
    st = svc.runs.get("feedfacecafebeef")
    assert st.status == "failed" and st.round == 0 and "round 1 failed 3 times" in st.error
    assert [w for w, _ in svc.events].count("round_failed") == 3


async def test_server_evaluation_of_each_version_lands_on_its_entry_at_the_next_commit(tmp_path):
    svc = FakeService(tmp_path, {"m": _client(0.125), "a": _client(0.375)}, {"m": DATA, "a": DATA})
    coord = _start(svc, rounds=3, min_clients=2, round_timeout=30, eval_dataset="held")
    await asyncio.wait_for(coord.run(), 10)
    st = svc.runs.get("feedfacecafebeef")
    assert st.status == "done", st.error
    keys = [f"feedfacecafebeef:{r}" for r in (1, 2, 3)]
    # round r's evaluation starts at its commit and is collected at round r+1's (the last one at the end)
    assert svc.evaluated == [
        ("start", keys[0]),
        ("result", keys[0]),
        ("start", keys[1]),
        ("result", keys[1]),
        ("start", keys[2]),
        ("result", keys[2]),
    ]
    assert [h["server_eval"]["accuracy"] for h in st.history] == [0.125, 0.15, 0.175]  # each of its own version
    assert all(h["timing"]["server_eval"] == 0.01 for h in st.history)
    landed = [d["round"] for what, d in svc.events if what == "server_eval"]
    assert landed == [1, 2, 3]


async def test_a_server_evaluation_that_fails_is_told_once_and_the_run_goes_on(tmp_path):
    svc = FakeService(tmp_path, {"m": _client(0.125), "a": _client(0.375)}, {"m": DATA, "a": DATA})
    svc.eval_fails = True
    coord = _start(svc, rounds=2, min_clients=2, round_timeout=30, eval_dataset="held")
    await asyncio.wait_for(coord.run(), 10)
    st = svc.runs.get("feedfacecafebeef")
    assert st.status == "done" and all("server_eval" not in h for h in st.history)
    assert len(st.warnings) == 1 and "server evaluation on 'held' failed" in st.warnings[0]
    assert [d["text"] for what, d in svc.events if what == "warning"] == st.warnings
