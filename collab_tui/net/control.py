"""Sans-IO control plane of one node: membership and election glued by the rules the runtime follows, so
that the daemon (node/runtime.py) and the simulator (collab_tui/sim) run the same code.

Rules (they used to live in the runtime's asyncio driver):

- a peer's hello (authenticated connection) makes it ALIVE in the membership with the priority the signed
  records give it; a membership join or comeback is an election ``peer_up``, a death or a graceful leave a
  ``peer_down``;
- a heartbeat is stored by the membership and is a report to the election (role, term, master);
- ``el.leave`` marks the sender as left before the election handles it;
- a closed connection makes the peer SUSPECT; a peer whose address refuses connections is DEAD at once;
- a peer found DEAD while its connection still looks open is to be dropped by the driver (``take_drops``):
  a cut cable or a partition, which TCP would take many seconds to notice;
- ``tick`` ages the membership first, then fires the election's timers;
- the master may commit only while it sees a majority alive and a majority granted it its term.

Outputs: ``take_peer_events()`` (membership events, for the UIs), ``take_events()`` (election events: persist
a `TermChanged` before sending anything), ``take_outbox()`` (election messages, ``dest=None`` broadcast),
``take_drops()``; ``heartbeat()`` is what this node reports in its own heartbeat.
"""

from __future__ import annotations

import random
from typing import Any

from .election import Election, ElectionEvent, Outgoing
from .membership import Membership, PeerAlive, PeerDead, PeerEvent, PeerJoined, PeerLeft


class ControlCore:
    def __init__(
        self,
        self_id: str,
        priority: int,
        term: int = 0,
        *,
        interval: float = 0.25,
        suspect_after: int = 3,
        dead_after: int = 6,
        preempt: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.membership = Membership(self_id, interval=interval, suspect_after=suspect_after, dead_after=dead_after)
        self.election = Election(
            self_id,
            priority,
            term=term,
            preempt=preempt,
            rng=rng if rng is not None else random.Random(),
            answer_timeout=max(0.15, interval),
            coordinator_timeout=max(0.5, 3 * interval),
        )
        self._peer_events: list[PeerEvent] = []
        self._drops: list[str] = []

    @property
    def self_id(self) -> str:
        return self.election.self_id

    # -- inputs ------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self.election.start(now)

    def hello(self, peer: str, name: str, addr: str, priority: int, now: float) -> None:
        self.membership.on_hello(peer, name, addr, priority, now)
        self._pump(now)

    def heartbeat_in(self, peer: str, msg: dict[str, Any], now: float) -> None:
        self.membership.on_heartbeat(peer, msg, now)
        grant = msg.get("grant")
        self.election.on_report(
            peer, msg["role"], msg["term"], msg.get("master"), now, tuple(grant) if grant is not None else None
        )

    def election_in(self, peer: str, msg: dict[str, Any], now: float) -> None:
        if msg.get("t") == "el.leave":
            self.membership.on_leave(peer, now)
            self._pump(now)
        self.election.on_message(peer, msg, now)

    def seen(self, peer: str, now: float) -> None:
        self.membership.on_seen(peer, now)

    def disconnected(self, peer: str, now: float) -> None:
        self.membership.on_disconnect(peer, now)
        self._pump(now)

    def gone(self, peer: str, now: float) -> None:
        self.membership.on_gone(peer, now)
        self._pump(now)

    def leave(self, now: float) -> None:
        self.election.leave(now)

    def tick(self, now: float) -> None:
        self.membership.tick(now)
        self._pump(now)
        self.election.tick(now)

    def _pump(self, now: float) -> None:
        for ev in self.membership.take_events():
            info = self.membership.get(ev.node_id)
            match ev:
                case PeerJoined() | PeerAlive() if info is not None:
                    self.election.peer_up(ev.node_id, info.priority, now)
                case PeerDead():
                    self.election.peer_down(ev.node_id, now)
                    self._drops.append(ev.node_id)
                case PeerLeft():
                    self.election.peer_down(ev.node_id, now)
            self._peer_events.append(ev)

    # -- outputs and queries -------------------------------------------------------------
    def next_deadline(self) -> float | None:
        times = [t for t in (self.membership.next_deadline(), self.election.next_deadline()) if t is not None]
        return min(times) if times else None

    def heartbeat(self) -> dict[str, Any]:
        """What this node reports of the election in its heartbeat (a report: it grants nothing)."""
        e = self.election
        return {"role": e.role, "term": e.term, "master": e.master_id, "grant": list(e.grant)}

    def can_commit(self) -> bool:
        """The master may commit cluster state: it sees a strict majority alive, and a strict majority
        granted it its term (net/election.py, rules 10 and 11)."""
        return self.election.can_commit(len(self.membership.alive_ids()) + 1) and self.election.granted_majority()

    def take_peer_events(self) -> list[PeerEvent]:
        out, self._peer_events = self._peer_events, []
        return out

    def take_events(self) -> list[ElectionEvent]:
        return self.election.take_events()

    def take_outbox(self) -> list[Outgoing]:
        return self.election.take_outbox()

    def take_drops(self) -> list[str]:
        out, self._drops = self._drops, []
        return out
