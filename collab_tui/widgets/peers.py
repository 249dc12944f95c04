"""Widgets of the Peers & trust screen: the invite form and the trust table."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Label

from ..textfmt import parse_duration


class InviteForm(Horizontal):
    """TTL + uses + "Make invite". Posts `Requested` with validated values."""

    @dataclass
    class Requested(Message):
        ttl: float
        uses: int

    def compose(self) -> ComposeResult:
        yield Label("TTL ")
        yield Input("1h", id="invite-ttl", compact=True)
        yield Label(" uses ")
        yield Input("1", id="invite-uses", type="integer", compact=True)
        yield Button("Make invite", id="invite-make", variant="primary", compact=True)

    @on(Button.Pressed, "#invite-make")
    @on(Input.Submitted)
    def request(self, event: Message | None = None) -> None:
        if event is not None:
            event.stop()
        try:
            ttl = parse_duration(self.query_one("#invite-ttl", Input).value)
            uses = int(self.query_one("#invite-uses", Input).value or "0")
            if uses < 1:
                raise ValueError("uses must be at least 1")
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return
        self.post_message(self.Requested(ttl, uses))


class TrustTable(DataTable):
    """Known members (joined) and revoked nodes, with their live state when they are peers."""

    COLUMNS = [("short_id", "ID"), ("name", "Name"), ("addr", "Address"), ("state", "State"), ("trust", "Trust")]

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def show(self, members: list[dict], states: dict[str, str]) -> None:
        chosen = self.chosen()
        self.clear()
        for m in members:
            revoked = bool(m.get("revoked"))
            self.add_row(m.get("short_id", ""), m.get("name", ""), m.get("addr", ""),
                         states.get(m["node_id"], "unknown" if not revoked else "-"),
                         Text("revoked", style="bold red") if revoked else Text("member", style="green"),
                         key=m["node_id"])
        keys = [m["node_id"] for m in members]
        if chosen in keys:
            self.move_cursor(row=keys.index(chosen))

    def chosen(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001
            return None
