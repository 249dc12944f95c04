"""Image classification helpers and ensembles.

TensorFlow/Keras is imported lazily inside functions only; `ensemble_combine`
and `preprocess` are pure numpy/OpenCV.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from collab_tui.ml.cvload import cv2  # never `import cv2` (see cvload)

__all__ = [
    "DIGITS_LABELS",
    "DIGITS_INPUT_SHAPE",
    "default_cache_dir",
    "digits_split",
    "builtin_digits_model",
    "preprocess",
    "predict_proba",
    "classify",
    "ensemble_combine",
    "ModelMismatch",
    "is_colour",
    "check_fits",
]

DIGITS_LABELS = [str(i) for i in range(10)]
DIGITS_INPUT_SHAPE = (8, 8, 1)
_WEIGHTS_NAME = "builtin_digits.weights.h5"
_SEED = 0

_model_cache: dict[str, Any] = {}
_model_lock = threading.Lock()


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/collab` or `~/.cache/collab`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "collab"


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn 8x8 digits as (x_train, y_train, x_test, y_test); x in [0, 1], shape (n, 8, 8, 1).

    The split is fixed (stratified, 25% held out, seed 0); the built-in model never sees x_test.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype("float32") / 16.0)[..., None]
    y = d.target.astype("int64")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=_SEED, stratify=y)
    return x_tr, y_tr, x_te, y_te


def _build_digits_model() -> Any:
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=DIGITS_INPUT_SHAPE),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="builtin_digits",
    )


def builtin_digits_model(cache_dir: str | Path | None = None) -> Any:
    """A small Keras CNN for 8x8 digits (labels DIGITS_LABELS, input DIGITS_INPUT_SHAPE).

    Trained once per process (fixed seed, a few seconds) and cached in memory; the
    weights are saved to `<cache_dir>/builtin_digits.weights.h5` so later processes
    just load them. A stale or unreadable weights file is replaced.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / _WEIGHTS_NAME
    key = str(path.resolve())
    with _model_lock:
        model = _model_cache.get(key)
        if model is not None:
            return model
        model = _build_digits_model()
        loaded = False
        if path.is_file():
            try:
                model.load_weights(str(path))
                loaded = True
            except Exception:  # stale/corrupt cache: retrain below
                model = _build_digits_model()
        if not loaded:
            _train_digits(model)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"builtin_digits.{os.getpid()}.{threading.get_ident()}.tmp.weights.h5"
            try:
                model.save_weights(str(tmp))
                os.replace(tmp, path)
            except OSError:
                tmp.unlink(missing_ok=True)  # read-only cache: keep the in-memory model
        _model_cache[key] = model
        return model


def _train_digits(model: Any) -> None:
    import keras

    keras.utils.set_random_seed(_SEED)
    x_tr, y_tr, _, _ = digits_split()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_tr, y_tr, epochs=12, batch_size=64, shuffle=True, verbose=0)


