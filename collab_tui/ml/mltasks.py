"""Functions that run inside the node's ML process (see `mlproc.py`). Arguments and results are
plain Python values and bytes (weights as `updates.to_bytes`), so nothing heavy is pickled."""

from __future__ import annotations

import os
import time

_state: dict = {"home": None, "data": {}}


def init(home: str, nice: int = 5, threads: int = 0) -> None:
    """Child set-up: die with the node (PR_SET_PDEATHSIG), yield the CPU to the control plane, size
    TensorFlow's thread pools (read when TensorFlow starts, so before it is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if threads > 0:
        os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(int(threads))
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - non-Linux
        pass
    try:
        os.nice(nice)
    except OSError:  # pragma: no cover
        pass
    _state["home"] = home


def _datasets():
    from pathlib import Path

    from .datasets import DatasetRegistry

    return DatasetRegistry(Path(_state["home"]))


def _local_data(name: str, seed: int, holdout: float = 0.2, labels: tuple[str, ...] = ()) -> tuple:
    """(x, y, x_holdout, y_holdout) of a local dataset; with `labels` (a run's class names) y indexes them
    and the examples of other classes are left out."""
    key = (name, seed, holdout, labels)
    if key not in _state["data"]:
        from .datasets import relabel, split_holdout

        x, y, own = _datasets().load(name)
        if labels:
            x, y = relabel(x, y, own, list(labels))
        _state["data"][key] = split_holdout(x, y, frac=holdout, seed=seed)
    return _state["data"][key]


def forget_data() -> bool:
    _state["data"].clear()
    return True


def warm_up() -> float:
    """Import TensorFlow ahead of the first real call; returns the seconds it took."""
    t0 = time.perf_counter()
    import keras  # noqa: F401

    return time.perf_counter() - t0


def train(cfg: dict, r: int, weights_bytes: bytes, version: str, client_index: int) -> tuple[dict, bytes]:
    import numpy as np

    from .client_spec import ClientSpec
    from .local_training import evaluate, fit
    from .updates import compress_delta, dp_privatize, from_bytes, to_bytes

    c = ClientSpec.from_config(cfg)
    weights = from_bytes(weights_bytes)
    x, y, x_ho, y_ho = _local_data(c.dataset, c.seed, c.holdout, tuple(c.labels))
    if len(x) == 0:
        raise ValueError(f"dataset {c.dataset!r} is empty on this node (or holds none of the run's classes)")
    t0 = time.perf_counter()
    prev_eval = evaluate(c.arch, weights, x_ho, y_ho) if len(x_ho) else None
    seed = c.seed + 1000 * r + client_index
    if c.augment:
        from .datasets import augment_images

        x = augment_images(x, np.random.default_rng(seed), jitter=0.2)
    new, n, metrics = fit(c.arch, weights, x, y, epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, seed=seed, mu=c.mu)
    if c.dp_noise > 0 or c.dp_clip > 0:
        new = dp_privatize(new, weights, c.dp_clip, c.dp_noise, np.random.default_rng(seed))
    payload = to_bytes(compress_delta(new, weights)) if c.compress else to_bytes(new)
    fields = {
        "kind": "fl.update",
        "num_examples": int(n),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "base_version": version,
        "compressed": bool(c.compress),
        "eval": prev_eval,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return fields, payload


def evaluate_holdout(cfg: dict, weights_bytes: bytes) -> dict | None:
    from .client_spec import ClientSpec
    from .local_training import evaluate
    from .updates import from_bytes

    c = ClientSpec.from_config(cfg)
    _, _, x_ho, y_ho = _local_data(c.dataset, c.seed, c.holdout, tuple(c.labels))
    return evaluate(c.arch, from_bytes(weights_bytes), x_ho, y_ho) if len(x_ho) else None


def evaluate_dataset(
    arch: dict, weights_bytes: bytes, dataset: str, labels: tuple[str, ...] = (), slot: str = ""
) -> dict:
    from .datasets import relabel
    from .local_training import evaluate
    from .updates import from_bytes

    key = ("full", dataset, tuple(labels))  # cached like the training data (decoding MNIST costs 35-60 ms)
    if key not in _state["data"]:
        x, y, own = _datasets().load(dataset)
        _state["data"][key] = relabel(x, y, own, list(labels)) if labels else (x, y)
    x, y = _state["data"][key]
    return evaluate(arch, from_bytes(weights_bytes), x, y, slot=slot)


MAX_EVALUATIONS = 8  # started and not yet collected (a master that died leaves its own behind)
_evaluations: dict = {}  # key -> Future of an evaluation running in this process's evaluation thread
_eval_pool: list = []


def evaluate_dataset_start(
    key: str, arch: dict, weights_bytes: bytes, dataset: str, labels: tuple[str, ...] = ()
) -> None:
    """Start `evaluate_dataset` in this process's evaluation thread, on a model of its own: it runs while
    the next calls (the master's own fit of the next round) run in the main thread; TensorFlow releases the
    GIL in its kernels, so the two use two cores. `evaluate_dataset_result` collects it."""
    from concurrent.futures import ThreadPoolExecutor

    if not _eval_pool:
        _eval_pool.append(ThreadPoolExecutor(1, thread_name_prefix="collab-eval"))
    while len(_evaluations) >= MAX_EVALUATIONS:
        _evaluations.pop(next(iter(_evaluations)))
    _evaluations[key] = _eval_pool[0].submit(_timed_evaluation, arch, weights_bytes, dataset, tuple(labels))


def _timed_evaluation(arch: dict, weights_bytes: bytes, dataset: str, labels: tuple[str, ...]) -> dict:
    t0 = time.perf_counter()
    out = evaluate_dataset(arch, weights_bytes, dataset, labels, "eval")
    return {**out, "seconds": round(time.perf_counter() - t0, 4)}


def evaluate_dataset_result(key: str) -> dict:
    """The result of an evaluation `evaluate_dataset_start` started, with the ``seconds`` it took (waits for
    it); KeyError if there is none."""
    fut = _evaluations.pop(key, None)
    if fut is None:
        raise KeyError(f"no evaluation {key!r} in this ML process (it may have restarted)")
    return fut.result()


def initial_weights(arch: dict, seed: int) -> bytes:
    import keras

    from .architectures import build_from_spec
    from .updates import to_bytes

    keras.utils.set_random_seed(seed)
    return to_bytes(build_from_spec(arch).get_weights())


def classify(data: bytes, options: dict) -> dict:
    from .classify import check_fits
    from .classify import classify as top_k
    from .images import decode_image
    from .models_runtime import current_classifier

    t0 = time.perf_counter()
    img = decode_image(data)
    model, labels, shape, version = current_classifier(options.get("model"), _state["home"])
    check_fits(img, shape, version)
    t1 = time.perf_counter()
    top = top_k(img, model, labels, shape, invert=bool(options.get("invert", False)))
    t2 = time.perf_counter()
    return {
        "labels": [top[0]["label"]] if top else [],
        "top": top,
        "model": version,
        "width": int(img.shape[1]),
        "height": int(img.shape[0]),
        "timings": {"decode_ms": round((t1 - t0) * 1000, 2), "classify_ms": round((t2 - t1) * 1000, 2)},
    }


def predict(data: bytes, options: dict) -> dict:
    from .classify import check_fits, predict_proba
    from .images import decode_image
    from .models_runtime import current_classifier

    model, labels, shape, version = current_classifier(options.get("model"), _state["home"])
    img = decode_image(data)
    check_fits(img, shape, version)
    p = predict_proba(img, model, shape, invert=bool(options.get("invert", False)))
    return {"probs": [float(v) for v in p], "labels": list(labels), "model": version}


def import_keras(path: str, name: str) -> str:
    from pathlib import Path

    from .registry import ModelRegistry

    return ModelRegistry(Path(_state["home"])).import_keras(path, name)


def export_keras(ref: str, path: str) -> dict:
    from pathlib import Path

    from .registry import ModelRegistry

    return ModelRegistry(Path(_state["home"])).export_keras(ref, path)
