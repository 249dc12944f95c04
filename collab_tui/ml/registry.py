"""Content-addressed model registry under ``home/models/`` (numpy only; TensorFlow lazily for Keras I/O).

Layout: ``home/models/<name>/<version>.npz`` (weights, ``ml.updates.to_bytes``) and
``<version>.json`` (metadata; written last, so its presence means the version is complete).
``version = sha256(name + "\\n" + arch_json + "\\n" + to_bytes(weights))[:16]`` where arch_json is
``json.dumps(arch, sort_keys=True, separators=(",", ":"))``. Reads verify the hash, so a
corrupt or tampered weights file is rejected.

The metadata is a `ModelMeta` record (typed, bounded): checked before a version is written, whether it
was made here (`put`) or came from the master (`put_raw`, whose weights are also checked to be a plain
archive of the declared shapes before anything is written), and checked again when it is read: a
metadata file that does not parse or validate is moved aside (``VERSION.json.bad-<unix time>``) with one
warning, and the other versions are listed as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np

from ..fsutil import atomic_write, child_path, set_aside
from .datasets import DatasetError, check_npz
from .updates import from_bytes, to_bytes, weight_stats

log = logging.getLogger("collab.models")

FORMAT = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION_RE = re.compile(r"^[0-9a-f]{16}$")
MAX_WEIGHTS_BYTES = 512 * 1024 * 1024  # a version's weights, unpacked (the transport's blob limit)
MAX_TENSORS = 4096

# ----------------------------------------------------------------------------- the metadata record
_FMAX = sys.float_info.max  # bounds that let every finite float through and neither NaN nor infinity
Finite = Annotated[float, msgspec.Meta(ge=-_FMAX, le=_FMAX)]
Int = Annotated[int, msgspec.Meta(ge=-(2**53), le=2**53)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ShortText = Annotated[str, msgspec.Meta(max_length=300)]
ModelName = Annotated[str, msgspec.Meta(pattern=_NAME_RE.pattern)]
Version = Annotated[str, msgspec.Meta(pattern=_VERSION_RE.pattern)]
Scalar = None | bool | Int | Finite | ShortText
# An architecture spec (ml/architectures.py): a few keys with numbers, a list of ints (``input_shape``) or
# text, the Keras JSON of an imported model being the one long value. Kept exactly as given: it is hashed.
MAX_ARCH_TEXT = 4 * 1024 * 1024
ArchValue = (
    None
    | bool
    | Int
    | Finite
    | Annotated[str, msgspec.Meta(max_length=MAX_ARCH_TEXT)]
    | Annotated[list[Int], msgspec.Meta(max_length=64)]
)
Arch = Annotated[dict[Key, ArchValue], msgspec.Meta(max_length=32)]
Dim = Annotated[int, msgspec.Meta(ge=0, le=2**31)]
ClassNames = Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]], msgspec.Meta(max_length=4096)]
Shapes = Annotated[list[Annotated[list[Dim], msgspec.Meta(max_length=32)]], msgspec.Meta(max_length=MAX_TENSORS)]


class ModelMeta(msgspec.Struct, kw_only=True):
    """The metadata of one version, as stored in ``VERSION.json`` and replicated by the master."""

    format: Annotated[int, msgspec.Meta(ge=1, le=1000)] = FORMAT
    name: ModelName
    version: Version
    arch: Arch
    parent: Version | None = None
    run: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    round: Annotated[int, msgspec.Meta(ge=0, le=2**31)] | None = None
    contributors: Annotated[list[Key], msgspec.Meta(max_length=4096)] = []
    metrics: Annotated[dict[Key, Scalar], msgspec.Meta(max_length=64)] = {}
    extra: Annotated[
        dict[Key, Scalar | Annotated[dict[Key, Scalar], msgspec.Meta(max_length=32)] | ClassNames],
        msgspec.Meta(max_length=32),
    ] = {}  # "labels": the class names of the outputs, in order
    dp: Annotated[dict[Key, Scalar], msgspec.Meta(max_length=32)] | None = None
    shapes: Shapes | None = None  # of the weights, in order (versions stored before it was kept have none)
    weight_stats: Annotated[dict[Key, Int | Finite], msgspec.Meta(max_length=16)] = {}
    size_bytes: Annotated[int, msgspec.Meta(ge=0, le=2**53)] = 0
    created: Annotated[float, msgspec.Meta(ge=0, le=1e11)]  # unix time


def check_meta(meta: object) -> dict[str, Any]:
    """``meta`` as a clean `ModelMeta` dict (declared fields only), or `RegistryError` naming the field."""
    try:
        return msgspec.to_builtins(msgspec.convert(meta, ModelMeta))
    except msgspec.ValidationError as exc:
        raise RegistryError(f"bad model metadata: {str(exc)[:200]}") from None


class RegistryError(ValueError):
    """Bad name, reference or metadata."""


class ModelNotFound(RegistryError, LookupError):
    """No such model or version."""


class IntegrityError(RegistryError):
    """Stored or received weights do not match their version id."""


def arch_json(arch: dict) -> str:
    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


def compute_version(name: str, arch: dict, weights_bytes: bytes) -> str:
    """The version id for ``name``/``arch`` and weights serialized with ``to_bytes``."""
    h = hashlib.sha256()
    h.update(name.encode() + b"\n" + arch_json(arch).encode() + b"\n")
    h.update(weights_bytes)
    return h.hexdigest()[:16]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RegistryError(f"bad model name {name!r} (letters, digits, . _ -; max 64; no leading . _ -)")
    return name


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME@VERSION`` (a version prefix of >= 4 hex chars is allowed)."""
    name, _, version = str(ref).partition("@")
    check_name(name)
    if "@" in str(ref) and not re.fullmatch(r"[0-9a-f]{4,16}", version):
        raise RegistryError(f"bad version in {ref!r} (4-16 lowercase hex chars)")
    return name, (version or None)


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write(path, data)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))


