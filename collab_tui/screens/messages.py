"""App-level messages (posting style: plain dataclasses).

Workers only post these; handlers on the app and the screens update widgets. Screen- and widget-level
messages are declared as nested dataclasses of the class that posts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message


@dataclass
class NodeConnected(Message):
    """The control socket answered `status`."""

    status: dict


@dataclass
class NodeMissing(Message):
    """No node answers on the control socket of the app's home."""

    reason: str


@dataclass
class NodeLost(Message):
    """The node's event stream ended (the node stopped, or the socket broke)."""


@dataclass
class NodeEvents(Message, bubble=False):
    """A batch of runtime events (kinds: peer, master, role, denylist, member_joined, job, job_item, fl,
    fl_phase, node_started, node_stopped; "dropped" when the node's queue overflowed)."""

    events: list[dict] = field(default_factory=list)


@dataclass
class ClusterPolled(Message, bubble=False):
    """Fresh `status` and `nodes` from the app's poller."""

    status: dict
    nodes: list[dict]
    ok: bool = True  # False: the poll failed (nothing to show; the event stream notices a lost node)
