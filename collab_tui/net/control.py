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

Heartbeats, small and large clusters (`heartbeat_targets`): up to `MESH_LIMIT` nodes every node heartbeats
every other node each interval (a full mesh: 4 × (n - 1) messages a second, cheap at that size, and each
node hears every other directly). Past it, heartbeats fan in: a follower heartbeats the master each interval
and, every `PEER_EVERY` intervals, one other peer in turn (so every pair still hears each other now and
then); the master heartbeats everyone, its heartbeat naming the nodes it finds dead (``dead``). A follower
takes the master's heartbeat as word that every other peer it holds alive still is (the master hears them
all), unless it names them dead. While the master is suspect or there is none, every node goes back to the
full mesh, so that the nodes' views of each other stay fresh for the succession. Idle traffic is then about
4 + 4 / `PEER_EVERY` messages a second per follower and 4 × (n - 1) for the master: about 9 a node on
average at 100 nodes.

Indirect probes (large clusters): when the master turns suspect (3 silent intervals) a follower asks
`PROBES` other peers whether they still hear it (``mb.ask``; ``mb.seen`` answers). When every one that
answers heard nothing from it for 2 intervals either, the master is dead at once (not after 6 intervals);
one that still hears it keeps it alive (a link of ours is down, not the master). The succession then
follows within a message delay.

