"""The operator's TUI: `collab` with no arguments. Textual App with one MODE per screen.

The app owns the connection to the local node (its control socket): one worker follows the node's event
stream and buffers events (flushed to the screens at most every 100 ms, so floods are coalesced), one
poller refreshes `status` + `nodes`. Screens read `app.client`, `app.live` and receive `NodeEvents` /
`ClusterPolled` batches. Workers only post messages; every widget update happens in a handler.
When no node runs, a start screen offers to start one (a detached `collab daemon`).

Heavy modules (TensorFlow, OpenCV) never load here: the image preview imports cv2 inside its worker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding

from .screens.commands import CollabCommands
from .screens.jobs import JobsScreen
from .screens.live import LiveState
from .screens.logs import LogsScreen
from .screens.messages import ClusterPolled, NodeConnected, NodeEvents, NodeLost, NodeMissing
from .screens.nodes import NodesScreen
from .screens.peers import PeersScreen
from .screens.people import PeopleScreen
from .screens.start import StartScreen
from .screens.training import TrainingScreen
from .tui_client import CLIENT_ERRORS, NodeClient, connect, describe_error
from .widgets.batch import Batcher, BatchReady
from .widgets.topbar import TABS

MODE_NAMES = {
    "nodes": "Nodes",
    "jobs": "Jobs",
    "training": "Training",
    "peers": "Peers & trust",
    "logs": "Logs",
    "people": "People",
}
DARK, LIGHT = "textual-dark", "textual-light"
FLUSH_EVERY = 0.1  # seconds: at most ten event batches a second reach the screens


class CollabApp(App[None]):
    """``CollabApp(home)`` attaches to the node of ``home``; tests pass ``client=`` (any `NodeClient`)."""

    CSS_PATH = "app.tcss"
    TITLE = "collab"
    MODES = {
        "nodes": NodesScreen,
        "jobs": JobsScreen,
        "training": TrainingScreen,
        "peers": PeersScreen,
        "logs": LogsScreen,
        "people": PeopleScreen,
    }
    DEFAULT_MODE = "nodes"
    # Screens get the class -narrow below 100 columns (their .tcss packs the panels tighter there).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    COMMANDS = App.COMMANDS | {CollabCommands}
    BINDINGS = [  # the screen keys stay out of the footer: the TopBar's tabs show them
        *(Binding(key, f"switch_mode('{mode}')", label, show=False, id=f"mode.{mode}") for mode, key, label in TABS),
        Binding("t", "toggle_theme", "Theme", id="app.toggle_theme"),
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("escape", "unfocus", "Leave field", show=False, id="app.unfocus"),
    ]

    def __init__(
        self,
        home: Path | None = None,
        client: NodeClient | None = None,
        *,
        theme: str = DARK,
        cursor_blink: bool = True,
        poll_interval: float = 1.0,
        browse_root: Path | None = None,
        images: str = "halfblocks",
    ) -> None:
        super().__init__()
        if client is None and home is None:
            raise ValueError("give a home or a client")
        self.client: NodeClient = client if client is not None else connect(Path(home))
        self.home = Path(home) if home is not None else Path(self.client.home)
        self.cursor_blink = cursor_blink
        self.poll_interval = poll_interval
        self.browse_root = browse_root if browse_root is not None else Path.cwd()
        self.images = images  # how the image preview draws: "sixel", "kitty" or "halfblocks" (terminal_images)
        self.live = LiveState()
        self.listeners: set = set()  # mounted mode screens; they get every event batch and poll
        self.connected = False
        self.events = Batcher(self, self._flush_events, every=FLUSH_EVERY)
        self._polling = False
        self.theme = theme

    # ----------------------------------------------------------------- connection
    def on_mount(self) -> None:
        self.sub_title = "connecting…"
        self.check_node()
        if self.poll_interval > 0:
            self.set_interval(self.poll_interval, self._poll_tick)

    @work(group="connect", exclusive=True)
    async def check_node(self, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        try:
            status = await self.client.using(timeout=5.0).status()
        except CLIENT_ERRORS as exc:
            self.post_message(NodeMissing(describe_error(exc)))
            return
        self.post_message(NodeConnected(status))

    def on_node_connected(self, message: NodeConnected) -> None:
        self.connected = True
        self.live.status = message.status
        self.sub_title = self.live.summary()
        if isinstance(self.screen, StartScreen):
            self.pop_screen()
        self.follow_events()
        self.poll_now()

    def on_node_missing(self, message: NodeMissing) -> None:
        self.connected = False
        self.sub_title = "no node running"
        if isinstance(self.screen, StartScreen):
            self.screen.set_reason(message.reason)
        else:
            self.push_screen(StartScreen(self.home, message.reason))
        self.check_node(delay=2.0)  # a node started elsewhere (another terminal) is picked up too

    @work(group="events", exclusive=True)
    async def follow_events(self) -> None:
        """Buffer the node's event stream; the screens get it in batches, at most every FLUSH_EVERY s."""
        try:
            async for event in self.client.subscribe():
                self.events.add(event)
        except CLIENT_ERRORS:
            pass
        self.post_message(NodeLost())

    def on_node_lost(self, message: NodeLost) -> None:
        self.connected = False
        self.check_node(delay=0.3)

    def on_batch_ready(self, message: BatchReady) -> None:
        message.batcher.ready()

    def _flush_events(self, batch: list[dict]) -> None:
        if any(ev.get("kind") in ("master", "role", "peer", "denylist", "member_joined") for ev in batch):
            self.poll_now()
        for screen in list(self.listeners):
            screen.post_message(NodeEvents(batch))

    # ----------------------------------------------------------------- polling
    def _poll_tick(self) -> None:
        if self.connected:
            self.poll_now()

    def poll_now(self) -> None:
        if not self._polling:
            self._polling = True
            self._poll()

    @work(group="poll")
    async def _poll(self) -> None:
        try:
            status = await self.client.using(timeout=10.0).status()
            nodes = await self.client.using(timeout=10.0).nodes()
        except CLIENT_ERRORS:
            self.post_message(ClusterPolled({}, [], ok=False))
            return
        self.post_message(ClusterPolled(status, nodes))

    def on_cluster_polled(self, message: ClusterPolled) -> None:
        self._polling = False
        if not message.ok:
            return
        self.live.update(message.status, message.nodes)
        self.sub_title = self.live.summary()
        for screen in list(self.listeners):
            screen.post_message(ClusterPolled(message.status, message.nodes))

    # ----------------------------------------------------------------- actions
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "switch_mode" and isinstance(self.screen, StartScreen):
            return False  # nothing to show without a node
        return True

    def action_unfocus(self) -> None:
        """Leave a text field, so that the single-key bindings work again."""
        self.screen.set_focus(None)

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT if self.current_theme.dark else DARK

    async def goto(self, mode: str, action: str | None = None) -> None:
        """Switch to a mode screen, then run one of its actions (command palette)."""
        if isinstance(self.screen, StartScreen):
            self.notify("start a node first", severity="warning")
            return
        await self.switch_mode(mode)
        if action:
            await self.screen.run_action(action)


def run_tui(home: Path) -> int:
    """Entry point of `collab` without a subcommand. The terminal is asked how it shows images first: it
    cannot be asked once Textual reads the keyboard."""
    from .widgets.terminal_images import probe

    CollabApp(home=home, images=probe()).run()
    return 0
