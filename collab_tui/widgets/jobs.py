"""Widgets of the Jobs screen: the submit form and the results table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Select

TASKS = ["faces", "people", "classify", "ensemble", "wordcount"]
STATUS_STYLE = {"done": "green", "error": "red", "pending": "dim", "cancelled": "yellow"}


class SubmitForm(Horizontal):
    """Path + task + Submit. Posts `Submitted` with an absolute path."""

    @dataclass
    class Submitted(Message):
        path: str
        task: str

    def compose(self) -> ComposeResult:
        yield Input(placeholder="file or folder to submit (or pick one below)", id="job-path", compact=True)
        yield Select([(t, t) for t in TASKS], value="faces", allow_blank=False, id="job-task", compact=True)
        yield Button("Submit", id="job-submit", variant="primary", compact=True)

    def set_path(self, path: Path) -> None:
        self.query_one("#job-path", Input).value = str(path)

    @on(Input.Submitted, "#job-path")
    @on(Button.Pressed, "#job-submit")
    def submit(self, event: Message | None = None) -> None:
        if event is not None:
            event.stop()
        raw = self.query_one("#job-path", Input).value.strip()
        if not raw:
            self.notify("type a path or pick a file or folder first", severity="warning")
            self.query_one("#job-path", Input).focus()
            return
        path = Path(raw).expanduser()
        path = path if any(c in raw for c in "*?[") else path.absolute()
        self.post_message(self.Submitted(str(path), str(self.query_one("#job-task", Select).value)))


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
        item.get("item_id", ""), Path(item["path"]).name if item.get("path") else "…",
        Text(status, style=STATUS_STYLE.get(status, "")), found, str(labels or ""), node_name,
        (item.get("error") or "")[:60],
    ]


class ResultsTable(DataTable):
    """One row per finished item, keyed by item id. Posts `ItemChosen` when the cursor moves."""

    COLUMNS = [("item", "Item"), ("file", "File"), ("status", "Status"), ("found", "Found"),
               ("labels", "Labels"), ("node", "Node"), ("error", "Error")]

    @dataclass
    class ItemChosen(Message):
        item_id: str

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def upsert(self, item: dict, node_name: str) -> None:
        key = item["item_id"]
        cells = _result_cells(item, node_name)
        if key in self.rows:
            for (col, _), value in zip(self.COLUMNS, cells):
                self.update_cell(key, col, value)
        else:
            self.add_row(*cells, key=key)

    def chosen(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001
            return None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value:
            self.post_message(self.ItemChosen(event.row_key.value))
