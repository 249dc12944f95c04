"""An in-memory `ServiceContext` for the service tests (jobs, training): no node, no sockets.

Everything a service sends goes through hooks that a test can set (``on_send``, ``on_request``, ...);
by default a `send` is recorded in ``sent`` and succeeds, and a request raises ``ConnectionError`` as for
a peer that is not connected. Handlers registered by the service land in ``handlers``; `deliver` runs one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from collab_tui.config import NodeConfig
from collab_tui.net.schema import PeerMessage, Refused, admit
from collab_tui.node.context import BASE_CAPABILITIES, Contributions, PeerView, ServiceHandler, refusal
from collab_tui.node.events import EventBus, Subscription


class FakeContext:
    def __init__(
        self,
        node_id: str = "a" * 64,
        *,
        name: str = "local",
        home: Path | None = None,
        term: int = 1,
        master_id: str | None = None,
        is_master: bool = False,
        can_commit: bool = True,
        peers: Iterable[PeerView] = (),
        config: NodeConfig | None = None,
        capabilities: Iterable[str] = BASE_CAPABILITIES,
        connected: Iterable[str] | None = None,
    ) -> None:
        self.node_id, self.name, self.home = node_id, name, Path(home) if home is not None else Path(".")
        self.config = config or NodeConfig()
        self.term, self.master_id, self.is_master, self._can_commit = term, master_id, is_master, can_commit
        self.peer_views: list[PeerView] = list(peers)
        self._connected = set(connected) if connected is not None else None  # None: every known peer
        self.events = EventBus()
        self.handlers: dict[str, ServiceHandler] = {}
        self.schemas: dict[str, type[PeerMessage]] = {}
        self.refused: list[Refused] = []  # what `deliver` refused
        self.contributions = Contributions(capabilities)
        self.sent: list[tuple[str, dict]] = []
        self.on_send: Callable[[str, dict], Any] | None = None  # async (peer, msg) -> bool
        self.on_send_blob: Callable[[str, dict, bytes], Any] | None = None
        self.on_request: Callable[[str, dict, float], Any] | None = None
        self.on_request_blob: Callable[[str, dict, bytes, float], Any] | None = None

    # term and fencing
    def accepts(self, term: object) -> bool:
        return isinstance(term, int) and not isinstance(term, bool) and term >= self.term

    def can_commit(self) -> bool:
        return self._can_commit

    def quorum_size(self) -> int:
        return 1 + len(self.peer_views)

    # peers
    def peers(self) -> tuple[PeerView, ...]:
        return tuple(sorted(self.peer_views, key=lambda p: p.node_id))

    def alive_peers(self) -> tuple[PeerView, ...]:
        return tuple(p for p in self.peers() if p.alive)

    def alive_ids(self) -> frozenset[str]:
        return frozenset(p.node_id for p in self.alive_peers())

    def peer(self, node_id: str) -> PeerView | None:
        return next((p for p in self.peer_views if p.node_id == node_id), None)

    def connected(self, node_id: str) -> bool:
        if self._connected is not None:
            return node_id in self._connected
        return self.peer(node_id) is not None

    # messaging
    async def send(self, peer: str, msg: dict) -> bool:
        self.sent.append((peer, msg))
        return await self.on_send(peer, msg) if self.on_send else True

    async def broadcast(self, msg: dict) -> None:
        for p in self.peers():
            await self.send(p.node_id, msg)

    async def send_blob(self, peer: str, fields: dict, data: bytes) -> None:
        if self.on_send_blob is None:
            raise ConnectionError(f"node {peer[:12]} is not connected")
        await self.on_send_blob(peer, fields, data)

    async def request(self, peer: str, msg: dict, timeout: float = 10.0) -> dict:
        if self.on_request is None:
            raise ConnectionError(f"node {peer[:12]} is not connected")
        return await self.on_request(peer, msg, timeout)

    async def request_blob(self, peer: str, fields: dict, data: bytes, timeout: float = 10.0) -> dict:
        if self.on_request_blob is None:
            raise ConnectionError(f"node {peer[:12]} is not connected")
        return await self.on_request_blob(peer, fields, data, timeout)

    # events
    def publish(self, kind: str, **data) -> dict:
        return self.events.publish(kind, **data)

    def subscribe(self, kinds: set[str] | None = None, maxsize: int = 1000) -> Subscription:
        return self.events.subscribe(kinds, maxsize)

    # handlers
    def register(self, schema: type[PeerMessage], fn: ServiceHandler) -> None:
        msg_type = schema.type_name()
        if msg_type in self.handlers:
            raise ValueError(f"peer message {msg_type!r} already has a handler")
        self.handlers[msg_type] = fn
        self.schemas[msg_type] = schema

    async def deliver(self, sender: str, msg: dict):
        """A peer message as the runtime hands it over (``sender``: the connection's peer id): admitted
        as the node admits it (validated against its schema, its sender checked), else the node's refusal
        reply (``{"ok": False, "error": ...}``)."""
        try:
            clean = admit(self.schemas[msg["t"]], sender, msg, self.master_id, self.term)
        except Refused as exc:
            self.refused.append(exc)
            return refusal(str(exc))
        return await self.handlers[msg["t"]](sender, clean)

    # heartbeat contributions
    def provide_heartbeat(self, name: str, fn: Callable[[], Any]) -> None:
        self.contributions.provide(name, fn)

    def add_capabilities(self, *caps: str) -> None:
        self.contributions.add_capabilities(caps)

    def provide_capabilities(self, fn: Callable[[], Iterable[str]]) -> None:
        self.contributions.provide_capabilities(fn)

    def capabilities(self) -> list[str]:
        return self.contributions.capabilities()

    def node_signer(self) -> tuple[bytes, Callable[[bytes], bytes]]:
        """A key made for this context (its node id does not match it: tests that sign set both)."""
        from collab_tui.net import pki
        from collab_tui.net.pki import sign_with

        if not hasattr(self, "_key"):
            self._key = pki.new_key()
        return sign_with(self._key)
