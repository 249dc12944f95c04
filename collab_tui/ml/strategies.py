"""Federated aggregation strategies (sans-IO, pure numpy).

A strategy has a ``name`` and ``aggregate(global_weights, updates, weights=None)`` returning the
new global weights (same shapes and dtypes as ``global_weights``). ``weights`` optionally overrides
the per-update aggregation weight (default: ``num_examples``); the async BufferedAggregator uses
it for staleness discounts. Strategies raise ValueError on empty or malformed input. All are
stateless except FedAdam and FedAvgM, which carry their moment / momentum estimates across rounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from collab_tui.ml.strategy_specs import spec
from collab_tui.ml.updates import ClientUpdate, Weights

Globals = Sequence[np.ndarray]  # the global model's weights, one array per tensor
Updates = Sequence[ClientUpdate]
AggWeights = Sequence[float] | None  # per-update aggregation weights (default: num_examples)


def _check(global_weights: Sequence[np.ndarray], updates: Sequence[ClientUpdate]) -> None:
    if not updates:
        raise ValueError("no updates to aggregate")
    for u in updates:
        if len(u.weights) != len(global_weights):
            raise ValueError(f"update from {u.node_id}: {len(u.weights)} tensors, expected {len(global_weights)}")
        for i, (w, g) in enumerate(zip(u.weights, global_weights)):
            if np.shape(w) != np.shape(g):
                raise ValueError(f"update from {u.node_id}: tensor {i} shape {np.shape(w)} != {np.shape(g)}")


def _agg_weights(updates: Sequence[ClientUpdate], weights: Sequence[float] | None) -> np.ndarray:
    w = np.asarray([u.num_examples for u in updates] if weights is None else list(weights), np.float64)
    if w.shape != (len(updates),):
        raise ValueError(f"expected {len(updates)} aggregation weights, got {w.size}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"aggregation weights must be finite, >= 0 and not all zero: {w.tolist()}")
    return w


def _cast_like(arrays: Sequence[np.ndarray], like: Sequence[np.ndarray]) -> Weights:
    return [np.asarray(a).astype(np.asarray(g).dtype) for a, g in zip(arrays, like)]


def weighted_average(updates: Sequence[ClientUpdate], w: np.ndarray) -> list[np.ndarray]:
    """Per-tensor sum_i w_i * x_i / sum_i w_i, in float64."""
    total = float(w.sum())
    out = []
    for layer in range(len(updates[0].weights)):
        acc = np.zeros(np.shape(updates[0].weights[layer]), np.float64)
        for u, wi in zip(updates, w):
            acc += wi * np.asarray(u.weights[layer], np.float64)
        out.append(acc / total)
    return out


def _pseudo_gradient(
    global_weights: Sequence[np.ndarray],
    updates: Sequence[ClientUpdate],
    weights: Sequence[float] | None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Server optimisers (FedAdam, FedAvgM): (global as float64, weighted average of updates - global)."""
    _check(global_weights, updates)
    avg = weighted_average(updates, _agg_weights(updates, weights))
    g = [np.asarray(x, np.float64) for x in global_weights]
    return g, [a - b for a, b in zip(avg, g)]


class Strategy:
    """Base class; subclasses implement ``aggregate``."""

    name = "strategy"

    def aggregate(self, global_weights: Globals, updates: Updates, weights: AggWeights = None) -> Weights:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class FedAvg(Strategy):
    """McMahan et al. 2017: average weighted by num_examples."""

    name = "fedavg"

    def aggregate(self, global_weights: Globals, updates: Updates, weights: AggWeights = None) -> Weights:
        _check(global_weights, updates)
        return _cast_like(weighted_average(updates, _agg_weights(updates, weights)), global_weights)


class FedProx(FedAvg):
    """Li et al. 2020. The server side is FedAvg; ``mu`` is sent to clients, which add the
    proximal term (mu/2) * ||w - w_global||^2 to their local loss."""

    name = "fedprox"

    def __init__(self, mu: float = 0.01) -> None:
        if not mu >= 0:
            raise ValueError(f"mu must be >= 0, got {mu}")
        self.mu = float(mu)


