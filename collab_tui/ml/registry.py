"""Content-addressed model registry under ``home/models/`` (numpy only; TensorFlow lazily for Keras I/O).

Layout: ``home/models/<name>/<version>.npz`` (weights, ``ml.updates.to_bytes``) and
``<version>.json`` (metadata; written last, so its presence means the version is complete).
``version = sha256(name + "\\n" + arch_json + "\\n" + to_bytes(weights))[:16]`` where arch_json is
``json.dumps(arch, sort_keys=True, separators=(",", ":"))``. Reads verify the hash, so a
corrupt or tampered weights file is rejected.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fsutil import atomic_write
from .updates import from_bytes, to_bytes, weight_stats

FORMAT = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION_RE = re.compile(r"^[0-9a-f]{16}$")


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
            "weight_stats": weight_stats(weights),
            "size_bytes": len(data),
            "created": time.time(),
        }
        self._store(meta, data)
        return version

    def put_raw(self, meta: dict, weights_bytes: bytes) -> str:
        """Store a version received from elsewhere (e.g. the master), verifying its hash."""
        if not isinstance(meta, dict):
            raise RegistryError("meta must be a dict")
        name, version, arch = meta.get("name"), meta.get("version"), meta.get("arch")
        check_name(name)
        if not isinstance(version, str) or not _VERSION_RE.match(version) or not isinstance(arch, dict):
            raise RegistryError("meta needs 'version' (16 hex chars) and 'arch' (dict)")
        try:
            weights = from_bytes(weights_bytes)
        except ValueError as exc:
            raise IntegrityError(f"{name}@{version}: {exc}") from exc
        data = bytes(weights_bytes)
        actual = compute_version(name, arch, data)
        if actual != version:
            raise IntegrityError(f"{name}@{version}: content hashes to {actual}")
        if self._complete(name, version, data):
            return version
        meta = _jsonable(meta)
        meta["weight_stats"] = weight_stats(weights)
        meta["size_bytes"] = len(data)
        meta.setdefault("created", time.time())
        self._store(meta, data)
        return version

    def _complete(self, name: str, version: str, data: bytes) -> bool:
        """True if the version is stored intact; a damaged weights file is rewritten from ``data``."""
        if not self._meta_path(name, version).is_file():
            return False
        path = self.root / name / f"{version}.npz"
        try:
            intact = path.read_bytes() == data
        except OSError:
            intact = False
        if not intact:
            with self._lock:
                _atomic_write(path, data)
        return True

    def _store(self, meta: dict, data: bytes) -> None:
        folder = self.root / meta["name"]
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(folder / f"{meta['version']}.npz", data)
            _atomic_write(folder / f"{meta['version']}.json", json.dumps(meta, indent=1, sort_keys=True).encode())

    # -------------------------------------------------------------- reading
    def _meta_path(self, name: str, version: str) -> Path:
        return self.root / name / f"{version}.json"

    def _metas(self, name: str) -> list[dict]:
        folder = self.root / check_name(name)
        out = []
        for p in folder.glob("*.json") if folder.is_dir() else []:
            if not _VERSION_RE.match(p.stem):
                continue
            try:
                meta = json.loads(p.read_text())
            except (OSError, ValueError):
                continue  # an unreadable metadata file is not a version
            if isinstance(meta, dict) and meta.get("version") == p.stem:
                out.append(meta)
        return sorted(out, key=lambda m: (float(m.get("created") or 0), m.get("round") or -1, m["version"]))

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
        path = self.root / name / f"{meta['version']}.npz"
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
