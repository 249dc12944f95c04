"""Widgets of the Training screen: the run form, the curves, per-round, per-client and ledger tables."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Button, Checkbox, DataTable, Input, Label, Select, Static
from textual_plotext import PlotextPlot

from ..ml.strategy_specs import DEFAULT, SPECS
from .forms import Form
from .tables import Col, KeyedTable

PHASE_STYLE = {
    "train": "yellow",
    "upload": "cyan",
    "selected": "dim",
    "aggregated": "green",
    "left out": "red",
    "rejected": "red",
}


class TrainForm(VerticalScroll, Form):
    """Model, rounds, epochs, strategy, min clients, dataset, secure aggregation. Posts `Start` with validated
    arguments."""

    @dataclass
    class Start(Message):
        args: dict

    def compose(self) -> ComposeResult:
        yield Label("Model")
        yield Input("digits", id="train-model", compact=True)
        yield Label("Dataset (on each client)")
        yield Input("default", id="train-dataset", compact=True)
        yield Label("Rounds")
        yield Input("3", id="train-rounds", type="integer", compact=True)
        yield Label("Epochs per round")
        yield Input("1", id="train-epochs", type="integer", compact=True)
        yield Label("Strategy")
        yield Select(
            [(s.name, s.name) for s in SPECS], value=DEFAULT, allow_blank=False, id="train-strategy", compact=True
        )
        yield Label("Min clients")
        yield Input("1", id="train-min-clients", type="integer", compact=True)
        yield Checkbox(
            "Secure aggregation",
            id="train-secure",
            compact=True,
            tooltip="Updates leave each client masked: the master learns only their sum (3 clients a round)",
        )
        yield Button("Start run", id="train-start", variant="primary", compact=True)
        yield Static("", id="train-form-status")

    def set_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#train-form-status", Static)
        status.update(Text(text, style="bold red" if error else ""))

    def _int(self, wid: str, label: str, low: int = 1) -> int:
        raw = self.query_one(f"#{wid}", Input).value.strip()
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{label} must be a whole number") from None
        if value < low:
            raise ValueError(f"{label} must be at least {low}")
        return value

    def collect(self) -> Start:
        model = self.query_one("#train-model", Input).value.strip()
        dataset = self.query_one("#train-dataset", Input).value.strip()
        if not model:
            raise ValueError("model is required (e.g. digits)")
        if not dataset:
            raise ValueError("dataset is required (add one with `collab data add`)")
        args = {
            "model": model,
            "dataset": dataset,
            "rounds": self._int("train-rounds", "rounds"),
            "epochs": self._int("train-epochs", "epochs"),
            "strategy": str(self.query_one("#train-strategy", Select).value),
            "min_clients": self._int("train-min-clients", "min clients"),
        }
        if self.query_one("#train-secure", Checkbox).value:  # fedavg, fedprox, fedavgm, fedadam; 3 clients a round
            args["secure"] = True
        self.set_status("starting …")
        return self.Start(args)

    def refuse(self, reason: str) -> None:
        self.set_status(reason, error=True)


def _acc_loss(entry: dict) -> tuple[float | None, float | None]:
    ev = entry.get("client_eval") or entry.get("server_eval") or {}
    m = entry.get("metrics") or {}
    acc = ev.get("accuracy", m.get("train_accuracy"))
    loss = ev.get("loss", m.get("train_loss"))
    return acc, loss


class MetricsPlot(PlotextPlot):
    """Accuracy and loss per round (held-out when known, else training)."""

    def show(self, history: list[dict]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("accuracy & loss per round")
        plt.xlabel("round")
        rounds = [int(e.get("round", i + 1)) for i, e in enumerate(history)]
        series = {
            "train acc": [(e.get("metrics") or {}).get("train_accuracy") for e in history],
            "train loss": [(e.get("metrics") or {}).get("train_loss") for e in history],
            "held-out acc": [(e.get("client_eval") or e.get("server_eval") or {}).get("accuracy") for e in history],
        }
        for label, values in series.items():
            pts = [(r, v) for r, v in zip(rounds, values) if v is not None]
            if pts:
                plt.plot([p[0] for p in pts], [p[1] for p in pts], label=label, marker="braille")
        if rounds:
            plt.xticks(rounds)
        self.refresh()


class RoundsTable(KeyedTable):
    COLUMNS = (
        Col("round", "Round", 0),
        Col("clients", "Clients", 3, 24),
        Col("samples", "Samples", 4),
        Col("mb", "MB", 5),
        Col("secs", "Secs", 2),
        Col("acc", "Acc", 0),
        Col("loss", "Loss", 1),
        Col("left", "Left out (why)", 3, 30),
    )

    def show(self, history: list[dict], name_of) -> None:
        self.fill((str(e.get("round", "")), _round_cells(e, name_of)) for e in history)


def _round_cells(e: dict, name_of) -> list:
    acc, loss = _acc_loss(e)
    left = {**(e.get("stragglers") or {}), **(e.get("rejected") or {})}
    why = "; ".join(f"{name_of(n)}: {reason}" for n, reason in left.items())
    return [
        str(e.get("round", "")),
        str(len(e.get("clients") or [])),
        str(e.get("samples", "")),
        f"{(e.get('bytes') or 0) / 1e6:.2f}",
        f"{e.get('wall_seconds', 0):.1f}",
        "" if acc is None else f"{acc:.3f}",
        "" if loss is None else f"{loss:.3f}",
        Text(why or "-", style="red" if why else "dim"),
    ]


class PhaseTable(KeyedTable):
    """Each client's current phase in the watched run (from fl_phase / fl events)."""

    COLUMNS = (
        Col("node", "Client", 0, 16),
        Col("phase", "Phase", 0),
        Col("round", "Round", 1),
        Col("note", "Note", 2, 40),
    )

    def show(self, phases: dict[str, dict], name_of) -> None:
        self.fill(
            (
                nid,
                [
                    name_of(nid),
                    Text(p.get("phase", ""), style=PHASE_STYLE.get(p.get("phase", ""), "")),
                    str(p.get("round", "")),
                    p.get("note", ""),
                ],
            )
            for nid, p in sorted(phases.items(), key=lambda kv: name_of(kv[0]))
        )


