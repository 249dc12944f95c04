"""The simulator's event loop: virtual nodes running the real `ControlCore`, and the driver rules of the
daemon (node/runtime.py, node/peers.py) on a virtual clock:

- a connection is a pair of ends; connecting delivers a hello to both (each then sends its heartbeat);
- every ``interval`` a node broadcasts its heartbeat on its open connections; its ticker runs every
  `TICK` s (the runtime's loop wakes at least that often), and after every message it handles;
- a message travels only on a connection its sender holds, arrives only where the receiver holds one
  (else the receiver's kernel resets it: the sender sees its end close);
- a node that drops a connection (membership found the peer dead) closes its end; the peer notices when
  that close reaches it; a process crash closes every end it had (peers notice, then find nothing listening:
  ``gone``), a silent death (power, cable) closes nothing;
- every `REDIAL` s each node dials the nodes it has no connection to (the runtime's redial loop);
- a restarted node starts from its persisted term, with fresh memory;
- services beside the control plane (``apps``: a federated run, sim/runs.py) get every node's ticks and
  the messages of their kinds.

Each node's clock drifts by its own factor: its cores see ``t * (1 + drift)``. Ties in time break by the
order events were scheduled, so a run is a function of its seed.
"""

from __future__ import annotations

import heapq
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..net.control import ControlCore
from ..net.election import MasterChanged, Outgoing, RoleChanged, TermChanged
from ..net.membership import heartbeat_fields
from .network import Network

TICK = 0.05
REDIAL = 0.5
PROBE = 0.01  # a refused connection to a crashed node's port
RETRANSMIT = 0.2  # seconds between a kernel's retransmissions on a cut link
SERVICES = ("fl.", "job.")  # the services' messages (and their replies, "re"): as on TCP (network.py, `stream`)


@dataclass
class SimNode:
    id: str
    rng: random.Random
    interval: float
    drift: float = 0.0
    up: bool = False
    term: int = 0  # persisted (TermChanged is written before anything of that term is sent)
    incarnation: int = 0
    conns: set[str] = field(default_factory=set)
    core: ControlCore | None = None

    def clock(self, t: float) -> float:
        return t * (1.0 + self.drift)


