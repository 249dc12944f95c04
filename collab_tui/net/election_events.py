"""Typed outputs of the sans-IO election (:mod:`collab_tui.net.election`).

``Election.take_events()`` yields :class:`TermChanged`, :class:`RoleChanged` and :class:`MasterChanged`;
``Election.take_outbox()`` yields :class:`Outgoing`. Frozen, slotted, compared by value: drivers ``match``
on them, tests compare against them.

Driver contract (see election.py): drain ``take_events()`` first and durably persist the latest
:class:`TermChanged` before sending anything from ``take_outbox()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["TermChanged", "RoleChanged", "MasterChanged", "MessageRefused", "ElectionEvent", "Outgoing"]


@dataclass(frozen=True, slots=True)
class TermChanged:
    """The term changed (adopted from a peer or taken as a new master): persist it before sending."""

    term: int


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """Our role changed: ``"follower"``, ``"candidate"`` or ``"master"``."""

    role: str


@dataclass(frozen=True, slots=True)
class MasterChanged:
    """The agreed master changed (``master_id`` may be ourself, or ``None`` when it is declared dead or
    leaves); also emitted when our own reign gets a new term."""

    master_id: str | None
    term: int


@dataclass(frozen=True, slots=True)
class MessageRefused:
    """A peer's election message or claim that was not obeyed: ``kind`` is the message type, ``reason`` a
    short key ("term jump", "outranked") for a rate-limited log line."""

    peer_id: str
    kind: str
    term: int
    reason: str


ElectionEvent = TermChanged | RoleChanged | MasterChanged | MessageRefused


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send: to ``dest`` (a peer id), or to every alive peer when ``dest`` is ``None``."""

    dest: str | None
    msg: dict[str, Any]
