"""Local training for federated clients: fit and evaluate with a process-wide model cache.

TensorFlow/Keras are imported lazily. Building and compiling a Keras model (and tracing its
train function) costs about a second, so one model per architecture is built once and reused:
each call only ``set_weights``. The protocol's "SGD re-created each round" is honoured by
resetting the cached optimizer's state (iteration count and any slots) and learning rate before
every fit, which is equivalent and keeps the traced train function. FedProx (Li et al. 2020)
adds the proximal gradient ``mu * (w - w_global)`` to every step; with ``mu == 0`` the
update is bit-for-bit that of plain ``model.fit``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OPTIMIZERS = ("sgd", "adam")
# Batches per traced call: same batches, order and result as 1, less Python overhead per step.
_STEPS_PER_EXECUTION = 16

_cache_lock = threading.Lock()
_cache: dict[str, _Entry] = {}
_trainer_cls: Any = None


@dataclass
class _Entry:
    model: Any  # the plain Keras model (get/set_weights in protocol order)
    trainer: Any  # wrapper with the FedProx train step, compiled
    optimizer: str
    lock: threading.Lock = field(default_factory=threading.Lock)


def _key(arch: dict) -> str:
    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


def _make_trainer_cls() -> Any:
    global _trainer_cls
    if _trainer_cls is not None:
        return _trainer_cls
    import keras
    import tensorflow as tf

    class ProxTrainer(keras.Model):
        """Wraps ``inner``; train step = Keras' default plus the FedProx proximal gradient."""

        def __init__(self, inner: Any) -> None:
            super().__init__(name=f"prox_{inner.name}")
            self.inner = inner
            self.mu = self.add_weight(shape=(), initializer="zeros", trainable=False, name="prox_mu")
            self.anchor = [
                self.add_weight(shape=tuple(w.shape), initializer="zeros", trainable=False, name=f"anchor_{i}")
                for i, w in enumerate(inner.trainable_weights)
            ]

        def call(self, x: Any, training: bool = False) -> Any:
            return self.inner(x, training=training)

        def train_step(self, data: Any) -> Any:
            x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sw, training=True)
            self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
            tw = self.inner.trainable_weights
            grads = tape.gradient(loss, tw)
            mu = tf.convert_to_tensor(self.mu)
            grads = [
                g + mu * (tf.convert_to_tensor(w) - tf.convert_to_tensor(a)) for g, w, a in zip(grads, tw, self.anchor)
            ]
            self.optimizer.apply_gradients(zip(grads, tw))
            return self.compute_metrics(x, y, y_pred, sample_weight=sw)

    _trainer_cls = ProxTrainer
    return ProxTrainer


def _new_optimizer(name: str, lr: float) -> Any:
    import keras

    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    raise ValueError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")


def _entry(arch: dict, optimizer: str | None = None, slot: str = "") -> _Entry:
    """The cached model of ``arch``; a ``slot`` ("eval") has a model of its own, used by another thread."""
    from collab_tui.ml.architectures import build_from_spec

    key = _key(arch) + (f"#{slot}" if slot else "")
    with _cache_lock:
        e = _cache.get(key)
        if e is not None and (optimizer is None or e.optimizer == optimizer):
            return e
        model = e.model if e is not None else build_from_spec(arch)
        trainer = _make_trainer_cls()(model)
        opt_name = optimizer or "sgd"
        trainer.compile(
            optimizer=_new_optimizer(opt_name, 0.01),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=False,
            steps_per_execution=_STEPS_PER_EXECUTION,
        )
        e = _Entry(model=model, trainer=trainer, optimizer=opt_name, lock=e.lock if e else threading.Lock())
        _cache[key] = e
        return e


def get_model(arch: dict) -> Any:
    """The cached Keras model for ``arch`` (built once per process; callers set_weights)."""
    return _entry(arch).model


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _reset_optimizer(opt: Any, lr: float) -> None:
    """Make a used optimizer equivalent to a freshly created one with learning rate ``lr``."""
    lr_var = getattr(opt, "_learning_rate", None)
    for v in opt.variables:
        if v is not lr_var:
            v.assign(np.zeros(tuple(v.shape), dtype=v.dtype))
    opt.learning_rate = float(lr)


def _check_xy(x: np.ndarray, y: np.ndarray) -> None:
    if len(x) == 0:
        raise ValueError("no examples")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} inputs but {len(y)} labels")


def fit(
    arch: dict,
    weights: Sequence[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 0.05,
    seed: int = 0,
    mu: float = 0.0,
    optimizer: str = "sgd",
) -> tuple[list[np.ndarray], int, dict[str, float]]:
    """Train from ``weights`` on (x, y); returns (new_weights, num_examples, metrics).

    Seeding per protocol: ``keras.utils.set_random_seed(seed)`` right before the fit (this also
    seeds Python's and numpy's global RNGs). Data is shuffled each epoch. metrics: loss and
    accuracy of the last epoch (running averages over its batches), fit_seconds.
    """
    import keras

    _check_xy(x, y)
    if not mu >= 0:
        raise ValueError(f"mu must be >= 0, got {mu}")
    if int(epochs) < 1 or int(batch_size) < 1 or not lr > 0:
        raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
    e = _entry(arch, optimizer)
    with e.lock:
        e.model.set_weights([np.asarray(w, np.float32) for w in weights])
        for a, w in zip(e.trainer.anchor, e.model.trainable_weights):
            a.assign(w.value)
        e.trainer.mu.assign(float(mu))
        _reset_optimizer(e.trainer.optimizer, lr)
        keras.utils.set_random_seed(int(seed))
        t0 = time.perf_counter()
        hist = e.trainer.fit(
            np.asarray(x, np.float32),
            np.asarray(y),
            epochs=int(epochs),
            batch_size=int(batch_size),
            shuffle=True,
            verbose=0,
        )
        secs = time.perf_counter() - t0
        new_weights = [np.array(w) for w in e.model.get_weights()]
    h = hist.history
    metrics = {
        "loss": float(h["loss"][-1]),
        "accuracy": float(h.get("accuracy", [float("nan")])[-1]),
        "fit_seconds": round(secs, 4),
        "epochs": int(epochs),
    }
    return new_weights, int(len(x)), metrics


def evaluate(
    arch: dict, weights: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray, batch_size: int = 256, slot: str = ""
) -> dict[str, float]:
    """{"loss", "accuracy", "n"} of ``weights`` on (x, y) (sparse categorical cross-entropy); ``slot``
    picks a model of its own (an evaluation thread running beside a fit)."""
    _check_xy(x, y)
    e = _entry(arch, slot=slot)
    with e.lock:
        e.model.set_weights([np.asarray(w, np.float32) for w in weights])
        res = e.trainer.evaluate(
            np.asarray(x, np.float32), np.asarray(y), batch_size=int(batch_size), verbose=0, return_dict=True
        )
    return {"loss": float(res["loss"]), "accuracy": float(res["accuracy"]), "n": int(len(x))}
