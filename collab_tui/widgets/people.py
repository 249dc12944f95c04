"""Widgets of the People screen: the enrolment form and the gallery table."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Input, Label

from .forms import Form
from .tables import Col, KeyedTable


class EnrolForm(Horizontal, Form):
    """Name + photos (files, folders or globs on this machine, space-separated, quotes allowed) + "Add".
    Posts `Requested`."""

    @dataclass
    class Requested(Message):
        name: str
        paths: list[str]

    def compose(self) -> ComposeResult:
        yield Label("Name ")
        yield Input(placeholder="Ada Lovelace", id="enrol-name", compact=True)
        yield Label(" photos ")
        yield Input(placeholder="~/photos/ada/ (on this machine)", id="enrol-paths", compact=True)
        yield Button("Add", id="enrol-add", variant="primary", compact=True)

    def collect(self) -> Requested:
        name = self.query_one("#enrol-name", Input).value.strip()
        if not name:
            raise ValueError("give the person's name")
        try:
            paths = shlex.split(self.query_one("#enrol-paths", Input).value)
        except ValueError as exc:
            raise ValueError(f"photos: {exc}") from None
        if not paths:
            raise ValueError("give one or more photos or folders")
        return self.Requested(name, paths)


class PeopleTable(KeyedTable):
    """The gallery this node holds: one row per person."""

    COLUMNS = (
        Col("name", "Name", 0, 32),
        Col("embeddings", "Embeddings", 0),
        Col("nodes", "Enrolled on", 1, 24),
        Col("added", "Added", 2),
    )

    def show(self, people: list[dict]) -> None:
        self.fill(((p["name"], _cells(p)) for p in people), keep_cursor=True)


def _cells(p: dict) -> list:
    added = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(p.get("added") or 0)))
    return [p["name"], str(p.get("embeddings", 0)), ", ".join(p.get("nodes", [])), added]
