"""Cluster-wide logs: the peer messages (`collab logs --cluster [-f]`), declared once with their bounds.

One-shot: a member asks the master (``log.query``); the master asks every live node (``log.fetch``, itself
included) for its last lines, merges them by time and answers. Follow, with leases that expire on their
own: a member asks the master to relay (``log.follow``, renewed while its client streams); the master,
while it holds relay leases, asks the nodes to forward (``log.want``); each node sends its new lines in
small rate-limited batches (``log.batch``); the master merges them by time and relays them (``log.relay``).
The logic is in node/cluster_logs.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .schema import MASTER, Count, PeerMessage, Term

__all__ = [
    "MAX_LINES",
    "MAX_BATCH",
    "MAX_MSG",
    "MAX_LEASE",
    "Level",
    "LogLine",
    "LogLines",
    "LogQuery",
    "LogFetch",
    "LogFollow",
    "LogWant",
    "LogBatch",
    "LogRelay",
    "LOG_MESSAGES",
]

MAX_LINES = 1000  # lines in one query / fetch answer
MAX_BATCH = 200  # lines in one forwarded or relayed batch
MAX_MSG = 2000  # characters of one line's message (longer ones are cut by their sender)
MAX_LEASE = 10.0  # seconds a follow / want lease may last before it is renewed

Level = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
NodeName = Annotated[str, msgspec.Meta(max_length=64)]
Lease = Annotated[float, msgspec.Meta(ge=0.1, le=MAX_LEASE)]
HowMany = Annotated[int, msgspec.Meta(ge=0, le=MAX_LINES)]


class LogLine(msgspec.Struct, kw_only=True):
    """One log record as it travels. ``node`` is set by whoever receives it from its sender (the name it knows
    the sender by), never taken from the sender."""

    ts: Annotated[float, msgspec.Meta(ge=0, le=1e11)]
    level: Annotated[str, msgspec.Meta(max_length=16)] = "INFO"
    logger: Annotated[str, msgspec.Meta(max_length=100)] = ""
    node: NodeName = ""
    msg: Annotated[str, msgspec.Meta(max_length=MAX_MSG)] = ""
    seq: Count = 0


class LogLines(msgspec.Struct, kw_only=True):
    """The answer to ``log.query`` and ``log.fetch`` (checked by the asker before use)."""

    records: Annotated[list[LogLine], msgspec.Meta(max_length=MAX_LINES)] = []


class LogQuery(PeerMessage, tag="log.query"):
    """A member asks the master for the cluster's last ``n`` lines (merged by time), at ``level`` or above,
    of the node named ``node`` only when given. Answered with `LogLines`. Rate-limited per sender."""

    n: HowMany = 100
    level: Level = "DEBUG"
    node: NodeName | None = None


class LogFetch(PeerMessage, tag="log.fetch"):
    """Ask a node for its own last ``n`` lines at ``level`` or above (the master does, for a query; any member
    may when there is no master). Answered with `LogLines`. Rate-limited per sender."""

    n: HowMany = 100
    level: Level = "DEBUG"


class LogFollow(PeerMessage, tag="log.follow"):
    """A member asks the master to relay the cluster's new lines to it for ``lease`` seconds (renewed while
    its client streams; it lapses on its own)."""

    lease: Lease = 5.0
    level: Level = "DEBUG"
    node: NodeName | None = None


class LogWant(PeerMessage, tag="log.want"):
    """The master asks a node to forward its new lines at ``level`` or above for ``lease`` seconds."""

    SENDER = MASTER
    term: Term
    lease: Lease = 5.0
    level: Level = "DEBUG"


class LogBatch(PeerMessage, tag="log.batch"):
    """A node's new lines for the master (sent while it holds a want lease); ``dropped``: lines it dropped
    since the previous batch (over its rate or its queue)."""

    lines: Annotated[list[LogLine], msgspec.Meta(max_length=MAX_BATCH)] = []
    dropped: Count = 0


class LogRelay(PeerMessage, tag="log.relay"):
    """The master relays merged lines to a member holding a follow lease."""

    SENDER = MASTER
    term: Term
    lines: Annotated[list[LogLine], msgspec.Meta(max_length=MAX_BATCH)] = []
    dropped: Count = 0


LOG_MESSAGES: tuple[type[PeerMessage], ...] = (LogQuery, LogFetch, LogFollow, LogWant, LogBatch, LogRelay)
