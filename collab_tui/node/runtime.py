"""The node runtime: composes identity, transport, discovery, membership and election.

The runtime never imports Textual or TensorFlow. Frontends (CLI, TUI) talk to it through the control
socket (`control.py`) or, in-process, through its methods and its event bus. Services (jobs, training)
never see it: each gets a `ServiceContext` (`context.py`) through which it registers handlers for its
wire messages, subscribes to the event bus (`peer`, `master`, `role` events) and contributes to the
heartbeats. The composition root (`collab_tui/compose.py`) builds the node and `attach`es the services.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .. import PROTOCOL_VERSION, __version__
from ..config import NodeConfig, parse_hostport
from ..net import identity as ident_mod
from ..net.addresses import advertised_hosts, join_hostport, split_hostport
from ..net.control import ControlCore
from ..net.election import MasterChanged, MessageRefused, Outgoing, RoleChanged, TermChanged
from ..net.join_limit import JoinLimiter
from ..net.membership import heartbeat_fields
from ..net.messages import BUILTIN
from ..net.schema import PeerMessage, RefusalQuiet, Refused, admit, clip
from ..net.tokens import TokenStore
from ..net.transport import Connection
from ..net.trust_store import TrustLogStore
from ..textfmt import short_id
from .cluster_logs import ClusterLogs
from .context import Contributions, refusal
from .events import EventBus
from .peers import PeerTable
from .renewal import CertRenewal
from .resources import local_resources, process_rss
from .state import JsonState, MembersFile, NodeStateFile
from .trust import TrustRecords

log = logging.getLogger("collab.node")

Handler = Callable[[Connection, dict], Awaitable[dict | None]]
REFUSAL_LOG_EVERY = 10.0  # seconds: at most one line per refused message type and reason
FAULT_LOG_EVERY = 10.0  # seconds: at most one traceback per background task that keeps dying


def _bounded(items, n: int) -> dict[str, str]:
    return {str(k)[:40]: str(v)[:300] for k, v in list(items.items())[:n]} if isinstance(items, dict) else {}


def health_fields(unhealthy, faults=None) -> dict:
    """``health`` ("ok" or "unhealthy"), ``unhealthy`` ({task kind: reason}) and ``faults`` ({background task:
    its last error}: it died and was restarted) for a node row, bounded."""
    bad = _bounded(unhealthy, 16)
    return {"health": "unhealthy" if bad else "ok", "unhealthy": bad, "faults": _bounded(faults, 8)}


class Node(TrustRecords, CertRenewal):
    def __init__(self, home: Path, cfg: NodeConfig, ident: ident_mod.NodeIdentity | None = None) -> None:
        self.home = home
        self.cfg = cfg
        self.ident = ident or ident_mod.load_identity(home)
        self.node_id = self.ident.node_id
        self.name = cfg.name or self.ident.name or f"node-{self.ident.short_id[:4]}"
        self.state = JsonState(
            home / "state" / "node.json", NodeStateFile, "the term starts again from 0 and is learnt from the peers"
        )
        self.tokens = TokenStore(home / "state" / "tokens.json")
        self.trust_store = TrustLogStore(home / "state" / "trust_log.json", self.ident.ca_cert)
        self.join_limiter = JoinLimiter()
        self.events = EventBus()
        self.control = ControlCore(  # membership and election, glued by rules the simulator runs too
            self.node_id,
            self.trust.priority_of(self.node_id),  # the signed trust log says, never a flag or a peer
            term=int(self.state.get("term", 0)),
            interval=cfg.heartbeat_interval,
            suspect_after=cfg.suspect_after,
            dead_after=cfg.dead_after,
            preempt=cfg.preempt,
            rng=random.Random(),
        )
        self.membership, self.election = self.control.membership, self.control.election
        self.peers = PeerTable(self)
        self.peers.on_up = self._peer_up
        self.peers.on_down = self._peer_down
        self.handlers: dict[str, tuple[type[PeerMessage], Handler]] = {}
        self.services: list = []
        self.started_at = time.time()
        self.boot = os.urandom(8).hex()  # in every HELLO: peers tell a restart from a reconnection (PeerRestarted)
        # queue depth, model version, unhealthy task kinds ({kind: reason}) and capabilities: provided by
        # the services through their contexts
        self.contributions = Contributions()
        self.discovery = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self.port = cfg.port
        self.addrs: list[str] = []  # advertised "host:port", set by start() (see net/addresses.py)
        self.signers: dict[str, str] = {}  # connected members that can sign joins -> their address
        self.refusal_quiet = RefusalQuiet(REFUSAL_LOG_EVERY)
        self.refused_messages = 0  # peer messages refused (bad schema, wrong sender, unknown type)
        self.faults: dict[str, str] = {}  # background task -> its last error (shown in `status`)
        for schema in BUILTIN:
            self.register(schema, self._builtin)
        self.cluster_logs = ClusterLogs(self)  # `collab logs --cluster`: its peer messages (net/log_messages.py)
        for schema, handler in self.cluster_logs.handlers():
            self.register(schema, handler)
        self._known = JsonState(
            home / "state" / "members.json", MembersFile, "members are found again by mDNS, --peer and gossip"
        )

    # ----------------------------------------------------------------- life cycle
    @property
    def addr(self) -> str:
        """The first advertised address (each peer is told the one it reached us on)."""
        return self.addrs[0] if self.addrs else join_hostport("127.0.0.1", self.port)

    def _advertised(self) -> list[str]:
        return [join_hostport(h, self.port) for h in advertised_hosts(self.cfg.host, self.cfg.advertise)]

    def _hosts(self) -> list[str]:
        return [split_hostport(a)[0] for a in self.addrs if split_hostport(a)]

    async def start(self) -> None:
        self.port = await self.peers.listen()
        if self.cfg.port == 0:
            self.cfg.port = self.port
        self.addrs = self._advertised()
        for addr in self.cfg.peers:
            parse_hostport(addr)
            self.peers.propose(addr)
        for member in self._known.get("members", []):
            if member.get("node_id") != self.node_id and member.get("addr"):
                self.peers.propose(member["addr"], member.get("node_id", ""), proven=True)
        if self.cfg.mdns:
            from ..net.discovery import MdnsDiscovery

            self.discovery = MdnsDiscovery(
                self.node_id,
                self.name,
                self.ident.cluster_id,
                self._hosts(),
                self.port,
                lambda h, p, nid, txt: self._propose(join_hostport(h, p), nid),
                self.cfg.mdns_interfaces or None,
                can_sign=self.can_sign(),
            )
            try:
                await self.discovery.start()
            except Exception as exc:
                log.warning("mDNS unavailable (%s); static peers only", exc)
                self.discovery = None
        self.migrate_denylist(self.home / "state" / "denylist.json")
        await self.record_own_certificate()
        await self._sign_own_priority()
        now = time.monotonic()
        self.election.set_quorum_size(self.cluster_size())
        self.control.start(now)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._supervised("ticker", self._ticker), name="ticker"),
            loop.create_task(self._supervised("heartbeats", self._heartbeats), name="heartbeats"),
            loop.create_task(self._supervised("addresses", self._watch_addresses), name="addresses"),
            loop.create_task(self._supervised("renewal", self._renewals), name="renewal"),
        ]
        for svc in self.services:
            await svc.start()
        log.info(
            "node %s (%s) listening on %s, advertised as %s, cluster %s",
            self.ident.short_id,
            self.name,
            join_hostport(self.cfg.host or "0.0.0.0", self.port),
            ", ".join(self.addrs),
            self.ident.cluster_id[:12],
        )
        self.events.publish("node_started", node_id=self.node_id, addr=self.addr, addrs=self.addrs)

    async def stop(self, graceful: bool = True) -> None:
        """Graceful leave: tell everyone (an immediate election if we were master), then close."""
        if self._stop.is_set():
            return
        self._stop.set()
        for svc in reversed(self.services):
            try:
                await svc.stop()
            except Exception:
                log.exception("service stop failed")
        if graceful:
            self.election.leave(time.monotonic())
            await self._flush_election()
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        if self.discovery is not None:
            await self.discovery.stop()
        await self.peers.close()
        self.events.publish("node_stopped", node_id=self.node_id)
        log.info("node %s stopped", self.ident.short_id)

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    def wound_down(self) -> bool:
        """After `stop`: every connection closed and mDNS unregistered."""
        return not self.peers.conns and (self.discovery is None or self.discovery._azc is None)

    # ----------------------------------------------------------------- plumbing
    def attach(self, service) -> None:
        """A service to start with the node and stop before it (it has ``start()`` and ``stop()``)."""
        self.services.append(service)

    def register(self, schema: type[PeerMessage], handler: Handler) -> None:
        """The handler of one peer message type; every message of it is `admit`ted (validated against
        ``schema``, its sender checked) before ``handler`` sees it."""
        self.handlers[schema.type_name()] = (schema, handler)

    def _propose(self, addr: str, node_id: str) -> None:
        if node_id and node_id in self.peers.conns:
            return
        self.peers.propose(addr, node_id)
        if node_id:
            self.peers.dial_now(node_id)  # a fresh announcement of a member we miss: dial it at once
        self._wake.set()

    async def dispatch(self, conn: Connection, msg: dict) -> dict | None:
        self.membership.on_seen(conn.peer_id, time.monotonic())
        entry = self.handlers.get(msg["t"])
        try:
            if entry is None:
                raise Refused("(unknown)", "unknown type", f"unknown message type {clip(msg['t'])!r}")
            schema, handler = entry
            clean = admit(schema, conn.peer_id, msg, self.election.master_id, self.election.term)
        except Refused as exc:
            self._refused(conn.peer_id, exc)
            return refusal(str(exc))
        return await handler(conn, clean)

    def _refused(self, peer: str, exc: Refused) -> None:
        """One log line per (type, reason) per `REFUSAL_LOG_EVERY` seconds, whoever sends them."""
        self.refused_messages += 1
        held = self.refusal_quiet.note(exc.msg_type, exc.kind, time.monotonic())
        if held is not None:
            more = f" ({held} more like it since the last line)" if held else ""
            log.warning("refused a message from %s: %s%s", short_id(peer), exc, more)

    async def serve_certless(self, conn: Connection, first: dict, source: str = "?") -> None:
        from ..net.join import serve_join

        here = self.peers.local_addr(conn)
        new_id, refused = await serve_join(
            conn, first, self, lambda: self.member_list(here), self.cfg.handshake_timeout, source
        )
        if refused:
            self.peers.refused(source, refused)
        if new_id:
            self.events.publish("member_joined", node_id=new_id)
        await conn.close()

    def _trust_differs(self, report: dict) -> bool:
        """A peer's HELLO or heartbeat shows a trust log with entries we lack (more of them, or as many
        with another digest: then both ask, and both end with the union)."""
        theirs, mine = report.get("deny_v"), self.trust.version
        if not isinstance(theirs, int):
            return False
        return theirs > mine or (
            theirs == mine and bool(report.get("trust_h")) and report["trust_h"] != self.trust.digest
        )

    def signer_addrs(self) -> list[str]:
        """Addresses of the live members that can sign joins: they said so in their HELLO (the root), or the
        trust log made them admins since."""
        alive = self.membership.alive_ids()
        out = [addr for nid, addr in self.signers.items() if nid in alive and addr]
        for p in self.membership.peers():
            if p.node_id in alive and p.addr and p.addr not in out and self.trust.is_admin(p.node_id):
                out.append(p.addr)
        return out

    def member_list(self, self_addr: str | None = None) -> list[dict]:
        """Members as handed to a joiner or a peer; ``self_addr``: the address that one reached us on."""
        out = [{"node_id": self.node_id, "name": self.name, "addr": self_addr or self.addr}]
        for p in self.membership.peers():
            out.append({"node_id": p.node_id, "name": p.name, "addr": p.addr})
        return out

    def cluster_size(self) -> int:
        ids = {m["node_id"] for m in self._known.get("members", [])} | {self.node_id}
        ids |= {p.node_id for p in self.membership.peers()}
        return len([i for i in ids if not self.is_revoked(i)])

    def _remember_members(self) -> None:
        members = {m["node_id"]: m for m in self._known.get("members", [])}
        for m in self.member_list():
            members[m["node_id"]] = m
        self._known.set("members", sorted(members.values(), key=lambda m: m["node_id"]))

    # ----------------------------------------------------------------- built-in messages
    async def _builtin(self, conn: Connection, msg: dict) -> dict | None:
        t, now, peer = msg["t"], time.monotonic(), conn.peer_id
        if t == "hb":
            self.control.heartbeat_in(peer, msg, now)
            if self._trust_differs(msg):
                await conn.send({"t": "trust_get"})
        elif t.startswith("el."):
            self.control.election_in(peer, msg, now)
            self._pump_membership()
        elif t.startswith("mb."):  # indirect probes of a suspect master (large clusters)
            self.control.probe_in(peer, msg, now)
            self._pump_membership()
        elif t == "peers":
            for item in msg["members"]:
                if item["addr"] and item["node_id"] != self.node_id:
                    try:
                        parse_hostport(item["addr"])
                    except ValueError:
                        continue
                    nid = item["node_id"]
                    if nid in self.peers.conns:
                        continue
                    self.peers.propose_from(peer, item["addr"], nid)  # bounded per peer: a flood adds few
                    if item["addr"] in self.peers.addrs:
                        self.peers.dial_now(nid)
                        self._wake.set()
        elif t == "trust_log":
            if self.accept_trust_entries(msg["entries"], peer) and self.election.role == "master":
                await self.peers.broadcast(msg)  # the master relays what was new to it
        elif t == "trust_get":
            for batch in self.trust_batches():
                await conn.send({"t": "trust_log", "entries": batch})
        elif t == "cert_renew":
            return await self.serve_renewal(peer, msg["csr_pem"])
        elif t == "ping":
            return {"pong": time.time()}
        await self._flush_election()
        return None

    async def _peer_up(self, conn: Connection) -> None:
        h, now = conn.hello, time.monotonic()
        name, boot = h.get("name", ""), h.get("boot", "")
        self.control.hello(conn.peer_id, name, conn.peer_addr, self.priority_of(conn.peer_id), now, boot)
        if h.get("ca") is True and not self.is_revoked(conn.peer_id):
            self.signers[conn.peer_id] = conn.peer_addr
        else:
            self.signers.pop(conn.peer_id, None)
        self._pump_membership()
        self._remember_members()
        self.election.set_quorum_size(self.cluster_size())
        await conn.send({"t": "peers", "members": self.member_list(self.peers.local_addr(conn))})
        await conn.send(self._heartbeat())
        if self._trust_differs(h):
            await conn.send({"t": "trust_get"})
        await self._flush_election()

    async def _peer_down(self, conn: Connection) -> None:
        now = time.monotonic()
        self.control.disconnected(conn.peer_id, now)
        self._pump_membership()
        addr = conn.peer_addr
        gone = addr and not self._stop.is_set() and not await self.peers.probe(addr)
        if gone and conn.peer_id not in self.peers.conns:  # (it may have reconnected during the probe)
            # Nothing listens there any more: the process is gone. Don't wait for heartbeats to age out.
            self.control.gone(conn.peer_id, time.monotonic())
            self._pump_membership()
        await self._flush_election()
        self._wake.set()

    # ----------------------------------------------------------------- membership & election glue
    def _pump_membership(self) -> None:
        """Publish what the control core's membership saw, and drop the connections of peers it found dead."""
        for peer_id in self.control.take_drops():
            if peer_id in self.peers.conns:
                # silent, yet its connection looks open (a cut cable, a partition): TCP would take many seconds
                # to notice. Drop it, so that the redial gets through when the link is back.
                self.peers.drop(peer_id, "silent for too long")
        for ev in self.control.take_peer_events():
            peer_id = ev.node_id
            info = self.membership.get(peer_id)
            # ev.change: "join" | "suspect" | "dead" | "alive" | "leave", the strings the UIs know
            closed = {"closed": True} if getattr(ev, "closed", False) else {}  # its connection closed
            self.events.publish("peer", change=ev.change, node_id=peer_id, name=info.name if info else "", **closed)
            log.info("peer %s: %s", short_id(peer_id), ev.change)

    async def _flush_election(self) -> None:
        for ev in self.election.take_events():
            match ev:
                case TermChanged(term=term):
                    self.state.set("term", term)  # persisted BEFORE anything in this term is sent
                case MasterChanged(master_id=master, term=term):
                    log.info("master is now %s (term %s)", short_id(master) if master else None, term)
                    self.events.publish("master", master=master, term=term, self_is_master=master == self.node_id)
                case RoleChanged(role=role):
                    self.events.publish("role", role=role, term=self.election.term)
                case MessageRefused(peer_id=peer, kind=kind, term=term, reason=reason):
                    self._refused(
                        peer, Refused(kind, reason, f"{reason}: term {term} not obeyed (ours is {self.election.term})")
                    )
        for out in self.election.take_outbox():
            match out:
                case Outgoing(dest=None, msg=msg):
                    await self.peers.broadcast(msg)
                case Outgoing(dest=dest, msg=msg):
                    await self.peers.send(dest, msg)

    async def _ticker(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            self.control.tick(now)
            self._pump_membership()
            await self._flush_election()
            self.peers.dial_due(now)
            self.peers.flush_refusals()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), 0.05)
            except TimeoutError:
                pass

    def _heartbeat(self) -> dict:
        res = local_resources()
        msg = heartbeat_fields(
            role=self.election.role,
            term=self.election.term,
            cpus=res["cpus"],
            load=res["load"],
            mem_free=res["mem_free"],
            queue=self.contributions.value("queue"),
            capabilities=self.contributions.capabilities(),
            model_version=self.contributions.value("model_version"),
        )
        msg["deny_v"] = self.trust.version
        msg["trust_h"] = self.trust.digest
        msg["unhealthy"] = self.contributions.value("unhealthy")
        report = self.control.heartbeat()
        msg["master"] = report["master"]  # a report: it grants nothing (net/election.py, rule 9) ...
        msg["grant"] = report["grant"]  # ... but the grant of a term is one vote for its master (rule 11)
        if "dead" in report:
            msg["dead"] = report["dead"]  # a large cluster's master: the nodes it finds dead (net/control.py)
        msg["faults"] = dict(self.faults)
        return msg

    async def _watch_addresses(self, every: float = 10.0) -> None:
        """Follow the machine's addresses (DHCP, a new interface): re-advertise when they change."""
        while not self._stop.is_set():
            await asyncio.sleep(every)
            try:
                now = await asyncio.to_thread(self._advertised)
            except Exception as exc:  # pragma: no cover - an interface query that fails is not fatal
                log.debug("cannot list the interfaces: %s", exc)
                continue
            if now != self.addrs:
                log.info("advertised addresses changed: %s -> %s", ", ".join(self.addrs), ", ".join(now))
                self.addrs = now
                if self.discovery is not None:
                    try:
                        await self.discovery.update_hosts(self._hosts())
                    except Exception as exc:
                        log.warning("mDNS: cannot announce the new addresses: %s", exc)

    async def _supervised(self, name: str, loop_fn: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop for the node's life: when it dies it is restarted (after 0.1 s, doubling up
        to 5 s while it keeps dying), with one traceback per `FAULT_LOG_EVERY` s; its last error and the
        count of restarts show in `status` (``faults``), where the operator looks, not only in the log."""
        delay, logged_at, restarts = 0.05, float("-inf"), 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await loop_fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                now, restarts = time.monotonic(), restarts + 1
                delay = 0.1 if now - started > 30 else min(5.0, delay * 2)  # it ran a while: start over
                self.faults[name] = f"{type(exc).__name__}: {clip(str(exc), 200)} (restarted {restarts}x)"
                if now - logged_at >= FAULT_LOG_EVERY:
                    logged_at = now
                    log.exception("background task %s died; restarting it in %.1f s", name, delay)
                await asyncio.sleep(delay)

    async def _heartbeats(self) -> None:
        while not self._stop.is_set():
            targets = self.control.heartbeat_targets(sorted(self.peers.conns))  # all, or fan-in past 8 nodes
            msg = self._heartbeat()
            await asyncio.gather(*(self.peers.send(p, msg) for p in targets))
            await asyncio.sleep(self.cfg.heartbeat_interval)

    # ----------------------------------------------------------------- views
    @property
    def is_master(self) -> bool:
        return self.election.role == "master"

    def can_commit(self) -> bool:
        return self.control.can_commit()

    def status(self) -> dict:
        return {
            "node_id": self.node_id,
            "short_id": self.ident.short_id,
            "name": self.name,
            "addr": self.addr,
            "addrs": list(self.addrs),
            "listen": join_hostport(self.cfg.host or "0.0.0.0", self.port),
            "cluster": self.ident.cluster_id,
            "role": self.election.role,
            "term": self.election.term,
            "master": self.election.master_id,
            "can_commit": self.can_commit(),
            "peers_alive": len(self.membership.alive_ids()),
            "cluster_size": self.cluster_size(),
            "pid": os.getpid(),
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "uptime": round(time.time() - self.started_at, 1),
            "holds_ca": self.ident.ca_key is not None,
            "admin": self.can_sign(),  # the root or an admin: it can invite, renew and revoke
            "certificate": self.own_cert_state(),
            "memory": self.memory(),
            "mdns": self.discovery is not None,
            "refused_connections": self.peers.refusals.total,
            "refused_messages": self.refused_messages,
            "known_addresses": len(self.peers.addrs),
            **health_fields(self.contributions.value("unhealthy"), self.faults),
        }

    def memory(self) -> dict:
        """Resident memory of this node's process and of its ML process (TensorFlow lives only there, started
        on the first ML task: None until then)."""
        from ..ml.mlproc import for_node

        ml = [r for r in (process_rss(pid) for pid in for_node(self.home).pids()) if r]
        return {"node_rss": process_rss(), "ml_rss": sum(ml) if ml else None}

    def _peer_role(self, p) -> str:
        """Heartbeats lag by up to one interval: the election's view of who is master wins."""
        if p.node_id == self.election.master_id:
            return "master"
        return "follower" if p.role == "master" else p.role

    def _peer_term(self, p) -> int:
        """Likewise: the master's term is known from the election before its next heartbeat tells it."""
        return max(p.term, self.election.term) if p.node_id == self.election.master_id else p.term

    def nodes(self) -> list[dict]:
        res = local_resources()
        me = {
            "node_id": self.node_id,
            "short_id": self.ident.short_id,
            "name": self.name,
            "addr": self.addr,
            "role": self.election.role,
            "term": self.election.term,
            "state": "self",
            "cpus": res["cpus"],
            "load": res["load"],
            "mem_free": res["mem_free"],
            "queue": self.contributions.value("queue"),
            "model_version": self.contributions.value("model_version"),
            "capabilities": self.contributions.capabilities(),
            "priority": self.election.priority,
            "last_seen": 0.0,
            **health_fields(self.contributions.value("unhealthy"), self.faults),
        }
        out = [me]
        now = time.monotonic()
        for p in self.membership.peers():
            out.append(
                {
                    "node_id": p.node_id,
                    "short_id": short_id(p.node_id),
                    "name": p.name,
                    "addr": p.addr,
                    "role": self._peer_role(p),
                    "term": self._peer_term(p),
                    "state": p.state.value,
                    "cpus": p.cpus,
                    "load": p.load,
                    "mem_free": p.mem_free,
                    "queue": p.queue,
                    "model_version": p.model_version,
                    "capabilities": list(p.capabilities or ()),
                    "priority": p.priority,
                    "last_seen": round(now - p.last_seen, 2),
                    **health_fields(p.extra.get("unhealthy"), p.extra.get("faults")),
                }
            )
        return out
