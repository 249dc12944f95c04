"""CLI for federated training: `collab train`, `runs`, `run show|stop`, `models ...`, `data ...`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..ml.strategy_specs import DEFAULT as STRATEGY_DEFAULT
from ..ml.strategy_specs import NAMES as STRATEGY_NAMES
from .common import HomeOpt, JsonOpt, call, home_of, node_client, write_page
from .output import EXIT_ERROR, Out

train_app = typer.Typer(help="Start a federated training run (or `train resume`).", invoke_without_command=True)
run_app = typer.Typer(help="Inspect or stop one run.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
data_app = typer.Typer(help="This node's local datasets (they never leave it during training).", no_args_is_help=True)


def _fmt_round(ev: dict) -> str:
    acc = (ev.get("client_eval") or {}).get("accuracy")
    server = (ev.get("server_eval") or {}).get("accuracy")
    parts = [f"round {ev['round']:>3}", f"clients {len(ev.get('clients', []))}"]
    if server is not None:
        parts.append(f"eval acc {server:.4f}")
    if acc is not None:
        parts.append(f"client acc {acc:.4f}")
    m = ev.get("metrics") or {}
    if "train_loss" in m:
        parts.append(f"train loss {m['train_loss']:.4f}")
    parts += [f"{ev.get('wall_seconds', 0):.2f}s", f"{ev.get('bytes', 0) / 1e6:.2f} MB"]
    if ev.get("stragglers"):
        parts.append(f"left out {len(ev['stragglers'])}")
    if ev.get("rejected"):
        parts.append(f"rejected {len(ev['rejected'])}")
    if ev.get("privacy"):
        parts.append(f"epsilon {ev['privacy']['epsilon']:.3g}")
    if sec := ev.get("secure"):
        parts.append(f"secure sum of {sec['participants']} ({sec['seconds']:.3f}s)")
        if sec.get("recovered"):
            parts.append(f"masks recovered for {len(sec['recovered'])} dropped")
    return "  ".join(parts)


def _watch(h: Path, out: Out, run_id: str) -> int:
    from ..client import ControlError

    with node_client(h, out) as client:
        try:
            return _show_run_events(out, client.run_watch(run_id=run_id))
        except (ControlError, ConnectionError) as exc:  # refused, or the node went away mid-stream
            out.error(f"watching run {run_id} stopped: {exc}")
            return EXIT_ERROR


def _show_run_events(out: Out, events) -> int:
    for ev in events:
        if ev.get("what") == "round":
            out.data(ev, _fmt_round(ev))
        elif ev.get("what") == "final":
            hist = ev.get("history") or []
            if hist and hist[-1].get("client_eval"):
                out.info(f"final held-out accuracy {hist[-1]['client_eval']['accuracy']:.4f}")
            out.data(
                {"kind": "final", "run_id": ev["run_id"], "status": ev["status"], "round": ev["round"]},
                f"run {ev['run_id']} {ev['status']} after {ev['round']} round(s); version {ev['version']}",
            )
            return 0 if ev["status"] == "done" else EXIT_ERROR
        elif ev.get("what") == "server_eval":  # the master's evaluation of a version, done during the next round
            acc = ev["server_eval"]["accuracy"]
            out.data(ev, f"round {ev['round']:>3}  eval acc {acc:.4f}  (version {ev.get('version', '')})")
        elif ev.get("what") == "warning":
            out.warn(ev.get("text", ""))
        elif ev.get("what") in ("waiting", "round_failed"):
            out.info(f"[{ev['what']}] {ev.get('reason') or ev.get('stragglers') or ev.get('rejected') or ''}")
        elif ev.get("what") in ("stopped", "failed", "done") and ev.get("kind") == "fl":
            out.info(f"run {ev['status']}")
    return 0


@train_app.callback()
def train(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            help="Registry name, or built-in: digits (8x8), mnist (28x28). A new name makes a CNN for the"
            " dataset (its image size and the class names of its folders)."
        ),
    ] = "digits",
    dataset: Annotated[str, typer.Option(help="Local dataset name each client trains on.")] = "default",
    rounds: Annotated[int, typer.Option(min=1)] = 3,
    epochs: Annotated[int, typer.Option(min=1)] = 1,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(help="Client learning rate (SGD).")] = 0.05,
    strategy: Annotated[str, typer.Option(help="|".join(STRATEGY_NAMES))] = STRATEGY_DEFAULT,
    mu: Annotated[float, typer.Option(help="FedProx proximal term.")] = 0.0,
    min_clients: Annotated[int, typer.Option(min=1)] = 1,
    fraction: Annotated[float, typer.Option(help="Fraction of clients per round.")] = 1.0,
    round_timeout: Annotated[float, typer.Option(help="Seconds before stragglers are left out.")] = 120.0,
    mode: Annotated[str, typer.Option(help="sync or async (buffered).")] = "sync",
    buffer_k: Annotated[int, typer.Option(help="Async: aggregate every K updates.")] = 2,
    compress: Annotated[bool, typer.Option(help="Send float16 deltas.")] = False,
    augment: Annotated[bool, typer.Option(help="Clients flip and shift their images at random each round.")] = False,
    dp_clip: Annotated[float, typer.Option(help="Differential privacy: clip norm.")] = 0.0,
    dp_noise: Annotated[float, typer.Option(help="Differential privacy: noise multiplier.")] = 0.0,
    secure: Annotated[
        bool,
        typer.Option(
            help="Secure aggregation: updates leave each client masked, the master learns only their sum"
            " (fedavg, fedprox, fedavgm, fedadam; at least 3 clients a round)."
        ),
    ] = False,
    eval_dataset: Annotated[str, typer.Option(help="Dataset on the master to evaluate every version on.")] = "",
    seed: Annotated[int, typer.Option()] = 0,
    no_wait: Annotated[bool, typer.Option("--no-wait")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    out, h = Out(json_out), home_of(home)
    args = dict(
        model=model,
        dataset=dataset,
        rounds=rounds,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        strategy=strategy,
        mu=mu,
        min_clients=min_clients,
        fraction=fraction,
        round_timeout=round_timeout,
        mode=mode,
        buffer_k=buffer_k,
        compress=compress,
        augment=augment,
        dp_clip=dp_clip,
        dp_noise=dp_noise,
        secure=secure,
        eval_dataset=eval_dataset,
        seed=seed,
    )
    res = call(h, out, lambda c: c.train(**args))
    if no_wait:
        out.data(res, res["run_id"])
        return
    out.info(f"run {res['run_id']} started from version {res['version']}")
    if secure:
        out.info("secure aggregation: every update leaves its node masked; the master sees only the sum")
    _say_privacy(out, res.get("privacy"), rounds)
    raise typer.Exit(_watch(h, out, res["run_id"]))


def _say_privacy(out: Out, plan: dict | None, rounds: int) -> None:
    """Before the first round: the privacy the run will spend, and the swamp warning."""
    if not plan:
        return
    out.info(
        f"differential privacy: epsilon {plan['epsilon']:.3g} at delta {plan['delta']:g} after {rounds} round(s)"
        f" ({plan['epsilon_per_round']:.3g} for one), each client's whole dataset protected"
    )
    if plan.get("warning"):
        out.warn(plan["warning"])


@train_app.command("resume")
def train_resume(
    run_id: Annotated[str | None, typer.Argument()] = None,
    no_wait: bool = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Resume a stopped or failed run at its last committed round."""
    out, h = Out(json_out), home_of(home)
    res = call(h, out, lambda c: c.train_resume(run_id=run_id))
    out.info(f"run {res['run_id']} resumes after round {res['round']}")
    if not no_wait:
        raise typer.Exit(_watch(h, out, res["run_id"]))


