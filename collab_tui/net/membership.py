"""Sans-IO cluster membership: who is alive, suspect or dead, and their latest heartbeat.

No sockets, no timers: the driver feeds inputs with the current monotonic clock ``now``
(seconds) and calls :meth:`Membership.tick` at :meth:`Membership.next_deadline`.

Failure detection (``interval`` = heartbeat period):

* any heartbeat or other traffic (``on_hello``/``on_heartbeat``/``on_seen``) refreshes
  ``last_seen`` and brings the peer back to ALIVE;
* ``suspect_after * interval`` seconds of silence -> SUSPECT;
* ``dead_after * interval`` seconds of silence -> DEAD;
* ``on_disconnect`` (connection closed) -> SUSPECT at once (DEAD later if it stays silent);
* ``on_leave`` (graceful leave) -> DEAD at once. A peer that left is only revived by a new
  ``on_hello`` (late in-flight traffic does not resurrect it).
* ``on_gone`` (its process is gone: nothing accepts connections at its address) -> DEAD at once.

Events (drained with :meth:`Membership.take_events`; frozen dataclasses declared in
:mod:`.membership_events`, re-exported here), never duplicated for an unchanged state:
``PeerJoined(id)`` first time a peer is known, ``PeerSuspect(id)``, ``PeerDead(id)``,
``PeerAlive(id)`` back from SUSPECT/DEAD, ``PeerRestarted(id)`` a HELLO with another boot id than the
last one (its process started again, perhaps before anyone found it dead: what it held in memory is
gone), ``PeerLeft(id)`` graceful leave (state DEAD; no separate ``PeerDead``). A late tick going straight
from ALIVE to DEAD emits only ``PeerDead``.
Each event class carries its ``change`` string (``join``/``suspect``/``dead``/``alive``/``restart``/``leave``),
which the runtime publishes to the UIs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .membership_events import PeerAlive, PeerDead, PeerEvent, PeerJoined, PeerLeft, PeerRestarted, PeerSuspect

__all__ = [
    "PeerEvent",
    "PeerJoined",
    "PeerSuspect",
    "PeerDead",
    "PeerAlive",
    "PeerRestarted",
    "PeerLeft",
    "PeerState",
    "PeerInfo",
    "MembershipError",
    "InvalidHeartbeat",
    "Membership",
    "heartbeat_fields",
]


class PeerState(StrEnum):
    """Liveness of a peer as seen by this node."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


class MembershipError(ValueError):
    """Bad input to :class:`Membership`."""


class InvalidHeartbeat(MembershipError):
    """A heartbeat message has missing or ill-typed fields."""


@dataclass
class PeerInfo:
    """What we know about one peer (identity, liveness and its latest heartbeat)."""

    node_id: str
    name: str = ""
    addr: str = ""  # "host:port"
    priority: int = 0
    last_seen: float = 0.0
    state: PeerState = PeerState.ALIVE
    role: str = "follower"
    term: int = 0
    cpus: int = 0
    load: float = 0.0
    mem_free: int = 0  # bytes
    queue: int = 0
    capabilities: list[str] = field(default_factory=list)
    model_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    boot: str = ""  # the boot id of its last HELLO (new at every start of its process)


