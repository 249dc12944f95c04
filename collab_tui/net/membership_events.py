"""Typed events of the sans-IO membership (:mod:`collab_tui.net.membership`), drained with
``Membership.take_events()``. Frozen, slotted, compared by value (type included: ``PeerDead("a")`` is not
``PeerLeft("a")``).

Each class names its ``change``: the string the runtime publishes as the ``peer`` event's ``change`` and
logs (``join``, ``suspect``, ``dead``, ``alive``, ``restart``, ``leave``). UIs depend on these strings: keep them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = ["PeerEvent", "PeerJoined", "PeerSuspect", "PeerDead", "PeerAlive", "PeerRestarted", "PeerLeft"]


@dataclass(frozen=True, slots=True)
class PeerEvent:
    """A liveness change of one peer (base class: use the subclasses)."""

    node_id: str
    change: ClassVar[str] = ""


@dataclass(frozen=True, slots=True)
class PeerJoined(PeerEvent):
    """First time this peer is known."""

    change: ClassVar[str] = "join"


@dataclass(frozen=True, slots=True)
class PeerSuspect(PeerEvent):
    """Silent for a while, or its connection closed (``closed``: what was sent on it may never arrive)."""

    closed: bool = False
    change: ClassVar[str] = "suspect"


@dataclass(frozen=True, slots=True)
class PeerDead(PeerEvent):
    """Silent for too long, or its process is gone."""

    change: ClassVar[str] = "dead"


@dataclass(frozen=True, slots=True)
class PeerAlive(PeerEvent):
    """Back from SUSPECT or DEAD."""

    change: ClassVar[str] = "alive"


@dataclass(frozen=True, slots=True)
class PeerRestarted(PeerEvent):
    """Its process started again (its HELLO names another boot): what it held in memory is gone, even if
    it came back before anyone found it dead."""

    change: ClassVar[str] = "restart"


@dataclass(frozen=True, slots=True)
class PeerLeft(PeerEvent):
    """Graceful leave (state DEAD; no separate :class:`PeerDead`)."""

    change: ClassVar[str] = "leave"
