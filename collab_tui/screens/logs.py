"""Logs: the node's log lines, live, filtered by level, node and text; ``c`` toggles every node's lines (merged
by time, streamed through the master)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, RichLog

from ..tui_client import CLIENT_ERRORS, describe_error
from ..widgets.batch import Batcher
from ..widgets.logs import LogFilter, LogFilterBar, format_record
from ..widgets.topbar import TopBar
from .base import CollabScreen

KEEP = 5000  # records kept for re-filtering
BACKLOG = 300  # records asked for when the stream starts


class LogsScreen(CollabScreen):
    CSS_PATH = "logs.tcss"
    TITLE = "Logs"
    AUTO_FOCUS = "#log-view"
    BINDINGS = [
        Binding("f", "focus_filter", "Filter", id="logs.filter"),
        Binding("ctrl+l", "clear", "Clear", id="logs.clear"),
        Binding("c", "toggle_cluster", "Cluster", id="logs.cluster", show=False),
    ]

    @dataclass
    class StreamFailed(Message):
        error: str

    def __init__(self) -> None:
        super().__init__()
        self.records: deque[dict] = deque(maxlen=KEEP)
        self.last_key: tuple[float, int] = (0.0, 0)
        self.filter = LogFilter()
        self.lines = Batcher(self, self._append, every=0.1)
        self._following = False
        self._stale = False
        self.cluster = False  # every node's lines (through the master) rather than this node's
        self._seen: set[tuple] = set()  # cluster lines already shown (their order is by time, not by seq)

    def compose(self) -> ComposeResult:
        yield TopBar()
        yield LogFilterBar(id="log-filters")
        yield RichLog(id="log-view", max_lines=KEEP, wrap=False, markup=False, highlight=False, auto_scroll=True)
        yield Footer(compact=True)

    def refresh_data(self) -> None:
        if self._stale:
            self._rewrite()
        if not self._following:
            self._following = True
            self._follow()
        self.cluster_polled(self.live.status, self.live.nodes)

    @work(group="logs-follow", exclusive=True)
    async def _follow(self) -> None:
        try:
            async for rec in self.client.logs_follow(n=BACKLOG, cluster=self.cluster):
                if "msg" in rec:  # (a cluster stream's keepalives have none)
                    self.lines.add(rec)
        except CLIENT_ERRORS as exc:
            self.post_message(self.StreamFailed(describe_error(exc)))
            return
        self.post_message(self.StreamFailed("the node closed the log stream"))

    def on_logs_screen_stream_failed(self, message: StreamFailed) -> None:
        self._following = False  # followed again on the next resume / reconnect

    def _node_keys(self) -> tuple[str, ...]:
        nid = self.filter.node
        if nid == "*":
            return ()
        name = self.live.names.get(nid, "")
        short = "-".join(nid[:12].upper()[i : i + 4] for i in (0, 4, 8))
        return tuple(k for k in (name, short, nid[:12]) if k)

    def _append(self, records: list[dict]) -> None:
        view = self.query_one(RichLog)
        keys = self._node_keys()
        hidden = not self.is_current
        for rec in records:
            key = (float(rec.get("ts", 0)), int(rec.get("seq", 0)))
            if self.cluster:
                ckey = (key, rec.get("node"), rec.get("msg"))
                if ckey in self._seen:
                    continue
                if len(self._seen) > 2 * KEEP:
                    self._seen.clear()
                self._seen.add(ckey)
            elif key <= self.last_key:
                continue  # already shown (a re-followed stream replays its backlog)
            self.last_key = key
            self.records.append(rec)
            if hidden:
                self._stale = True
            elif self.filter.matches(rec, keys):
                view.write(format_record(rec))

    def on_log_filter_bar_changed(self, message: LogFilterBar.Changed) -> None:
        self.filter = message.filter
        self._rewrite()

    def _rewrite(self) -> None:
        self._stale = False
        view = self.query_one(RichLog)
        view.clear()
        keys = self._node_keys()
        for rec in self.records:
            if self.filter.matches(rec, keys):
                view.write(format_record(rec))

    def cluster_polled(self, status: dict, nodes: list[dict]) -> None:
        self.query_one(LogFilterBar).set_nodes([(r.get("name") or r["node_id"][:12], r["node_id"]) for r in nodes])

    def action_toggle_cluster(self) -> None:
        """This node's lines, or every node's (merged by time, through the master)."""
        self.cluster = not self.cluster
        self.sub_title = "cluster-wide" if self.cluster else ""
        self.records.clear()
        self._seen.clear()
        self.last_key = (0.0, 0)
        self.query_one(RichLog).clear()
        self._following = True
        self._follow()  # (exclusive: the previous stream is cancelled)

    def action_focus_filter(self) -> None:
        self.query_one("#log-text").focus()

    def action_clear(self) -> None:
        self.records.clear()
        self.query_one(RichLog).clear()
