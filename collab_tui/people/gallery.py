"""The people gallery as a record, its changes and its file (sans-IO but for `GalleryStore`'s one file).

A gallery is a `Gallery` record: ``version`` (1, 2, ... one per committed change), ``term`` (the term of
the master that committed it) and its people, each a name with at most `MAX_PER_PERSON` embeddings (128
finite numbers each, ml/face_id.py) and, per embedding, which node enrolled it and when. Replicas order
galleries by ``(term, version)``: a newer term's commit supersedes whatever an older master left behind,
and within a term versions only grow. Every gallery is checked against the record before it is kept,
whether this node's master made it or it came over the wire, and again when the file is read.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Annotated

import msgspec

from ..fsutil import atomic_write, set_aside
from ..ml.face_id import EMBEDDING_DIM

log = logging.getLogger("collab.people")

M = msgspec.Meta
MAX_PEOPLE = 1000
MAX_PER_PERSON = 32
MAX_EMBEDDINGS = 2048  # in the whole gallery: ~3 MB as JSON, one commit frame (the transport's cap is 4 MiB)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._'-]{0,63}$"

PersonName = Annotated[str, M(pattern=NAME_PATTERN)]
Component = Annotated[float, M(ge=-2.0, le=2.0)]  # dlib's embeddings have a norm of about 1
Vector = Annotated[list[Component], M(min_length=EMBEDDING_DIM, max_length=EMBEDDING_DIM)]
NodeId = Annotated[str, M(pattern="^[0-9a-f]{64}$")]
NodeName = Annotated[str, M(max_length=64)]
Source = Annotated[str, M(max_length=128)]  # the photo's file name (never its folder, never its bytes)
UnixTime = Annotated[float, M(ge=0, le=1e11)]
Counter = Annotated[int, M(ge=0, le=2**53)]


class Embedding(msgspec.Struct, kw_only=True):
    vector: Vector
    node: NodeId  # the node that enrolled it (the photo is there)
    node_name: NodeName = ""
    source: Source = ""
    added: UnixTime = 0.0


class Person(msgspec.Struct, kw_only=True):
    name: PersonName
    embeddings: Annotated[list[Embedding], M(min_length=1, max_length=MAX_PER_PERSON)]


class Gallery(msgspec.Struct, kw_only=True):
    version: Counter = 0
    term: Counter = 0
    committed: UnixTime = 0.0
    people: Annotated[list[Person], M(max_length=MAX_PEOPLE)] = []

    def key(self) -> tuple[int, int]:
        return (self.term, self.version)


class GalleryError(ValueError):
    """A change the gallery cannot take (a bad name, too many embeddings, an unknown person)."""


def check(gallery: object) -> Gallery:
    """A gallery from plain data, or GalleryError saying what is wrong; also checks the cross-field rules
    (one entry per name, at most MAX_EMBEDDINGS in all, finite numbers)."""
    try:
        g = gallery if isinstance(gallery, Gallery) else msgspec.convert(gallery, Gallery)
    except msgspec.ValidationError as exc:
        raise GalleryError(f"not a valid gallery: {exc}") from None
    names = [p.name.casefold() for p in g.people]
    if len(set(names)) != len(names):
        raise GalleryError("a name appears twice in the gallery")
    if sum(len(p.embeddings) for p in g.people) > MAX_EMBEDDINGS:
        raise GalleryError(f"more than {MAX_EMBEDDINGS} embeddings in the gallery")
    for p in g.people:
        for e in p.embeddings:
            if not all(math.isfinite(v) for v in e.vector):
                raise GalleryError(f"{p.name}: an embedding holds a number that is not finite")
    return g


def check_name(name: str) -> str:
    try:
        return msgspec.convert(name, PersonName)
    except msgspec.ValidationError:
        raise GalleryError(
            f"bad name {name[:70]!r}: 1-64 letters, digits, spaces or ._'- and starting with a letter or digit"
        ) from None


def with_added(g: Gallery, name: str, embeddings: list[Embedding], term: int, now: float | None = None) -> Gallery:
    """The next version: `embeddings` added to `name` (a new person, or more photos of one)."""
    name = check_name(name)
    if not embeddings:
        raise GalleryError("no embeddings to add")
    people = [msgspec.structs.replace(p) for p in g.people]
    found = next((p for p in people if p.name.casefold() == name.casefold()), None)
    if found is None:
        if len(people) >= MAX_PEOPLE:
            raise GalleryError(f"the gallery holds {MAX_PEOPLE} people already")
        people.append(Person(name=name, embeddings=list(embeddings)))
    else:
        if len(found.embeddings) + len(embeddings) > MAX_PER_PERSON:
            raise GalleryError(f"{found.name} would have more than {MAX_PER_PERSON} embeddings")
        found.embeddings = [*found.embeddings, *embeddings]
    people.sort(key=lambda p: p.name.casefold())
    return check(Gallery(version=g.version + 1, term=term, committed=now or time.time(), people=people))


def without(g: Gallery, name: str, term: int, now: float | None = None) -> Gallery:
    """The next version without `name`, or GalleryError when nobody has that name."""
    keep = [p for p in g.people if p.name.casefold() != name.casefold()]
    if len(keep) == len(g.people):
        raise GalleryError(f"nobody called {name[:70]!r} is in the gallery")
    return Gallery(version=g.version + 1, term=term, committed=now or time.time(), people=keep)


def people_of(g: Gallery) -> list[tuple[str, list[list[float]]]]:
    """(name, vectors) per person: what ml/face_id.identify takes."""
    return [(p.name, [e.vector for e in p.embeddings]) for p in g.people]


def summary(g: Gallery) -> list[dict]:
    """One row per person: name, embeddings, the nodes that enrolled them, when last added."""
    rows = []
    for p in g.people:
        nodes = sorted({e.node_name or e.node[:12] for e in p.embeddings})
        rows.append(
            {
                "name": p.name,
                "embeddings": len(p.embeddings),
                "nodes": nodes,
                "added": max(e.added for e in p.embeddings),
                "version": g.version,
            }
        )
    return rows


def person(g: Gallery, name: str) -> dict:
    p = next((p for p in g.people if p.name.casefold() == name.casefold()), None)
    if p is None:
        raise LookupError(f"nobody called {name[:70]!r} is in the gallery")
    return {
        "name": p.name,
        "version": g.version,
        "embeddings": [
            {"node": e.node, "node_name": e.node_name, "source": e.source, "added": e.added} for e in p.embeddings
        ],
    }


def read(path: Path) -> Gallery:
    """The gallery of a file (an empty one when there is no file), checked; ValueError when it is bad."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Gallery()
    return check(json.loads(raw))


