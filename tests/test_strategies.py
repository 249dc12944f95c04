"""Aggregation strategies against hand-computed aggregates on tiny arrays."""

import numpy as np
import pytest

from collab_tui.ml.strategies import (
    STRATEGIES,
    BufferedAggregator,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    Krum,
    TrimmedMean,
    make_strategy,
    staleness_weight,
)
from collab_tui.ml.updates import ClientUpdate


def upd(values, n=1, node="n", lag=0):
    ws = [np.asarray(v, dtype=np.float64) for v in values]
    return ClientUpdate(node_id=node, weights=ws, num_examples=n, base_version="v0", metrics={}, lag=lag)


def g(*values):
    return [np.asarray(v, dtype=np.float64) for v in values]


def assert_weights(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, np.asarray(e, dtype=np.float64), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- FedAvg / FedProx
def test_fedavg_weighted_by_examples():
    glob = g([0.0, 0.0], [[1.0]])
    u1 = upd([[1.0, 2.0], [[2.0]]], n=1)
    u2 = upd([[5.0, 6.0], [[6.0]]], n=3)
    # (1*1 + 3*5)/4 = 4 ; (1*2 + 3*6)/4 = 5 ; (1*2 + 3*6)/4 = 5
    assert_weights(FedAvg().aggregate(glob, [u1, u2]), [[4.0, 5.0], [[5.0]]])


def test_fedavg_keeps_global_dtype_and_shape():
    glob = [np.zeros((2,), np.float32), np.zeros((1, 1), np.float32)]
    out = FedAvg().aggregate(glob, [upd([[1.0, 2.0], [[2.0]]])])
    assert [w.dtype for w in out] == [np.float32, np.float32]
    assert [w.shape for w in out] == [(2,), (1, 1)]


def test_fedprox_server_side_equals_fedavg():
    s = FedProx(mu=0.1)
    assert s.mu == 0.1 and s.name == "fedprox"
    glob = g([0.0])
    # (2*1 + 2*3)/4 = 2
    assert_weights(s.aggregate(glob, [upd([[1.0]], n=2), upd([[3.0]], n=2)]), [[2.0]])


@pytest.mark.parametrize("cls", [FedAvg, FedMedian, TrimmedMean, Krum, FedAdam, FedAvgM])
def test_empty_updates_raise(cls):
    with pytest.raises(ValueError):
        cls().aggregate(g([0.0]), [])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        FedAvg().aggregate(g([0.0, 0.0]), [upd([[1.0]])])
    with pytest.raises(ValueError, match="tensors"):
        FedAvg().aggregate(g([0.0], [0.0]), [upd([[1.0]])])


# ---------------------------------------------------------------- FedMedian
def test_fedmedian_odd_and_even():
    glob = g([0.0, 0.0])
    ups = [upd([[1.0, -1.0]], n=100), upd([[10.0, 0.0]]), upd([[3.0, 100.0]])]
    # medians of {1,10,3} = 3 and {-1,0,100} = 0 (num_examples ignored)
    assert_weights(FedMedian().aggregate(glob, ups), [[3.0, 0.0]])
    ups.append(upd([[2.0, 2.0]]))
    # {1,2,3,10} -> 2.5 ; {-1,0,2,100} -> 1.0
    assert_weights(FedMedian().aggregate(glob, ups), [[2.5, 1.0]])


# ---------------------------------------------------------------- TrimmedMean
def test_trimmed_mean_ignores_extremes():
    glob = g([0.0, 0.0])
    ups = [upd([[1.0, -500.0]]), upd([[2.0, 0.0]]), upd([[3.0, 1.0]]), upd([[4.0, 2.0]]), upd([[1000.0, 3.0]])]
    # beta=0.2, n=5 -> drop 1 each side: mean(2,3,4)=3 ; mean(0,1,2)=1
    assert_weights(TrimmedMean(beta=0.2).aggregate(glob, ups), [[3.0, 1.0]])
    # beta=0.1 -> floor(0.5)=0 dropped: plain mean (1+2+3+4+1000)/5=202 ; (-500+0+1+2+3)/5=-98.8
    assert_weights(TrimmedMean(beta=0.1).aggregate(glob, ups), [[202.0, -98.8]])


def test_trimmed_mean_rejects_bad_beta():
    with pytest.raises(ValueError):
        TrimmedMean(beta=0.5)


# ---------------------------------------------------------------- Krum
def krum_updates():
    # honest: h1 (0,0) h2 (1,0) h3 (0,2) h4 (1,1); poisoned p (100,100)
    return [
        upd([[0.0, 0.0]], n=1, node="h1"),
        upd([[1.0, 0.0]], n=2, node="h2"),
        upd([[0.0, 2.0]], n=1, node="h3"),
        upd([[1.0, 1.0]], n=1, node="h4"),
        upd([[100.0, 100.0]], n=1, node="p"),
    ]


def test_krum_scores_by_hand():
    # n=5, f=1 -> 2 nearest. h1: d2 {1,4,2,20000} -> 1+2=3 ; h2: {1,5,1,19801} -> 2
    # h3: {4,5,2,19604} -> 6 ; h4: {2,1,2,19602} -> 3 ; p: {20000,19801,19604,19602} -> 39206
    scores, k = Krum(f=1).scores(krum_updates())
    assert k == 2
    np.testing.assert_allclose(scores, [3.0, 2.0, 6.0, 3.0, 39206.0])


def test_krum_picks_honest_update():
    assert_weights(Krum(f=1, m=1).aggregate(g([0.0, 0.0]), krum_updates()), [[1.0, 0.0]])


def test_multi_krum_weighted_average():
    # m=3 -> h2 (2), h1 (3), h4 (3): (2*(1,0) + 1*(0,0) + 1*(1,1)) / 4 = (0.75, 0.25)
    assert Krum(f=1, m=3).select(krum_updates()) == [1, 0, 3]
    assert_weights(Krum(f=1, m=3).aggregate(g([0.0, 0.0]), krum_updates()), [[0.75, 0.25]])


def test_krum_fallback_small_n():
    # n=3 <= 2f+2=4: 1 nearest neighbour, single pick. scores h=1, h'=1, p=49^2=2401 -> h (tie: first)
    ups = [upd([[0.0, 0.0]]), upd([[1.0, 0.0]]), upd([[50.0, 0.0]])]
    scores, k = Krum(f=1, m=2).scores(ups)
    assert k == 1
    np.testing.assert_allclose(scores, [1.0, 1.0, 2401.0])
    assert_weights(Krum(f=1, m=2).aggregate(g([0.0, 0.0]), ups), [[0.0, 0.0]])
    # a single update is returned as is
    assert_weights(Krum(f=1).aggregate(g([0.0, 0.0]), [upd([[7.0, 8.0]])]), [[7.0, 8.0]])


# ---------------------------------------------------------------- FedAdam
def test_fedadam_two_rounds_by_hand():
    s = FedAdam(eta=1.0, beta1=0.5, beta2=0.75, tau=0.5)
    # round 1: delta=(1,0); m=(0.5,0); v=(0.25,0); new = 0 + (0.5/(0.5+0.5), 0/(0+0.5)) = (0.5, 0)
    r1 = s.aggregate(g([0.0, 0.0]), [upd([[1.0, 0.0]], n=5)])
    assert_weights(r1, [[0.5, 0.0]])
    # round 2: avg = ((1*0.25+3*1.25)/4, (1*1+3*-3)/4) = (1, -2); delta = (0.5, -2)
    # m = (0.5*0.5+0.5*0.5, 0.5*0+0.5*-2) = (0.5, -1); v = (0.75*0.25+0.25*0.25, 0.25*4) = (0.25, 1)
    # new = (0.5 + 0.5/(0.5+0.5), 0 + -1/(1+0.5)) = (1.0, -0.6666...)
    r2 = s.aggregate(r1, [upd([[0.25, 1.0]], n=1), upd([[1.25, -3.0]], n=3)])
    np.testing.assert_allclose(r2[0], [1.0, -0.6666666666666666], rtol=1e-12)
    st = s.state_dict()
    np.testing.assert_allclose(st["m"][0], [0.5, -1.0])
    np.testing.assert_allclose(st["v"][0], [0.25, 1.0])
    assert st["rounds"] == 2


def test_fedadam_state_resumes_on_another_master():
    a = FedAdam(eta=1.0, beta1=0.5, beta2=0.75, tau=0.5)
    r1 = a.aggregate(g([0.0, 0.0]), [upd([[1.0, 0.0]])])
    b = FedAdam()  # default hyper-parameters, overwritten by the state
    b.load_state_dict(a.state_dict())
    ups = [upd([[0.25, 1.0]], n=1), upd([[1.25, -3.0]], n=3)]
    np.testing.assert_allclose(b.aggregate(r1, ups)[0], [1.0, -0.6666666666666666], rtol=1e-12)
    np.testing.assert_allclose(a.aggregate(r1, ups)[0], [1.0, -0.6666666666666666], rtol=1e-12)
    with pytest.raises(ValueError):
        FedAdam().load_state_dict({"m": [np.zeros(2)]})


# ---------------------------------------------------------------- FedAvgM
def test_fedavgm_two_rounds_by_hand():
    s = FedAvgM(beta=0.5, server_lr=0.5)
    # round 1: delta = (1,0) - (0,0) = (1,0); v = 0.5*0 + (1,0) = (1,0); new = 0 + 0.5*(1,0) = (0.5, 0)
    r1 = s.aggregate(g([0.0, 0.0]), [upd([[1.0, 0.0]], n=5)])
    assert_weights(r1, [[0.5, 0.0]])
    # round 2: avg = ((1*0.25+3*1.25)/4, (1*1+3*-3)/4) = (1, -2); delta = (1,-2) - (0.5,0) = (0.5, -2)
    # v = 0.5*(1,0) + (0.5,-2) = (1, -2); new = (0.5,0) + 0.5*(1,-2) = (1.0, -1.0)
    r2 = s.aggregate(r1, [upd([[0.25, 1.0]], n=1), upd([[1.25, -3.0]], n=3)])
    assert_weights(r2, [[1.0, -1.0]])
    st = s.state_dict()
    np.testing.assert_allclose(st["v"][0], [1.0, -2.0])
    assert (st["name"], st["beta"], st["server_lr"], st["rounds"]) == ("fedavgm", 0.5, 0.5, 2)


def test_fedavgm_state_resumes_on_another_master():
    a = FedAvgM(beta=0.5, server_lr=0.5)
    r1 = a.aggregate(g([0.0, 0.0]), [upd([[1.0, 0.0]], n=5)])
    b = FedAvgM()  # default hyper-parameters, overwritten by the state
    assert (b.beta, b.server_lr) == (0.9, 1.0)
    b.load_state_dict(a.state_dict())
    assert (b.beta, b.server_lr) == (0.5, 0.5)
    ups = [upd([[0.25, 1.0]], n=1), upd([[1.25, -3.0]], n=3)]
    assert_weights(b.aggregate(r1, ups), [[1.0, -1.0]])  # same as the uninterrupted run
    assert_weights(a.aggregate(r1, ups), [[1.0, -1.0]])
    assert b.state_dict()["rounds"] == 2
    # a fresh instance without the state has no momentum: new = (0.5,0) + 0.5*(0.5,-2) = (0.75, -1)
    assert_weights(FedAvgM(beta=0.5, server_lr=0.5).aggregate(r1, ups), [[0.75, -1.0]])
    # the state is a copy: mutating it does not change the strategy
    st = b.state_dict()
    st["v"][0][:] = 99.0
    np.testing.assert_allclose(b.state_dict()["v"][0], [1.0, -2.0])
    with pytest.raises(ValueError):
        FedAvgM().load_state_dict({"beta": 0.5})  # no "v"
    with pytest.raises(ValueError):
        FedAvgM().load_state_dict({"v": None, "beta": 1.5})


def test_fedavgm_beta0_lr1_is_fedavg_and_respects_weights_and_dtype():
    s = FedAvgM(beta=0.0, server_lr=1.0)
    glob = [np.zeros((2,), np.float32)]
    ups = [upd([[1.0, 2.0]], n=1), upd([[5.0, 6.0]], n=3)]
    out = s.aggregate(glob, ups)
    assert out[0].dtype == np.float32
    np.testing.assert_allclose(out[0], FedAvg().aggregate(glob, ups)[0])
    # explicit weights override num_examples: (3*1 + 1*5)/4 = 2, (3*2 + 1*6)/4 = 3
    np.testing.assert_allclose(FedAvgM(beta=0.0).aggregate(g([0.0, 0.0]), ups, weights=[3, 1])[0], [2.0, 3.0])
    with pytest.raises(ValueError):
        FedAvgM(beta=1.0)
    with pytest.raises(ValueError):
        FedAvgM(server_lr=0.0)
    with pytest.raises(ValueError, match="state does not match"):
        s.aggregate(g([0.0, 0.0, 0.0]), [upd([[1.0, 1.0, 1.0]])])


# ---------------------------------------------------------------- async buffer
def test_staleness_weight():
    assert staleness_weight(0) == 1.0
    assert staleness_weight(3, 0.5) == 0.5  # 1/sqrt(4)
    assert staleness_weight(1, 1.0) == 0.5
    with pytest.raises(ValueError):
        staleness_weight(-1)


def test_buffered_aggregator_discounts_stale_updates():
    buf = BufferedAggregator(FedAvg(), k=2, alpha=1.0)
    assert buf.add(upd([[0.0]], n=1, lag=0)) is False
    assert buf.add(upd([[3.0]], n=4, lag=1)) is True
    # effective weights 1*1 and 4*(1/2)=2 -> (0 + 2*3)/3 = 2
    assert_weights(buf.flush(g([0.0])), [[2.0]])
    assert len(buf) == 0
    with pytest.raises(ValueError):
        buf.flush(g([0.0]))


# ---------------------------------------------------------------- factory
def test_make_strategy():
    assert isinstance(make_strategy("fedavg"), FedAvg)
    assert make_strategy("fedprox", mu=0.5).mu == 0.5
    assert isinstance(make_strategy("FedMedian"), FedMedian)
    assert make_strategy("trimmed_mean", beta=0.2).beta == 0.2
    k = make_strategy("krum", f=2, m=3)
    assert (k.f, k.m) == (2, 3)
    assert make_strategy("fedadam", eta=0.1).eta == 0.1
    assert make_strategy("fedavgm", beta=0.5, server_lr=2.0).beta == 0.5
    assert set(STRATEGIES) == {"fedavg", "fedprox", "fedmedian", "trimmed-mean", "krum", "fedadam", "fedavgm"}
    for name in STRATEGIES:
        assert make_strategy(name).name == name
    with pytest.raises(ValueError, match="fedavg, fedprox, fedmedian, trimmed-mean, krum, fedadam"):
        make_strategy("sgd")
    with pytest.raises(ValueError, match="bad options"):
        make_strategy("fedavg", mu=1)


def test_the_registry_names_every_implementation_with_its_defaults():
    """`ml/strategy_specs.py` is the one list the CLI, the TUI and the run config read."""
    import inspect

    from collab_tui.ml.strategy_specs import NAMES, SPECS, spec

    assert set(STRATEGIES) == set(NAMES)
    for s in SPECS:
        params = inspect.signature(STRATEGIES[s.name].__init__).parameters
        defaults = {k: p.default for k, p in params.items() if k != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}
        assert defaults == s.options, s.name
    assert spec("Trimmed_Mean").name == "trimmed-mean"