def preprocess(img_bgr: np.ndarray, input_shape: Sequence[int], invert: bool = False) -> np.ndarray:
    """Convert a BGR/gray uint8 image to a float32 batch (1, H, W, C) in [0, 1].

    C == 1: grayscale; C == 3: RGB. `invert` maps dark-on-light to light-on-dark
    (the sklearn digits are light strokes on a dark background).
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C), got {tuple(input_shape)}")
    h, w, c = (int(v) for v in input_shape)
    if c not in (1, 3):
        raise ValueError(f"input channels must be 1 or 3, got {c}")
    img = np.asarray(img_bgr)
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if c == 1:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    else:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    src_h, src_w = img.shape[:2]
    interp = cv2.INTER_AREA if (src_h > h or src_w > w) else cv2.INTER_LINEAR
    img = cv2.resize(img, (w, h), interpolation=interp)
    x = img.astype("float32") / (65535.0 if img.dtype == np.uint16 else 255.0)
    if invert:
        x = 1.0 - x
    return x.reshape(1, h, w, c)


class ModelMismatch(ValueError):
    """The model cannot take this image (a grayscale model, e.g. the 8x8 digits demo, and a colour photo)."""


def is_colour(img_bgr: np.ndarray, tolerance: float = 6.0) -> bool:
    """Whether an image holds colour: its channels differ by more than `tolerance` (of 255) on average."""
    img = np.asarray(img_bgr)
    if img.ndim == 2 or img.shape[2] == 1:
        return False
    small = cv2.resize(img[:, :, :3], (64, 64), interpolation=cv2.INTER_AREA).astype(np.int16)
    scale = 255.0 / 65535.0 if img.dtype == np.uint16 else 1.0
    diff = np.abs(small[:, :, 0] - small[:, :, 1]) + np.abs(small[:, :, 1] - small[:, :, 2])
    return float(diff.mean()) * scale > tolerance


def check_fits(img_bgr: np.ndarray, input_shape: Sequence[int], model: str) -> None:
    """ModelMismatch when a grayscale model is given a colour photo: its label would mean nothing."""
    h, w, c = (int(v) for v in input_shape)
    if c == 1 and is_colour(img_bgr):
        ih, iw = np.asarray(img_bgr).shape[:2]
        raise ModelMismatch(
            f"model {model} takes {h}x{w} grayscale images; this is a {iw}x{ih} colour photo, and its label would"
            " mean nothing: classify it with a model trained on such photos (collab data add NAME --folder DIR;"
            " collab train --model NAME --dataset NAME; collab submit --task classify --model NAME)"
        )


def _as_probs(out: np.ndarray) -> np.ndarray:
    """Return a probability vector; logits (negative or not summing to 1) get a softmax."""
    v = np.asarray(out, dtype="float64").reshape(-1)
    if v.min() < 0 or not np.isclose(v.sum(), 1.0, atol=1e-3):
        e = np.exp(v - v.max())
        v = e / e.sum()
    return v


def predict_proba(img_bgr: np.ndarray, model: Any, input_shape: Sequence[int], invert: bool = False) -> np.ndarray:
    """Class probabilities (1-D float array) of `model` for one BGR image."""
    x = preprocess(img_bgr, input_shape, invert=invert)
    out = model(x, training=False)
    return _as_probs(np.asarray(out))


def classify(
    img_bgr: np.ndarray, model: Any, labels: list[str], input_shape: Sequence[int], top: int = 3, invert: bool = False
) -> list[dict]:
    """Top-`top` predictions as [{"label": str, "score": float}], best first."""
    p = predict_proba(img_bgr, model, input_shape, invert=invert)
    if len(labels) != len(p):
        raise ValueError(f"model has {len(p)} outputs but {len(labels)} labels were given")
    order = np.argsort(-p, kind="stable")[:top]
    return [{"label": labels[i], "score": round(float(p[i]), 6)} for i in order]


def ensemble_combine(prob_lists: list[np.ndarray], method: str = "mean", labels: list[str] | None = None) -> dict:
    """Combine per-model probability vectors for one item.

    method "mean": average the probabilities; winner = argmax; score = mean prob.
    method "vote": each model votes for its argmax; winner = most votes, ties broken
    by the higher mean probability; score = vote share.
    Returns {"label", "index", "score", "method", "mean": [...], "votes": [...], "n_models"}.
    """
    if method not in ("mean", "vote"):
        raise ValueError(f"unknown ensemble method {method!r} (expected 'mean' or 'vote')")
    if not prob_lists:
        raise ValueError("ensemble_combine needs at least one probability vector")
    try:
        probs = np.stack([np.asarray(p, dtype="float64").reshape(-1) for p in prob_lists])
    except ValueError as exc:
        raise ValueError(f"probability vectors differ in length: {exc}") from exc
    n_models, n_classes = probs.shape
    if labels is None:
        labels = [str(i) for i in range(n_classes)]
    if len(labels) != n_classes:
        raise ValueError(f"{len(labels)} labels for {n_classes} classes")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probability vectors contain NaN or inf")
    mean = probs.mean(axis=0)
    votes = np.bincount(probs.argmax(axis=1), minlength=n_classes)
    if method == "mean":
        idx = int(np.argmax(mean))
        score = float(mean[idx])
    else:
        best = votes.max()
        tied = np.flatnonzero(votes == best)
        idx = int(tied[np.argmax(mean[tied])])
        score = float(votes[idx]) / n_models
    return {
        "label": labels[idx],
        "index": idx,
        "score": round(score, 6),
        "method": method,
        "mean": [round(float(v), 6) for v in mean],
        "votes": [int(v) for v in votes],
        "n_models": n_models,
    }
