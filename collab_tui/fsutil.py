"""File helpers shared by every layer: atomic writes, names that become paths, moving bad files aside.

- `atomic_write`: temp file in the same folder, fsync, rename, fsync the folder. One implementation for
  identities (0600 keys), node state, the model registry, datasets and runs.
- `child_path`: the one way a name from a peer or a user becomes a path (a dataset, a run, a model
  version), so a name can never climb out of the folder it is meant for.
- `move_aside` / `set_aside`: a persisted file that does not parse or validate is renamed
  ``NAME.bad-<unix time>`` next to it (kept for a post-mortem, out of the way of the loader), never
  silently rewritten or deleted; `set_aside` also logs the one warning line that says so.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

MAX_NAME_BYTES = 255  # what a file name may take on the usual file systems


def atomic_write(path: Path | str, data: bytes, mode: int = 0o644) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates the file 0600 (O_EXCL); fchmod makes the final mode exact regardless of umask
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass
    finally:
        os.close(dfd)


def child_path(base: Path | str, name: str) -> Path:
    """``base / name`` for a plain file name, or ValueError: refused are empty names, path separators
    (``/``, ``\\``), NUL, ``.`` and ``..``, names too long for a file system, and any name whose path
    resolves outside ``base`` (a symlink planted there included)."""
    shown = repr(name[:40]) if isinstance(name, str) else type(name).__name__
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"not a plain file name: {shown}")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ValueError(f"file name too long: {shown}...")
    base = Path(base)
    path = base / name
    try:
        root, real = base.resolve(), path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise ValueError(f"{shown} does not resolve: {exc}") from None
    if real == root or not real.is_relative_to(root):
        raise ValueError(f"{shown} resolves outside {base}")
    return path


def move_aside(path: Path | str) -> Path | None:
    """Rename an unusable file to ``NAME.bad-<unix time>`` (``-2``, ``-3``... if taken) in its folder; the
    new path, or None if it is already gone (another reader moved it first). The caller logs why."""
    path = Path(path)
    stamp = int(time.time())
    bad = path.with_name(f"{path.name}.bad-{stamp}")
    n = 1
    while bad.exists():
        n += 1
        bad = path.with_name(f"{path.name}.bad-{stamp}-{n}")
    try:
        os.rename(path, bad)
    except FileNotFoundError:
        return None
    return bad


def set_aside(path: Path | str, why: str, what: str = "", logger: logging.Logger | None = None) -> Path | None:
    """`move_aside` a persisted file that does not parse or validate, with one warning line: which file, why
    (cut to 200 characters), where it went and, in ``what``, what is lost and how it comes back."""
    logger = logger or logging.getLogger("collab.state")
    try:
        bad = move_aside(path)
    except OSError as exc:
        logger.warning("%s is unusable (%s) and cannot be moved aside: %s", path, why[:200], exc)
        return None
    if bad is not None:
        logger.warning(
            "%s is unusable (%s): moved aside to %s%s", path, why[:200], bad.name, f"; {what}" if what else ""
        )
    return bad
