"""Training: start a federated run and follow it live (curves, rounds, clients' phases, the ledger)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Static, TabbedContent, TabPane

from ..node.control import ControlError
from ..tui_client import CLIENT_ERRORS, describe_error
from ..widgets.topbar import TopBar
from ..widgets.training import LedgerTable, MetricsPlot, PhaseTable, RoundsTable, RunsTable, TrainForm
from .base import CollabScreen

POLL_RUN = 2.0  # seconds: run_show while a run is running (fl events are only published on the master)
FINAL = ("done", "stopped", "failed")


class TrainingScreen(CollabScreen):
    CSS_PATH = "training.tcss"
    TITLE = "Training"
    AUTO_FOCUS = "#train-start"
    BINDINGS = [
        Binding("ctrl+r", "start_run", "Start run", id="training.start"),
        Binding("x", "stop_run", "Stop run", id="training.stop"),
    ]

    @dataclass
    class RunStarted(Message):
        result: dict

    @dataclass
    class RunShown(Message):
        state: dict

    @dataclass
    class RunsListed(Message):
        runs: list

    def __init__(self) -> None:
        super().__init__()
        self.run_id: str | None = None
        self.run: dict | None = None
        self.phases: dict[str, dict] = {}
        self._rendered: dict | None = None  # the run state last drawn (a hidden screen draws on resume)

    def compose(self) -> ComposeResult:
        yield TopBar()
        with Horizontal(id="train-body"):
            form = TrainForm(id="train-form")
            form.border_title = "New run"
            yield form
            with Vertical(id="train-right"):
                yield Static("no run yet: fill in the form and press Start run", id="train-run")
                with TabbedContent(id="train-tabs"):
                    with TabPane("Curves", id="tab-curves"):
                        yield MetricsPlot(id="train-plot")
                    with TabPane("Rounds", id="tab-rounds"):
                        yield RoundsTable(id="train-history")
                    with TabPane("Clients", id="tab-clients"):
                        yield PhaseTable(id="train-phases")
                        yield LedgerTable(id="train-ledger")
                    with TabPane("Runs", id="tab-runs"):
                        yield RunsTable(id="train-runs")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.set_interval(POLL_RUN, self._poll_run)

    # ----------------------------------------------------------------- loading
    def refresh_data(self) -> None:
        if self.run is not None and self.run is not self._rendered:
            self._render_run()
        if self.phases:
            self.query_one(PhaseTable).show(self.phases, self.live.name_of)
        self._list_runs()
        if self.run_id:
            self._load_run(self.run_id)

    def _poll_run(self) -> None:
        if (
            self.run_id
            and self.run
            and self.run.get("status") == "running"
            and self.app.poll_interval > 0
            and self.is_current
        ):
            self._load_run(self.run_id)

    @work(group="train-runs", exclusive=True)
    async def _list_runs(self) -> None:
        await self.ask("listing runs", self.client.runs, self.RunsListed)

    @work(group="train-show", exclusive=True)
    async def _load_run(self, run_id: str, tries: int = 1) -> None:
        for attempt in range(tries):
            try:
                state = await self.client.run_show(run_id=run_id)
                break
            except ControlError as exc:  # a run started through the master reaches us by replication
                if attempt + 1 >= tries:
                    self.post_message(self.Failed("reading the run", str(exc)))
                    return
                await asyncio.sleep(0.2)
            except CLIENT_ERRORS as exc:
                self.post_message(self.Failed("reading the run", describe_error(exc)))
                return
        self.post_message(self.RunShown(state))

    def on_training_screen_runs_listed(self, message: RunsListed) -> None:
        self.query_one(RunsTable).show(message.runs)
        if self.run_id is None and message.runs:
            self.watch_run(message.runs[-1]["run_id"])

    def on_runs_table_run_chosen(self, message: RunsTable.RunChosen) -> None:
        self.watch_run(message.run_id)
        self.query_one(TabbedContent).active = "tab-curves"

    def watch_run(self, run_id: str, tries: int = 1) -> None:
        if run_id != self.run_id:
            self.phases = {}
            self.query_one(PhaseTable).show(self.phases, self.live.name_of)
        self.run_id = run_id
        self._load_run(run_id, tries)

    # ----------------------------------------------------------------- starting / stopping
    def action_start_run(self) -> None:
        self.query_one(TrainForm).submit()

    def on_train_form_start(self, message: TrainForm.Start) -> None:
        self._start(message.args)

    @work(group="train-start", exclusive=True)
    async def _start(self, args: dict) -> None:
        await self.ask(
            "the node refused the run", lambda: self.client.using(timeout=120.0).train(**args), self.RunStarted
        )

    def on_training_screen_run_started(self, message: RunStarted) -> None:
        run_id = message.result["run_id"]
        self.query_one(TrainForm).set_status(f"run {run_id[:12]} started")
        self.watch_run(run_id, tries=25)
        self._list_runs()

    def action_stop_run(self) -> None:
        if self.run_id and self.run and self.run.get("status") == "running":
            self._stop(self.run_id)

    @work(group="train-stop")
    async def _stop(self, run_id: str) -> None:
        await self.ask("stop refused", lambda: self.client.run_stop(run_id=run_id))

    def failed(self, what: str, error: str) -> None:
        if what.startswith("the node refused"):
            self.query_one(TrainForm).set_status(error, error=True)

    # ----------------------------------------------------------------- showing
    def on_training_screen_run_shown(self, message: RunShown) -> None:
        st = message.state
        if st.get("run_id") != self.run_id:
            return
        before = (self.run or {}).get("status")
        self.run = st
        if before == "running" and st.get("status") in FINAL:
            self.notify(
                f"run {st['run_id'][:12]} {st['status']}",
                severity="error" if st["status"] == "failed" else "information",
            )
            self._list_runs()
        if self.is_current:
            self._render_run()

    def _render_run(self) -> None:
        self._rendered = self.run
        st = self.run or {}
        cfg = st.get("config") or {}
        line = Text()
        line.append(f"run {st['run_id'][:8]}", style="bold")
        line.append(f" {cfg.get('model', '')}/{cfg.get('strategy', '')} · ")
        status = st.get("status", "")
        line.append(
            status,
            style={"running": "yellow", "done": "green", "failed": "bold red", "stopped": "magenta"}.get(status, ""),
        )
        line.append(f" · round {st.get('round', 0)}/{cfg.get('rounds', '?')}")
        if cfg.get("secure"):
            line.append(" · secure sum")
        privacy = ((st.get("history") or [{}])[-1] or {}).get("privacy")
        if privacy:
            line.append(f" · ε {privacy['epsilon']:.3g} (δ {privacy['delta']:g})")
        if st.get("error"):
            line.append(f"\n{st['error']}", style="red")
        for warning in st.get("warnings") or []:
            line.append(f"\n⚠ {warning}", style="yellow")
        self.query_one("#train-run", Static).update(line)
        history = st.get("history") or []
        self.query_one(MetricsPlot).show(history)
        self.query_one(RoundsTable).show(history, self.live.name_of)
        self.query_one(LedgerTable).show(st.get("ledger") or {}, self.live.name_of)

    def node_events(self, events: list[dict]) -> None:
        reload, relist, phases_changed = False, False, False
        for ev in events:
            kind, run_id = ev.get("kind"), ev.get("run_id")
            if kind == "fl":
                what = ev.get("what")
                if what == "started":
                    relist = True
                    if not self.run or self.run.get("status") != "running":
                        self.watch_run(run_id, tries=25)
                if run_id != self.run_id:
                    continue
                reload = reload or self.is_current or what in FINAL
                if what in FINAL:
                    relist = True
                phases_changed |= self._phase_from_fl(ev)
            elif kind == "fl_phase" and run_id == self.run_id:
                self.phases[ev.get("node_id", "")] = {"phase": ev.get("phase", ""), "round": ev.get("round", "")}
                phases_changed = True
        if phases_changed and self.is_current:
            self.query_one(PhaseTable).show(self.phases, self.live.name_of)
        if reload and self.run_id:
            self._load_run(self.run_id)
        if relist:
            self._list_runs()

    def _phase_from_fl(self, ev: dict) -> bool:
        what, r = ev.get("what"), ev.get("round", "")
        if what == "round_started":
            for nid in ev.get("clients") or []:
                self.phases[nid] = {"phase": "selected", "round": r}
        elif what == "round":
            for nid in ev.get("clients") or []:
                self.phases[nid] = {"phase": "aggregated", "round": r}
            for nid, why in (ev.get("stragglers") or {}).items():
                self.phases[nid] = {"phase": "left out", "round": r, "note": str(why)}
            for nid, why in (ev.get("rejected") or {}).items():
                self.phases[nid] = {"phase": "rejected", "round": r, "note": str(why)}
        elif what == "round_failed":
            for nid, why in (ev.get("stragglers") or {}).items():
                self.phases[nid] = {"phase": "left out", "round": r, "note": str(why)}
            for nid, why in (ev.get("rejected") or {}).items():
                self.phases[nid] = {"phase": "rejected", "round": r, "note": str(why)}
        else:
            return False
        return True
