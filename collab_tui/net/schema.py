"""Sans-IO: peer messages declared once, with typed, bounded fields and who may send them.

Mutual TLS keeps strangers out; it says nothing about what a member may ask. Every peer message type is a
`PeerMessage` (a msgspec Struct tagged by its ``t``) declaring:

- its fields, with their types and bounds (lengths, ranges, list sizes, name patterns), so a message is
  validated once, at the connection, before any handler runs (`validate`);
- ``SENDER``, who may send it: `MEMBER` (any authenticated member), `MASTER` (only the node the receiver
  itself holds as master, in the receiver's term: assignments, commits, run state). Checks that need a
  service's state (a result only from the worker the item was assigned to) are made by that service and
  named in the type's docstring.

A handler receives the validated message as a plain dict: only the declared fields (with their defaults),
``t`` included, and blob bytes (``data``) as bytes. What fails is refused with a `Refused` naming the
type and the field; values are never echoed beyond a short prefix (`clip`).

`RefusalQuiet` keeps the log to one line per (type, reason) per interval, whatever a peer sends.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

import msgspec

__all__ = [
    "MEMBER",
    "MASTER",
    "PeerMessage",
    "Refused",
    "validate",
    "admit",
    "clip",
    "RefusalQuiet",
    "Term",
    "NodeId",
    "Name",
    "Text",
    "Count",
    "Sha256",
    "MAX_TERM",
]

MEMBER = "member"  # any authenticated, non-revoked member
MASTER = "master"  # only the node the receiver holds as master, with the receiver's current term

MAX_TERM = 2**53  # far above any real term; keeps every term an exact JSON number
MAX_COUNT = 2**53

Term = Annotated[int, msgspec.Meta(ge=0, le=MAX_TERM)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
NodeId = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
# a name that may become a file name: letters, digits, dot, dash, underscore; no separators, no "..".
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")]
Text = Annotated[str, msgspec.Meta(max_length=300)]
Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]

CLIP = 40  # characters of a peer's value that may appear in a log line or an error


def clip(value: object, n: int = CLIP) -> str:
    """A short, printable prefix of a peer's value (for a log line or an error)."""
    text = value if isinstance(value, str) else repr(value)
    text = re.sub(r"[^\x20-\x7e]", "?", text[: n + 1])
    return text if len(text) <= n else text[:n] + "..."


class Refused(ValueError):
    """A peer message that is refused: ``kind`` says why in one word (the log key), ``str()`` in full."""

    def __init__(self, msg_type: str, kind: str, detail: str) -> None:
        super().__init__(f"{msg_type}: {detail}")
        self.msg_type = msg_type
        self.kind = kind


class PeerMessage(msgspec.Struct, kw_only=True, tag_field="t", forbid_unknown_fields=False):
    """Base of every peer message type. Subclasses set ``tag="..."`` (the wire ``t``) and ``SENDER``."""

    SENDER: ClassVar[str] = MEMBER

    @classmethod
    def type_name(cls) -> str:
        tag = cls.__struct_config__.tag
        return tag if isinstance(tag, str) else cls.__name__


_FIELD = re.compile(r"at `\$(\.[^`]*)?`")


def _field_of(error: str) -> str:
    m = _FIELD.search(error)
    path = (m.group(1) or "")[1:] if m else ""
    return path or "(message)"


def validate(schema: type[PeerMessage], msg: dict[str, Any]) -> dict[str, Any]:
    """The declared fields of ``msg`` as a plain dict (defaults filled, unknown fields dropped, blob bytes
    kept), or `Refused` naming the type and the field."""
    name = schema.type_name()
    try:
        obj = msgspec.convert(msg, schema)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = _field_of(text)
        reason = text.split(" - at ")[0]
        key = re.sub(r"\[\d+\]", "[]", field)  # one log key per field, whatever the index
        raise Refused(name, f"field {key}", f"field {clip(field, 60)!r}: {clip(reason, 120)}") from None
    except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - convert raises ValidationError
        raise Refused(name, "malformed", clip(str(exc), 120)) from None
    out: dict[str, Any] = msgspec.to_builtins(obj, builtin_types=(bytes, bytearray, memoryview))
    return out


class RefusalQuiet:
    """Sans-IO: may a refusal line be logged at ``now``? At most one per key per ``interval``; the keys are
    bounded (past ``max_keys`` everything shares one key), so a peer that varies what it sends cannot grow
    this or the log."""

    OTHER = ("(other)", "(other)")

    def __init__(self, interval: float = 10.0, max_keys: int = 512) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._opened: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def note(self, msg_type: str, kind: str, now: float) -> int | None:
        """None: stay quiet (counted); else log now, mentioning the returned count held back since."""
        key = (clip(msg_type, 40), clip(kind, 60))
        if key not in self._opened and len(self._opened) >= self.max_keys:
            key = self.OTHER
        if now - self._opened.get(key, float("-inf")) < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._opened[key] = now
        return self._held.pop(key, 0)


def admit(
    schema: type[PeerMessage], sender: str, msg: dict[str, Any], master_id: str | None, term: int
) -> dict[str, Any]:
    """Validate ``msg`` (`validate`) and check its sender against ``schema.SENDER``: a `MASTER` message is
    admitted only from ``master_id`` (the node the receiver holds as master) and only in the receiver's
    own ``term``. Returns the clean message; raises `Refused`."""
    if schema.SENDER == MASTER and (not master_id or sender != master_id):  # who, before what
        raise Refused(schema.type_name(), "sender", f"sent by {sender[:12]}, which is not this node's master")
    clean = validate(schema, msg)
    if schema.SENDER == MASTER:
        name = schema.type_name()
        if clean.get("term") != term:
            raise Refused(name, "term", f"term {clip(clean.get('term'))} is not this node's term {term}")
    return clean
