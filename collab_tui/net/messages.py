"""The runtime's own peer messages (membership, election, member lists, the trust log, renewals), declared once.

Each type is a `PeerMessage` (net/schema.py): typed, bounded fields and who may send it. The node validates
every incoming message against its type before anything handles it. The services declare theirs next to
their handlers (jobs/messages.py, training/messages.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .schema import Count, NodeId, PeerMessage, Term

__all__ = [
    "Heartbeat",
    "ElElection",
    "ElAnswer",
    "ElCoordinator",
    "ElLeave",
    "Peers",
    "Member",
    "TrustLog",
    "TrustGet",
    "CertRenew",
    "Ping",
    "Hello",
    "BUILTIN",
    "MAX_MEMBERS",
]

MAX_MEMBERS = 256  # members in one `peers` message
MAX_TRUST_ENTRIES = 50_000  # entries in one `trust_log` message (the frame cap bounds its bytes too)
TrustHash = Annotated[str, msgspec.Meta(pattern="^([0-9a-f]{16})?$")]

Capability = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
Reason = Annotated[str, msgspec.Meta(max_length=300)]
HostPort = Annotated[str, msgspec.Meta(max_length=300)]
NodeName = Annotated[str, msgspec.Meta(max_length=64)]


class Heartbeat(PeerMessage, tag="hb"):
    """A member's liveness and load, every heartbeat interval. Its ``role`` and ``master`` are what the
    sender believes: they are recorded as its report and grant nothing (net/election.py)."""

    role: Literal["follower", "candidate", "master"] = "follower"
    term: Term = 0
    master: NodeId | None = None  # the node the sender follows (or itself)
    cpus: Annotated[int, msgspec.Meta(ge=0, le=65536)] = 0
    load: Annotated[float, msgspec.Meta(ge=0, le=1e6)] = 0.0
    mem_free: Annotated[int, msgspec.Meta(ge=0, le=2**60)] = 0
    queue: Annotated[int, msgspec.Meta(ge=0, le=10**9)] = 0
    capabilities: Annotated[list[Capability], msgspec.Meta(max_length=64)] = []
    model_version: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    deny_v: Count = 0  # entries in the sender's trust log
    trust_h: TrustHash = ""  # digest of their ids: the same count with another digest is another set
    unhealthy: Annotated[dict[Capability, Reason], msgspec.Meta(max_length=16)] = {}
    faults: Annotated[dict[Capability, Reason], msgspec.Meta(max_length=8)] = {}  # background tasks that died
    grant: tuple[Term, NodeId | None] | None = None  # the highest term the sender granted, and to whom
    dead: Annotated[list[NodeId], msgspec.Meta(max_length=1024)] = []  # a large cluster's master: whom it finds dead


class ElElection(PeerMessage, tag="el.election"):
    """Bully: a candidate asks the higher-ranked members whether they are there."""

    term: Term


class ElAnswer(PeerMessage, tag="el.answer"):
    """Bully: a higher-ranked member answers a candidate (and runs its own election)."""

    term: Term


class ElCoordinator(PeerMessage, tag="el.coordinator"):
    """A master claim. Accepted only from the member that ranks highest among the live members in the
    receiver's own view (or one a majority reports as master); see net/election.py."""

    term: Term


class ElLeave(PeerMessage, tag="el.leave"):
    """A graceful leave: the sender (only) goes away."""

    term: Term


class MbAsk(PeerMessage, tag="mb.ask"):
    """An indirect probe (large clusters, net/control.py): do you still hear ``about``?"""

    about: NodeId


class MbSeen(PeerMessage, tag="mb.seen"):
    """The answer to `MbAsk`: whether the sender heard ``about`` within 2 heartbeat intervals."""

    about: NodeId
    fresh: bool


class Member(msgspec.Struct, kw_only=True):
    node_id: NodeId
    name: NodeName = ""
    addr: HostPort = ""


class Peers(PeerMessage, tag="peers"):
    """Addresses of members the sender knows: hints to dial (a handshake proves each one)."""

    members: Annotated[list[Member], msgspec.Meta(max_length=MAX_MEMBERS)] = []


class TrustLog(PeerMessage, tag="trust_log"):
    """Trust-log entries (net/trust_log.py): each is checked against its schema and its author's signature
    (the root, or an admin the root granted) before it is kept, whoever relays it; the rest are dropped."""

    entries: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=MAX_TRUST_ENTRIES)]


class TrustGet(PeerMessage, tag="trust_get"):
    """Ask for the sender's whole trust log (after a heartbeat showed a set we lack)."""


class CertRenew(PeerMessage, tag="cert_renew"):
    """A member asks a signer (the root or an admin) for a new certificate for its own key. The signer
    checks that the CSR's key is the sender's (a member renews only itself) and that it is not revoked."""

    csr_pem: Annotated[str, msgspec.Meta(max_length=4096)]


class Ping(PeerMessage, tag="ping"):
    """A round trip (answered with the time)."""


class Hello(PeerMessage, tag="hello"):
    """The first message after TLS (and its answer, ``hello_ack``): who the sender says it is. The node id
    must match the certificate; the priority is never taken from here (member records are)."""

    node_id: NodeId
    proto: Annotated[int, msgspec.Meta(ge=0, le=2**31)]
    cluster: NodeId
    name: NodeName = ""
    addr: HostPort = ""
    ca: bool = False  # the sender can sign joins (the root or an admin)
    deny_v: Count = 0
    trust_h: TrustHash = ""
    grant: dict[str, Any] | None = None  # the root's admin_add entry for the issuer of the sender's certificate
    term: Term = 0
    boot: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{0,32}$")] = ""  # new at every start of the process


BUILTIN: tuple[type[PeerMessage], ...] = (
    Heartbeat,
    ElElection,
    ElAnswer,
    ElCoordinator,
    ElLeave,
    MbAsk,
    MbSeen,
    Peers,
    TrustLog,
    TrustGet,
    CertRenew,
    Ping,
)