def check_weights(data: bytes, shapes: list[list[int]] | None = None) -> list[np.ndarray]:
    """The tensors of a weights archive from elsewhere, or `IntegrityError`: checked to be a plain archive
    within bounds (`check_npz`, before it is unpacked), of numbers, finite, and of the ``shapes`` given."""
    try:
        check_npz(data, MAX_WEIGHTS_BYTES, MAX_TENSORS)
        weights = from_bytes(data)
    except (DatasetError, ValueError) as exc:
        raise IntegrityError(f"not a weights archive: {exc}") from None
    for i, w in enumerate(weights):
        if w.dtype.kind not in "fiu":
            raise IntegrityError(f"tensor {i} holds {w.dtype}, not numbers")
        if w.dtype.kind == "f" and not np.all(np.isfinite(w)):
            raise IntegrityError(f"tensor {i} holds NaN or infinite values")
    if shapes is not None and [list(w.shape) for w in weights] != [list(s) for s in shapes]:
        raise IntegrityError("the weights do not have the shapes the metadata declares")
    return weights


class ModelRegistry:
    """Named, versioned model weights with lineage and statistics."""

    def __init__(self, home: str | Path) -> None:
        self.root = Path(home) / "models"
        self._lock = threading.Lock()

    # -------------------------------------------------------------- writing
    def put(
        self,
        name: str,
        weights: Sequence[np.ndarray],
        arch: dict,
        parent: str | None = None,
        run: str | None = None,
        round: int | None = None,
        contributors: Sequence[str] = (),
        metrics: dict | None = None,
        extra: dict | None = None,
        dp: dict | None = None,
    ) -> str:
        """Store a version; returns its id (same content -> same id; re-putting is a no-op).
        ``dp`` (or ``extra["dp"]``) records differential-privacy parameters."""
        check_name(name)
        if not isinstance(arch, dict):
            raise RegistryError("arch must be a dict")
        arch = _jsonable(arch)
        data = to_bytes([np.asarray(w) for w in weights])
        version = compute_version(name, arch, data)
        if self._complete(name, version, data):
            return version
        extra = _jsonable(extra or {})
        meta = {
            "format": FORMAT,
            "name": name,
            "version": version,
            "arch": arch,
            "parent": parent,
            "run": run,
            "round": None if round is None else int(round),
            "contributors": [str(c) for c in contributors],
            "metrics": _jsonable(metrics or {}),
            "extra": extra,
            "dp": _jsonable(dp if dp is not None else extra.get("dp")),
            "shapes": [list(np.shape(w)) for w in weights],
            "weight_stats": weight_stats(weights),
            "size_bytes": len(data),
            "created": time.time(),
        }
        self._store(check_meta(meta), data)
        return version

    def put_raw(self, meta: dict, weights_bytes: bytes) -> str:
        """Store a version received from elsewhere (e.g. the master). Nothing is written unless the metadata
        validates (`check_meta`), the content hashes to its version id, and the weights are a plain archive
        of the declared shapes (`check_weights`)."""
        if not isinstance(meta, dict):
            raise RegistryError("meta must be a dict")
        meta = check_meta({"created": time.time(), **meta})
        name, version, arch = meta["name"], meta["version"], meta["arch"]
        data = bytes(weights_bytes)
        actual = compute_version(name, arch, data)
        if actual != version:
            raise IntegrityError(f"{name}@{version}: content hashes to {actual}")
        weights = check_weights(data, meta["shapes"])
        if self._complete(name, version, data):
            return version
        meta["shapes"] = [list(w.shape) for w in weights]
        meta["weight_stats"] = weight_stats(weights)
        meta["size_bytes"] = len(data)
        self._store(check_meta(meta), data)
        return version

    def _complete(self, name: str, version: str, data: bytes) -> bool:
        """True if the version is stored intact; a damaged weights file is rewritten from ``data``."""
        if not self._meta_path(name, version).is_file():
            return False
        path = self._weights_path(name, version)
        try:
            intact = path.read_bytes() == data
        except OSError:
            intact = False
        if not intact:
            with self._lock:
                _atomic_write(path, data)
        return True

    def _store(self, meta: dict, data: bytes) -> None:
        """Write a checked version: the weights first, the metadata last (its presence means complete)."""
        with self._lock:
            self._folder(meta["name"]).mkdir(parents=True, exist_ok=True)
            _atomic_write(self._weights_path(meta["name"], meta["version"]), data)
            meta_bytes = json.dumps(meta, indent=1, sort_keys=True).encode()
            _atomic_write(self._meta_path(meta["name"], meta["version"]), meta_bytes)

    # -------------------------------------------------------------- paths (names become paths only here)
    def _folder(self, name: str) -> Path:
        return child_path(self.root, check_name(name))

    def _version_file(self, name: str, version: str, suffix: str) -> Path:
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise RegistryError(f"bad version id {str(version)[:40]!r} (16 lowercase hex chars)")
        return child_path(self._folder(name), f"{version}{suffix}")

    def _meta_path(self, name: str, version: str) -> Path:
        return self._version_file(name, version, ".json")

    def _weights_path(self, name: str, version: str) -> Path:
        return self._version_file(name, version, ".npz")

    # -------------------------------------------------------------- reading
    def _read_meta(self, path: Path) -> dict | None:
        """The checked metadata in ``path``; None if it is gone, unreadable, or bad (then moved aside)."""
        try:
            raw = path.read_bytes()
        except OSError:
            return None  # gone (moved aside or replaced meanwhile) or unreadable: not a version now
        try:
            meta = check_meta(json.loads(raw))
            if meta["version"] != path.stem or meta["name"] != path.parent.name:
                raise RegistryError(f"it describes {meta['name']}@{meta['version']}")
        except (ValueError, RecursionError) as exc:  # RegistryError and JSON errors are ValueErrors
            set_aside(path, f"model metadata: {exc}", logger=log)
            return None
        return meta

    def _metas(self, name: str) -> list[dict]:
        folder = self._folder(name)
        out = []
        for p in folder.glob("*.json") if folder.is_dir() else []:
            if _VERSION_RE.match(p.stem) and (meta := self._read_meta(p)) is not None:
                out.append(meta)
        return sorted(out, key=lambda m: (m["created"], -1 if m["round"] is None else m["round"], m["version"]))

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))

    def versions(self, name: str) -> list[dict]:
        """Metadata of every version of ``name``, oldest first."""
        return self._metas(name)

    def latest(self, name: str) -> dict | None:
        metas = self._metas(name)
        return metas[-1] if metas else None

    def list(self) -> list[dict]:
        """[{name, versions, latest, latest_meta}] for every model."""
        out = []
        for name in self.names():
            metas = self._metas(name)
            if metas:
                out.append(
                    {"name": name, "versions": len(metas), "latest": metas[-1]["version"], "latest_meta": metas[-1]}
                )
        return out

    def has(self, version_id: str) -> bool:
        if not isinstance(version_id, str) or not _VERSION_RE.match(version_id):
            return False
        return any(self._meta_path(n, version_id).is_file() for n in self.names())

    def resolve(self, name: str, version: str | None = None) -> dict:
        """Metadata for ``name`` at ``version`` (a unique prefix is fine; None = latest)."""
        metas = self._metas(name)
        if not metas:
            raise ModelNotFound(f"no model named {name!r}")
        if version is None:
            return metas[-1]
        found = [m for m in metas if m["version"].startswith(version)]
        if not found:
            raise ModelNotFound(f"{name} has no version {version!r}")
        if len(found) > 1:
            raise RegistryError(f"version prefix {version!r} of {name} is ambiguous ({len(found)} matches)")
        return found[0]

    def show(self, ref: str) -> dict:
        """Metadata for ``NAME`` (latest) or ``NAME@VERSION``."""
        return self.resolve(*parse_ref(ref))

    def get_bytes(self, name: str, version: str | None = None) -> tuple[dict, bytes]:
        """(meta, weights file bytes), hash-verified (for replication to other nodes)."""
        meta = self.resolve(name, version)
        path = self._weights_path(name, meta["version"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IntegrityError(f"{name}@{meta['version']}: weights unreadable: {exc}") from exc
        if compute_version(name, meta["arch"], data) != meta["version"]:
            raise IntegrityError(f"{name}@{meta['version']}: stored weights do not match the version id")
        return meta, data

    def get(self, name: str, version: str | None = None) -> tuple[dict, list[np.ndarray]]:
        """(meta, weights) for a version (latest if None); IntegrityError if the file was altered."""
        if "@" in name and version is None:
            name, version = parse_ref(name)
        meta, data = self.get_bytes(name, version)
        try:
            return meta, from_bytes(data)
        except ValueError as exc:
            raise IntegrityError(f"{name}@{meta['version']}: {exc}") from exc

    def lineage(self, ref: str) -> list[dict]:
        """The chain of metadata from ``ref`` back through ``parent`` links (same-name parents)."""
        name, version = parse_ref(ref)
        chain, seen = [], set()
        meta: dict | None = self.resolve(name, version)
        while meta is not None and meta["version"] not in seen:
            chain.append(meta)
            seen.add(meta["version"])
            parent = meta.get("parent")
            try:
                meta = self.resolve(name, parent) if parent else None
            except ModelNotFound:
                meta = None
        return chain

    # ---------------------------------------------------------- Keras files
    def import_keras(self, path: str | Path, name: str, **kwargs: Any) -> str:
        """Import a ``.keras`` file as a new version of ``name``; extra kwargs go to ``put``."""
        import keras

        from collab_tui.ml.architectures import architecture_spec

        try:
            model = keras.models.load_model(str(path), compile=False, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - Keras raises many types here
            raise RegistryError(f"cannot load {path}: {exc}") from exc
        extra = dict(kwargs.pop("extra", None) or {})
        extra.setdefault("imported_from", os.path.basename(str(path)))
        return self.put(name, model.get_weights(), architecture_spec(model), extra=extra, **kwargs)

    def export_keras(self, ref: str, path: str | Path) -> dict:
        """Write ``NAME[@VERSION]`` as a ``.keras`` file (atomically); returns its metadata."""
        from collab_tui.ml.architectures import build_from_spec, model_to_bytes

        meta, weights = self.get(*parse_ref(ref))
        model = build_from_spec(meta["arch"])
        model.set_weights(weights)
        _atomic_write(Path(path), model_to_bytes(model))
        return meta
