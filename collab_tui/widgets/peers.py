"""Widgets of the Peers & trust screen: the invite form and the trust table."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Input, Label

from ..textfmt import parse_duration
from .forms import Form
from .tables import Col, KeyedTable


class InviteForm(Horizontal, Form):
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

    def collect(self) -> Requested:
        ttl = parse_duration(self.query_one("#invite-ttl", Input).value)
        uses = int(self.query_one("#invite-uses", Input).value or "0")
        if uses < 1:
            raise ValueError("uses must be at least 1")
        return self.Requested(ttl, uses)


class TrustTable(KeyedTable):
    """Known members (joined) and revoked nodes, with their live state when they are peers."""

    COLUMNS = (
        Col("short_id", "ID", 0),
        Col("name", "Name", 0, 16),
        Col("addr", "Address", 2, 24),
        Col("state", "State", 1),
        Col("trust", "Trust", 0),
    )

    def show(self, members: list[dict], states: dict[str, str]) -> None:
        self.fill(((m["node_id"], _member_cells(m, states)) for m in members), keep_cursor=True)


def _member_cells(m: dict, states: dict[str, str]) -> list:
    revoked = bool(m.get("revoked"))
    return [
        m.get("short_id", ""),
        m.get("name", ""),
        m.get("addr", ""),
        states.get(m["node_id"], "unknown" if not revoked else "-"),
        Text("revoked", style="bold red") if revoked else Text("member", style="green"),
    ]
