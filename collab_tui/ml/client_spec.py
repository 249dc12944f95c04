"""What a client's local training needs from a run's configuration (the run config itself belongs to
`training/`, which `ml` does not import). Built from the config dict the master sends with each round."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

_TYPES: dict[str, type | tuple[type, ...]] = {"dict": dict, "str": str, "int": int, "float": (int, float), "bool": bool}


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

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ClientSpec:
        """The fields of a run config (``RunConfig.__dict__`` as sent on the wire); checked, not trusted."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            kind = str(f.type).split("[")[0]
            if f.name not in cfg:
                raise ValueError(f"run config lacks {f.name!r}")
            value: Any = cfg[f.name]
            if not isinstance(value, _TYPES[kind]) or (kind in ("int", "float") and isinstance(value, bool)):
                raise ValueError(f"run config field {f.name!r} must be {kind}, got {type(value).__name__}")
            values[f.name] = float(cfg[f.name]) if kind == "float" else cfg[f.name]
        return cls(**values)
