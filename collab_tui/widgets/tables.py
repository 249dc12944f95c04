"""The base of every table of the TUI: declared columns, one row per key, the key under the cursor."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

from textual.message import Message
from textual.widgets import DataTable


class KeyedTable(DataTable):
    """A row-cursor `DataTable` whose columns are declared as ``COLUMNS`` (key, label) and whose rows are
    keyed by an id (a node, an item, a run, ...)."""

    COLUMNS: ClassVar[Sequence[tuple[str, str]]] = ()
    ZEBRA: ClassVar[bool] = False

    def on_mount(self) -> None:
        self.cursor_type = "row"
        if self.ZEBRA:
            self.zebra_stripes = True
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def chosen(self) -> str | None:
        """The key of the row under the cursor (None in an empty table)."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - cursor outside the table
            return None

    def fill(self, rows: Iterable[tuple[str, Sequence]], keep_cursor: bool = False) -> None:
        """Replace every row with ``rows`` ((key, cells) pairs); with ``keep_cursor`` the cursor stays on the
        row it was on, if that row is still there."""
        chosen = self.chosen() if keep_cursor else None
        self.clear()
        keys = []
        for key, cells in rows:
            self.add_row(*cells, key=key)
            keys.append(key)
        if chosen in keys:
            self.move_cursor(row=keys.index(chosen))

    def set_row(self, key: str, cells: Sequence) -> None:
        """Add the row, or update the cells of the row already there."""
        if key in self.rows:
            for (col, _), value in zip(self.COLUMNS, cells):
                self.update_cell(key, col, value)
        else:
            self.add_row(*cells, key=key)

    def post_chosen(
        self, event: DataTable.RowHighlighted | DataTable.RowSelected, message: Callable[[str], Message]
    ) -> None:
        """Turn the table's own row event into this table's message about the row's key."""
        event.stop()
        if event.row_key.value:
            self.post_message(message(event.row_key.value))
