"""Widgets of the Logs screen: the filter bar and the log formatting."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label, Select

LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
LEVEL_STYLE = {"DEBUG": "dim", "INFO": "green", "WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}
ALL = "*"


@dataclass(frozen=True)
class LogFilter:
    level: str = "DEBUG"
    node: str = ALL  # a node id, or ALL
    text: str = ""

    def floor(self) -> int:
        value = logging.getLevelName(self.level)
        return value if isinstance(value, int) else 0

    def matches(self, rec: dict, node_keys: tuple[str, ...] = ()) -> bool:
        """Level at or above the floor; about the node (its own line, or naming it); containing the text."""
        level = logging.getLevelName(rec.get("level", "INFO"))
        if isinstance(level, int) and level < self.floor():
            return False
        msg = str(rec.get("msg", ""))
        if self.node != ALL and node_keys:
            if rec.get("node") not in node_keys and not any(k and k in msg for k in node_keys):
                return False
        if self.text and self.text.lower() not in (msg + " " + str(rec.get("logger", ""))).lower():
            return False
        return True


def format_record(rec: dict) -> Text:
    """``HH:MM:SS LEVEL  node logger: message`` (UTC, as in the node's log file)."""
    stamp = time.strftime("%H:%M:%S", time.gmtime(float(rec.get("ts", 0))))
    level = str(rec.get("level", ""))
    line = Text()
    line.append(stamp + " ", style="dim")
    line.append(f"{level:<7} ", style=LEVEL_STYLE.get(level, ""))
    if rec.get("node"):
        line.append(f"{rec['node']} ", style="cyan")
    line.append(f"{rec.get('logger', '')}: ", style="dim")
    line.append(str(rec.get("msg", "")))
    return line


class LogFilterBar(Horizontal):
    """Level, node and text filters. Posts `Changed` with the new `LogFilter`."""

    @dataclass
    class Changed(Message):
        filter: LogFilter

    def compose(self) -> ComposeResult:
        yield Label("level ")
        yield Select([(lv, lv) for lv in LEVELS], value="DEBUG", allow_blank=False, id="log-level", compact=True)
        yield Label(" node ")
        yield Select([("all nodes", ALL)], value=ALL, allow_blank=False, id="log-node", compact=True)
        yield Input(placeholder="filter text", id="log-text", compact=True)

    def current(self) -> LogFilter:
        return LogFilter(
            str(self.query_one("#log-level", Select).value),
            str(self.query_one("#log-node", Select).value),
            self.query_one("#log-text", Input).value.strip(),
        )

    def set_nodes(self, nodes: list[tuple[str, str]]) -> None:
        """(label, node id) pairs; keeps the current choice when it still exists."""
        select = self.query_one("#log-node", Select)
        options = [("all nodes", ALL), *nodes]
        if getattr(self, "_options", None) == options:
            return
        self._options = options
        value = select.value
        with self.prevent(Select.Changed):
            select.set_options(options)
            select.value = value if value in {v for _, v in options} else ALL

    @on(Select.Changed)
    @on(Input.Changed)
    def _changed(self, event: Message) -> None:
        event.stop()
        self.post_message(self.Changed(self.current()))
