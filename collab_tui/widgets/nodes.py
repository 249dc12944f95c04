"""Widgets of the Nodes screen: the live table, one load sparkline per node, the details panel."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Label, Sparkline, Static

from ..textfmt import human_bytes
from ..textfmt import short_id as short
from .tables import Col, KeyedTable

STATE_STYLE = {"self": "bold", "alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}
ROLE_STYLE = {"master": "bold magenta", "candidate": "yellow"}


def health_text(row: dict) -> Text:
    """ "ok" (green), "faces failing" (bold red) for each task kind the node keeps failing, or "" (a node too
    old to report its health)."""
    bad = row.get("unhealthy") or {}
    if bad:
        return Text(", ".join(f"{kind} failing" for kind in bad), style="bold red")
    health = str(row.get("health") or "")
    return Text(health, style="green" if health == "ok" else "")


def cells(row: dict) -> list:
    state, role = str(row.get("state", "")), str(row.get("role", ""))
    return [
        str(row.get("name", "")),
        row.get("short_id") or short(row.get("node_id", "")),
        str(row.get("addr", "")),
        Text(role, style=ROLE_STYLE.get(role, "")),
        str(row.get("term", "")),
        Text(state, style=STATE_STYLE.get(state, "")),
        health_text(row),
        str(row.get("cpus", "")),
        f"{float(row.get('load') or 0):.2f}",
        human_bytes(row.get("mem_free")),
        str(row.get("queue", "")),
        (row.get("model_version") or "")[:12],
    ]


class NodeTable(KeyedTable):
    """One row per node, keyed by node id; the cursor stays on its node across refreshes."""

    COLUMNS = (
        Col("name", "Name", 0, 16),
        Col("short_id", "ID", 5),
        Col("addr", "Address", 3, 24),
        Col("role", "Role", 0),
        Col("term", "Term", 6),
        Col("state", "State", 0),
        Col("health", "Health", 1, 24),
        Col("cpus", "CPU", 8),
        Col("load", "Load", 2),
        Col("mem", "Mem free", 7),
        Col("queue", "Queue", 4),
        Col("model", "Model", 9),
    )
    ZEBRA = True

    @dataclass
    class NodeChosen(Message):
        """The cursor moved to (or Enter selected) a node."""

        node_id: str

    def show_rows(self, rows: list[dict]) -> None:
        if [r["node_id"] for r in rows] == [k.value for k in self.rows]:
            for r in rows:  # the same nodes: update the cells in place
                self.set_row(r["node_id"], cells(r))
        else:
            self.fill(((r["node_id"], cells(r)) for r in rows), keep_cursor=True)

    @on(DataTable.RowHighlighted)
    @on(DataTable.RowSelected)
    def _row_chosen(self, event: DataTable.RowHighlighted | DataTable.RowSelected) -> None:
        self.post_chosen(event, self.NodeChosen)


class LoadSparklines(VerticalScroll):
    """Load average history, one sparkline per node (newest sample on the right)."""

    def show(self, history: dict[str, Iterable[float]], names: dict[str, str], order: list[str]) -> None:
        for nid in order:
            data = list(history.get(nid, ())) or [0.0]
            wid = f"spark-{nid[:16]}"
            found = self.query(f"#{wid}")
            if found:
                line = found.first(Horizontal)
                line.query_one(Sparkline).data = data
                line.query_one(".spark-value", Label).update(f"{data[-1]:5.2f}", layout=False)
            else:
                self.mount(
                    Horizontal(
                        Label(names.get(nid, short(nid))[:10], classes="spark-name"),
                        Sparkline(data, summary_function=max),
                        Label(f"{data[-1]:5.2f}", classes="spark-value"),
                        id=wid,
                        classes="spark-line",
                    )
                )
        for line in self.query(".spark-line"):
            if line.id and line.id[len("spark-") :] not in {n[:16] for n in order}:
                line.remove()


class NodeDetails(Static):
    """Every field of the chosen node."""

    def show(self, row: dict | None, is_master: bool = False) -> None:
        if not row:
            self.update("Select a node to see its details.")
            return
        t = Text()
        t.append(f"{row.get('name', '')}", style="bold")
        t.append(f"  {row.get('short_id') or short(row.get('node_id', ''))}\n")
        seen = "now" if row.get("state") == "self" else f"{row.get('last_seen', '')} s ago"
        bad = row.get("unhealthy") or {}
        if bad:  # the full reasons: why the tasks of that kind go to the other nodes
            health = Text("; ".join(f"{kind} tasks fail: {why}" for kind, why in bad.items()), style="bold red")
        else:
            health = Text(str(row.get("health") or "unknown"), style="green" if row.get("health") == "ok" else "")
        faults = row.get("faults") or {}
        if faults:  # background loops that died and were restarted: say so where the operator looks
            health = Text.assemble(
                health,
                "\n" + " " * 12,
                Text("; ".join(f"{task} died: {why}" for task, why in faults.items()), style="bold red"),
            )
        fields = [
            ("address", row.get("addr", "")),
            ("role", f"{row.get('role', '')}, term {row.get('term', '')}"),
            ("state", f"{row.get('state', '')}, seen {seen}"),
            ("health", health),
            ("priority", row.get("priority", "")),
            ("cpu / load", f"{row.get('cpus', '')} cpus, load {row.get('load', '')}"),
            ("mem / queue", f"{human_bytes(row.get('mem_free'))} free, {row.get('queue', '')} queued"),
            ("model", row.get("model_version") or "none"),
        ]
        for label, value in fields:
            t.append(f"{label:<12}", style="dim")
            t.append(value if isinstance(value, Text) else f"{value}")
            t.append("\n")
        self.update(t, layout=False)
