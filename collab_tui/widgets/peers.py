"""Widgets of the Peers & trust screen: the invite form, the trust table and the trust log."""

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
    if revoked:
        trust = Text("revoked", style="bold red")
    elif m.get("admin"):
        trust = Text("admin", style="bold cyan")
    else:
        trust = Text("member", style="green")
    return [
        m.get("short_id", ""),
        m.get("name", ""),
        m.get("addr", ""),
        states.get(m["node_id"], "unknown" if not revoked else "-"),
        trust,
    ]


EVENT_STYLE = {"revoke": "bold red", "admin_remove": "red", "admin_add": "bold cyan", "join": "green"}


class TrustLogTable(KeyedTable):
    """The trust log, newest first: joins (inviter, token), renewals, admin changes, revocations, priorities."""

    COLUMNS = (
        Col("at", "At (UTC)", 0),
        Col("kind", "Event", 0),
        Col("by", "By", 0),
        Col("node", "Node", 0),
        Col("detail", "Detail", 2, 40),
    )

    def show(self, rows: list[dict], names: dict[str, str]) -> None:
        self.fill(((r["id"], _log_cells(r, names)) for r in reversed(rows)), keep_cursor=True)


def _log_cells(r: dict, names: dict[str, str]) -> list:
    import datetime as dt

    from ..textfmt import short_id, trust_detail

    def who(node_id: str) -> str:
        return "root" if node_id == "root" else names.get(node_id) or short_id(node_id)

    return [
        dt.datetime.fromtimestamp(r["at"], dt.UTC).strftime("%m-%d %H:%M:%S"),
        Text(r["kind"], style=EVENT_STYLE.get(r["kind"], "")),
        who(r["by"]),
        who(r["node"]),
        trust_detail(r),
    ]
