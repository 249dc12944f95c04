"""Peers & trust: make invite tokens, see members, admins and revoked nodes, revoke one (with confirmation),
and read the trust log (who joined with whose token, renewals, admin changes, revocations)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Footer, Label, Static

from ..widgets.peers import InviteForm, TrustLogTable, TrustTable
from ..widgets.topbar import TopBar
from .base import CollabScreen
from .confirm import ConfirmRevoke

TRUST_KINDS = {"denylist", "member_joined", "peer", "cert_renewed"}


class PeersScreen(CollabScreen):
    CSS_PATH = "peers.tcss"
    TITLE = "Peers & trust"
    AUTO_FOCUS = "#trust-table"
    BINDINGS = [
        Binding("i", "invite", "Invite", id="peers.invite"),
        Binding("r", "revoke", "Revoke", id="peers.revoke"),
        Binding("c", "copy_token", "Copy token", id="peers.copy"),
    ]

    @dataclass
    class Invited(Message):
        token: str
        addr: str

    @dataclass
    class TrustListed(Message):
        members: list
        version: int

    @dataclass
    class Revoked(Message):
        result: dict

    @dataclass
    class LogRead(Message):
        rows: list

    def __init__(self) -> None:
        super().__init__()
        self.token: str | None = None
        self.members: list[dict] = []

    def compose(self) -> ComposeResult:
        yield TopBar()
        with Vertical(id="invite-panel") as panel:
            panel.border_title = "Invite a node"
            yield InviteForm(id="invite-form")
            yield Static("no token yet: press Make invite (on the root or an admin)", id="invite-token")
        table = TrustTable(id="trust-table")
        table.border_title = "Members, admins and revoked nodes"
        yield table
        with Horizontal(id="trust-actions"):
            yield Button("Revoke…", id="trust-revoke", variant="error", compact=True)
            yield Label("", id="trust-version")
        log_table = TrustLogTable(id="trust-log")
        log_table.border_title = "Trust log (newest first)"
        yield log_table
        yield Footer(compact=True)

    # ----------------------------------------------------------------- trust list
    def refresh_data(self) -> None:
        self._load()

    @work(group="trust-list", exclusive=True)
    async def _load(self) -> None:
        await self.ask(
            "reading the trust list",
            self.client.trust_list,
            lambda res: self.TrustListed(res.get("members", []), int(res.get("denylist_version", 0))),
        )
        await self.ask("reading the trust log", self.client.trust_log, self.LogRead)

    def on_peers_screen_log_read(self, message: LogRead) -> None:
        names = {m["node_id"]: m.get("name", "") for m in self.members}
        self.query_one(TrustLogTable).show(message.rows, names)

    def on_peers_screen_trust_listed(self, message: TrustListed) -> None:
        self.members = message.members
        self._show()
        self.query_one("#trust-version", Label).update(
            f" trust log: {message.version} entries · {sum(1 for m in self.members if m.get('admin'))} admin(s)"
            f" · {sum(1 for m in self.members if m.get('revoked'))} revoked"
        )

    def _show(self) -> None:
        states = {r["node_id"]: r.get("state", "") for r in self.live.nodes}
        self.query_one(TrustTable).show(self.members, states)

    def cluster_polled(self, status: dict, nodes: list[dict]) -> None:
        if self.members and self.is_current:
            self._show()

    def node_events(self, events: list[dict]) -> None:
        if self.is_current and any(ev.get("kind") in TRUST_KINDS for ev in events):
            self._load()  # (a hidden screen reloads when it shows again)

    # ----------------------------------------------------------------- invite
    def action_invite(self) -> None:
        self.query_one(InviteForm).submit()

    def on_invite_form_requested(self, message: InviteForm.Requested) -> None:
        self._invite(message.ttl, message.uses)

    @work(group="invite", exclusive=True)
    async def _invite(self, ttl: float, uses: int) -> None:
        await self.ask(
            "invite refused",
            lambda: self.client.invite(ttl=ttl, uses=uses),
            lambda res: self.Invited(res["token"], res.get("addr", "")),
        )

    def on_peers_screen_invited(self, message: Invited) -> None:
        self.token = message.token
        text = Text()
        text.append(message.token, style="bold")
        text.append(f"\njoin with:  collab join TOKEN --peer {message.addr}   (c copies the token)", style="dim")
        self.query_one("#invite-token", Static).update(text)

    def action_copy_token(self) -> None:
        if self.token:
            self.app.copy_to_clipboard(self.token)
            self.notify("token copied to the clipboard")

    # ----------------------------------------------------------------- revoke
    @on(Button.Pressed, "#trust-revoke")
    def action_revoke(self) -> None:
        table = self.query_one(TrustTable)
        node_id = table.chosen()
        member = next((m for m in self.members if m["node_id"] == node_id), None)
        if member is None:
            self.notify("pick a node in the table first", severity="warning")
            return
        if member.get("revoked"):
            self.notify(f"{member.get('name') or member['short_id']} is already revoked", severity="warning")
            return
        if node_id == self.live.status.get("node_id"):
            self.notify("a node cannot revoke itself", severity="warning")
            return

        def done(reason: str | None) -> None:
            if reason is not None:
                self._revoke(node_id, reason)

        self.app.push_screen(ConfirmRevoke(member.get("name", ""), member.get("short_id", "")), done)

    @work(group="revoke")
    async def _revoke(self, node_id: str, reason: str) -> None:
        await self.ask("revoke refused", lambda: self.client.revoke(node=node_id, reason=reason), self.Revoked)

    def on_peers_screen_revoked(self, message: Revoked) -> None:
        self.notify(
            f"revoked {message.result.get('revoked', '')[:12]} (trust log: {message.result.get('version')} entries)"
        )
        self._load()

    def failed(self, what: str, error: str) -> None:
        if what == "invite refused":
            self.query_one("#invite-token", Static).update(Text(error, style="red"))
