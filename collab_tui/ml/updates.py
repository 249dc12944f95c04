"""Client updates for federated learning: validation, clipping, outliers, compression, DP.

Sans-IO and pure numpy (no TensorFlow). A model's weights are a ``list[np.ndarray]`` in the
order of ``model.get_weights()``; the "reference" is the global weights the client trained from.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Weights = list[np.ndarray]

# 0.6745 = Phi^-1(0.75): makes the MAD a consistent estimator of the std for normal data.
_MAD_SCALE = 0.6745


@dataclass
class ClientUpdate:
    """One client's result for a round: its trained weights plus bookkeeping."""

    node_id: str
    weights: Weights
    num_examples: int
    base_version: str  # the global version the client trained from
    metrics: dict[str, Any] = field(default_factory=dict)
    lag: int = 0  # how many global versions behind (async mode)


class UpdateRejected(ValueError):
    """An update failed validation; ``reason`` is a short human-readable explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _global_norm(tensors: Sequence[np.ndarray]) -> float:
    """L2 norm over all tensors, computed in float64."""
    total = 0.0
    for t in tensors:
        a = np.asarray(t, dtype=np.float64)
        total += float(np.dot(a.ravel(), a.ravel()))
    return math.sqrt(total)


def _check_same_structure(weights: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> None:
    if len(weights) != len(reference):
        raise ValueError(f"expected {len(reference)} tensors, got {len(weights)}")
    for i, (w, r) in enumerate(zip(weights, reference)):
        if np.shape(w) != np.shape(r):
            raise ValueError(f"tensor {i}: shape {np.shape(w)} != expected {np.shape(r)}")


def delta_norm(weights: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """L2 norm of ``weights - reference`` over all tensors."""
    _check_same_structure(weights, reference)
    return _global_norm([np.asarray(w, np.float64) - np.asarray(r, np.float64) for w, r in zip(weights, reference)])


def validate_update(update: ClientUpdate, reference: Sequence[np.ndarray], max_norm_ratio: float = 10.0) -> None:
    """Raise UpdateRejected unless ``update`` is structurally sound and of plausible size."""
    if not isinstance(update.num_examples, (int, np.integer)) or isinstance(update.num_examples, bool):
        raise UpdateRejected(f"num_examples must be an int, got {type(update.num_examples).__name__}")
    if update.num_examples <= 0:
        raise UpdateRejected(f"num_examples must be > 0, got {update.num_examples}")
    weights = update.weights
    if not isinstance(weights, (list, tuple)):
        raise UpdateRejected(f"weights must be a list of arrays, got {type(weights).__name__}")
    if len(weights) != len(reference):
        raise UpdateRejected(f"wrong number of tensors: expected {len(reference)}, got {len(weights)}")
    for i, (w, r) in enumerate(zip(weights, reference)):
        if not isinstance(w, np.ndarray):
            raise UpdateRejected(f"tensor {i}: not a numpy array ({type(w).__name__})")
        if w.shape != np.shape(r):
            raise UpdateRejected(f"tensor {i}: wrong shape {w.shape}, expected {np.shape(r)}")
        if not np.issubdtype(w.dtype, np.floating):
            raise UpdateRejected(f"tensor {i}: non-float dtype {w.dtype}")
        if not np.all(np.isfinite(w)):
            kind = "NaN" if np.isnan(w).any() else "Inf"
            raise UpdateRejected(f"tensor {i}: contains {kind}")
    dnorm = delta_norm(weights, reference)
    limit = max_norm_ratio * (_global_norm(reference) + 1e-12)
    if not dnorm <= limit:
        raise UpdateRejected(f"delta norm too large: {dnorm:.4g} > {limit:.4g} ({max_norm_ratio}x reference norm)")


def clip_delta(
    update_weights: Sequence[np.ndarray], reference: Sequence[np.ndarray], max_norm: float
) -> tuple[Weights, bool]:
    """Scale ``update - reference`` down to L2 norm ``max_norm``; return (weights, clipped)."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    _check_same_structure(update_weights, reference)
    deltas = [np.asarray(w, np.float64) - np.asarray(r, np.float64) for w, r in zip(update_weights, reference)]
    norm = _global_norm(deltas)
    if norm <= max_norm:
        return [np.array(w, copy=True) for w in update_weights], False
    scale = max_norm / norm
    out = [
        (np.asarray(r, np.float64) + d * scale).astype(np.asarray(w).dtype)
        for w, r, d in zip(update_weights, reference, deltas)
    ]
    return out, True


