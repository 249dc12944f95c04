"""What a client's local training needs from a run's configuration (the run config itself belongs to
`training/`, which `ml` does not import). Built from the config dict the master sends with each round."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ClientSpec:
    arch: dict
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
    def from_config(cls, cfg: dict) -> "ClientSpec":
        """The fields of a run config (``RunConfig.__dict__`` as sent on the wire); checked, not trusted."""
        values = {}
        for f in fields(cls):
            if f.name not in cfg:
                raise ValueError(f"run config lacks {f.name!r}")
            want = {"dict": dict, "str": str, "int": int, "float": (int, float), "bool": bool}[f.type]
            value = cfg[f.name]
            if not isinstance(value, want) or (f.type in ("int", "float") and isinstance(value, bool)):
                raise ValueError(f"run config field {f.name!r} must be {f.type}, got {type(value).__name__}")
            values[f.name] = float(value) if f.type == "float" else value
        return cls(**values)
