"""Nodes: the cluster as this node sees it, live (table, load sparklines, details of the chosen node)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer

from ..widgets.nodes import LoadSparklines, NodeDetails, NodeTable
from ..widgets.topbar import TopBar
from .base import CollabScreen


class NodesScreen(CollabScreen):
    CSS_PATH = "nodes.tcss"
    TITLE = "Nodes"
    AUTO_FOCUS = "#nodes-table"
    BINDINGS = [Binding("r", "reload", "Refresh", id="nodes.refresh")]

    def compose(self) -> ComposeResult:
        yield TopBar()
        yield NodeTable(id="nodes-table")
        with Horizontal(id="nodes-bottom"):
            yield LoadSparklines(id="nodes-load")
            yield NodeDetails("Select a node to see its details.", id="nodes-details")
        yield Footer(compact=True)

    def refresh_data(self) -> None:
        if self.live.nodes:
            self.cluster_polled(self.live.status, self.live.nodes)

    def action_reload(self) -> None:
        self.app.poll_now()

    def cluster_polled(self, status: dict, nodes: list[dict]) -> None:
        if not self.is_current:
            return  # rendered from app.live when the screen shows again
        table = self.query_one(NodeTable)
        table.show_rows(nodes)
        self.query_one(LoadSparklines).show(self.live.load_history, self.live.names, [r["node_id"] for r in nodes])
        self._show_details(table.chosen())

    def on_node_table_node_chosen(self, message: NodeTable.NodeChosen) -> None:
        self._show_details(message.node_id)

    def _show_details(self, node_id: str | None) -> None:
        row = next((r for r in self.live.nodes if r["node_id"] == node_id), None)
        self.query_one(NodeDetails).show(row)
