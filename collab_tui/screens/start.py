"""Shown when no node answers on the control socket: explains why and offers to start one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Static

from ..tui_client import CLIENT_ERRORS, daemon_log_tail, describe_error, has_identity, start_daemon
from ..widgets.topbar import TopBar


class StartScreen(Screen):
    CSS_PATH = "start.tcss"
    TITLE = "No node"
    BINDINGS = [
        Binding("s", "start_node", "Start node", id="start.node"),
        Binding("r", "retry", "Retry", id="start.retry"),
    ]

    @dataclass
    class Progress(Message):
        text: str
        failed: bool = False
        launched: bool = False
        up: bool = False

    def __init__(self, home: Path, reason: str) -> None:
        super().__init__()
        self.home = home
        self.reason = reason
        self.initialised = has_identity(home)
        self.starting = False

    def compose(self) -> ComposeResult:
        yield TopBar(tabs=False)
        with Center():
            with Vertical(id="start-box"):
                yield Static("No collab node is running", id="start-title")
                yield Static(self._explain(), id="start-text")
                with Horizontal(id="start-buttons"):
                    if self.initialised:
                        yield Button("Start node", id="start-node", variant="primary")
                    else:
                        yield Button("New cluster + start", id="start-init", variant="primary")
                    yield Button("Retry", id="start-retry")
                    yield Button("Quit", id="start-quit", variant="error")
                yield Static("", id="start-status")
        yield Footer(compact=True)

    def _explain(self) -> str:
        text = f"home: {self.home}\nreason: {self.reason}\n\n"
        if self.initialised:
            return text + (
                "Start this node now (`collab daemon --home` this home, detached: it keeps running "
                "after you quit the TUI), or start it yourself and press Retry."
            )
        return text + (
            "This home has no identity yet. Make a new cluster here (`collab init`, then the daemon), "
            "or join an existing one first:\n  collab join TOKEN --home " + str(self.home)
        )

    def set_reason(self, reason: str) -> None:
        self.reason = reason
        if not self.starting:
            self.query_one("#start-text", Static).update(self._explain())

    @on(Button.Pressed, "#start-node, #start-init")
    def _start_pressed(self) -> None:
        self.action_start_node()

    @on(Button.Pressed, "#start-retry")
    def _retry_pressed(self) -> None:
        self.action_retry()

    @on(Button.Pressed, "#start-quit")
    def _quit_pressed(self) -> None:
        self.app.exit()

    def action_retry(self) -> None:
        self.app.check_node()

    def action_start_node(self) -> None:
        if self.starting:
            return
        self.starting = True
        self.query_one("#start-status", Static).update("starting the node …")
        self._launch()

    @work(thread=True, group="start-node", exclusive=True)
    def _launch(self) -> None:
        try:
            pid = start_daemon(self.home, init_name="" if not self.initialised else None)
        except (OSError, RuntimeError, ValueError) as exc:
            self.post_message(self.Progress(f"could not start the node: {exc}", failed=True))
            return
        self.post_message(self.Progress(f"node started (pid {pid}); waiting for its control socket …", launched=True))

    @work(group="start-wait", exclusive=True)
    async def _wait_up(self) -> None:
        deadline = asyncio.get_running_loop().time() + 30.0
        last = ""
        while asyncio.get_running_loop().time() < deadline:
            try:
                await self.app.client.using(timeout=2.0).status()
            except CLIENT_ERRORS as exc:
                last = describe_error(exc)
                await asyncio.sleep(0.2)
                continue
            self.post_message(self.Progress("node is up", up=True))
            return
        tail = daemon_log_tail(self.home)
        self.post_message(self.Progress(f"the node did not come up within 30 s ({last})\n{tail}", failed=True))

    def on_start_screen_progress(self, message: Progress) -> None:
        self.query_one("#start-status", Static).update(message.text)
        if message.failed:
            self.starting = False
        elif message.launched:
            self._wait_up()
        elif message.up:
            self.app.check_node()
