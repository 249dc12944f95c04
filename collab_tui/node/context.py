"""What a service (jobs, training) gets of the node it runs on: a narrow, typed context.

A service never sees the runtime's parts (the election, the connections, the member table) and never
sets an attribute of the node. It is given a `ServiceContext`:

- identity and settings: ``node_id``, ``name``, ``home``, ``config``;
- the term and the fencing check: ``term``, ``accepts(term)``, ``is_master``, ``master_id``, ``can_commit()``;
- the peers, read-only: `PeerView` snapshots (name, liveness, latest heartbeat) from ``peers()``,
  ``alive_peers()``, ``alive_ids()``, ``peer(id)``, ``connected(id)``;
- messaging by peer id: ``send`` (best effort: False when it could not be sent), ``broadcast``,
  ``send_blob``, ``request``, ``request_blob`` (these raise ``ConnectionError`` when the peer is not connected);
- the event bus: ``publish``, ``subscribe``;
- peer-message handlers: ``register(schema, fn)``; ``fn(sender_id, msg)`` returns the reply; ``schema`` is
  the message's declared type (a `PeerMessage`, net/schema.py): the node validates every message against it
  and checks its sender before ``fn`` runs, and ``fn`` gets the clean dict;
- what it adds to this node's heartbeats (and `status`, `nodes`): ``provide_heartbeat(field, fn)`` for
  ``queue``, ``model_version`` and ``unhealthy``; ``add_capabilities`` / ``provide_capabilities``.

`NodeContext` is what the runtime provides; service tests use a fake (tests/fake_context.py).

Handlers are declared in a table per service: methods marked ``@handler(JobAssign)`` (the schema) and
collected by `register_handlers` (or `handler_table`). Master-issued, side-effecting messages are marked
``@fenced`` too: they must come from ``ctx.master_id`` and their ``term`` must pass ``ctx.accepts``, else the
message is refused (the requester gets an error reply) with one rate-limited log line, never a traceback.
(A message from the network has passed that check at the node already; ``@fenced`` also covers a
service's delivery to itself.)
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..config import NodeConfig
from ..net.schema import PeerMessage, RefusalQuiet, clip
from .events import Subscription

if TYPE_CHECKING:
    from .runtime import Node

log = logging.getLogger("collab.fencing")

# A service's handler of one peer message: (sender node id, message) -> reply (dict, BlobReply or None).
ServiceHandler = Callable[[str, dict], Awaitable[Any]]

BASE_CAPABILITIES = ("faces", "people", "classify", "train")
FENCE_LOG_EVERY = 10.0  # seconds: at most one "refused ... stale term" line per message type per interval


@dataclass(frozen=True, slots=True)
class PeerView:
    """What this node knows of one peer, as of the call (a snapshot: its latest heartbeat)."""

    node_id: str
    name: str = ""
    addr: str = ""
    state: str = "alive"  # "alive" | "suspect" | "dead"
    cpus: int = 0
    load: float = 0.0
    mem_free: int = 0
    queue: int = 0
    capabilities: tuple[str, ...] = ()
    model_version: str | None = None
    unhealthy: dict = field(default_factory=dict)  # {task kind: reason}, as the peer reports it
    term: int = 0  # its election term and the master it follows, as its heartbeat reports them
    master: str | None = ""  # "": not reported (a peer whose heartbeat did not say); None: no master

    @property
    def alive(self) -> bool:
        return self.state == "alive"

    @classmethod
    def of(cls, info) -> PeerView:
        """From a membership `PeerInfo`."""
        extra = info.extra or {}
        bad = extra.get("unhealthy")
        master = extra.get("master", "")
        return cls(
            info.node_id,
            info.name,
            info.addr,
            info.state.value,
            info.cpus,
            info.load,
            info.mem_free,
            info.queue,
            tuple(info.capabilities or ()),
            info.model_version,
            dict(bad) if isinstance(bad, dict) else {},
            info.term,
            master if master is None or isinstance(master, str) else "",
        )


class ServiceContext(Protocol):
    """The node as a service sees it (see the module docstring)."""

    node_id: str
    name: str
    home: Path
    config: NodeConfig

    @property
    def term(self) -> int: ...
    @property
    def master_id(self) -> str | None: ...
    @property
    def is_master(self) -> bool: ...
    def accepts(self, term: object) -> bool: ...
    def can_commit(self) -> bool: ...
    def quorum_size(self) -> int: ...

    def peers(self) -> tuple[PeerView, ...]: ...
    def alive_peers(self) -> tuple[PeerView, ...]: ...
    def alive_ids(self) -> frozenset[str]: ...
    def peer(self, node_id: str) -> PeerView | None: ...
    def connected(self, node_id: str) -> bool: ...

    async def send(self, peer: str, msg: dict) -> bool: ...
    async def broadcast(self, msg: dict) -> None: ...
    async def send_blob(self, peer: str, fields: dict, data: bytes) -> None: ...
    async def request(self, peer: str, msg: dict, timeout: float = 10.0) -> dict: ...
    async def request_blob(self, peer: str, fields: dict, data: bytes, timeout: float = 10.0) -> dict: ...

    def publish(self, kind: str, **data) -> dict: ...
    def subscribe(self, kinds: set[str] | None = None, maxsize: int = 1000) -> Subscription: ...

    def register(self, schema: type[PeerMessage], fn: ServiceHandler) -> None: ...

    def provide_heartbeat(self, name: str, fn: Callable[[], Any]) -> None: ...
    def add_capabilities(self, *caps: str) -> None: ...
    def provide_capabilities(self, fn: Callable[[], Iterable[str]]) -> None: ...
    def capabilities(self) -> list[str]: ...

    def node_signer(self) -> tuple[bytes, Callable[[bytes], bytes]]: ...


# ----------------------------------------------------------------------------- heartbeat contributions
# the heartbeat fields a service may provide, with their values when none does
HEARTBEAT_DEFAULTS: dict[str, Callable[[], Any]] = {
    "queue": lambda: 0,
    "model_version": lambda: None,
    "unhealthy": dict,
}


class Contributions:
    """What the services add to this node's heartbeats, `status` and `nodes`: providers, not attributes.
    Each heartbeat field has at most one provider; capabilities are the union of the base set, the ones
    added and the providers' (sorted)."""

    def __init__(self, base: Iterable[str] = BASE_CAPABILITIES) -> None:
        self._fields: dict[str, Callable[[], Any]] = {}
        self._caps: set[str] = set(base)
        self._cap_fns: list[Callable[[], Iterable[str]]] = []

    def provide(self, name: str, fn: Callable[[], Any]) -> None:
        if name not in HEARTBEAT_DEFAULTS:
            raise ValueError(f"unknown heartbeat field {name!r} (one of {', '.join(HEARTBEAT_DEFAULTS)})")
        if name in self._fields:
            raise ValueError(f"heartbeat field {name!r} already has a provider")
        self._fields[name] = fn

    def value(self, name: str) -> Any:
        return self._fields.get(name, HEARTBEAT_DEFAULTS[name])()

    def add_capabilities(self, caps: Iterable[str]) -> None:
        self._caps.update(caps)

    def provide_capabilities(self, fn: Callable[[], Iterable[str]]) -> None:
        self._cap_fns.append(fn)

    def capabilities(self) -> list[str]:
        caps = set(self._caps)
        for fn in self._cap_fns:
            caps.update(fn())
        return sorted(caps)


