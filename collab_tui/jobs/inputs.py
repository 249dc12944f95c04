"""A job's input files, as the submitter takes them in: paths, folders and globs expanded into files
(only what the job type accepts from a folder, each file once), each file hashed (SHA-256) and, if tiny,
kept to travel inline with the first submission.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from .types import JobType, get_type

# Reading this little (files at submission, a batch's bytes for a worker: batches are at most 256 KiB
# unless one item is bigger) is done on the event loop: a thread hop would cost about as much.
INLINE_READ_BYTES = 256 * 1024
INLINE_FILES = 16
# Items this small travel inline with the first submission (see master_side): no fetch round trip.
INLINE_ITEM_BYTES = 4 * 1024
INLINE_JOB_BYTES = 1024 * 1024
IMAGE_KINDS = ("faces", "people", "identify", "classify", "ensemble", "ocr")


def collect_paths(paths: list[str], kind: str) -> list[Path]:
    """Files, folders (recursive) and globs; folders keep only what the job type accepts."""
    return [Path(p) for p, _ in _collect(paths, kind)]


def _walk_folder(folder: Path, accepts) -> list[tuple[str, str]]:
    """Every file under ``folder`` that ``accepts`` takes, like ``sorted(folder.rglob("*"))`` (symlinked
    folders are not entered, symlinked files are kept), each with its resolved path. One `scandir` per
    folder and no `realpath` per file: below a resolved folder only a symlink needs resolving."""
    real = os.path.realpath(folder)
    if getattr(accepts, "__func__", None) is JobType.accepts:
        accepts = None  # takes everything: no Path to build per file
    found: list[tuple[tuple[str, ...], str, str]] = []
    stack: list[tuple[str, str, tuple[str, ...]]] = [(str(folder), real, ())]
    while stack:
        path, real_dir, rel = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except PermissionError:
            continue
        for e in entries:
            try:
                if e.is_dir():
                    if not e.is_symlink():
                        stack.append((e.path, os.path.join(real_dir, e.name), rel + (e.name,)))
                elif e.is_file():
                    if accepts is None or accepts(Path(e.path)):
                        key = os.path.realpath(e.path) if e.is_symlink() else os.path.join(real_dir, e.name)
                        found.append((rel + (e.name,), e.path, key))
            except OSError:
                continue
    found.sort(key=lambda t: t[0])
    return [(f, key) for _, f, key in found]


def _collect(paths: list[str], kind: str) -> list[tuple[str, str]]:
    """`collect_paths` as strings, each with its resolved form (the key that removes repeats)."""
    if kind in IMAGE_KINDS:
        from ..ml.images import collect_images

        return [(str(p), os.path.realpath(p)) for p in collect_images(paths)]
    import glob

    jtype = get_type(kind)
    out: list[tuple[str, str]] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_file():
            out.append((str(p), os.path.realpath(p)))
        elif p.is_dir():
            out += _walk_folder(p, jtype.accepts)
        else:
            hits = sorted(glob.glob(raw, recursive=True))
            if not hits:
                raise FileNotFoundError(f"no such file, folder or pattern: {raw}")
            for h in map(Path, hits):  # a folder matched by a pattern is walked like a named folder
                if h.is_dir():
                    out += _walk_folder(h, jtype.accepts)
                elif h.is_file() and jtype.accepts(h):
                    out.append((str(h), os.path.realpath(h)))
    seen, unique = set(), []
    for p, key in out:
        if key not in seen:
            seen.add(key)
            unique.append((p, key))
    return unique


def _hash_file(path: Path | str) -> tuple[int, str, bytes | None]:
    """Size, SHA-256 and, for a file of at most INLINE_ITEM_BYTES, its bytes (exactly those hashed)."""
    h = hashlib.sha256()
    size = 0
    first = b""
    fd = os.open(path, os.O_RDONLY)
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
            if not size:
                first = chunk
            size += len(chunk)
    finally:
        os.close(fd)
    return size, h.hexdigest(), first if size <= INLINE_ITEM_BYTES else None


def prepare(paths: list[str], kind: str) -> list[tuple[str, int, str, bytes | None]]:
    """The job's files (resolved) with their sizes, SHA-256 digests and (tiny ones, up to
    INLINE_JOB_BYTES in all) their bytes."""
    out = []
    budget = INLINE_JOB_BYTES
    for _, real in _collect(paths, kind):
        size, digest, data = _hash_file(real)
        if data is not None and len(data) <= budget:
            budget -= len(data)
        else:
            data = None
        out.append((real, size, digest, data))
    return out


def few_small_files(paths: list[str], kind: str) -> bool:
    """A handful of small files named explicitly (and nothing heavy to import first)."""
    if len(paths) > INLINE_FILES or (kind in IMAGE_KINDS and "collab_tui.ml.images" not in sys.modules):
        return False
    total = 0
    for raw in paths:
        try:
            st = os.stat(raw)
        except OSError:
            return False
        if not os.path.isfile(raw):
            return False
        total += st.st_size
    return total <= INLINE_READ_BYTES
