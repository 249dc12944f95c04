"""The process-wide classifier (runs inside the ML process; TensorFlow imported on first use only).

``current_classifier(spec, home)`` resolves ``NAME[@VERSION]``: a model from this node's registry when
it has one (federated training fills it), else the built-in digits CNN trained on scikit-learn's 8x8
digits. Models are cached per process: TensorFlow costs ~5 s and ~600 MB to load, so load once.
"""

from __future__ import annotations

import threading
from pathlib import Path

_lock = threading.Lock()
_cache: dict[str, tuple] = {}
BUILTIN_NAMES = ("", "builtin-digits", "builtin")


def _from_registry(spec: str, home: str) -> tuple | None:
    """Build (once per version) the classifier for NAME[@VERSION] from this node's registry."""
    from .registry import ModelNotFound, ModelRegistry, parse_ref

    reg = ModelRegistry(Path(home))
    name, version = parse_ref(spec)
    try:
        meta = reg.resolve(name, version)
    except ModelNotFound:
        return None
    key = f"{name}@{meta['version']}"
    if key not in _cache:
        from .architectures import build_from_spec

        _, weights = reg.get(name, meta["version"])
        model = build_from_spec(meta["arch"])
        model.set_weights(weights)
        n = meta["arch"].get("num_classes", 10)
        labels = (meta.get("extra") or {}).get("labels") or [str(i) for i in range(n)]
        _cache[key] = (model, labels, tuple(meta["arch"]["input_shape"]), key)
    return _cache[key]


def current_classifier(spec: str | None = None, home: str | None = None) -> tuple:
    """(model, labels, input_shape, version)."""
    spec = spec or ""
    with _lock:
        if spec not in BUILTIN_NAMES:
            found = _from_registry(spec, home) if home else None
            if found is None:
                raise LookupError(f"model {spec!r} is not known on this node")
            return found
        if "builtin" not in _cache:
            from .classify import DIGITS_INPUT_SHAPE, DIGITS_LABELS, builtin_digits_model

            _cache["builtin"] = (builtin_digits_model(), DIGITS_LABELS, DIGITS_INPUT_SHAPE, "builtin-digits")
        return _cache["builtin"]
