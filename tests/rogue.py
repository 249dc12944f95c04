"""A rogue member for the multi-process attack tests: a legitimate identity (signed by the cluster CA, as a
stolen laptop's would be) that runs the project's own connection code against real daemons on 127.0.0.1
and sends whatever it likes.

`Rogue` runs an asyncio loop in a thread of its own, so a test drives it with plain calls while it also
queries the daemons over their control sockets. Everything it receives is kept in ``received``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from collab_tui.localcluster import LocalCluster
from collab_tui.net import identity as idm
from collab_tui.net import pki, tls
from collab_tui.net.handshake import client_hello, make_hello
from collab_tui.net.transport import Connection


def member_identity(c: LocalCluster, home: Path, name: str) -> idm.NodeIdentity:
    """A brand-new legitimate member, signed by the cluster CA (node0 holds ca.key)."""
    ca = idm.load_identity(c.homes[0])
    key = pki.new_key()
    cert = pki.sign_csr(ca.ca_key, ca.ca_cert, pki.make_csr(key, name))
    home.mkdir(parents=True, exist_ok=True)
    return idm.NodeIdentity(home, key, cert, ca.ca_cert, None)


class Rogue:
    def __init__(self, cluster: LocalCluster, home: Path, name: str = "rogue") -> None:
        self.cluster = cluster
        self.ident = member_identity(cluster, home, name)
        self.node_id = self.ident.node_id
        self.name = name
        self.conns: dict[int, Connection] = {}
        self.received: list[tuple[int, dict]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rogue", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- plumbing
    def _run(self, coro, timeout: float = 20.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self) -> None:
        for i in list(self.conns):
            self.disconnect(i)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)

    # ----------------------------------------------------------------- connections
    def connect(self, i: int, **hello_extra) -> dict:
        """Handshake with node i as a member (``hello_extra``: what the rogue says of itself); returns the ACK."""
        return self._run(self._connect(i, hello_extra))

    async def _connect(self, i: int, extra: dict) -> dict:
        host, port = self.cluster.info[i]["addr"].rsplit(":", 1)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=tls.client_ssl_context(self.ident)), 5.0
        )
        conn = Connection(reader, writer)
        hello = make_hello("hello", self.node_id, self.name, self.ident.cluster_id, "127.0.0.1:1", **extra)
        ack = await client_hello(conn, hello, self.ident.cluster_id, lambda _: False, 5.0)

        async def keep(c: Connection, msg: dict):
            self.received.append((i, msg))
            return None

        conn.handler = keep
        asyncio.get_running_loop().create_task(conn.run())
        self.conns[i] = conn
        return ack

    def disconnect(self, i: int) -> None:
        conn = self.conns.pop(i, None)
        if conn is not None:
            self._run(conn.close())

    def connected(self, i: int) -> bool:
        conn = self.conns.get(i)
        return conn is not None and not conn.closed

    # ----------------------------------------------------------------- sending
    def send(self, i: int, msg: dict) -> None:
        self._run(self.conns[i].send(msg))

    def send_many(self, i: int, msgs: list[dict]) -> None:
        async def go():
            for m in msgs:
                await self.conns[i].send(m)

        self._run(go(), timeout=60.0)

    def request(self, i: int, msg: dict, timeout: float = 10.0) -> dict:
        """A request; the reply, or ``{"ok": False, "error": ...}`` when the node refused it."""

        async def go():
            try:
                return await self.conns[i].request(msg, timeout)
            except Exception as exc:  # RemoteError, TimeoutError, ConnectionClosed
                return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

        return self._run(go(), timeout + 5.0)

    def send_blob(self, i: int, fields: dict, data: bytes) -> None:
        self._run(self.conns[i].send_blob(fields, data))

    def request_blob(self, i: int, fields: dict, data: bytes, timeout: float = 10.0) -> dict:
        async def go():
            try:
                return await self.conns[i].request_blob(fields, data, timeout)
            except Exception as exc:
                return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

        return self._run(go(), timeout + 5.0)

    def send_raw(self, i: int, data: bytes) -> None:
        """Bytes straight onto the TLS stream (partial frames, trickles)."""

        async def go():
            w = self.conns[i].writer
            w.write(data)
            await w.drain()

        self._run(go())

    def wait_closed(self, i: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.connected(i):
                return True
            time.sleep(0.05)
        return False
