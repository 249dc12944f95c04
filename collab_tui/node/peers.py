"""The node's connections: accepting, dialing, authenticating, one connection per peer pair.

Duplicate rule (both sides dialed at once): keep the connection dialed by the node with the smaller
node id. Both ends apply the same rule, so they keep the same connection.

Redialing: an address where a member was met (a completed handshake, so its node id is proven) that
is not connected is dialed every ``REDIAL_EVERY`` seconds (with jitter) for as long as it stays
unreachable, with a short TCP connect timeout and a few attempts in flight at once, so that the first
attempt after a partition heals gets through within a fraction of a second, however long the partition
lasted. Unproven addresses (static peers, mDNS records, gossip: anyone on the LAN can announce one)
back off exponentially up to ``MAX_BACKOFF``, and at most ``MAX_ADDRS`` addresses are kept. Only one
handshake runs per address at a time, so parallel attempts never make two connections to one peer.
Sends have a deadline (``SEND_TIMEOUT``): a peer that stops reading cannot stall the node's ticker.

Unproven addresses from mDNS or gossip are a stranger's (or a member's) word: one that never completes a
handshake is forgotten after ``UNPROVEN_FAILURES`` failed dials or ``UNPROVEN_TTL`` seconds, whichever
comes first, so a flood of bogus addresses is not dialed forever (a real member's address comes back with
its next announcement or gossip). The gossip of one peer adds at most ``GOSSIP_NEW_PER_PEER`` new
addresses per ``GOSSIP_WINDOW`` (`propose_from`). Static ``--peer`` addresses and proven ones are never
forgotten (a revoked node's are, see `forget_node`).

Refused connections (plaintext, foreign or self-signed certificates, bad HELLOs) and failed dials are
logged through a `RefusalLog`: one line per source and reason per interval, not one per connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..net.addresses import is_wildcard, join_hostport, peer_address, split_hostport
from ..net.codec import FrameError
from ..net.handshake import HandshakeError, client_hello, make_hello, peer_certificate, server_hello
from ..net.refusals import RefusalLog
from ..net.schema import RefusalQuiet
from ..net.tls import client_ssl_context, server_ssl_context
from ..net.transport import Connection, ConnectionClosed

log = logging.getLogger("collab.peers")
CERTLESS_MAX_FRAME = 64 * 1024  # bytes of one frame from a connection without a certificate (a join)

REDIAL_EVERY = 0.25  # seconds between dials of an unreachable known member (+-40 % jitter)
CONNECT_TIMEOUT = 0.75  # TCP connect; the TLS handshake then has cfg.handshake_timeout
PARALLEL_DIALS = 3  # attempts in flight per address (a SYN lost in a partition does not hold up the next)
MAX_BACKOFF = 5.0  # unknown addresses: exponential back-off up to this
MAX_ADDRS = 1024  # known addresses at most (proven ones are always kept)
SEND_TIMEOUT = 1.0  # seconds a small message may wait for a peer's socket to drain
ANNOUNCED_WITHIN = 1.0  # an mDNS announcement brings an unproven address's next dial this close
UNPROVEN_FAILURES = 5  # failed dials (~8 s with the back-off) after which an unproven address is forgotten
UNPROVEN_TTL = 300.0  # seconds an unproven address is kept at most, however its dials end
GOSSIP_NEW_PER_PEER = 64  # new addresses one peer's gossip may add per GOSSIP_WINDOW (a cluster has fewer)
GOSSIP_WINDOW = 60.0
LOG_EVERY = 10.0  # seconds: one line per key per interval (connections' refusals, gossip over its cap)


@dataclass(slots=True)
class _Trial:
    """An unproven address on probation: when it was first proposed, and its failed dials since."""

    since: float
    failures: int = 0


@dataclass(slots=True)
class _Window:
    opened: float
    added: int = 0


class PeerTable:
    def __init__(self, node) -> None:
        self.node = node
        self.conns: dict[str, Connection] = {}
        self.addrs: dict[str, str] = {}  # "host:port" -> node id ("" until known)
        self._backoff: dict[str, tuple[float, float]] = {}  # addr -> (next try, delay)
        self._dialing: dict[str, int] = {}  # addr -> attempts in flight
        self._self_addrs: set[str] = set()  # addresses that turned out to be this node
        self._proven: set[str] = set()  # addresses where a handshake completed
        self._handshaking: set[str] = set()  # addresses with a handshake in progress
        self._trials: dict[str, _Trial] = {}  # unproven, non-static addresses: forgotten when they fail
        self._gossip: dict[str, _Window] = {}  # peer id -> new addresses its gossip added in this window
        # static --peer addresses are never forgotten (a test's stand-in node may have no config)
        self.static: set[str] = set(getattr(getattr(node, "cfg", None), "peers", None) or ())
        self.refusals = RefusalLog()
        self.quiet = RefusalQuiet(LOG_EVERY)  # shared by every connection: a flood over many gives few lines
        self._rng = random.Random()
        self._tasks: set[asyncio.Task] = set()
        self.server: asyncio.base_events.Server | None = None
        self.on_up: Callable[[Connection], Awaitable[None]] | None = None
        self.on_down: Callable[[Connection], Awaitable[None]] | None = None
        self.handshake_failures = 0
        self._client_ctx = None

    # ----------------------------------------------------------------- helpers
    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def local_addr(self, conn: Connection) -> str:
        """The address the peer at the other end of ``conn`` reached us on (or can reach us on)."""
        n = self.node
        if n.cfg.advertise or not is_wildcard(n.cfg.host):
            return n.addr
        sock = conn.writer.get_extra_info("sockname")
        host = sock[0] if sock else ""
        return join_hostport(host, n.port) if host and not is_wildcard(host) else n.addr

    def _hello(self, t: str, conn: Connection) -> dict:
        n = self.node
        return make_hello(
            t,
            n.node_id,
            n.name,
            n.ident.cluster_id,
            self.local_addr(conn),
            term=n.election.term,
            deny_v=n.trust.version,
            trust_h=n.trust.digest,
            ca=n.can_sign(),
            grant=n.hello_grant(),
            boot=n.boot,
        )

    def refused(self, source: str, reason: str) -> None:
        line = self.refusals.note(source, reason, time.monotonic())
        if line:
            log.warning(line)

    def flush_refusals(self) -> None:
        for line in self.refusals.flush(time.monotonic()):
            log.warning(line)

    def _new_conn(self, reader, writer) -> Connection:
        cfg = self.node.cfg
        conn = Connection(
            reader,
            writer,
            max_frame=cfg.max_frame,
            max_blob=cfg.max_blob,
            frame_timeout=cfg.frame_timeout,
            max_open_blobs=cfg.max_open_blobs,
            blob_timeout=cfg.blob_timeout,
            blob_min_rate=cfg.blob_min_rate,
            quiet=self.quiet,
        )
        conn.handler = self.node.dispatch
        return conn

    def propose(self, addr: str, node_id: str = "", proven: bool = False) -> bool:
        """An address to try (static peer, mDNS, member list, gossip). ``proven``: met there by a handshake
        of ours, in this life or an earlier one (the persisted member list). True when ``addr`` is new here.
        A new unproven address that is not static is on probation (see the module docstring); proposing it
        again does not extend that."""
        if addr in self.node.addrs or addr in self._self_addrs or node_id == self.node.node_id:
            return False
        if addr in self._proven:
            return False  # we know who lives there: a hint (perhaps forged) does not change it
        new = addr not in self.addrs
        if new and len(self.addrs) >= MAX_ADDRS:
            return False
        if node_id or new:
            self.addrs[addr] = node_id or self.addrs.get(addr, "")
        if proven and node_id:
            self._prove(addr)
        elif new and addr not in self.static:
            self._trials[addr] = _Trial(self.now())
        return new

    def propose_from(self, peer_id: str, addr: str, node_id: str = "") -> bool:
        """`propose` for an address gossiped by member ``peer_id`` (a ``peers`` message): one peer adds at
        most ``GOSSIP_NEW_PER_PEER`` new addresses per ``GOSSIP_WINDOW``; hints about known ones are free.
        True when ``addr`` was added."""
        now = self.now()
        window = self._gossip.get(peer_id)
        if window is None or now - window.opened >= GOSSIP_WINDOW:
            if len(self._gossip) >= 4 * MAX_ADDRS:  # bounded whoever gossips: drop the windows that ended
                self._gossip = {p: w for p, w in self._gossip.items() if now - w.opened < GOSSIP_WINDOW}
            window = self._gossip[peer_id] = _Window(now)
        if addr not in self.addrs and window.added >= GOSSIP_NEW_PER_PEER:
            held = self.quiet.note(f"gossip {peer_id[:12]}", "new addresses", now)
            if held is not None:
                log.warning(
                    "peer %s gossiped more than %d new addresses in %g s: ignoring the rest%s",
                    peer_id[:12],
                    GOSSIP_NEW_PER_PEER,
                    GOSSIP_WINDOW,
                    f" ({held} ignored since the last line)" if held else "",
                )
            return False
        added = self.propose(addr, node_id)
        if added:
            window.added += 1
        return added

    def _prove(self, addr: str) -> None:
        self._proven.add(addr)
        self._trials.pop(addr, None)

    def _dial_failed(self, addr: str) -> None:
        """A dial of ``addr`` failed (no TCP connection, TLS or HELLO refused): an unproven address is
        forgotten after ``UNPROVEN_FAILURES`` of them."""
        trial = self._trials.get(addr)
        if trial is None:
            return
        trial.failures += 1
        if trial.failures >= UNPROVEN_FAILURES:
            self._forget(addr, f"{trial.failures} failed dials")

    def _forget(self, addr: str, why: str) -> None:
        self.addrs.pop(addr, None)
        self._backoff.pop(addr, None)
        self._trials.pop(addr, None)
        log.debug("forgot the unproven address %s: %s", addr, why)

    def forget_node(self, node_id: str) -> None:
        """A revoked node: its addresses are no longer dialed."""
        for addr in [a for a, nid in self.addrs.items() if nid == node_id]:
            del self.addrs[addr]
            self._proven.discard(addr)
            self._backoff.pop(addr, None)
            self._trials.pop(addr, None)

    # ----------------------------------------------------------------- listening
    async def listen(self) -> int:
        cfg = self.node.cfg
        self._server_ctx = server_ssl_context(self.node.ident)
        # TLS is started per connection (not by the server) so that a refused handshake (foreign CA,
        # self-signed certificate, plaintext client) reaches our code and is logged with its reason.
        self.server = await asyncio.start_server(self._accept_tcp, cfg.host, cfg.port, limit=2**20)
        return self.server.sockets[0].getsockname()[1]

    async def _accept_tcp(self, reader, writer) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        try:
            await writer.start_tls(self._server_ctx, ssl_handshake_timeout=self.node.cfg.handshake_timeout)
        except (TimeoutError, ssl.SSLError, OSError, ConnectionError) as exc:
            writer.transport.abort()
            reason = getattr(exc, "reason", None)
            if reason is None and isinstance(exc, (ConnectionResetError, ssl.SSLEOFError, BrokenPipeError)):
                # closed before saying anything: a liveness probe (see `probe`) or a port scan, not a refusal
                log.debug("connection from %s closed before the TLS handshake", source)
                return
            self.handshake_failures += 1
            verify = getattr(exc, "verify_message", None)  # e.g. "certificate has expired"
            if verify and "expired" in verify:
                verify += " (the peer did not renew in time: it must re-join, see `collab status` on it)"
            self.refused(source, "TLS: " + str(verify or reason or type(exc).__name__))
            return
        await self._accept(reader, writer, source)

    async def _accept(self, reader, writer, source: str) -> None:
        conn = self._new_conn(reader, writer)
        n = self.node
        if peer_certificate(conn) is None:  # a joiner at most: the join exchange needs a few KiB
            conn.decoder.max_frame = CERTLESS_MAX_FRAME
        try:
            first = await conn.read_message(n.cfg.handshake_timeout)
            if peer_certificate(conn) is None:
                await n.serve_certless(conn, first, source)
                return
            await server_hello(
                conn, first, self._hello("hello_ack", conn), n.ident.cluster_id, n.refuses_cert, n.learn_grant
            )
            if conn.peer_id == n.node_id:
                raise HandshakeError("the connection came from this node itself")
        except (TimeoutError, HandshakeError, FrameError, ConnectionClosed, OSError, ssl.SSLError) as exc:
            self.handshake_failures += 1
            self.refused(source, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            await conn.close()
            return
        except Exception:
            log.exception("inbound connection failed")
            await conn.close()
            return
        conn.peer_addr = peer_address(str(conn.hello.get("addr", "")), source)
        await self._adopt(conn)

    # ----------------------------------------------------------------- dialing
    async def dial(self, addr: str) -> Connection | None:
        parts = split_hostport(addr)
        if parts is None:
            if addr in self._trials:
                self._forget(addr, "not a host:port")
            return None
        host, port = parts
        n = self.node
        if self._client_ctx is None:
            self._client_ctx = client_ssl_context(n.ident)
        try:  # TCP first with a short timeout (a lost SYN must not hold the dial for seconds), then TLS
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=2**20), CONNECT_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            log.debug("dial %s failed: %s", addr, exc)
            self._dial_failed(addr)
            return None
        known = self.addrs.get(addr, "")
        if addr in self._handshaking or (known and known in self.conns):
            writer.transport.abort()  # another attempt got there first: one handshake per address
            return None
        self._handshaking.add(addr)
        try:
            return await self._handshake(addr, reader, writer)
        finally:
            self._handshaking.discard(addr)

    async def _handshake(self, addr: str, reader, writer) -> Connection | None:
        n = self.node
        try:
            await writer.start_tls(self._client_ctx, ssl_handshake_timeout=n.cfg.handshake_timeout)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            writer.transport.abort()
            self.handshake_failures += 1
            self.refused(addr, "outbound TLS: " + str(getattr(exc, "reason", None) or type(exc).__name__))
            self._dial_failed(addr)
            return None
        conn = self._new_conn(reader, writer)
        try:
            await client_hello(
                conn,
                self._hello("hello", conn),
                n.ident.cluster_id,
                n.refuses_cert,
                n.cfg.handshake_timeout,
                n.learn_grant,
            )
        except (TimeoutError, HandshakeError, FrameError, ConnectionClosed, OSError, ssl.SSLError) as exc:
            self.handshake_failures += 1
            self.refused(addr, f"outbound handshake: {exc}" if str(exc) else type(exc).__name__)
            self._dial_failed(addr)
            await conn.close()
            return None
        if conn.peer_id == n.node_id:  # e.g. our own address learnt from a member list, or a static peer
            self._self_addrs.add(addr)
            self.addrs.pop(addr, None)
            self._trials.pop(addr, None)
            await conn.close()
            return None
        conn.peer_addr = addr
        self.addrs[addr] = conn.peer_id
        self._prove(addr)
        return await self._adopt(conn)

    def dial_due(self, now: float) -> None:
        """Dial every known address whose node is not connected: proven addresses on a short fixed interval
        (jittered), the others with exponential back-off (see the module docstring). Unproven addresses past
        ``UNPROVEN_TTL`` are forgotten first."""
        for addr in [a for a, trial in self._trials.items() if now - trial.since >= UNPROVEN_TTL]:
            self._forget(addr, f"no handshake in {UNPROVEN_TTL:g} s")
        for addr, node_id in list(self.addrs.items()):
            if (node_id and node_id in self.conns) or self._dialing.get(addr, 0) >= PARALLEL_DIALS:
                continue
            next_try, delay = self._backoff.get(addr, (0.0, REDIAL_EVERY))
            if now < next_try:
                continue
            if addr in self._proven:
                wait, delay = REDIAL_EVERY * self._rng.uniform(0.6, 1.4), REDIAL_EVERY
            else:
                wait, delay = delay, min(delay * 2, MAX_BACKOFF)
            self._backoff[addr] = (now + wait, delay)
            self._dialing[addr] = self._dialing.get(addr, 0) + 1
            self.spawn(self._dial_once(addr))

    def dial_now(self, node_id: str) -> None:
        """A fresh sign of life from a member we are not connected to (an mDNS announcement): its proven
        addresses are due at once; unproven ones within ``ANNOUNCED_WITHIN`` seconds at the latest (anyone
        can announce anything: an announcement may shorten a back-off, never below that)."""
        now = time.monotonic()
        for addr, nid in self.addrs.items():
            if nid != node_id:
                continue
            if addr in self._proven:
                self._backoff.pop(addr, None)
            elif addr in self._backoff:
                next_try, delay = self._backoff[addr]
                self._backoff[addr] = (min(next_try, now + ANNOUNCED_WITHIN), delay)

    async def _dial_once(self, addr: str) -> None:
        try:
            conn = await self.dial(addr)
            if conn is not None:
                self._backoff.pop(addr, None)
        finally:
            left = self._dialing.get(addr, 1) - 1
            if left > 0:
                self._dialing[addr] = left
            else:
                self._dialing.pop(addr, None)

    async def probe(self, addr: str) -> bool:
        """Is the peer's process still there? A refused TCP connect means it is gone. Right after a
        SIGKILL its listening socket may still accept for a moment, so a peer counts as present only if
        three connects over ~0.3 s all succeed."""
        parts = split_hostport(addr)
        if parts is None:
            return False
        host, port = parts
        for delay in (0.0, 0.1, 0.2):
            await asyncio.sleep(delay)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
            except (TimeoutError, OSError):
                return False
            writer.close()
        return True

    # ----------------------------------------------------------------- the table
    def _keep_new(self, old: Connection, new: Connection) -> bool:
        if old.closed:
            return True
        me, peer = self.node.node_id, new.peer_id
        preferred_outbound = me < peer  # the smaller id's dialed connection wins
        return new.outbound == preferred_outbound and old.outbound != preferred_outbound

    async def _adopt(self, conn: Connection) -> Connection | None:
        old = self.conns.get(conn.peer_id)
        if old is not None and not self._keep_new(old, conn):
            await conn.close()
            return old
        self.conns[conn.peer_id] = conn
        if old is not None:
            old.abort("replaced by a newer connection")
        if conn.peer_addr:
            self.addrs[conn.peer_addr] = conn.peer_id
            self._prove(conn.peer_addr)
        self.spawn(self._serve(conn))
        return conn

    async def _serve(self, conn: Connection) -> None:
        if self.on_up:
            try:
                await self.on_up(conn)
            except ConnectionClosed:
                pass  # replaced by the connection the other side keeps, or gone already
        await conn.run()
        if self.conns.get(conn.peer_id) is conn:
            del self.conns[conn.peer_id]
            if self.on_down:
                await self.on_down(conn)

    async def broadcast(self, msg: dict) -> None:
        """To every connected peer at once, each send with its deadline (a slow peer delays no other)."""
        conns = list(self.conns.values())
        if conns:
            await asyncio.gather(*(self._send_bounded(c, msg) for c in conns))

    async def send(self, peer_id: str, msg: dict) -> bool:
        conn = self.conns.get(peer_id)
        return False if conn is None else await self._send_bounded(conn, msg)

    @staticmethod
    async def _send_bounded(conn: Connection, msg: dict) -> bool:
        try:
            await asyncio.wait_for(conn.send(msg), SEND_TIMEOUT)
            return True
        except TimeoutError:  # the frame stays queued; a peer that stays silent is dropped as dead
            log.debug("send to %s is waiting for its socket to drain", conn.peer_id[:12])
            return False
        except (ConnectionClosed, FrameError):
            return False

    def drop(self, peer_id: str, reason: str) -> None:
        conn = self.conns.pop(peer_id, None)
        if conn is not None:
            conn.abort(reason)
            conn.writer.transport.abort()  # no TLS goodbye to a peer that stopped answering

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns.values()):
            await conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            except TimeoutError:
                pass

    def now(self) -> float:
        return time.monotonic()
