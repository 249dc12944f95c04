"""Which columns a table shows at a width (`widgets.tables.fitting`): the rule behind every table at 80x24."""

from __future__ import annotations

from rich.text import Text

from collab_tui.widgets.tables import Col, elide, fitting

COLS = [Col("name", "Name", 0), Col("id", "ID", 5), Col("state", "State", 0), Col("error", "Error", 1, 40)]
WIDTHS = {"name": 5, "id": 14, "state": 7, "error": 27}


def test_everything_shows_when_it_fits():
    assert fitting(COLS, WIDTHS, 200, 1) == {"name": None, "id": None, "state": None, "error": None}


def test_the_highest_rank_drops_first_and_an_elidable_column_is_cut_to_the_room_left():
    # name 7 + state 9 = 16 always; error needs 29: in 40 cells it fits whole, the id (16) does not
    assert fitting(COLS, WIDTHS, 45, 1) == {"name": None, "state": None, "error": None}
    # in 35 cells error is cut to the 17 left (35 - 16 - 2 of padding)
    assert fitting(COLS, WIDTHS, 35, 1) == {"name": None, "state": None, "error": 17}
    # too little room for even SQUEEZE_MIN: the rank-0 columns alone, whatever the width
    assert fitting(COLS, WIDTHS, 20, 1) == {"name": None, "state": None}
    assert fitting(COLS, WIDTHS, 5, 1) == {"name": None, "state": None}


def test_an_empty_column_is_left_out_when_there_are_rows():
    widths = {**WIDTHS, "error": 0}
    assert "error" not in fitting(COLS, widths, 200, 1)
    assert "error" in fitting(COLS, widths, 200, 1, rows=False)  # an empty table shows its headings


def test_elide_keeps_style_and_cuts_with_an_ellipsis():
    assert elide("short", 10) == "short"
    assert elide("a long error message", 8) == "a long …"
    cut = elide(Text("faces failing, people failing", style="bold red"), 12)
    assert isinstance(cut, Text) and cut.plain == "faces faili…" and cut.cell_len == 12
    assert str(cut.style) == "bold red"
    assert elide("anything", None) == "anything"
