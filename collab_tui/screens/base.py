"""The base of every mode screen: access to the node client, live event batches, error reporting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import Screen
from textual.widgets import Input

from ..widgets.batch import BatchReady
from .live import LiveState
from .messages import ClusterPolled, NodeEvents

if TYPE_CHECKING:
    from ..app import CollabApp
    from ..tui_client import NodeClient


class CollabScreen(Screen):
    """A mode screen. Subclasses override `refresh_data`, `node_events` and `cluster_polled`."""

    app: "CollabApp"

    @property
    def client(self) -> "NodeClient":
        return self.app.client

    @property
    def live(self) -> LiveState:
        return self.app.live

    def on_mount(self) -> None:
        self.app.listeners.add(self)
        if not self.app.cursor_blink:
            for inp in self.query(Input):
                inp.cursor_blink = False
        self.refresh_data()

    def on_unmount(self) -> None:
        self.app.listeners.discard(self)

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.refresh_data()

    def on_node_events(self, message: NodeEvents) -> None:
        if any(ev.get("kind") == "dropped" for ev in message.events):
            self.refresh_data()  # the node dropped events for us: reload in full
        self.node_events(message.events)

    def on_batch_ready(self, message: BatchReady) -> None:
        message.batcher.ready()

    def on_cluster_polled(self, message: ClusterPolled) -> None:
        self.cluster_polled(message.status, message.nodes)

    # hooks
    def refresh_data(self) -> None:
        """Reload what the screen shows from the node (starts workers; must not block)."""

    def node_events(self, events: list[dict]) -> None:
        """React to a batch of runtime events."""

    def cluster_polled(self, status: dict, nodes: list[dict]) -> None:
        """React to the app's periodic `status` + `nodes` poll."""

    def fail(self, what: str, error: str) -> None:
        self.notify(f"{what}: {error}", severity="error", timeout=6)
