"""The base of every table of the TUI: declared columns, one row per key, the key under the cursor.

Columns fit the table's width: each has a rank (0 = always shown, higher = dropped first) and may have a
widest cell (longer values end in "…"). When the columns that would be shown are wider than the table,
the highest-ranked ones are dropped, and a column whose every cell is empty is not shown, so a table
never scrolls sideways to show what matters; what a dropped column held is in the screen's details.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, NamedTuple

from rich.cells import cell_len
from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable


class Col(NamedTuple):
    """A column: ``key``, ``label``, ``rank`` (0 = kept at any width), ``widest`` cell (None = no limit)."""

    key: str
    label: str
    rank: int = 0
    widest: int | None = None


def elide(value: Any, widest: int | None) -> Any:
    """``value`` cut to ``widest`` cells with a trailing "…" (a `Text` keeps its style)."""
    if widest is None:
        return value
    if isinstance(value, Text):
        if value.cell_len <= widest:
            return value
        cut = value.copy()
        cut.truncate(widest, overflow="ellipsis")
        return cut
    text = str(value)
    if cell_len(text) <= widest:
        return value
    return text[: max(0, widest - 1)] + "…"


def _width(value: Any) -> int:
    return value.cell_len if isinstance(value, Text) else cell_len(str(value))


SQUEEZE_MIN = 12  # an elidable column is shown cut to the room left when that is at least this many cells


def fitting(
    cols: Sequence[Col], widths: dict[str, int], room: int, padding: int, rows: bool = True
) -> dict[str, int | None]:
    """The columns to show in ``room`` cells, in declared order, each with the width to cut its cells to
    (None: as measured): rank-0 columns always; then by rank while they fit, but not a column whose every
    cell is empty when there are ``rows``; a column with a ``widest`` that does not fit in full is cut to the
    room left if that is at least SQUEEZE_MIN. ``widths`` holds each column's widest (elided) cell."""
    need = {c.key: max(cell_len(c.label), widths.get(c.key, 0)) + 2 * padding for c in cols}
    order = sorted(cols, key=lambda c: c.rank)
    shown: dict[str, int | None] = {}
    used = 0
    for c in order:
        if c.rank > 0 and rows and not widths.get(c.key):
            continue  # nothing to show in it (e.g. Labels of a face job)
        if c.rank == 0 or used + need[c.key] <= room:
            shown[c.key] = None
            used += need[c.key]
        elif c.widest is not None and room - used - 2 * padding >= max(SQUEEZE_MIN, cell_len(c.label)):
            shown[c.key] = room - used - 2 * padding
            used = room
    return {c.key: shown[c.key] for c in cols if c.key in shown}


class KeyedTable(DataTable):
    """A row-cursor `DataTable` whose columns are declared as ``COLUMNS`` (`Col`, or (key, label) pairs)
    and whose rows are keyed by an id (a node, an item, a run, ...). The columns shown follow the width."""

    COLUMNS: ClassVar[Sequence[tuple]] = ()
    ZEBRA: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cols = [Col(*c) for c in self.COLUMNS]
        self.row_cells: dict[str, list] = {}  # every row's cells, the dropped columns' too (in declared order)
        self.widths: dict[str, int] = {}  # each column's widest cell after elision
        self.shown: dict[str, int | None] = {}  # the columns shown, each with the width its cells are cut to

    def on_mount(self) -> None:
        self.cursor_type = "row"
        if self.ZEBRA:
            self.zebra_stripes = True
        self._set_columns(dict.fromkeys(c.key for c in self.cols))

    # ----------------------------------------------------------------- fitting the width
    def _cells(self, key: str) -> list:
        by_key = dict(zip((c.key for c in self.cols), self.row_cells[key]))
        return [elide(by_key.get(k, ""), cut) for k, cut in self.shown.items()]

    def _set_columns(self, keys: dict[str, int | None]) -> None:
        chosen = self.chosen()
        self.shown = keys
        super().clear(columns=True)
        for c in self.cols:
            if c.key in keys:
                self.add_column(c.label, key=c.key)
        for key in self.row_cells:
            self.add_row(*self._cells(key), key=key)
        if chosen in self.row_cells:
            self.move_cursor(row=list(self.row_cells).index(chosen))

    def _measure(self, cells: Sequence) -> list:
        out = []
        for c, value in zip(self.cols, cells):
            value = elide(value, c.widest)
            self.widths[c.key] = max(self.widths.get(c.key, 0), _width(value))
            out.append(value)
        return out

    def refit(self) -> None:
        """Show the columns that fit the table's current width (no change when the set is the same)."""
        room = self.scrollable_content_region.width or self.size.width
        if room <= 0:
            return
        keys = fitting(self.cols, self.widths, room, self.cell_padding, rows=bool(self.row_cells))
        if keys != self.shown:
            self._set_columns(keys)

    def on_resize(self) -> None:
        self.refit()

    # ----------------------------------------------------------------- rows
    def chosen(self) -> str | None:
        """The key of the row under the cursor (None in an empty table)."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - cursor outside the table
            return None

    def clear(self, columns: bool = False) -> KeyedTable:
        """Remove every row (the declared columns stay: ``columns`` is accepted for DataTable's signature)."""
        super().clear()
        self.row_cells, self.widths = {}, {}
        return self

    def fill(self, rows: Iterable[tuple[str, Sequence]], keep_cursor: bool = False) -> None:
        """Replace every row with ``rows`` ((key, cells) pairs); with ``keep_cursor`` the cursor stays on the
        row it was on, if that row is still there."""
        chosen = self.chosen() if keep_cursor else None
        self.clear()
        for key, cells in rows:
            self.row_cells[key] = self._measure(cells)
            self.add_row(*self._cells(key), key=key)
        self.refit()
        if chosen in self.row_cells:
            self.move_cursor(row=list(self.row_cells).index(chosen))

    def set_row(self, key: str, cells: Sequence) -> None:
        """Add the row, or update the cells of the row already there."""
        self.row_cells[key] = self._measure(cells)
        if key in self.rows:
            for col, value in zip(self.shown, self._cells(key)):
                self.update_cell(key, col, value)
        else:
            self.add_row(*self._cells(key), key=key)
        self.refit()

    def post_chosen(
        self, event: DataTable.RowHighlighted | DataTable.RowSelected, message: Callable[[str], Message]
    ) -> None:
        """Turn the table's own row event into this table's message about the row's key."""
        event.stop()
        if event.row_key.value:
            self.post_message(message(event.row_key.value))
