"""Sans-IO core of a federated run: configuration, persisted run state, client selection, the
quorum-plus-deadline rule for a round, and the validated aggregation. No sockets, no TensorFlow; the
clock is passed in.

Round rule (stragglers): a round closes as soon as every selected client has answered; otherwise at
its deadline it closes with what it has if at least ``min_clients`` valid updates arrived (the others
are recorded as stragglers, "deadline"), and fails (to be retried) if fewer did. A client that dies
or refuses is recorded with its reason and does not hold the round up. :meth:`RoundTracker.decide`
says which, as a frozen dataclass declared in ``rounds_events.py`` (re-exported here):
``RoundWaiting()``, ``RoundReady(round, stragglers)`` or ``RoundFailed(round, valid, needed, stragglers)``.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..ml import strategy_specs
from ..ml.strategies import BufferedAggregator, Strategy, make_strategy, staleness_weight
from ..ml.updates import ClientUpdate, UpdateRejected, delta_norm, norm_outliers, validate_update
from .rounds_events import RoundFailed, RoundReady, RoundVerdict, RoundWaiting

OUTLIER_MIN_RATIO = 3.0  # a norm outlier must also be this many times the round's median norm
STRATEGIES = strategy_specs.NAMES
MAX_REASON = 300  # characters of why a client is left out of a round (a run state carries them to every node)
MAX_ERROR = 2000  # characters of a run's error, or of one of its warnings
MAX_WARNINGS = 8  # what a run tells the operator (the differential-privacy swamp warning)


def cut(text: object, n: int = MAX_REASON) -> str:
    """A reason cut to what a run state may carry (training/messages.py bounds it)."""
    s = str(text)
    return s if len(s) <= n else s[: n - 3] + "..."


def _check_arch(arch: object) -> None:
    """The parts of an architecture spec the model builder reads without checking their types."""
    if not isinstance(arch, dict):
        raise ValueError("arch must be a JSON object")
    shape, classes = arch.get("input_shape"), arch.get("num_classes")
    ints = (int, np.integer)
    if shape is not None and not (
        isinstance(shape, (list, tuple))
        and len(shape) == 3
        and all(isinstance(v, ints) and not isinstance(v, bool) and v >= 1 for v in shape)
    ):
        raise ValueError("arch input_shape must be [H, W, C], positive integers")
    if classes is not None and not (isinstance(classes, ints) and not isinstance(classes, bool) and classes >= 2):
        raise ValueError("arch num_classes must be an integer >= 2")


@dataclass
class RunConfig:
    model: str = "digits"
    arch: dict[str, Any] = field(default_factory=dict)
    dataset: str = "default"
    rounds: int = 3
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    strategy: str = "fedavg"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    mu: float = 0.0  # FedProx proximal term, applied by the clients
    min_clients: int = 1
    fraction: float = 1.0
    round_timeout: float = 120.0
    mode: str = "sync"  # or "async" (buffered)
    buffer_k: int = 2
    staleness_alpha: float = 0.5
    compress: bool = False
    dp_clip: float = 0.0
    dp_noise: float = 0.0
    max_norm_ratio: float = 10.0
    outlier_z: float = 3.5
    seed: int = 0
    eval_dataset: str = ""  # optional dataset the master evaluates every version on
    holdout: float = 0.2  # fraction of each client's data kept back for client-side eval (0 = train on all)
    labels: list[str] = field(default_factory=list)  # class names, output order (a model made for a dataset)
    augment: bool = False  # clients flip and shift their images at random each epoch
    secure: bool = False  # secure aggregation (training/secagg.py): the master learns only the sum of the updates

    def validate(self) -> RunConfig:
        _check_arch(self.arch)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r} (choose from {', '.join(STRATEGIES)})")
        if self.mode not in ("sync", "async"):
            raise ValueError("mode must be sync or async")
        if self.rounds < 1 or self.epochs < 1 or self.batch_size < 1 or self.min_clients < 1:
            raise ValueError("rounds, epochs, batch size and min clients must be at least 1")
        if not 0 < self.fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        if self.lr <= 0 or self.round_timeout <= 0:
            raise ValueError("learning rate and round timeout must be positive")
        if not 0 <= self.holdout < 1:
            raise ValueError("holdout must be in [0, 1)")
        if self.labels and (
            len(set(self.labels)) != len(self.labels)
            or self.arch.get("num_classes", len(self.labels)) != len(self.labels)
        ):
            raise ValueError("labels must be distinct, one per output of the model")
        if self.dp_clip < 0 or self.dp_noise < 0 or (self.dp_noise > 0 and self.dp_clip <= 0):
            raise ValueError("differential privacy needs dp_clip > 0 when dp_noise > 0")
        if self.secure:
            self._check_secure()
        if self.strategy == "fedprox" and self.mu == 0:
            self.mu = float(self.strategy_options.get("mu", 0.01))
        self.make_strategy()  # bad strategy options must fail here, not when a coordinator is launched
        return self

    def _check_secure(self) -> None:
        from .secagg import MIN_CLIENTS
        from .secagg import STRATEGIES as SUMS

        if self.strategy not in SUMS:
            raise ValueError(
                f"secure aggregation gives the master only the sum of the updates, and {self.strategy} needs"
                f" each client's own update: choose {', '.join(SUMS)}"
            )
        if self.mode != "sync":
            raise ValueError("secure aggregation needs sync rounds (every round masks its own set of clients)")
        if self.compress:
            raise ValueError("secure aggregation sends masked fixed-point words: --compress does not apply")
        self.min_clients = max(self.min_clients, MIN_CLIENTS)  # the sum of two updates tells each the other's

    def make_strategy(self) -> Strategy:
        opts = dict(self.strategy_options)
        if self.strategy == "fedprox":
            opts.setdefault("mu", self.mu)
        return make_strategy(self.strategy, **opts)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known).validate()


@dataclass
class RunState:
    run_id: str
    config: dict[str, Any]
    status: str = "running"  # running | stopped | done | failed
    round: int = 0  # last committed round
    version: str = ""  # global model version after `round`
    term: int = 0  # term of the master that committed the last round
    history: list[dict[str, Any]] = field(default_factory=list)
    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> {samples, accepted, rejected, rounds}
    strategy_state: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    error: str = ""
    warnings: list[str] = field(default_factory=list)  # told the operator (`run show`, `train`)

    def warn(self, text: str) -> bool:
        """Keep a warning for the operator once; True if it is new."""
        if text in self.warnings or len(self.warnings) >= MAX_WARNINGS:
            return False
        self.warnings.append(cut(text, MAX_ERROR))
        return True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def credit(self, node: str, accepted: bool, samples: int = 0) -> None:
        entry = self.ledger.setdefault(node, {"samples": 0, "accepted": 0, "rejected": 0, "rounds": 0})
        entry["rounds"] += 1
        if accepted:
            entry["accepted"] += 1
            entry["samples"] += int(samples)
        else:
            entry["rejected"] += 1


def select_clients(candidates: list[str], fraction: float, min_clients: int, rng: random.Random) -> list[str]:
    pool = sorted(candidates)
    want = max(min_clients, int(np.ceil(round(fraction * len(pool), 9))))  # 0.07 * 100 is 7.000000000000001
    if want >= len(pool):
        return pool
    return sorted(rng.sample(pool, want))


class RoundTracker:
    """Who was asked, who answered, and when the round may close."""

    def __init__(self, round_no: int, selected: list[str], now: float, timeout: float, min_clients: int) -> None:
        self.round = round_no
        self.selected = list(selected)
        self.started = now
        self.deadline = now + timeout
        self.min_clients = min_clients
        self.updates: dict[str, ClientUpdate] = {}
        self.dropped: dict[str, str] = {}  # node -> reason (died, refused, rejected update, ...)

    def add(self, update: ClientUpdate) -> None:
        if update.node_id in self.selected and update.node_id not in self.dropped:
            self.updates[update.node_id] = update

    def drop(self, node: str, reason: str) -> None:
        if node in self.selected and node not in self.updates:
            self.dropped.setdefault(node, cut(reason))

    def answered(self) -> int:
        return len(self.updates) + len(self.dropped)

    def decide(self, now: float) -> RoundVerdict:
        """``RoundWaiting()``, ``RoundReady(...)`` (aggregate now) or ``RoundFailed(...)`` (retry)."""
        everyone = self.answered() >= len(self.selected)
        if not (everyone or now >= self.deadline):
            return RoundWaiting()
        if len(self.updates) >= self.min_clients:
            return RoundReady(self.round, self.stragglers())
        return RoundFailed(self.round, len(self.updates), self.min_clients, self.stragglers())

    def stragglers(self) -> dict[str, str]:
        late = {n: "deadline" for n in self.selected if n not in self.updates and n not in self.dropped}
        return {**self.dropped, **late}


def screen_updates(
    updates: list[ClientUpdate], reference: list[np.ndarray], max_norm_ratio: float, outlier_z: float
) -> tuple[list[ClientUpdate], dict[str, str]]:
    """Validate every update (shapes, NaN/Inf, norm) and drop norm outliers. Returns (kept, rejected)."""
    kept, rejected = [], {}
    for u in updates:
        try:
            validate_update(u, reference, max_norm_ratio=max_norm_ratio)
            kept.append(u)
        except UpdateRejected as exc:
            rejected[u.node_id] = cut(exc.reason)
    if len(kept) >= 3:
        # Honest clients on non-IID data differ a lot in update size, and a MAD z-score over a handful
        # of norms is jumpy: flag only updates that are robust outliers AND several times the median.
        norms = [delta_norm(u.weights, reference) for u in kept]
        flags = norm_outliers(norms, z=outlier_z)
        median = float(np.median(norms))
        for u, bad, n in zip(list(kept), flags, norms):
            if bad and n > OUTLIER_MIN_RATIO * median:
                rejected[u.node_id] = f"norm outlier (delta norm {n:.3g} vs median {float(np.median(norms)):.3g})"
                kept.remove(u)
    return kept, rejected


def aggregate(
    strategy: Strategy,
    reference: list[np.ndarray],
    updates: list[ClientUpdate],
    cfg: RunConfig,
    version_index: dict[str, int] | None = None,
    current_index: int = 0,
) -> tuple[list[np.ndarray] | None, list[ClientUpdate], dict[str, str]]:
    """Screen, then aggregate (sync: the strategy; async: staleness-discounted buffer flush)."""
    kept, rejected = screen_updates(updates, reference, cfg.max_norm_ratio, cfg.outlier_z)
    if not kept:
        return None, kept, rejected
    if cfg.mode == "async":
        buf = BufferedAggregator(strategy, k=len(kept), alpha=cfg.staleness_alpha)
        for u in kept:
            u.lag = max(0, current_index - (version_index or {}).get(u.base_version, current_index))
            buf.add(u)
        return buf.flush(reference), kept, rejected
    return strategy.aggregate(reference, kept), kept, rejected


__all__ = [
    "RunConfig",
    "RunState",
    "RoundTracker",
    "select_clients",
    "screen_updates",
    "aggregate",
    "staleness_weight",
    "RoundVerdict",
    "RoundWaiting",
    "RoundReady",
    "RoundFailed",
]
