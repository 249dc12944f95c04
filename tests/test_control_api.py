"""The control API is declared once (`api.py`): every command is mounted by one command class, every
client method sends a declared request, arguments are validated before a command runs, and the
frontends never name a command as a string."""

from __future__ import annotations

import ast
import asyncio
import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest

from collab_tui import api
from collab_tui.client import Client, Commands
from collab_tui.jobs.commands import JobCommands, JobDiagnostics
from collab_tui.node.commands import NodeCommands
from collab_tui.node.control import ControlClient, ControlError, ControlServer, command, stream
from collab_tui.people.commands import PeopleCommands
from collab_tui.training.commands import DataCommands, ModelCommands, RunCommands

PKG = Path(__file__).resolve().parents[1] / "collab_tui"
BENCH_ONLY = {"sched_stats", "job_probe"}


def _server(home: Path) -> ControlServer:
    ctl = ControlServer(home)
    svc = SimpleNamespace(submitter=None, node=None)
    for commands in (
        NodeCommands(None, None),
        JobCommands(svc),
        JobDiagnostics(svc),
        RunCommands(svc),
        ModelCommands(svc),
        DataCommands(svc),
        PeopleCommands(svc),
    ):
        ctl.mount(commands)
    return ctl


def test_every_declared_command_is_mounted_exactly_once(tmp_path):
    ctl = _server(tmp_path)
    assert ctl.names == {cls.NAME for cls in api.ALL}
    with pytest.raises(ValueError, match="mounted twice"):
        ctl.mount(NodeCommands(None, None))


def test_the_client_has_one_method_per_command_and_sends_the_declared_request():
    sent = []

    class Recorder(Commands):
        def _call(self, request):
            sent.append(request)

        def _stream(self, request):
            sent.append(request)

    methods = {
        name
        for name, fn in inspect.getmembers(Commands, inspect.isfunction)
        if not name.startswith("_") and name != "using"
    }
    assert methods == {cls.NAME for cls in api.ALL} - BENCH_ONLY
    rec = Recorder()
    rec.status(), rec.job_show("j1"), rec.data_split("d", as_="e"), rec.train(rounds=2), rec.subscribe(["peer"])
    assert [type(r) for r in sent] == [api.Status, api.JobShow, api.DataSplit, api.Train, api.Subscribe]
    assert api.encode(sent[2]) == {"name": "d", "as": "e", "scheme": "iid", "seed": 0}
    with pytest.raises(ControlError, match="bad arguments for train"):
        rec.train(rounds="many")


class Echo:
    @command(api.JobShow)
    async def job_show(self, req: api.JobShow) -> dict:
        return {"job_id": req.job_id}

    @stream(api.JobWatch)
    async def job_watch(self, req: api.JobWatch):
        yield {"kind": "job", "job_id": req.job_id}
        raise LookupError(f"unknown job {req.job_id!r}")


async def test_an_error_inside_a_stream_reaches_the_client_as_a_refusal(tmp_path):
    ctl = ControlServer(tmp_path)
    ctl.mount(Echo())
    await ctl.start()
    try:

        def watch():
            seen = []
            with Client(tmp_path, timeout=5) as typed:
                with pytest.raises(ControlError, match="unknown job 'nope'"):
                    for ev in typed.job_watch("nope"):
                        seen.append(ev)
            return seen

        seen = await asyncio.to_thread(watch)
    finally:
        await ctl.stop()
    assert seen == [{"kind": "job", "job_id": "nope"}]


async def test_arguments_are_validated_before_a_command_runs(tmp_path):
    ctl = ControlServer(tmp_path)
    ctl.mount(Echo())
    await ctl.start()
    try:

        def calls():
            with Client(tmp_path, timeout=5) as typed:
                ok = typed.job_show("j1")
            with ControlClient(tmp_path, timeout=5) as raw:  # what any other program could send
                errors = []
                for args in ({}, {"job_id": 5}, {"job_id": "j1", "extra": 1}):
                    try:
                        raw.call("job_show", **args)
                    except ControlError as exc:
                        errors.append(str(exc))
                try:
                    raw.call("no_such_command")
                except ControlError as exc:
                    errors.append(str(exc))
            return ok, errors

        ok, errors = await asyncio.to_thread(calls)
    finally:
        await ctl.stop()
    assert ok == {"job_id": "j1"}
    assert errors[0] == "bad arguments for job_show: Object missing required field `job_id`"
    assert errors[1] == "bad arguments for job_show: Expected `str`, got `int` - at `$.job_id`"
    assert errors[2] == "bad arguments for job_show: Object contains unknown field `extra`"
    assert errors[3] == "unknown command 'no_such_command'"


def _frontend_files() -> list[Path]:
    return [
        *PKG.glob("cli*.py"),
        PKG / "app.py",
        PKG / "tui_client.py",
        *PKG.glob("screens/*.py"),
        *PKG.glob("widgets/*.py"),
    ]


def test_frontends_never_name_a_command_as_a_string():
    names = {cls.NAME for cls in api.ALL}
    found = []
    for path in _frontend_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)):
                func = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
                if func in ("call", "stream", "_call", "_stream"):
                    for arg in node.args:
                        if isinstance(arg, ast.Constant) and arg.value in names:
                            found.append(f"{path.relative_to(PKG)}:{node.lineno}: {arg.value!r}")
    assert found == []
