"""The base of the TUI's forms: a few inputs and one button that sends what they hold."""

from __future__ import annotations

from textual import on
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Input


class Form(Widget):
    """Pressing the form's button, or Enter in one of its inputs, calls `collect`: it returns the message to
    post (validated values), or raises ValueError with the reason, which `refuse` shows. Mix it in after the
    container that lays the form out, ``class InviteForm(Horizontal, Form)``: Textual takes a widget's CSS
    (type selectors, DEFAULT_CSS) along its first base only."""

    @on(Button.Pressed)
    @on(Input.Submitted)
    def submit(self, event: Message | None = None) -> None:
        """Send the form (also called directly, e.g. by a screen's key binding)."""
        if event is not None:
            event.stop()
        try:
            message = self.collect()
        except ValueError as exc:
            self.refuse(str(exc))
            return
        self.post_message(message)

    def collect(self) -> Message:
        """The message the form sends, built from its inputs; ValueError when one is not valid."""
        raise NotImplementedError

    def refuse(self, reason: str) -> None:
        """Show why the form was not sent."""
        self.notify(reason, severity="error")