def heartbeat_fields(
    role: str,
    term: int,
    cpus: int,
    load: float,
    mem_free: int,
    queue: int,
    capabilities: list[str] | tuple[str, ...] = (),
    model_version: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the heartbeat wire message ``{"t": "hb", ...}`` (JSON-able)."""
    msg: dict[str, Any] = {
        "t": "hb",
        "role": str(role),
        "term": int(term),
        "cpus": int(cpus),
        "load": float(load),
        "mem_free": int(mem_free),
        "queue": int(queue),
        "capabilities": [str(c) for c in capabilities],
        "model_version": model_version,
    }
    if extra:
        msg["extra"] = dict(extra)
    return msg


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# field -> (validator, description)
_HB_FIELDS: dict[str, tuple[Any, str]] = {
    "role": (lambda v: isinstance(v, str), "a string"),
    "term": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "cpus": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "load": (lambda v: (_is_int(v) or isinstance(v, float)) and v >= 0, "a number >= 0"),
    "mem_free": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "queue": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "capabilities": (
        lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
        "a list of strings",
    ),
    "model_version": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "addr": (lambda v: isinstance(v, str), "a string"),
    "priority": (_is_int, "an int"),
}


class Membership:
    """Failure detector and peer table for one node (``self_id`` is never a peer)."""

    def __init__(
        self,
        self_id: str,
        interval: float = 0.3,
        suspect_after: int = 3,
        dead_after: int = 6,
    ) -> None:
        if interval <= 0:
            raise MembershipError(f"interval must be > 0, got {interval!r}")
        if not 0 < suspect_after < dead_after:
            raise MembershipError(f"need 0 < suspect_after < dead_after, got {suspect_after}, {dead_after}")
        self.self_id = self_id
        self.interval = float(interval)
        self.suspect_after = suspect_after
        self.dead_after = dead_after
        self._peers: dict[str, PeerInfo] = {}
        self._left: set[str] = set()
        self._events: list[PeerEvent] = []

    # -- thresholds -------------------------------------------------------------------
    @property
    def suspect_timeout(self) -> float:
        """Seconds of silence before a peer becomes SUSPECT."""
        return self.suspect_after * self.interval

    @property
    def dead_timeout(self) -> float:
        """Seconds of silence before a peer becomes DEAD."""
        return self.dead_after * self.interval

    # -- inputs -----------------------------------------------------------------------
    def on_hello(self, peer_id: str, name: str, addr: str, priority: int, now: float, boot: str = "") -> None:
        """A peer authenticated (handshake done): it is ALIVE. ``boot``: the id its process drew at start."""
        self._check_peer_id(peer_id)
        if not _is_int(priority):
            raise MembershipError(f"priority must be an int, got {priority!r}")
        info = self._peers.get(peer_id)
        if info is None:
            info = PeerInfo(node_id=peer_id, last_seen=now)
            self._peers[peer_id] = info
            self._events.append(PeerJoined(peer_id))
        elif boot and info.boot and boot != info.boot:
            self._events.append(PeerRestarted(peer_id))
        info.boot = str(boot) or info.boot
        self._left.discard(peer_id)
        info.name, info.addr, info.priority = str(name), str(addr), priority
        self._refresh(info, now)

    def on_heartbeat(self, peer_id: str, fields: dict[str, Any], now: float) -> None:
        """Store the heartbeat fields of ``peer_id`` (validated first: all or nothing)."""
        self._check_peer_id(peer_id)
        if not isinstance(fields, dict):
            raise InvalidHeartbeat(f"heartbeat from {peer_id[:12]} is not an object")
        for key, (ok, what) in _HB_FIELDS.items():
            if key in fields and not ok(fields[key]):
                raise InvalidHeartbeat(
                    f"heartbeat field {key!r} from {peer_id[:12]} must be {what}, got {fields[key]!r}"
                )
        extra = fields.get("extra", {})
        if not isinstance(extra, dict):
            raise InvalidHeartbeat(f"heartbeat field 'extra' from {peer_id[:12]} must be an object")
        if peer_id in self._left:
            return  # late heartbeat of a peer that left; only on_hello revives it
        info = self._peers.get(peer_id)
        if info is None:
            info = PeerInfo(node_id=peer_id, last_seen=now)
            self._peers[peer_id] = info
            self._events.append(PeerJoined(peer_id))
        for key in _HB_FIELDS:
            if key in fields:
                value = fields[key]
                setattr(info, key, list(value) if key == "capabilities" else value)
        if "load" in fields:
            info.load = float(fields["load"])
        skip = {"t", "extra", *_HB_FIELDS}
        unknown = {k: v for k, v in fields.items() if k not in skip}
        info.extra = {**extra, **unknown}
        self._refresh(info, now)

    def on_seen(self, peer_id: str, now: float) -> None:
        """Any traffic from a known peer (unknown or departed peers are ignored)."""
        info = self._peers.get(peer_id)
        if info is None or peer_id in self._left:
            return
        self._refresh(info, now)

    def on_disconnect(self, peer_id: str, now: float) -> None:
        """The connection to ``peer_id`` closed: SUSPECT right away (not dead)."""
        info = self._peers.get(peer_id)
        if info is None or info.state is not PeerState.ALIVE:
            return
        info.state = PeerState.SUSPECT
        self._events.append(PeerSuspect(peer_id, closed=True))

    def on_leave(self, peer_id: str, now: float) -> None:
        """Graceful leave: DEAD at once, event ``PeerLeft(id)``."""
        info = self._peers.get(peer_id)
        if info is None or peer_id in self._left:
            return
        self._left.add(peer_id)
        info.state = PeerState.DEAD
        self._events.append(PeerLeft(peer_id))

    def on_gone(self, peer_id: str, now: float) -> None:
        """The peer's process is gone (its address refuses connections): DEAD at once, event
        ``PeerDead(id)``; unlike a graceful leave, a later heartbeat revives it."""
        info = self._peers.get(peer_id)
        if info is None or info.state is PeerState.DEAD:
            return
        info.state = PeerState.DEAD
        self._events.append(PeerDead(peer_id))

    def remove(self, peer_id: str) -> None:
        """Forget ``peer_id`` entirely (no event)."""
        self._peers.pop(peer_id, None)
        self._left.discard(peer_id)

    def tick(self, now: float) -> None:
        """Degrade silent peers: ALIVE -> SUSPECT -> DEAD (never upgrades)."""
        dead_timeout, suspect_timeout = self.dead_timeout, self.suspect_timeout  # read once: n peers a tick
        for pid, info in self._peers.items():
            silent = now - info.last_seen
            if silent < suspect_timeout or info.state is PeerState.DEAD:  # the common case first
                continue  # (suspect_timeout < dead_timeout: the constructor checks it)
            if silent >= dead_timeout:
                info.state = PeerState.DEAD
                self._events.append(PeerDead(pid))
            elif silent >= suspect_timeout and info.state is PeerState.ALIVE:
                info.state = PeerState.SUSPECT
                self._events.append(PeerSuspect(pid))

    # -- outputs / queries --------------------------------------------------------------
    def take_events(self) -> list[PeerEvent]:
        """Return and clear the queued events, oldest first."""
        events, self._events = self._events, []
        return events

    def alive_ids(self) -> set[str]:
        """Ids of peers currently ALIVE (SUSPECT and DEAD excluded; self excluded)."""
        return {pid for pid, p in self._peers.items() if p.state is PeerState.ALIVE}

    def peers(self) -> list[PeerInfo]:
        """All known peers, sorted by node id."""
        return [self._peers[k] for k in sorted(self._peers)]

    def get(self, peer_id: str) -> PeerInfo | None:
        """The :class:`PeerInfo` of ``peer_id`` or ``None``."""
        return self._peers.get(peer_id)

    def next_deadline(self) -> float | None:
        """Earliest time at which :meth:`tick` may change a state, or ``None``."""
        times = []
        for info in self._peers.values():
            if info.state is PeerState.ALIVE:
                times.append(info.last_seen + self.suspect_timeout)
            elif info.state is PeerState.SUSPECT:
                times.append(info.last_seen + self.dead_timeout)
        return min(times) if times else None

    heartbeat_fields = staticmethod(heartbeat_fields)

    # -- internals ------------------------------------------------------------------------
    def _check_peer_id(self, peer_id: str) -> None:
        if not isinstance(peer_id, str) or not peer_id:
            raise MembershipError(f"peer id must be a non-empty string, got {peer_id!r}")
        if peer_id == self.self_id:
            raise MembershipError("a peer cannot have our own node id")

    def _refresh(self, info: PeerInfo, now: float) -> None:
        info.last_seen = max(info.last_seen, now)
        if info.state is not PeerState.ALIVE:
            info.state = PeerState.ALIVE
            self._events.append(PeerAlive(info.node_id))
