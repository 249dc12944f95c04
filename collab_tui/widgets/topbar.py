"""The top line of every screen: the screens as tabs (key and name; click or press the key) and the
cluster as this node sees it, cut to the width so that the tabs always show (80 columns and up)."""

from __future__ import annotations

from rich.cells import cell_len
from textual.markup import escape
from textual.widgets import Static

from .tables import elide

TABS = (  # (mode, key, label): the app binds the keys from this too
    ("nodes", "1", "Nodes"),
    ("jobs", "2", "Jobs"),
    ("training", "3", "Train"),
    ("peers", "4", "Peers"),
    ("logs", "5", "Logs"),
    ("people", "6", "People"),
)
ICON = "◆"


class TopBar(Static):
    """``TopBar()`` on a mode screen shows the tabs with the current one marked; ``TopBar(tabs=False)``
    (the start screen, where there is no node to show) shows the screen's title instead."""

    DEFAULT_CSS = """
    TopBar {
        dock: top;
        height: 1;
        width: 1fr;
        background: $panel;
        color: $foreground;
    }
    """

    def __init__(self, tabs: bool = True, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.tabs = tabs

    def on_mount(self) -> None:
        self.watch(self.app, "sub_title", self.redraw, init=False)
        self.watch(self.screen, "sub_title", self.redraw, init=False)
        self.redraw()

    def on_resize(self) -> None:
        self.redraw()

    def _mode(self) -> str | None:
        for mode, cls in getattr(self.app, "MODES", {}).items():
            if isinstance(cls, type) and isinstance(self.screen, cls):
                return mode
        return None

    def redraw(self, *_: object) -> None:
        width = self.size.width or 80
        wide = width >= 100
        left_plain = f" {ICON} collab " if wide else f" {ICON} "
        left = f" [b]{ICON}[/b] collab " if wide else f" [b]{ICON}[/b] "
        if self.tabs:
            mode = self._mode()
            parts_plain, parts = [], []
            for name, key, label in TABS:
                plain = f" {key} {label} "
                parts_plain.append(plain)
                look = "reverse b" if name == mode else "dim" if mode is None else ""
                body = f"[b]{key}[/b] {label}"
                chunk = f"[@click=app.switch_mode('{name}')] {body} [/]"
                parts.append(f"[{look}]{chunk}[/]" if look else chunk)
            middle_plain, middle = "".join(parts_plain), "".join(parts)
        else:
            middle_plain = self.screen.title or ""
            middle = f"[b]{escape(middle_plain)}[/b]"
        summary = self.app.sub_title or ""
        if self.screen.sub_title:
            summary = f"{self.screen.sub_title} · {summary}" if summary else self.screen.sub_title
        room = width - cell_len(left_plain) - cell_len(middle_plain) - 2
        right = elide(summary, room) if room > 0 else ""
        gap = max(1, width - cell_len(left_plain) - cell_len(middle_plain) - cell_len(right) - 1)
        self.update(f"{left}{middle}{' ' * gap}{escape(right)} ")
