"""People: the cluster's gallery of enrolled faces (names, embeddings per person, the nodes that enrolled
them, the version), enrolment from photos on this machine, removal (with confirmation)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Footer, Label, Static

from ..widgets.people import EnrolForm, PeopleTable
from ..widgets.topbar import TopBar
from .base import CollabScreen
from .confirm import ConfirmAction


class PeopleScreen(CollabScreen):
    CSS_PATH = "people.tcss"
    TITLE = "People"
    AUTO_FOCUS = "#people-table"
    BINDINGS = [
        Binding("a", "add", "Add", id="people.add"),
        Binding("r", "remove", "Remove", id="people.remove"),
    ]

    @dataclass
    class Listed(Message):
        gallery: dict

    @dataclass
    class Changed(Message):
        what: str
        result: dict

    def __init__(self) -> None:
        super().__init__()
        self.people: list[dict] = []

    def compose(self) -> ComposeResult:
        yield TopBar()
        with Vertical(id="enrol-panel") as panel:
            panel.border_title = "Enrol a person (the photos stay on this machine)"
            yield EnrolForm(id="enrol-form")
            yield Static("", id="enrol-result")
        table = PeopleTable(id="people-table")
        table.border_title = "Gallery"
        yield table
        with Horizontal(id="people-actions"):
            yield Button("Remove…", id="people-remove", variant="error", compact=True)
            yield Label("", id="people-version")
        yield Footer(compact=True)

    # ----------------------------------------------------------------- the gallery
    def refresh_data(self) -> None:
        self._load()

    @work(group="people-list", exclusive=True)
    async def _load(self) -> None:
        await self.ask("reading the gallery", self.client.people_list, self.Listed)

    def on_people_screen_listed(self, message: Listed) -> None:
        g = message.gallery
        self.people = list(g.get("people", []))
        self.query_one(PeopleTable).show(self.people)
        n = sum(int(p.get("embeddings", 0)) for p in self.people)
        self.query_one("#people-version", Label).update(
            f" gallery version {g.get('version', 0)} · {len(self.people)} people · {n} embeddings"
        )

    def node_events(self, events: list[dict]) -> None:
        if self.is_current and any(ev.get("kind") == "people" for ev in events):
            self._load()

    # ----------------------------------------------------------------- enrol
    def action_add(self) -> None:
        self.query_one(EnrolForm).submit()

    def on_enrol_form_requested(self, message: EnrolForm.Requested) -> None:
        self.query_one("#enrol-result", Static).update(Text(f"enrolling {message.name}…", style="dim"))
        self._enrol(message.name, message.paths)

    @work(group="enrol", exclusive=True)
    async def _enrol(self, name: str, paths: list[str]) -> None:
        await self.ask(
            "enrolment refused",
            lambda: self.client.people_add(name, paths),
            lambda res: self.Changed("added", res),
        )

    def on_people_screen_changed(self, message: Changed) -> None:
        res = message.result
        if message.what == "added":
            text = Text(f"{res.get('name')}: {res.get('added', 0)} photo(s) enrolled, version {res.get('version')}")
            for p in res.get("problems", []):
                text.append(f"\nskipped {p.get('source')}: {p.get('error')}", style="yellow")
            self.query_one("#enrol-result", Static).update(text)
        else:
            self.notify(f"{res.get('name')} removed (gallery version {res.get('version')})")
        self._load()

    # ----------------------------------------------------------------- remove
    @on(Button.Pressed, "#people-remove")
    def action_remove(self) -> None:
        name = self.query_one(PeopleTable).chosen()
        if name is None:
            self.notify("pick a person in the table first", severity="warning")
            return

        def done(yes: bool | None) -> None:
            if yes:
                self._remove(name)

        text = "Every embedding of this person leaves the gallery on every node. Their photos are untouched."
        self.app.push_screen(ConfirmAction(f"Remove {name}?", text, "Remove"), done)

    @work(group="people-remove")
    async def _remove(self, name: str) -> None:
        await self.ask(
            "removal refused", lambda: self.client.people_remove(name), lambda res: self.Changed("removed", res)
        )

    def failed(self, what: str, error: str) -> None:
        if what == "enrolment refused":
            self.query_one("#enrol-result", Static).update(Text(error, style="red"))