class FedMedian(Strategy):
    """Coordinate-wise median (Yin et al. 2018); unweighted, ``weights`` is ignored."""

    name = "fedmedian"

    def aggregate(self, global_weights: Globals, updates: Updates, weights: AggWeights = None) -> Weights:
        _check(global_weights, updates)
        out = [
            np.median(np.stack([np.asarray(u.weights[i], np.float64) for u in updates]), axis=0)
            for i in range(len(global_weights))
        ]
        return _cast_like(out, global_weights)


class TrimmedMean(Strategy):
    """Coordinate-wise trimmed mean: drop floor(beta*n) highest and lowest values per
    coordinate, average the rest (unweighted, ``weights`` is ignored)."""

    name = "trimmed-mean"

    def __init__(self, beta: float = 0.1) -> None:
        if not 0 <= beta < 0.5:
            raise ValueError(f"beta must be in [0, 0.5), got {beta}")
        self.beta = float(beta)

    def aggregate(self, global_weights: Globals, updates: Updates, weights: AggWeights = None) -> Weights:
        _check(global_weights, updates)
        n = len(updates)
        k = math.floor(self.beta * n)
        out = []
        for i in range(len(global_weights)):
            s = np.sort(np.stack([np.asarray(u.weights[i], np.float64) for u in updates]), axis=0)
            out.append(s[k : n - k].mean(axis=0))
        return _cast_like(out, global_weights)


class Krum(Strategy):
    """Krum / Multi-Krum (Blanchard et al. 2017).

    score(i) = sum of squared L2 distances from update i to its n-f-2 nearest other updates;
    the ``m`` lowest-scoring updates are averaged, weighted by num_examples (or ``weights``).
    Krum's guarantee needs n > 2f+2. Otherwise we fall back to scoring against
    max(1, n-f-2) nearest neighbours (capped at n-1, the available ones) and select only the
    single lowest score (m=1). With one update, it is returned. Ties go to the earlier update.
    """

    name = "krum"

    def __init__(self, f: int = 1, m: int = 1) -> None:
        if f < 0 or m < 1:
            raise ValueError(f"need f >= 0 and m >= 1, got f={f}, m={m}")
        self.f = int(f)
        self.m = int(m)

    def scores(self, updates: Sequence[ClientUpdate]) -> tuple[np.ndarray, int]:
        """Krum scores per update and the number of neighbours used."""
        n = len(updates)
        flat = np.stack(
            [np.concatenate([np.asarray(w, np.float64).ravel() for w in u.weights] or [np.zeros(0)]) for u in updates]
        )
        d2 = np.zeros((n, n))
        for i in range(n):  # direct differences: no cancellation error for close updates
            for j in range(i + 1, n):
                diff = flat[i] - flat[j]
                d2[i, j] = d2[j, i] = float(np.dot(diff, diff))
        if n > 2 * self.f + 2:
            k = n - self.f - 2
        else:
            k = min(n - 1, max(1, n - self.f - 2))
        sc = np.zeros(n)
        for i in range(n):
            others = np.delete(d2[i], i)
            sc[i] = float(np.sort(others)[:k].sum()) if k > 0 else 0.0
        return sc, k

    def select(self, updates: Sequence[ClientUpdate]) -> list[int]:
        """Indices of the selected updates, best first."""
        sc, _ = self.scores(updates)
        m = min(self.m, len(updates)) if len(updates) > 2 * self.f + 2 else 1
        return [int(i) for i in np.argsort(sc, kind="stable")[:m]]

    def aggregate(self, global_weights: Globals, updates: Updates, weights: AggWeights = None) -> Weights:
        _check(global_weights, updates)
        w = _agg_weights(updates, weights)
        idx = self.select(updates)
        chosen = [updates[i] for i in idx]
        wc = w[idx]
        if wc.sum() <= 0:
            wc = np.ones(len(idx))
        return _cast_like(weighted_average(chosen, wc), global_weights)


