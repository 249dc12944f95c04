"""The base of every mode screen: access to the node client, live event batches, error reporting."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input

from ..tui_client import CLIENT_ERRORS, describe_error
from ..widgets.batch import BatchReady
from .live import LiveState
from .messages import ClusterPolled, NodeEvents

if TYPE_CHECKING:
    from ..app import CollabApp
    from ..tui_client import NodeClient


class CollabScreen(Screen):
    """A mode screen. Subclasses override `refresh_data`, `node_events` and `cluster_polled`."""

    app: CollabApp

    @dataclass
    class Failed(Message):
        """A control call of this screen failed: shown as an error toast, then passed to `failed`."""

        what: str
        error: str

    @property
    def client(self) -> NodeClient:
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

    def failed(self, what: str, error: str) -> None:
        """React to a failed control call (after its error toast), e.g. show the reason in a widget."""

    def on_collab_screen_failed(self, message: Failed) -> None:
        self.notify(f"{message.what}: {message.error}", severity="error", timeout=6)
        self.failed(message.what, message.error)

    async def ask(
        self, what: str, call: Callable[[], Awaitable[Any]], reply: Callable[[Any], Message] | None = None
    ) -> Any:
        """From a worker: await one control call. Posts ``reply(result)`` (when given) and returns the result;
        on failure posts `Failed` (``what``: the reason) and returns None. ``call`` makes the request inside
        the guard, so what building it raises (a refused argument, a missing key) is a failure too."""
        try:
            result = await call()
        except CLIENT_ERRORS as exc:
            self.post_message(self.Failed(what, describe_error(exc)))
            return None
        if reply is not None:
            self.post_message(reply(result))
        return result