class GalleryStore:
    """``home/state/people.json``: the newest gallery this node holds (written whole, atomically)."""

    def __init__(self, home: str | Path) -> None:
        self.path = Path(home) / "state" / "people.json"
        self._lock = threading.Lock()  # replicas keep galleries from worker threads: one at a time
        self._current = self._load()

    def _load(self) -> Gallery:
        try:
            return read(self.path)
        except ValueError as exc:  # GalleryError and JSON errors are ValueErrors
            set_aside(self.path, str(exc), "the people gallery (the master sends it again)", log)
            return Gallery()

    @property
    def current(self) -> Gallery:
        return self._current

    def newer(self, g: Gallery) -> bool:
        return g.key() > self._current.key()

    def keep(self, g: Gallery) -> bool:
        """Keep `g` (checked) if it is newer than what this node holds; True if it was kept."""
        g = check(g)
        with self._lock:
            if not self.newer(g):
                return False
            atomic_write(self.path, msgspec.json.encode(g), mode=0o600)  # biometric data: the owner only
            self._current = g
            return True


def home_gallery(home: Path) -> Gallery:
    """The gallery a node holds, read from its file (for the identify job type, in a worker thread)."""
    return _cache.get(Path(home) / "state" / "people.json")


class _FileCache:
    """The last gallery read per file, re-read when the file changes (a commit replaces it whole)."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[int, Gallery]] = {}

    def get(self, path: Path) -> Gallery:
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            return Gallery()
        hit = self._seen.get(path)
        if hit and hit[0] == stamp:
            return hit[1]
        g = read(path)
        self._seen[path] = (stamp, g)
        return g


_cache = _FileCache()
