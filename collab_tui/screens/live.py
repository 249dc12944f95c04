"""What the app knows about the cluster between polls: a plain object (no widgets), shared by screens."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..textfmt import short_id as short

HISTORY = 60  # load samples kept per node (one per poll)


@dataclass
class LiveState:
    status: dict = field(default_factory=dict)
    nodes: list[dict] = field(default_factory=list)
    load_history: dict[str, deque] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def update(self, status: dict, nodes: list[dict]) -> None:
        self.status, self.nodes = status, nodes
        for row in nodes:
            nid = row.get("node_id", "")
            if row.get("name"):
                self.names[nid] = row["name"]
            hist = self.load_history.setdefault(nid, deque(maxlen=HISTORY))
            hist.append(float(row.get("load") or 0.0))

    def name_of(self, node_id: str) -> str:
        """Name if known, else the short id."""
        return self.names.get(node_id or "", "") or short(node_id)

    def summary(self) -> str:
        st = self.status
        if not st:
            return "not connected"
        master = st.get("master")
        who = "" if master == st.get("node_id") else f" · master {self.name_of(master) if master else 'none yet'}"
        return (
            f"{st.get('name', '?')} · {st.get('role', '?')} · term {st.get('term', 0)}{who}"
            f" · {st.get('peers_alive', 0) + 1}/{st.get('cluster_size', 1)} up"
        )
