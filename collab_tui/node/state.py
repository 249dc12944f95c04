"""Small persisted node state (term, known members), written atomically: temp file, fsync, rename.

Each file has a declared schema (`NodeStateFile`, `MembersFile`). A file that does not parse or validate
is never silently rewritten: it is moved aside (``node.json.bad-<unix time>``) with one warning that says
what is lost and how it comes back (the term and the members are learnt again from the peers), and the
node starts from empty state.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import msgspec

from ..fsutil import (
    atomic_write,  # noqa: F401  (re-exported: callers import it from here)
    set_aside,
)
from ..net.messages import Member
from ..net.schema import Term

log = logging.getLogger("collab.state")

MAX_KNOWN_MEMBERS = 4096


class NodeStateFile(msgspec.Struct, kw_only=True):
    """``state/node.json``: the highest term this node has seen or used (persisted before it is used)."""

    term: Term = 0


class MembersFile(msgspec.Struct, kw_only=True):
    """``state/members.json``: the members this node knows, to redial after a restart."""

    members: Annotated[list[Member], msgspec.Meta(max_length=MAX_KNOWN_MEMBERS)] = []


class JsonState:
    """A dict persisted as one JSON file, validated against ``schema`` when it is read."""

    def __init__(self, path: Path, schema: type[msgspec.Struct] | None = None, lost: str = "") -> None:
        self.path = path
        self.schema = schema
        self.data: dict = {}
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read %s: %s", path, exc)
            return
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                raise ValueError(f"expected an object, got {type(obj).__name__}")
            if schema is not None:
                obj = msgspec.to_builtins(msgspec.convert(obj, schema))
            self.data = obj
        except (ValueError, UnicodeDecodeError, msgspec.ValidationError) as exc:
            set_aside(path, str(exc), lost, log)

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self.save()

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode())
