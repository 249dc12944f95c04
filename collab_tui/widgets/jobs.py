"""Widgets of the Jobs screen: the submit form and the results table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Select

from .forms import Form
from .tables import Col, KeyedTable

TASKS = [
    "faces",
    "people",
    "identify",
    "classify",
    "ensemble",
    "wordcount",
]  # until the node says which it knows (job_types)
HIDDEN_TASKS = {"noop"}  # benchmark aid
STATUS_STYLE = {"done": "green", "error": "red", "pending": "dim", "cancelled": "yellow"}


class SubmitForm(Horizontal, Form):
    """Path + task + Submit. Posts `Submitted` with an absolute path."""

    @dataclass
    class Submitted(Message):
        path: str
        task: str

    def compose(self) -> ComposeResult:
        yield Input(placeholder="file or folder to submit (or pick one below)", id="job-path", compact=True)
        yield Select([(t, t) for t in TASKS], value="faces", allow_blank=False, id="job-task", compact=True)
        yield Button("Submit", id="job-submit", variant="primary", compact=True)

    def set_tasks(self, names: list[str]) -> None:
        """The job types the node knows (built in and plugins), in its order; the choice is kept if it is one."""
        names = [n for n in names if n not in HIDDEN_TASKS]
        if not names:
            return
        select = self.query_one("#job-task", Select)
        keep = select.value if select.value in names else ("faces" if "faces" in names else names[0])
        select.set_options([(t, t) for t in names])
        select.value = keep

    def set_path(self, path: Path) -> None:
        self.query_one("#job-path", Input).value = str(path)

    def collect(self) -> Submitted:
        raw = self.query_one("#job-path", Input).value.strip()
        if not raw:
            raise ValueError("type a path or pick a file or folder first")
        path = Path(raw).expanduser()
        path = path if any(c in raw for c in "*?[") else path.absolute()
        return self.Submitted(str(path), str(self.query_one("#job-task", Select).value))

    def refuse(self, reason: str) -> None:
        self.notify(reason, severity="warning")
        self.query_one("#job-path", Input).focus()


def _result_cells(item: dict, node_name: str) -> list:
    res = item.get("result") or {}
    status = item.get("status") or ("error" if item.get("error") else "done")
    found = str(len(res["detections"])) if isinstance(res.get("detections"), list) else ""
    labels = res.get("labels")
    if isinstance(labels, list):
        labels = ",".join(map(str, labels))
    elif "words" in res:
        labels = f"{res['words']} words"
    return [
        item.get("item_id", ""),
        Path(item["path"]).name if item.get("path") else "…",
        Text(status, style=STATUS_STYLE.get(status, "")),
        found,
        str(labels or ""),
        node_name,
        item.get("error") or "",
    ]


class ResultsTable(KeyedTable):
    """One row per finished item, keyed by item id. Posts `ItemChosen` when the cursor moves."""

    COLUMNS = (
        Col("item", "Item", 5),
        Col("file", "File", 0, 24),
        Col("status", "Status", 0),
        Col("found", "Found", 1),
        Col("labels", "Labels", 2, 24),
        Col("node", "Node", 3, 12),
        Col("error", "Error", 1, 40),
    )

    @dataclass
    class ItemChosen(Message):
        item_id: str

    def upsert(self, item: dict, node_name: str) -> None:
        self.set_row(item["item_id"], _result_cells(item, node_name))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.post_chosen(event, self.ItemChosen)
