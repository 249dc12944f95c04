"""The process-wide classifier a worker uses (TensorFlow is imported on first use only).

``current_classifier(spec)`` resolves ``NAME[@VERSION]``: a model from this node's registry when one
exists (federated training fills it), else the built-in digits CNN trained on scikit-learn's 8x8
digits. Models are cached per process: TensorFlow costs ~5 s and ~600 MB to load, so load once.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_cache: dict[str, tuple] = {}
_resolvers: list = []  # callables spec -> (model, labels, input_shape, version) | None


def add_resolver(fn) -> None:
    """The model registry registers itself here (keeps this module free of registry imports)."""
    if fn not in _resolvers:
        _resolvers.insert(0, fn)


def current_classifier(spec: str | None = None) -> tuple:
    key = spec or "builtin-digits"
    with _lock:
        if key in _cache:
            return _cache[key]
        for resolve in _resolvers:
            found = resolve(spec)
            if found is not None:
                _cache[key] = found
                return found
        if spec not in (None, "", "builtin-digits", "digits"):
            raise LookupError(f"model {spec!r} is not known on this node")
        from .classify import DIGITS_INPUT_SHAPE, DIGITS_LABELS, builtin_digits_model

        found = (builtin_digits_model(), DIGITS_LABELS, DIGITS_INPUT_SHAPE, "builtin-digits")
        _cache[key] = found
        return found


def forget(spec: str | None = None) -> None:
    with _lock:
        if spec is None:
            _cache.clear()
        else:
            _cache.pop(spec, None)