class FedAdam(Strategy):
    """Server-side Adam (Reddi et al. 2021, "Adaptive Federated Optimization").

    delta = weighted_avg(updates) - global; m = b1*m + (1-b1)*delta;
    v = b2*v + (1-b2)*delta^2; new = global + eta * m / (sqrt(v) + tau).
    m and v start at zero (no bias correction) and persist across rounds; use
    ``state_dict``/``load_state_dict`` to carry them to another master.
    """

    name = "fedadam"

    def __init__(self, eta: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> None:
        if not (eta > 0 and 0 <= beta1 < 1 and 0 <= beta2 < 1 and tau > 0):
            raise ValueError(f"bad FedAdam hyper-parameters eta={eta} beta1={beta1} beta2={beta2} tau={tau}")
        self.eta, self.beta1, self.beta2, self.tau = float(eta), float(beta1), float(beta2), float(tau)
        self._m: list[np.ndarray] | None = None
        self._v: list[np.ndarray] | None = None
        self._rounds = 0

    def aggregate(self, global_weights: Globals, updates: Updates, weights: AggWeights = None) -> Weights:
        g, delta = _pseudo_gradient(global_weights, updates, weights)
        if self._m is None or self._v is None:
            self._m = [np.zeros_like(d) for d in delta]
            self._v = [np.zeros_like(d) for d in delta]
        elif [x.shape for x in self._m] != [d.shape for d in delta]:
            raise ValueError("FedAdam state does not match the model's tensor shapes")
        m = [self.beta1 * mi + (1 - self.beta1) * d for mi, d in zip(self._m, delta)]
        v = [self.beta2 * vi + (1 - self.beta2) * d * d for vi, d in zip(self._v, delta)]
        new = [gi + self.eta * mi / (np.sqrt(vi) + self.tau) for gi, mi, vi in zip(g, m, v)]
        self._m, self._v = m, v
        self._rounds += 1
        return _cast_like(new, global_weights)

    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters, round count and copies of m and v (lists of float64 arrays or None)."""

        def copy(xs: list[np.ndarray] | None) -> list[np.ndarray] | None:
            return None if xs is None else [x.copy() for x in xs]

        return {
            "name": self.name,
            "eta": self.eta,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "tau": self.tau,
            "rounds": self._rounds,
            "m": copy(self._m),
            "v": copy(self._v),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()`` output; raises ValueError on inconsistent state."""
        try:
            m, v = state["m"], state["v"]
            if (m is None) != (v is None):
                raise ValueError("m and v must both be set or both be None")
            if m is not None:
                m = [np.array(x, np.float64) for x in m]
                v = [np.array(x, np.float64) for x in v]
                if [x.shape for x in m] != [x.shape for x in v]:
                    raise ValueError("m and v shapes differ")
            hp = FedAdam(
                state.get("eta", self.eta),
                state.get("beta1", self.beta1),
                state.get("beta2", self.beta2),
                state.get("tau", self.tau),
            )
            rounds = int(state.get("rounds", 0))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad FedAdam state: {exc!r}") from exc
        self.eta, self.beta1, self.beta2, self.tau = hp.eta, hp.beta1, hp.beta2, hp.tau
        self._m, self._v, self._rounds = m, v, rounds


class FedAvgM(Strategy):
    """FedAvg with server momentum (Hsu, Qi, Brown 2019, "Measuring the effects of non-identical
    data distribution for federated visual classification").

    delta = weighted_avg(updates) - global; v = beta*v + delta; new = global + server_lr * v.
    v starts at zero and persists across rounds; use ``state_dict``/``load_state_dict`` to carry
    it to another master. beta=0 and server_lr=1 is plain FedAvg.
    """

    name = "fedavgm"

    def __init__(self, beta: float = 0.9, server_lr: float = 1.0) -> None:
        if not (0 <= beta < 1 and server_lr > 0 and math.isfinite(server_lr)):
            raise ValueError(f"bad FedAvgM hyper-parameters beta={beta} server_lr={server_lr}")
        self.beta, self.server_lr = float(beta), float(server_lr)
        self._v: list[np.ndarray] | None = None
        self._rounds = 0

    def aggregate(self, global_weights: Globals, updates: Updates, weights: AggWeights = None) -> Weights:
        g, delta = _pseudo_gradient(global_weights, updates, weights)
        if self._v is None:
            self._v = [np.zeros_like(d) for d in delta]
        elif [x.shape for x in self._v] != [d.shape for d in delta]:
            raise ValueError("FedAvgM state does not match the model's tensor shapes")
        v = [self.beta * vi + d for vi, d in zip(self._v, delta)]
        new = [gi + self.server_lr * vi for gi, vi in zip(g, v)]
        self._v = v
        self._rounds += 1
        return _cast_like(new, global_weights)

    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters, round count and a copy of the momentum v (list of float64 arrays or None)."""
        return {
            "name": self.name,
            "beta": self.beta,
            "server_lr": self.server_lr,
            "rounds": self._rounds,
            "v": None if self._v is None else [x.copy() for x in self._v],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()`` output; raises ValueError on inconsistent state."""
        try:
            v = state["v"]
            if v is not None:
                v = [np.array(x, np.float64) for x in v]
            hp = FedAvgM(state.get("beta", self.beta), state.get("server_lr", self.server_lr))
            rounds = int(state.get("rounds", 0))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad FedAvgM state: {exc!r}") from exc
        self.beta, self.server_lr = hp.beta, hp.server_lr
        self._v, self._rounds = v, rounds


def staleness_weight(lag: int, alpha: float = 0.5) -> float:
    """FedBuff-style polynomial staleness discount 1 / (1 + lag)^alpha."""
    if lag < 0:
        raise ValueError(f"lag must be >= 0, got {lag}")
    return float(1.0 / (1.0 + lag) ** alpha)


class BufferedAggregator:
    """Async buffered aggregation (FedBuff, Nguyen et al. 2022).

    ``add`` buffers updates; once ``k`` are buffered, ``flush`` aggregates them with
    ``strategy``, using effective weight num_examples * staleness_weight(lag, alpha).
    (Unweighted strategies such as FedMedian/TrimmedMean ignore the discount.)
    """

    def __init__(self, strategy: Strategy, k: int, alpha: float = 0.5) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.strategy, self.k, self.alpha = strategy, int(k), float(alpha)
        self._buffer: list[ClientUpdate] = []

    def __len__(self) -> int:
        return len(self._buffer)

    @property
    def ready(self) -> bool:
        return len(self._buffer) >= self.k

    def add(self, update: ClientUpdate) -> bool:
        """Buffer ``update``; True when at least ``k`` updates are buffered."""
        self._buffer.append(update)
        return self.ready

    def flush(self, global_weights: Sequence[np.ndarray]) -> Weights:
        """Aggregate the buffered updates into new global weights; always clears the buffer."""
        updates, self._buffer = self._buffer, []
        if not updates:
            raise ValueError("no buffered updates to flush")
        eff = [u.num_examples * staleness_weight(u.lag, self.alpha) for u in updates]
        return self.strategy.aggregate(global_weights, updates, weights=eff)


STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedmedian": FedMedian,
    "trimmed-mean": TrimmedMean,
    "krum": Krum,
    "fedadam": FedAdam,
    "fedavgm": FedAvgM,
}


def make_strategy(name: str, **options: Any) -> Strategy:
    """Build a strategy by name (case-insensitive; '_' accepted for '-'); the names are `strategy_specs`'."""
    key = spec(name).name  # ValueError for an unknown name
    cls = STRATEGIES[key]
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"bad options for strategy {key!r}: {exc}") from exc
