"""Typed verdicts of the sans-IO round rule (:meth:`collab_tui.training.rounds.RoundTracker.decide`).
Frozen, slotted, compared by value: the coordinator ``match``es on them, tests compare against them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RoundWaiting", "RoundReady", "RoundFailed", "RoundVerdict"]


@dataclass(frozen=True, slots=True)
class RoundWaiting:
    """Not every selected client has answered and the deadline is not reached: keep collecting."""


@dataclass(frozen=True, slots=True)
class RoundReady:
    """Close round ``round`` and aggregate its updates; ``stragglers``: node -> why it is not in
    (its recorded reason, or ``"deadline"``)."""

    round: int
    stragglers: dict[str, str]


@dataclass(frozen=True, slots=True)
class RoundFailed:
    """Round ``round`` closed with ``valid`` updates, fewer than the ``needed`` ``min_clients``: retry it."""

    round: int
    valid: int
    needed: int
    stragglers: dict[str, str]


RoundVerdict = RoundWaiting | RoundReady | RoundFailed