Outputs: ``take_peer_events()`` (membership events, for the UIs), ``take_events()`` (election events: persist
a `TermChanged` before sending anything), ``take_outbox()`` (election messages, ``dest=None`` broadcast),
``take_drops()``; ``heartbeat()`` is what this node reports in its own heartbeat.
"""

from __future__ import annotations

import random
from typing import Any

from .election import Election, ElectionEvent, Outgoing
from .membership import Membership, PeerAlive, PeerDead, PeerEvent, PeerJoined, PeerLeft, PeerState, PeerSuspect

MESH_LIMIT = 8  # up to this many nodes (self included): full-mesh heartbeats
PEER_EVERY = 4  # past it, a follower heartbeats one other peer (in turn) every this many intervals
MAX_DEAD_LISTED = 1024  # nodes a master's heartbeat names dead
PROBES = 3  # peers asked whether they still hear a suspect master (large clusters)


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
        self._turn = 0  # round-robin over the other peers (fan-in mode)
        self._beats = 0  # heartbeats sent (fan-in mode: every PEER_EVERY-th also goes to one other peer)
        self._asked: dict[str, set[str]] = {}  # suspect master -> peers asked who have not answered yet
        self._outbox: list[Outgoing] = []  # probes and their answers (the election has its own)

    @property
    def self_id(self) -> str:
        return self.election.self_id

    # -- inputs ------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self.election.start(now)

    def hello(self, peer: str, name: str, addr: str, priority: int, now: float, boot: str = "") -> None:
        self.membership.on_hello(peer, name, addr, priority, now, boot)
        self._pump(now)

    def heartbeat_in(self, peer: str, msg: dict[str, Any], now: float) -> None:
        self.membership.on_heartbeat(peer, msg, now)
        if peer == self.election.master_id and msg.get("role") == "master" and self.fan_in():
            self._vouched(peer, msg.get("dead") or [], now)
        grant = msg.get("grant")
        self.election.on_report(
            peer, msg["role"], msg["term"], msg.get("master"), now, tuple(grant) if grant is not None else None
        )

    def probe_in(self, peer: str, msg: dict[str, Any], now: float) -> None:
        """``mb.ask`` (answer whether we hear ``about``) or ``mb.seen`` (an answer to our probe)."""
        about = msg["about"]
        if msg["t"] == "mb.ask":
            info = self.membership.get(about)
            # a live master heartbeats everyone every interval: two intervals of silence here too is no luck
            fresh = info is not None and now - info.last_seen < 2 * self.membership.interval
            self._outbox.append(Outgoing(peer, {"t": "mb.seen", "about": about, "fresh": fresh}))
            return
        waiting = self._asked.get(about)
        if waiting is None or peer not in waiting:
            return
        if msg["fresh"]:
            del self._asked[about]  # someone still hears it: our own link is down, not the master
            return
        waiting.discard(peer)
        if not waiting:
            del self._asked[about]
            info = self.membership.get(about)
            if info is not None and info.state is PeerState.SUSPECT:
                self.membership.on_gone(about, now)  # nobody hears it: dead now, not after 6 intervals
                self._pump(now)

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

    def _vouched(self, master: str, dead: list[str], now: float) -> None:
        """The master's heartbeat: every peer we hold alive and it does not name dead is alive still."""
        named = set(dead)
        for p in self.membership.peers():
            if p.node_id == master or p.state is PeerState.DEAD:
                continue
            if p.node_id in named:
                if now - p.last_seen > 2 * self.membership.interval:  # unless we hear it ourselves
                    self.membership.on_gone(p.node_id, now)
            else:
                self.membership.on_seen(p.node_id, now)
        self._pump(now)

    def _pump(self, now: float) -> None:
        for ev in self.membership.take_events():
            info = self.membership.get(ev.node_id)
            if (
                isinstance(ev, PeerSuspect)
                and ev.node_id == self.election.master_id
                and self.fan_in()
                and ev.node_id not in self._asked
            ):
                self._ask_about(ev.node_id)
            match ev:
                case PeerJoined() | PeerAlive() if info is not None:
                    self.election.peer_up(ev.node_id, info.priority, now)
                case PeerDead():
                    self.election.peer_down(ev.node_id, now)
                    self._drops.append(ev.node_id)
                case PeerLeft():
                    self.election.peer_down(ev.node_id, now)
            self._peer_events.append(ev)

    def _ask_about(self, master: str) -> None:
        # alive or suspect: a peer only the master vouched for turns suspect with it, and can still answer
        peers = [p.node_id for p in self.membership.peers() if p.node_id != master and p.state is not PeerState.DEAD]
        if not peers:
            return
        start = self._turn % len(peers)
        asked = {peers[(start + k) % len(peers)] for k in range(min(PROBES, len(peers)))}
        self._asked[master] = set(asked)
        for p in sorted(asked):
            self._outbox.append(Outgoing(p, {"t": "mb.ask", "about": master}))

    # -- outputs and queries -------------------------------------------------------------
    def next_deadline(self) -> float | None:
        times = [t for t in (self.membership.next_deadline(), self.election.next_deadline()) if t is not None]
        return min(times) if times else None

    def heartbeat(self) -> dict[str, Any]:
        """What this node reports of the election in its heartbeat (a report: it grants nothing); a master of
        a large cluster also names the nodes it finds dead."""
        e = self.election
        out: dict[str, Any] = {"role": e.role, "term": e.term, "master": e.master_id, "grant": list(e.grant)}
        if e.role == "master" and self.fan_in():
            dead = [p.node_id for p in self.membership.peers() if p.state is PeerState.DEAD]
            out["dead"] = dead[:MAX_DEAD_LISTED]
        return out

    def fan_in(self) -> bool:
        """Past `MESH_LIMIT` known nodes heartbeats fan in to the master (see the module docstring)."""
        return len(self.membership.peers()) + 1 > MESH_LIMIT

    def heartbeat_targets(self, connected: list[str]) -> list[str]:
        """Whom to send this interval's heartbeat, among the peers with an open connection (sorted)."""
        e = self.election
        master = e.master_id
        if not self.fan_in() or e.role == "master" or master is None or master not in connected:
            return connected
        info = self.membership.get(master)
        if info is None or info.state is not PeerState.ALIVE:
            return connected  # the master is suspect: everyone hears everyone for the succession
        self._beats += 1
        others = [p for p in connected if p != master]
        if not others or self._beats % PEER_EVERY:
            return [master]
        self._turn += 1
        return [master, others[self._turn % len(others)]]

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
        out, self._outbox = self._outbox, []
        return self.election.take_outbox() + out

    def take_drops(self) -> list[str]:
        out, self._drops = self._drops, []
        return out
