"""Model architectures for federated training (Keras 3; TensorFlow/Keras imported lazily).

An architecture *spec* is a small JSON-able dict that is enough to rebuild a model:
``{"name": "small-cnn", "input_shape": [H, W, C], "num_classes": N}``; models that are not
one of the built-ins carry their Keras JSON config as ``"keras_json"`` (``"name": "keras"``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BUILTIN = ("small-cnn",)


class ArchitectureError(ValueError):
    """Unknown or malformed architecture spec."""


def _shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3 or any(int(v) < 1 for v in input_shape) or int(input_shape[2]) not in (1, 3, 4):
        raise ArchitectureError(f"input_shape must be (H, W, C) with C in 1/3/4, got {tuple(input_shape)}")
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])


def make_spec(name: str = "small-cnn", input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10) -> dict:
    """A canonical spec dict (lists, ints) for a built-in architecture."""
    if name not in BUILTIN:
        raise ArchitectureError(f"unknown architecture {name!r} (known: {', '.join(BUILTIN)})")
    if int(num_classes) < 2:
        raise ArchitectureError(f"num_classes must be >= 2, got {num_classes}")
    return {"name": name, "input_shape": list(_shape(input_shape)), "num_classes": int(num_classes)}


def _small_cnn_layers(keras: Any, h: int, w: int, num_classes: int) -> list:
    L = keras.layers
    side = min(h, w)
    if side < 16:  # e.g. 8x8 digits: ~10k parameters
        return [
            L.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
            L.MaxPooling2D(name="pool1"),
            L.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
            L.Flatten(name="flatten"),
            L.Dense(32, activation="relu", name="dense1"),
            L.Dense(num_classes, activation="softmax", name="output"),
        ]
    if side <= 40:  # the benchmark protocol model (56,714 parameters at 28x28x1, 10 classes)
        return [
            L.Conv2D(16, 3, activation="relu", name="conv1"),
            L.MaxPooling2D(name="pool1"),
            L.Conv2D(32, 3, activation="relu", name="conv2"),
            L.MaxPooling2D(name="pool2"),
            L.Flatten(name="flatten"),
            L.Dense(64, activation="relu", name="dense1"),
            L.Dense(num_classes, activation="softmax", name="output"),
        ]
    layers, filters, i = [], 16, 1  # larger inputs: conv+pool blocks until the side is <= 7
    while side > 7:
        layers += [
            L.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}"),
            L.MaxPooling2D(name=f"pool{i}"),
        ]
        side, filters, i = side // 2, min(filters * 2, 128), i + 1
    return layers + [
        L.Flatten(name="flatten"),
        L.Dense(64, activation="relu", name="dense1"),
        L.Dense(num_classes, activation="softmax", name="output"),
    ]


def build_model(name: str = "small-cnn", input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10) -> Any:
    """An uncompiled Keras model; the CNN is scaled by input size (28x28 = the protocol model)."""
    import keras

    spec = make_spec(name, input_shape, num_classes)
    h, w, c = spec["input_shape"]
    return keras.Sequential(
        [keras.Input(shape=(h, w, c)), *_small_cnn_layers(keras, h, w, spec["num_classes"])],
        name=name.replace("-", "_"),
    )


def build_from_spec(spec: dict) -> Any:
    """Rebuild an (uncompiled, freshly initialised) model from a spec."""
    if not isinstance(spec, dict):
        raise ArchitectureError("architecture spec must be a dict")
    if spec.get("keras_json"):
        import keras

        try:
            return keras.models.model_from_json(spec["keras_json"])
        except Exception as exc:  # noqa: BLE001 - Keras raises many types here
            raise ArchitectureError(f"cannot rebuild model from keras_json: {exc}") from exc
    try:
        return build_model(spec["name"], spec["input_shape"], spec["num_classes"])
    except KeyError as exc:
        raise ArchitectureError(f"architecture spec lacks {exc}") from exc


def _signature(model: Any) -> list:
    out = []
    for layer in model.layers:
        cfg = layer.get_config()
        keep = {
            k: cfg.get(k) for k in ("filters", "kernel_size", "strides", "padding", "units", "activation", "pool_size")
        }
        out.append((type(layer).__name__, json.dumps(keep, sort_keys=True, default=str)))
    return out + [tuple(np.shape(w)) for w in model.get_weights()]


def architecture_spec(model: Any) -> dict:
    """JSON-able spec of ``model``: a built-in name when the structure matches one, else keras_json."""
    in_shape = [int(v) for v in model.input_shape[1:]]
    num_classes = int(model.output_shape[-1])
    try:
        spec = make_spec("small-cnn", in_shape, num_classes)
        if _signature(build_from_spec(spec)) == _signature(model):
            return spec
    except ArchitectureError:
        pass
    return {"name": "keras", "input_shape": in_shape, "num_classes": num_classes, "keras_json": model.to_json()}


def load_protocol_model(folder: str | Path) -> tuple[Any, list[np.ndarray]]:
    """From the benchmark folder (e.g. /work/shared/bench): the model (``protocol_model.keras``) and its initial weights (``init_weights.npz``,
    keys sorted = ``model.get_weights()`` order), with those weights set on the model."""
    import keras

    folder = Path(folder)
    model = keras.models.load_model(folder / "protocol_model.keras", compile=False)
    with np.load(folder / "init_weights.npz", allow_pickle=False) as z:
        weights = [np.array(z[k]) for k in sorted(z.files)]
    model.set_weights(weights)
    return model, weights


def model_to_bytes(model: Any) -> bytes:
    """The ``.keras`` file contents of ``model``."""
    with tempfile.TemporaryDirectory(prefix="collab-keras-") as d:
        path = os.path.join(d, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def model_from_bytes(data: bytes, compile: bool = False) -> Any:
    """Load a model from ``.keras`` file bytes (no custom objects, safe mode)."""
    import keras

    if not bytes(data[:2]) == b"PK":
        raise ArchitectureError("not a .keras archive")
    with tempfile.TemporaryDirectory(prefix="collab-keras-") as d:
        path = os.path.join(d, "model.keras")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return keras.models.load_model(path, compile=compile, safe_mode=True)
        except Exception as exc:  # noqa: BLE001
            raise ArchitectureError(f"cannot load .keras model: {exc}") from exc