class SimCluster:
    def __init__(
        self,
        n: int,
        seed: int,
        interval: float = 0.25,
        network: Network | None = None,
        core_factory: Callable[..., ControlCore] = ControlCore,
    ) -> None:
        self.n, self.seed, self.interval = n, seed, interval
        self.rng = random.Random(seed)
        self.net = network or Network(random.Random(seed * 7919 + 1))
        self.core_factory = core_factory
        self.ids = [f"n{i:03d}" for i in range(n)]
        self.nodes = {nid: SimNode(nid, random.Random(seed * 1009 + i), interval) for i, nid in enumerate(self.ids)}
        self.now = 0.0
        self._queue: list[tuple[float, int, str, tuple]] = []
        self._seq = 0
        self.trace: list[str] = []
        self.sent: Counter[str] = Counter()  # message kind -> count (all nodes)
        self.sent_bytes = 0
        self.observers: list[Callable[[SimCluster, str], None]] = []
        self.apps: list[
            Any
        ] = []  # services on every node (sim/runs.py): tick(nid), message(src, dst, msg), crashed(nid)

    # -- scheduling -------------------------------------------------------------------------
    def at(self, t: float, kind: str, *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, kind, args))

    def after(self, dt: float, kind: str, *args: Any) -> None:
        self.at(self.now + dt, kind, *args)

    def log(self, text: str) -> None:
        self.trace.append(f"{self.now:9.4f} {text}")

    def run_until(self, t_end: float) -> None:
        while self._queue and self._queue[0][0] <= t_end:
            t, _, kind, args = heapq.heappop(self._queue)
            self.now = t
            getattr(self, f"_on_{kind}")(*args)
        self.now = t_end

    # -- life cycle -------------------------------------------------------------------------
    def start_all(self, stagger: float = 0.2) -> None:
        for nid in self.ids:
            self.at(self.rng.random() * stagger, "boot", nid)
        self.at(REDIAL, "redial")

    def _new_core(self, node: SimNode) -> ControlCore:
        core = self.core_factory(node.id, 0, term=node.term, interval=self.interval, rng=node.rng)
        core.election.set_quorum_size(self.n)
        return core

    def _on_boot(self, nid: str) -> None:
        node = self.nodes[nid]
        if node.up:
            return
        node.up, node.incarnation, node.conns = True, node.incarnation + 1, set()
        node.core = self._new_core(node)
        node.core.start(node.clock(self.now))
        self.log(f"{nid} up (term {node.term})")
        for other in self.ids:
            if other != nid:
                self._dial(nid, other)
        self.after(self.rng.random() * self.interval, "hb", nid, node.incarnation)
        self.after(TICK, "tick", nid, node.incarnation)
        self._flush(node)

    def crash(self, nid: str, silent: bool = False) -> None:
        """The process dies: peers see its connections close, then nothing listening (unless ``silent``:
        power or cable, nothing is closed)."""
        node = self.nodes[nid]
        if not node.up:
            return
        self.log(f"{nid} {'dies silently' if silent else 'crashes'}")
        node.up, node.core = False, None
        for app in self.apps:
            app.crashed(nid)
        for peer in sorted(node.conns):
            if not silent and self.net.link(nid, peer):
                self.after(self.net.delay, "closed", peer, nid)
                self.after(self.net.delay + PROBE, "gone", peer, nid)
        node.conns = set()

    def restart(self, nid: str) -> None:
        self.at(self.now, "boot", nid)

    def leave(self, nid: str) -> None:
        """Graceful stop: `el.leave` to every peer, then the process ends."""
        node = self.nodes[nid]
        if node.up and node.core is not None:
            node.core.leave(node.clock(self.now))
            self._flush(node)
            self.crash(nid)

    # -- connections ------------------------------------------------------------------------
    def _dial(self, a: str, b: str) -> None:
        na, nb = self.nodes[a], self.nodes[b]
        if not (na.up and nb.up) or b in na.conns or not self.net.both_ways(a, b):
            return
        na.conns.add(b)
        nb.conns.add(a)
        d = self.net.delay * 3  # TCP + TLS handshake
        self.after(d, "hello", a, b, na.incarnation, nb.incarnation)
        self.after(d, "hello", b, a, nb.incarnation, na.incarnation)

    def _on_redial(self) -> None:
        for a in self.ids:
            if self.nodes[a].up:
                for b in self.ids:
                    if b != a and b not in self.nodes[a].conns:
                        self._dial(a, b)
        self.after(REDIAL, "redial")

    def _on_hello(self, at: str, peer: str, inc_at: int, inc_peer: int) -> None:
        node = self.nodes[at]
        if not self._live(at, inc_at) or self.nodes[peer].incarnation != inc_peer or peer not in node.conns:
            return
        assert node.core is not None
        node.core.hello(peer, peer, peer, 0, node.clock(self.now), boot=f"{self.nodes[peer].incarnation:x}")
        self._send(node, peer, self._heartbeat(node))
        self._flush(node)

    def _on_closed(self, at: str, peer: str) -> None:
        node = self.nodes[at]
        if not node.up or peer not in node.conns or node.core is None:
            return
        node.conns.discard(peer)
        node.core.disconnected(peer, node.clock(self.now))
        self._flush(node)

    def _on_gone(self, at: str, peer: str) -> None:
        node = self.nodes[at]
        if node.up and node.core is not None and not self.nodes[peer].up and peer not in node.conns:
            node.core.gone(peer, node.clock(self.now))
            self._flush(node)

    # -- messages ---------------------------------------------------------------------------
    def _heartbeat(self, node: SimNode) -> dict:
        assert node.core is not None
        hb = node.core.heartbeat()
        msg = heartbeat_fields(hb["role"], hb["term"], 2, 0.5, 1 << 30, 0, ["faces", "train"], None)
        msg["master"], msg["grant"] = hb["master"], hb["grant"]
        if "dead" in hb:
            msg["dead"] = hb["dead"]
        return msg

    def _send(self, node: SimNode, dest: str, msg: dict, size: int | None = None) -> None:
        if dest not in node.conns:
            return
        self.sent[msg["t"]] += 1
        self.sent_bytes += size if size is not None else len(json.dumps(msg, separators=(",", ":")))
        if msg["t"] == "re" or msg["t"].startswith(SERVICES):
            self._on_stream(node.id, dest, msg, node.incarnation)
            return
        for dt in self.net.transit(node.id, dest):
            self.after(dt, "deliver", node.id, dest, msg, node.incarnation)

    def _on_stream(self, src: str, dst: str, msg: dict, inc_src: int) -> None:
        """A service's message on its TCP connection: retransmitted while the link is cut, for as long as
        the sender keeps that connection open."""
        if not self._live(src, inc_src) or dst not in self.nodes[src].conns:
            return
        at = self.net.stream(src, dst, self.now)
        if at is None:
            self.after(RETRANSMIT, "stream", src, dst, msg, inc_src)
        else:
            self.at(at, "deliver", src, dst, msg, inc_src)

    def _on_deliver(self, src: str, dst: str, msg: dict, inc_src: int) -> None:
        node = self.nodes[dst]
        if not node.up or node.core is None or self.nodes[src].incarnation != inc_src:
            return
        if src not in node.conns:  # our end is closed: the kernel resets the sender's end
            if self.nodes[src].up and self.net.link(dst, src):
                self.after(self.net.delay, "closed", src, dst)
            return
        now = node.clock(self.now)
        node.core.seen(src, now)
        if msg["t"] == "hb":
            node.core.heartbeat_in(src, msg, now)
        elif msg["t"].startswith("mb."):
            node.core.probe_in(src, msg, now)
        elif msg["t"] == "re" or msg["t"].startswith(SERVICES):
            for app in self.apps:
                app.message(src, dst, msg)
        else:
            node.core.election_in(src, msg, now)
        self._flush(node)

    def _on_hb(self, nid: str, inc: int) -> None:
        node = self.nodes[nid]
        if not self._live(nid, inc):
            return
        msg = self._heartbeat(node)
        size = len(json.dumps(msg, separators=(",", ":")))
        assert node.core is not None
        for peer in node.core.heartbeat_targets(sorted(node.conns)):
            self._send(node, peer, msg, size)
        self.after(self.interval, "hb", nid, inc)

    def _on_tick(self, nid: str, inc: int) -> None:
        node = self.nodes[nid]
        if not self._live(nid, inc):
            return
        assert node.core is not None
        node.core.tick(node.clock(self.now))
        self._flush(node)
        for app in self.apps:
            app.tick(nid)
        self.after(TICK, "tick", nid, inc)

    def _on_call(self, fn: Callable[[], None]) -> None:
        fn()

    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        self.at(t, "call", fn)

    def _live(self, nid: str, inc: int) -> bool:
        node = self.nodes[nid]
        return node.up and node.incarnation == inc and node.core is not None

    def _flush(self, node: SimNode) -> None:
        core = node.core
        if core is None:
            return
        for ev in core.take_events():
            match ev:
                case TermChanged(term=term):
                    node.term = term
                case MasterChanged(master_id=master, term=term):
                    self.log(f"{node.id} master={master} term={term}")
                case RoleChanged(role=role):
                    self.log(f"{node.id} role={role} term={core.election.term}")
        peer_events = core.take_peer_events()
        for app in self.apps:
            app.peer_events(node.id, peer_events)
        for peer in core.take_drops():
            if peer in node.conns:
                node.conns.discard(peer)
                if self.nodes[peer].up and self.net.link(node.id, peer):
                    self.after(self.net.delay, "closed", peer, node.id)
        for out in core.take_outbox():
            match out:
                case Outgoing(dest=None, msg=msg):
                    for peer in sorted(node.conns):
                        self._send(node, peer, msg)
                case Outgoing(dest=dest, msg=msg):
                    self._send(node, dest, msg)
        for observe in self.observers:
            observe(self, node.id)

    # -- views ------------------------------------------------------------------------------
    def up_ids(self) -> list[str]:
        return [nid for nid in self.ids if self.nodes[nid].up]

    def agreement(self) -> str | None:
        """The master every up node follows, if they all follow the same up master that rules."""
        up = [self.nodes[nid] for nid in self.up_ids()]
        if not up or any(n.core is None for n in up):
            return None
        masters = {n.core.election.master_id for n in up if n.core is not None}
        if len(masters) != 1:
            return None
        (m,) = masters
        if m is None or not self.nodes[m].up:
            return None
        mc = self.nodes[m].core
        return m if mc is not None and mc.election.role == "master" else None
