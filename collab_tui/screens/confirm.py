"""Confirmations: before revoking a node (the operator types an optional reason), before another action."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class ConfirmRevoke(ModalScreen[str | None]):
    """Dismisses with the reason (possibly "") to revoke, or None to cancel."""

    CSS_PATH = "confirm.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="confirm.cancel")]

    def __init__(self, name: str, short_id: str) -> None:
        super().__init__()
        self.node_name = name
        self.short_id = short_id

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Label(f"Revoke {self.node_name or '(unnamed)'} {self.short_id}?", id="confirm-title")
            yield Static(
                "The node is cut off at once and can never rejoin with its key. "
                "This signs a revocation into the trust log (on the root or an admin).",
                id="confirm-text",
            )
            yield Input(placeholder="reason (optional, recorded in the trust log)", id="confirm-reason")
            with Horizontal(id="confirm-buttons"):
                yield Button("Revoke", id="confirm-yes", variant="error")
                yield Button("Cancel", id="confirm-no")

    def on_mount(self) -> None:
        if not getattr(self.app, "cursor_blink", True):
            self.query_one(Input).cursor_blink = False

    @on(Button.Pressed, "#confirm-yes")
    @on(Input.Submitted, "#confirm-reason")
    def _yes(self) -> None:
        self.dismiss(self.query_one("#confirm-reason", Input).value.strip())

    @on(Button.Pressed, "#confirm-no")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmAction(ModalScreen[bool]):
    """Dismisses with True to go ahead, False to cancel."""

    CSS_PATH = "confirm.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="confirm.cancel")]

    def __init__(self, title: str, text: str, yes: str) -> None:
        super().__init__()
        self.title_text, self.body, self.yes = title, text, yes

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Label(self.title_text, id="confirm-title")
            yield Static(self.body, id="confirm-text")
            with Horizontal(id="confirm-buttons"):
                yield Button(self.yes, id="confirm-yes", variant="error")
                yield Button("Cancel", id="confirm-no")

    @on(Button.Pressed, "#confirm-yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-no")
    def action_cancel(self) -> None:
        self.dismiss(False)
