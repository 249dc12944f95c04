"""What a client's local training needs from a run's configuration (the run config itself belongs to
`training/`, which `ml` does not import). Built from the config dict the master sends with each round."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

_TYPES: dict[str, type | tuple[type, ...]] = {
    "dict": dict,
    "list": list,
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
}


@dataclass(frozen=True)
class ClientSpec:
    arch: dict[str, Any]
    dataset: str
    seed: int
    holdout: float
    epochs: int
    batch_size: int
    lr: float
    mu: float
    dp_clip: float
    dp_noise: float
    compress: bool
    labels: list[str] = field(default_factory=list)  # the run's class names ([]: the dataset's label indices)
    augment: bool = False

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ClientSpec:
        """The fields of a run config (``RunConfig.__dict__`` as sent on the wire); checked, not trusted."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            kind = str(f.type).split("[")[0]
            if f.name not in cfg:
                if f.default is not MISSING or f.default_factory is not MISSING:
                    continue  # a field newer than the run (its default applies)
                raise ValueError(f"run config lacks {f.name!r}")
            value: Any = cfg[f.name]
            if not isinstance(value, _TYPES[kind]) or (kind in ("int", "float") and isinstance(value, bool)):
                raise ValueError(f"run config field {f.name!r} must be {kind}, got {type(value).__name__}")
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise ValueError(f"run config field {f.name!r} must be a list of names")
            values[f.name] = float(cfg[f.name]) if kind == "float" else cfg[f.name]
        return cls(**values)