# ----------------------------------------------------------------------------- handler tables
_HANDLES = "__peer_messages__"


def handler(*schemas: type[PeerMessage]) -> Callable:
    """Mark a service method ``async (self, sender, msg)`` as the handler of these peer message types."""
    for schema in schemas:
        if not (isinstance(schema, type) and issubclass(schema, PeerMessage)):
            raise TypeError(f"@handler takes PeerMessage types, got {schema!r}")

    def mark(fn: Callable) -> Callable:
        setattr(fn, _HANDLES, (*getattr(fn, _HANDLES, ()), *schemas))
        return fn

    return mark


def schema_table(obj: object) -> dict[str, tuple[type[PeerMessage], ServiceHandler]]:
    """``{msg_type: (schema, bound method)}`` of every ``@handler`` method of ``obj``."""
    table: dict[str, tuple[type[PeerMessage], ServiceHandler]] = {}
    for attr in dir(type(obj)):
        for schema in getattr(getattr(type(obj), attr, None), _HANDLES, ()):
            name = schema.type_name()
            if name in table:
                raise ValueError(f"{type(obj).__name__}: two handlers for {name!r}")
            table[name] = (schema, getattr(obj, attr))
    return table


def handler_table(obj: object) -> dict[str, ServiceHandler]:
    """``{msg_type: bound method}`` of every ``@handler`` method of ``obj``."""
    return {name: fn for name, (_, fn) in schema_table(obj).items()}


def register_handlers(ctx: ServiceContext, obj: object) -> dict[str, ServiceHandler]:
    """Register the handler table of ``obj`` with ``ctx``; returns it (for in-process delivery)."""
    table = schema_table(obj)
    for schema, fn in table.values():
        ctx.register(schema, fn)
    return {name: fn for name, (_, fn) in table.items()}


COMMIT_WAIT = 3.0  # seconds a commit waits for a just-elected master's grants (they come with the heartbeats)


async def may_commit_soon(ctx: ServiceContext, timeout: float = COMMIT_WAIT) -> bool:
    """Wait up to ``timeout`` s until ``ctx.can_commit()`` (a new master has its grants after a heartbeat);
    whether it can."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not ctx.can_commit():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def refusal(error: str) -> dict:
    """A handler's reply that refuses a request. The transport merges a handler's reply into
    ``{"t": "re", "re": id, "ok": True, ...}``: this one overrides ``ok``, which gives on the wire exactly
    the error reply a raised exception would (the requester raises `RemoteError(error)`), minus the
    transport's log line per message. A message that was not a request gets no reply, as always."""
    return {"ok": False, "error": error}


