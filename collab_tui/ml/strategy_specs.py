"""The one registry of aggregation strategies: names, what each does, its options and their defaults.

The CLI (`collab train --strategy`), the TUI's training form and the run configuration all read it;
`ml/strategies.py` implements each name (and a test checks that the implementations' defaults are the
ones declared here). Light on purpose: no numpy, so frontends can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StrategySpec:
    name: str
    summary: str
    options: dict[str, float | int] = field(default_factory=dict)  # option -> default


SPECS: tuple[StrategySpec, ...] = (
    StrategySpec("fedavg", "weighted mean of the client weights (McMahan et al. 2017)"),
    StrategySpec("fedprox", "FedAvg with a proximal term on the clients (Li et al. 2020)", {"mu": 0.01}),
    StrategySpec("fedmedian", "coordinate-wise median (robust to outliers)"),
    StrategySpec("trimmed-mean", "coordinate-wise mean without the highest and lowest beta share", {"beta": 0.1}),
    StrategySpec("krum", "the update(s) closest to their neighbours (Byzantine-robust)", {"f": 1, "m": 1}),
    StrategySpec(
        "fedadam",
        "server-side Adam on the mean update (Reddi et al. 2021)",
        {"eta": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
    ),
    StrategySpec("fedavgm", "FedAvg with server momentum (Hsu et al. 2019)", {"beta": 0.9, "server_lr": 1.0}),
)
NAMES: tuple[str, ...] = tuple(s.name for s in SPECS)
DEFAULT = "fedavg"


def normalize(name: str) -> str:
    """Case-insensitive, '_' accepted for '-'."""
    return str(name).strip().lower().replace("_", "-")


def spec(name: str) -> StrategySpec:
    key = normalize(name)
    for s in SPECS:
        if s.name == key:
            return s
    raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(NAMES)}")