def runs(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Training runs known to this node (replicated from the master)."""
    out = Out(json_out)
    rows = call(home_of(home), out, lambda c: c.runs())
    cols = [
        ("run_id", "RUN"),
        ("model", "MODEL"),
        ("strategy", "STRATEGY"),
        ("status", "STATUS"),
        ("round", "ROUND"),
        ("rounds", "OF"),
        ("accuracy", "ACCURACY"),
        ("version", "VERSION"),
    ]
    out.data(rows, out.table(rows, cols))


@run_app.command("show")
def run_show(
    run_id: str,
    full: Annotated[bool, typer.Option("--full", help="Include the aggregation strategy's own state.")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """History (accuracy, loss, bytes, stragglers per round) and the contribution ledger."""
    out = Out(json_out)
    st = call(home_of(home), out, lambda c: c.run_show(run_id=run_id, full=full))
    lines = [
        f"run {st['run_id']}  status {st['status']}  round {st['round']}/{st['config']['rounds']}  "
        f"strategy {st['config']['strategy']}  version {st['version']}"
        + ("  secure aggregation" if st["config"].get("secure") else "")
    ]
    lines += ["  " + _fmt_round(e) for e in st["history"]]
    if st["history"] and st["history"][-1].get("privacy"):
        p = st["history"][-1]["privacy"]
        lines.append(f"privacy spent: epsilon {p['epsilon']:.4g} at delta {p['delta']:g} over {p['rounds']} round(s)")
    lines += [f"warning: {w}" for w in st.get("warnings") or []]
    lines.append("ledger:")
    for nid, e in sorted(st["ledger"].items()):
        lines.append(
            f"  {nid[:12]}  samples {e['samples']}  accepted {e['accepted']}  rejected {e['rejected']}  "
            f"rounds {e['rounds']}"
        )
    out.data(st, "\n".join(lines))


@run_app.command("report")
def run_report(
    run_id: str,
    html: Annotated[Path, typer.Option("--html", help="Write the page here (one self-contained HTML file).")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One HTML page of a run: accuracy and loss per round (SVG plots), the rounds and the per-client table."""
    out = Out(json_out)
    h = home_of(home)
    st = call(h, out, lambda c: c.run_show(run_id=run_id))
    try:  # node names for the client table; ids alone when the node list is not available
        names = {n["node_id"]: n.get("name", "") for n in call(h, out, lambda c: c.nodes()) if n.get("node_id")}
    except (typer.Exit, KeyError, TypeError):
        names = {}
    from ..reports import run_report_html

    page = run_report_html(st, names=names)
    info = {**write_page(out, html, page), "points": page.count("<circle ")}
    info["rounds"] = len(st.get("history") or [])
    out.data(info, f"wrote {info['path']}: {info['rounds']} round(s), {info['points']} point(s) plotted")


@run_app.command("stop")
def run_stop(run_id: str, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Stop a run after its current round (resume later with `collab train resume`)."""
    out = Out(json_out)
    out.data(call(home_of(home), out, lambda c: c.run_stop(run_id=run_id)))


@models_app.command("list")
def models_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    out = Out(json_out)
    rows = call(home_of(home), out, lambda c: c.models_list())
    out.data(rows, out.table(rows, [("name", "NAME"), ("versions", "VERSIONS"), ("latest", "LATEST")]))


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")], home: HomeOpt = None, json_out: JsonOpt = False
) -> None:
    out = Out(json_out)
    out.data(call(home_of(home), out, lambda c: c.models_show(ref=ref)))


@models_app.command("import")
def models_import(path: Path, name: str, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Import a .keras file as a new model."""
    out = Out(json_out)
    out.data(call(home_of(home), out, lambda c: c.models_import(path=str(path.absolute()), name=name)))


@models_app.command("export")
def models_export(ref: str, path: Path, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Write a version as a .keras file."""
    out = Out(json_out)
    out.data(call(home_of(home), out, lambda c: c.models_export(ref=ref, path=str(path.absolute()))))


@data_app.command("add")
def data_add(
    name: str,
    folder: Annotated[Path | None, typer.Option(help="DIR/<label>/*.jpg or label.N.jpg files.")] = None,
    builtin: Annotated[str | None, typer.Option(help="digits (scikit-learn) or mnist.")] = None,
    path: Annotated[Path | None, typer.Option(help="Where the MNIST files are.")] = None,
    partition: Annotated[str, typer.Option(help="none, iid, shards, dirichlet")] = "none",
    clients: Annotated[int, typer.Option(help="Number of parts.")] = 1,
    client: Annotated[int, typer.Option(help="Which part this node keeps.")] = 0,
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration.")] = 0.5,
    size: Annotated[int, typer.Option(min=8, max=512, help="Folder images are resized to SIZE x SIZE.")] = 64,
    gray: Annotated[bool, typer.Option("--gray", help="Folder images in grayscale (default: colour).")] = False,
    seed: int = 0,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a local dataset (an image folder, or built-in demo data with a partition)."""
    out = Out(json_out)
    if bool(folder) == bool(builtin):
        out.error("give exactly one of --folder or --builtin")
        raise typer.Exit(EXIT_ERROR)
    spec: dict = {"kind": builtin}
    if folder:
        spec = {"kind": "folder", "path": str(folder.absolute()), "input_shape": [size, size, 1 if gray else 3]}
    if path:
        spec["path"] = str(path.absolute())
    if partition != "none":
        spec["partition"] = {
            "scheme": partition,
            "num_clients": clients,
            "client": client,
            "seed": seed,
            "alpha": alpha,
        }
    out.data(call(home_of(home), out, lambda c: c.data_add(name=name, spec=spec)))


@data_app.command("list")
def data_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    out = Out(json_out)
    rows = call(home_of(home), out, lambda c: c.data_list())
    out.data(rows, out.table(rows, [("name", "NAME"), ("spec", "SPEC")]))


@data_app.command("stats")
def data_stats(name: str, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    out = Out(json_out)
    out.data(call(home_of(home), out, lambda c: c.data_stats(name=name)))


@data_app.command("split")
def data_split(
    name: str,
    scheme: str = "iid",
    as_: Annotated[str | None, typer.Option("--as")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deal a dataset held here out to every node (sends the images: only if you don't need privacy)."""
    out = Out(json_out)
    sys.stderr.write("note: this sends the dataset's images to the other nodes\n")
    out.data(call(home_of(home), out, lambda c: c.data_split(name, as_=as_ or name, scheme=scheme)))


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
    app.command()(runs)
    app.add_typer(run_app, name="run")
    app.add_typer(models_app, name="models")
    app.add_typer(data_app, name="data")