def fenced(fn: Callable) -> Callable:
    """The fencing check of a master-issued, side-effecting message (DESIGN.md, "Terms everywhere"): the
    message must come from ``self.ctx.master_id`` and its ``term`` must pass ``self.ctx.accepts``. Else it is refused (`refusal`), logged once per
    message type per `FENCE_LOG_EVERY` seconds with the count of the refusals held back since."""
    quiet = RefusalQuiet(FENCE_LOG_EVERY)  # one key: one line per interval for this handler

    @functools.wraps(fn)
    async def checked(self, sender: str, msg: dict):
        term, ctx = msg.get("term"), self.ctx
        if sender == ctx.master_id and ctx.accepts(term):
            return await fn(self, sender, msg)
        if sender != ctx.master_id:
            why = f"sent by {sender[:12]}, which is not this node's master"
        else:
            why = f"stale term {clip(repr(term))} (ours is {ctx.term})"
        held = quiet.note(fn.__qualname__, "fenced", time.monotonic())
        if held is not None:
            more = (
                f"; {held} more refused since the last line"
                if held
                else f"; more are summarised, one line per {FENCE_LOG_EVERY:g} s"
            )
            log.warning("refused %s from %s: %s%s", clip(msg.get("t")), sender[:12], why, more)
        return refusal(why)

    return checked


# ----------------------------------------------------------------------------- the runtime's context
class NodeContext:
    """The `ServiceContext` the runtime gives its services (one per service)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.node_id: str = node.node_id
        self.name: str = node.name
        self.home: Path = node.home
        self.config: NodeConfig = node.cfg

    # identity, term and fencing
    @property
    def term(self) -> int:
        return self._node.election.term

    @property
    def master_id(self) -> str | None:
        return self._node.election.master_id

    @property
    def is_master(self) -> bool:
        return self._node.is_master

    def accepts(self, term: object) -> bool:
        return isinstance(term, int) and self._node.election.accepts(term)  # an int >= our term (not a bool)

    def quorum_size(self) -> int:
        """How many nodes the cluster counts for a majority (a commit needs more than half of them)."""
        return self._node.election.quorum_size

    def can_commit(self) -> bool:
        return self._node.can_commit()

    # peers, read-only
    def peers(self) -> tuple[PeerView, ...]:
        """Every known peer (alive or not), sorted by node id."""
        return tuple(PeerView.of(p) for p in self._node.membership.peers())

    def alive_peers(self) -> tuple[PeerView, ...]:
        return tuple(p for p in self.peers() if p.alive)

    def alive_ids(self) -> frozenset[str]:
        return frozenset(self._node.membership.alive_ids())

    def peer(self, node_id: str) -> PeerView | None:
        info = self._node.membership.get(node_id)
        return PeerView.of(info) if info is not None else None

    def connected(self, node_id: str) -> bool:
        return node_id in self._node.peers.conns

    # messaging
    def _conn(self, peer: str):
        conn = self._node.peers.conns.get(peer)
        if conn is None:
            raise ConnectionError(f"node {peer[:12]} is not connected")
        return conn

    async def send(self, peer: str, msg: dict) -> bool:
        return await self._node.peers.send(peer, msg)

    async def broadcast(self, msg: dict) -> None:
        await self._node.peers.broadcast(msg)

    async def send_blob(self, peer: str, fields: dict, data: bytes) -> None:
        await self._conn(peer).send_blob(fields, data)

    async def request(self, peer: str, msg: dict, timeout: float = 10.0) -> dict:
        return await self._conn(peer).request(msg, timeout)

    async def request_blob(self, peer: str, fields: dict, data: bytes, timeout: float = 10.0) -> dict:
        return await self._conn(peer).request_blob(fields, data, timeout)

    # events
    def publish(self, kind: str, **data) -> dict:
        return self._node.events.publish(kind, **data)

    def subscribe(self, kinds: set[str] | None = None, maxsize: int = 1000) -> Subscription:
        return self._node.events.subscribe(kinds, maxsize)

    # handlers
    def register(self, schema: type[PeerMessage], fn: ServiceHandler) -> None:
        if schema.type_name() in self._node.handlers:
            raise ValueError(f"peer message {schema.type_name()!r} already has a handler")

        async def on_message(conn, msg: dict):
            return await fn(conn.peer_id, msg)

        self._node.register(schema, on_message)

    # heartbeat contributions
    def provide_heartbeat(self, name: str, fn: Callable[[], Any]) -> None:
        self._node.contributions.provide(name, fn)

    def add_capabilities(self, *caps: str) -> None:
        self._node.contributions.add_capabilities(caps)

    def provide_capabilities(self, fn: Callable[[], Iterable[str]]) -> None:
        self._node.contributions.provide_capabilities(fn)

    def capabilities(self) -> list[str]:
        return self._node.contributions.capabilities()

    def node_signer(self) -> tuple[bytes, Callable[[bytes], bytes]]:
        """(this node's public key as SubjectPublicKeyInfo DER, a function that signs with its node key):
        its node id is the SHA-256 of that public key, so anyone can check a signature's author."""
        from ..net.pki import sign_with

        return sign_with(self._node.ident.key)