class LedgerTable(KeyedTable):
    """The run's contribution ledger: what each client gave and how much of it was accepted."""

    COLUMNS = (
        Col("node", "Client", 0, 16),
        Col("samples", "Samples", 1),
        Col("accepted", "Accepted", 2),
        Col("rejected", "Rejected", 2),
        Col("rounds", "Rounds", 3),
    )

    def show(self, ledger: dict[str, dict], name_of) -> None:
        self.fill(
            (nid, [name_of(nid), *(str(e.get(k, 0)) for k in ("samples", "accepted", "rejected", "rounds"))])
            for nid, e in sorted(ledger.items(), key=lambda kv: name_of(kv[0]))
        )


class RunsTable(KeyedTable):
    """Runs known to this node; Enter or click watches one."""

    COLUMNS = (
        Col("run", "Run", 0),
        Col("model", "Model", 1, 16),
        Col("strategy", "Strategy", 2),
        Col("status", "Status", 0),
        Col("round", "Round", 1),
        Col("acc", "Acc", 0),
    )

    @dataclass
    class RunChosen(Message):
        run_id: str

    def show(self, runs: list[dict]) -> None:
        if runs == getattr(self, "_shown", None):
            return
        self._shown = runs
        self.fill(
            (
                r["run_id"],
                [
                    r["run_id"][:12],
                    str(r.get("model", "")),
                    str(r.get("strategy", "")),
                    str(r.get("status", "")),
                    f"{r.get('round', 0)}/{r.get('rounds', '?')}",
                    "" if r.get("accuracy") is None else f"{r['accuracy']:.3f}",
                ],
            )
            for r in reversed(runs)
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.post_chosen(event, self.RunChosen)
