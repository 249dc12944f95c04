"""The node's connections: accepting, dialing, authenticating, one connection per peer pair.

Duplicate rule (both sides dialed at once): keep the connection dialed by the node with the smaller
node id. Both ends apply the same rule, so they keep the same connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

from ..net import identity as ident_mod
from ..net.codec import FrameError
from ..net.handshake import HandshakeError, client_hello, make_hello, peer_certificate, server_hello
from ..net.transport import Connection, ConnectionClosed

log = logging.getLogger("collab.peers")


class PeerTable:
    def __init__(self, node) -> None:
        self.node = node
        self.conns: dict[str, Connection] = {}
        self.addrs: dict[str, str] = {}  # "host:port" -> node id ("" until known)
        self._backoff: dict[str, tuple[float, float]] = {}  # addr -> (next try, delay)
        self._dialing: set[str] = set()
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

    def _hello(self, t: str) -> dict:
        n = self.node
        return make_hello(
            t, n.node_id, n.name, n.ident.cluster_id, n.cfg.priority, n.cfg.advertise_addr,
            term=n.election.term, deny_v=n.denylist_version(),
        )

    def _new_conn(self, reader, writer) -> Connection:
        cfg = self.node.cfg
        conn = Connection(reader, writer, max_frame=cfg.max_frame, partial_timeout=cfg.request_timeout)
        conn.handler = self.node.dispatch
        return conn

    def propose(self, addr: str, node_id: str = "") -> None:
        """An address to try (static peer, mDNS, member list, gossip)."""
        if addr == self.node.cfg.advertise_addr or node_id == self.node.node_id:
            return
        if node_id or addr not in self.addrs:
            self.addrs[addr] = node_id or self.addrs.get(addr, "")
        self._backoff.pop(addr, None)

    # ----------------------------------------------------------------- listening
    async def listen(self) -> int:
        cfg = self.node.cfg
        self._server_ctx = ident_mod.server_ssl_context(self.node.ident)
        # TLS is started per connection (not by the server) so that a refused handshake (foreign CA,
        # self-signed certificate, plaintext client) reaches our code and is logged with its reason.
        self.server = await asyncio.start_server(self._accept_tcp, cfg.host, cfg.port, limit=2**20)
        return self.server.sockets[0].getsockname()[1]

    async def _accept_tcp(self, reader, writer) -> None:
        peer = writer.get_extra_info("peername")
        try:
            await writer.start_tls(self._server_ctx, ssl_handshake_timeout=self.node.cfg.handshake_timeout)
        except (ssl.SSLError, OSError, asyncio.TimeoutError, ConnectionError) as exc:
            self.handshake_failures += 1
            reason = getattr(exc, "reason", None) or type(exc).__name__
            log.warning("refused TLS connection from %s: %s", peer, f"{reason} ({exc})" if str(exc) else reason)
            writer.transport.abort()
            return
        await self._accept(reader, writer)

    async def _accept(self, reader, writer) -> None:
        conn = self._new_conn(reader, writer)
        n = self.node
        try:
            first = await conn.read_message(n.cfg.handshake_timeout)
            if peer_certificate(conn) is None:
                await n.serve_certless(conn, first)
                return
            await server_hello(conn, first, self._hello("hello_ack"), n.ident.cluster_id, n.is_revoked)
        except (HandshakeError, FrameError, ConnectionClosed, asyncio.TimeoutError, OSError, ssl.SSLError) as exc:
            self.handshake_failures += 1
            log.warning("refused inbound connection from %s: %s", writer.get_extra_info("peername"), exc)
            await conn.close()
            return
        except Exception:
            log.exception("inbound connection failed")
            await conn.close()
            return
        await self._adopt(conn)

    # ----------------------------------------------------------------- dialing
    async def dial(self, addr: str) -> Connection | None:
        from ..config import parse_hostport

        host, port = parse_hostport(addr)
        n = self.node
        if self._client_ctx is None:
            self._client_ctx = ident_mod.client_ssl_context(n.ident)
        ctx = self._client_ctx
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, ssl_handshake_timeout=n.cfg.handshake_timeout, limit=2**20),
                n.cfg.handshake_timeout + 1,
            )
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            log.debug("dial %s failed: %s", addr, exc)
            return None
        conn = self._new_conn(reader, writer)
        try:
            await client_hello(conn, self._hello("hello"), n.ident.cluster_id, n.is_revoked, n.cfg.handshake_timeout)
        except (HandshakeError, FrameError, ConnectionClosed, asyncio.TimeoutError, OSError, ssl.SSLError) as exc:
            self.handshake_failures += 1
            log.warning("handshake with %s failed: %s", addr, exc)
            await conn.close()
            return None
        self.addrs[addr] = conn.peer_id
        return await self._adopt(conn)

    def dial_due(self, now: float) -> None:
        """Dial every known address whose node is not connected (with exponential backoff)."""
        for addr, node_id in list(self.addrs.items()):
            if addr in self._dialing or (node_id and node_id in self.conns):
                continue
            next_try, delay = self._backoff.get(addr, (0.0, 0.2))
            if now < next_try:
                continue
            self._backoff[addr] = (now + delay, min(delay * 2, 5.0))
            self._dialing.add(addr)
            self.spawn(self._dial_once(addr))

    async def _dial_once(self, addr: str) -> None:
        try:
            conn = await self.dial(addr)
            if conn is not None:
                self._backoff.pop(addr, None)
        finally:
            self._dialing.discard(addr)

    async def probe(self, addr: str) -> bool:
        """Is the peer's process still there? A refused TCP connect means it is gone. Right after a
        SIGKILL its listening socket may still accept for a moment, so a peer counts as present only if
        three connects over ~0.3 s all succeed."""
        from ..config import parse_hostport

        host, port = parse_hostport(addr)
        for delay in (0.0, 0.1, 0.2):
            await asyncio.sleep(delay)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
            except (OSError, asyncio.TimeoutError):
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
        if conn.hello.get("addr"):
            self.addrs[conn.hello["addr"]] = conn.peer_id
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
        for conn in list(self.conns.values()):
            try:
                await conn.send(msg)
            except (ConnectionClosed, FrameError):
                pass

    async def send(self, peer_id: str, msg: dict) -> bool:
        conn = self.conns.get(peer_id)
        if conn is None:
            return False
        try:
            await conn.send(msg)
            return True
        except ConnectionClosed:
            return False

    def drop(self, peer_id: str, reason: str) -> None:
        conn = self.conns.pop(peer_id, None)
        if conn is not None:
            conn.abort(reason)

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
            except asyncio.TimeoutError:
                pass

    def now(self) -> float:
        return time.monotonic()