def norm_outliers(deltas_norms: Sequence[float], z: float = 3.5, *, two_sided: bool = False) -> list[bool]:
    """Flag outliers among a round's delta norms with the robust (MAD) z-score.

    robust_z = 0.6745 * (x - median) / MAD (Iglewicz & Hoaglin); flagged when above ``z``.
    Only unusually *large* norms are flagged unless ``two_sided`` (a tiny delta has little
    influence on the aggregate). With fewer than 3 values nothing is flagged (no majority).
    If MAD is 0 (more than half the norms are identical), any value that differs from the
    median by more than a relative 1e-9 is flagged. Non-finite norms are always flagged.
    """
    x = np.asarray(list(deltas_norms), dtype=np.float64)
    n = x.size
    finite = np.isfinite(x)
    flags = ~finite
    if finite.sum() < 3:
        return [bool(f) for f in flags]
    xf = x[finite]
    med = float(np.median(xf))
    mad = float(np.median(np.abs(xf - med)))
    diff = np.where(finite, x - med, 0.0)
    if two_sided:
        diff = np.abs(diff)
    if mad > 0:
        score = _MAD_SCALE * diff / mad
        flags = flags | (finite & (score > z))
    else:
        tol = 1e-9 * max(abs(med), 1.0)
        flags = flags | (finite & (diff > tol))
    assert flags.size == n
    return [bool(f) for f in flags]


def weight_stats(weights: Sequence[np.ndarray]) -> dict[str, float | int]:
    """Summary statistics over all parameters (floats) plus ``num_params``."""
    flat = [np.asarray(w, np.float64).ravel() for w in weights]
    allp = np.concatenate(flat) if flat else np.zeros(0)
    if allp.size == 0:
        return {"mean": 0.0, "median": 0.0, "std": 0.0, "min": 0.0, "max": 0.0, "num_params": 0}
    return {
        "mean": float(allp.mean()),
        "median": float(np.median(allp)),
        "std": float(allp.std()),
        "min": float(allp.min()),
        "max": float(allp.max()),
        "num_params": int(allp.size),
    }


def compress_delta(weights: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Delta ``weights - reference`` as float16 (half the bytes of float32 weights).

    Raises ValueError if a delta does not fit float16 (|x| > 65504).
    """
    _check_same_structure(weights, reference)
    out = []
    for i, (w, r) in enumerate(zip(weights, reference)):
        d = np.asarray(w, np.float32) - np.asarray(r, np.float32)
        if not np.all(np.isfinite(d)):
            raise ValueError(f"tensor {i}: delta is not finite")
        if d.size and float(np.max(np.abs(d))) > float(np.finfo(np.float16).max):
            raise ValueError(f"tensor {i}: delta overflows float16")
        out.append(d.astype(np.float16))
    return out


def decompress_delta(delta16: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Inverse of compress_delta: ``reference + delta`` as float32."""
    _check_same_structure(delta16, reference)
    return [np.asarray(r, np.float32) + np.asarray(d).astype(np.float32) for d, r in zip(delta16, reference)]


def to_bytes(weights: Sequence[np.ndarray]) -> bytes:
    """Serialize weights with ``np.savez`` (keys arr_0000, arr_0001, ... in order)."""
    buf = io.BytesIO()
    np.savez(buf, **{f"arr_{i:04d}": np.asarray(w) for i, w in enumerate(weights)})
    return buf.getvalue()


def from_bytes(b: bytes) -> Weights:
    """Inverse of to_bytes; raises ValueError on anything that is not such an archive."""
    if not isinstance(b, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected bytes, got {type(b).__name__}")
    try:
        loaded = np.load(io.BytesIO(bytes(b)), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a weights archive: {exc}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError("not a weights archive: expected an .npz file")
    with loaded:
        keys = list(loaded.files)
        indexed: dict[int, str] = {}
        for k in keys:
            if not (k.startswith("arr_") and k[4:].isdigit()):
                raise ValueError(f"not a weights archive: unexpected key {k!r}")
            indexed[int(k[4:])] = k
        if sorted(indexed) != list(range(len(keys))):
            raise ValueError("not a weights archive: keys are not arr_0000..arr_N contiguous")
        try:
            return [np.array(loaded[indexed[i]]) for i in range(len(keys))]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"corrupt weights archive: {exc}") from exc


def dp_privatize(
    weights: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> Weights:
    """Client-side DP (Gaussian mechanism): clip the delta to ``clip_norm`` then add
    N(0, (noise_multiplier*clip_norm)^2) noise to every coordinate of the delta."""
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    clipped, _ = clip_delta(weights, reference, clip_norm)
    std = noise_multiplier * clip_norm
    out = []
    for w, r in zip(clipped, reference):
        d = np.asarray(w, np.float64) - np.asarray(r, np.float64)
        if std > 0:
            d = d + rng.normal(0.0, std, size=d.shape)
        out.append((np.asarray(r, np.float64) + d).astype(np.asarray(w).dtype))
    return out
