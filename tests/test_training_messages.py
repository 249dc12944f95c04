"""The training service's peer messages (issue 15): a member is not the master, and nothing from the wire is
written before it is checked. Unit tests on the real `TrainingService` behind a `FakeContext` (which admits
every message as the node does), and on the stores directly; no sockets, no TensorFlow.

What is checked:

- `fl.commit` / `fl.state` from a member that is not the master, or from the master with bad fields
  (``created='abc'``, ``rounds='x'``, NaN accuracy, ...), are refused and store nothing;
- a version whose weights do not parse as the declared shapes (or hold NaN) is refused before writing;
- `fl.data` named to climb out of the home is refused and nothing is written anywhere; a zip bomb (small
  file, huge declared size) is refused before anything is decompressed;
- a run file or a model metadata file on disk that does not parse or validate is moved aside with a
  warning at load, and the stores still list the good ones (and sort them);
- `fl.phase` is published only for a run this master coordinates, from a node it asked to train;
- a persisted running run its coordinator cannot take is failed once, with a warning, not retried.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import struct
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import msgspec
import numpy as np
import pytest
from fake_context import FakeContext
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schema_strategies import JUNK

from collab_tui.fsutil import child_path, move_aside
from collab_tui.ml.datasets import DatasetError, check_npz
from collab_tui.ml.registry import IntegrityError, ModelRegistry, RegistryError, compute_version
from collab_tui.ml.updates import to_bytes
from collab_tui.net.schema import Refused, admit
from collab_tui.training import messages
from collab_tui.training.rounds import RunConfig, RunState
from collab_tui.training.runstore import RunStore
from collab_tui.training.service import TrainingService

M, R, W = "a" * 64, "b" * 64, "c" * 64  # the master, a member that is not, a client of the master's run
TERM = 3
ARCH = {"name": "small-cnn", "input_shape": [8, 8, 1], "num_classes": 10}
RUN_ID = "0123456789abcdef"


def _weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 3, 1, 4)).astype(np.float32), np.zeros(4, np.float32)]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def svc(tmp_path):
    ctx = FakeContext("d" * 64, home=tmp_path / "top" / "home", term=TERM, master_id=M)
    service = TrainingService(ctx)
    yield service
    assert service.client.ml._pool is None  # nothing here starts the ML process


@pytest.fixture
def version(tmp_path):
    """A real version made on "the master" (meta, weights bytes) and the run state that names it."""
    master = ModelRegistry(tmp_path / "master")
    v = master.put("digits", _weights(), ARCH, run=RUN_ID, round=1, contributors=[W], metrics={"train_loss": 0.5})
    meta, data = master.get_bytes("digits", v)
    run = RunState(
        run_id=RUN_ID,
        config=RunConfig(model="digits", arch=dict(ARCH), rounds=5).validate().__dict__.copy(),
        round=1,
        version=v,
        term=TERM,
        history=[{"round": 1, "version": v, "clients": [W], "samples": 10, "metrics": {"train_loss": 0.5}}],
    ).to_dict()
    return SimpleNamespace(meta=meta, data=data, run=run, v=v)


def _commit(version, term: int = TERM, meta=None, run=None, data=None) -> dict:
    """A `fl.commit` as the node hands a blob to its handler: the header's fields, ``t`` and the bytes."""
    return {
        "t": "fl.commit",
        "term": term,
        "meta": version.meta if meta is None else meta,
        "run": version.run if run is None else run,
        "data": version.data if data is None else data,
    }


def _stored(svc) -> tuple[list, list]:
    return svc.registry.list(), [s.run_id for s in svc.runs.list()]


# ----------------------------------------------------------------------------- the declarations
def test_the_records_declare_exactly_the_fields_of_the_run_config_and_state():
    fields = {
        f.name: f.default_factory() if f.default is msgspec.NODEFAULT else f.default
        for f in msgspec.structs.fields(messages.RunConfigRecord)
    }
    assert fields == RunConfig().__dict__  # same names, same defaults
    assert [f.name for f in msgspec.structs.fields(messages.FlStart)] == list(fields)
    assert {f.name for f in msgspec.structs.fields(messages.RunRecord)} == set(RunState.__dataclass_fields__)
    assert messages.check_config(RunConfig().__dict__) == RunConfig().__dict__
    assert {m.type_name() for m in messages.TRAINING_MESSAGES} == {
        "fl.start",
        "fl.stop",
        "fl.resume",
        "fl.train",
        "fl.eval",
        "fl.commit",
        "fl.state",
        "fl.sync",
        "fl.pull",
        "fl.phase",
        "fl.data",
        "fl.describe",
    }
    senders = {m.type_name(): m.SENDER for m in messages.TRAINING_MESSAGES}
    assert {t for t, s in senders.items() if s == "master"} == {
        "fl.train",
        "fl.eval",
        "fl.commit",
        "fl.state",
        "fl.sync",
        "fl.pull",
        "fl.describe",
    }


def test_every_handler_of_the_service_is_registered_with_its_schema(svc):
    from collab_tui.training.secure_messages import SECURE_MESSAGES

    every = messages.TRAINING_MESSAGES + SECURE_MESSAGES
    assert set(svc.ctx.schemas) == {m.type_name() for m in every}
    assert all(svc.ctx.schemas[m.type_name()] is m for m in every)


def test_a_committed_round_entry_reads_back_as_it_was_made():
    entry = {
        "round": 2,
        "clients": [W, M],
        "stragglers": {R: "deadline"},
        "rejected": {},
        "samples": 20,
        "bytes": 1234,
        "wall_seconds": 0.5,
        "fit_seconds_max": 0.25,
        "metrics": {"train_loss": 0.5, "train_accuracy": 0.75},
        "client_eval": {"accuracy": 0.5, "loss": 1.0, "n": 10},
        "version": "0" * 16,
    }
    assert messages.check_entry(entry) == {k: v for k, v in entry.items() if v != {}}


# ----------------------------------------------------------------------------- forged master messages
async def test_commit_and_state_from_a_member_that_is_not_the_master_are_refused(svc, version):
    for msg in (_commit(version), {"t": "fl.state", "term": TERM, "run": version.run}):
        reply = await svc.ctx.deliver(R, msg)
        assert reply["ok"] is False and "not this node's master" in reply["error"]
    assert _stored(svc) == ([], [])
    assert _files(svc.ctx.home / "models") == [] and _files(svc.runs.dir) == []
    assert [r.kind for r in svc.ctx.refused] == ["sender", "sender"]


async def test_a_valid_commit_from_the_master_is_stored(svc, version):
    assert await svc.ctx.deliver(M, _commit(version)) == {"held": True}  # the master counts it (run_sync.py)
    models, runs = _stored(svc)
    assert [m["latest"] for m in models] == [version.v] and runs == [RUN_ID]
    assert svc.registry.get("digits")[0]["shapes"] == [[3, 3, 1, 4], [4]]
    assert svc.current_version() == version.v
    reply = await svc.ctx.deliver(M, _commit(version, term=TERM - 1))  # the master, but of another term
    assert reply["ok"] is False and svc.ctx.refused[-1].kind == "term"


def _bad_runs(run: dict) -> dict[str, dict]:
    entry = run["history"][0]
    return {
        "created 'x'": {**run, "created": "x"},
        "created NaN": {**run, "created": math.nan},
        "rounds 'x'": {**run, "config": {**run["config"], "rounds": "x"}},
        "rounds 10**9": {**run, "config": {**run["config"], "rounds": 10**9}},
        "round 'x'": {**run, "round": "x"},
        "status": {**run, "status": "hacked"},
        "run id": {**run, "run_id": "../../x"},
        "NaN accuracy": {**run, "history": [{**entry, "client_eval": {"accuracy": math.nan, "loss": 1.0, "n": 5}}]},
        "accuracy 2": {**run, "history": [{**entry, "client_eval": {"accuracy": 2.0, "loss": 1.0, "n": 5}}]},
        "inf loss": {**run, "history": [{**entry, "metrics": {"train_loss": math.inf}}]},
        "history not a list": {**run, "history": "x" * 10_000},
        "huge error": {**run, "error": "e" * 1_000_000},
        "ledger": {**run, "ledger": {W: {"samples": "x"}}},
        "strategy": {**run, "config": {**run["config"], "strategy": "steal"}},
        "seed": {**run, "config": {**run["config"], "seed": -1}},
        "dataset path": {**run, "config": {**run["config"], "dataset": "../../etc"}},
    }


@pytest.mark.parametrize("case", list(_bad_runs({"history": [{}], "config": {}})))
async def test_commit_and_state_from_the_master_with_a_bad_run_are_refused(svc, version, case):
    run = _bad_runs(version.run)[case]
    for msg in (_commit(version, run=run), {"t": "fl.state", "term": TERM, "run": run}):
        reply = await svc.ctx.deliver(M, msg)
        assert reply["ok"] is False and "field" in svc.ctx.refused[-1].kind, (case, reply)
        assert len(reply["error"]) < 300  # the value is not echoed
    assert _stored(svc) == ([], [])
    assert _files(svc.ctx.home / "models") == [] and _files(svc.runs.dir) == []


@pytest.mark.parametrize(
    "change",
    [
        {"created": "abc"},
        {"created": math.inf},
        {"version": 1},
        {"name": "../../x"},
        {"round": "x"},
        {"metrics": {"accuracy": math.nan}},
        {"arch": "x"},
        {"shapes": [[-1]]},
        {"contributors": "x" * 100_000},
    ],
)
async def test_commit_from_the_master_with_bad_metadata_is_refused(svc, version, change):
    reply = await svc.ctx.deliver(M, _commit(version, meta={**version.meta, **change}))
    assert reply["ok"] is False and svc.ctx.refused[-1].kind.startswith("field meta"), reply
    assert _stored(svc) == ([], []) and _files(svc.ctx.home / "models") == []


async def test_weights_that_are_not_what_the_metadata_declares_are_refused_before_writing(svc, version):
    def forged(weights, **meta):  # a master can compute the version id of whatever it sends
        data = to_bytes(weights)
        return {**version.meta, **meta, "version": compute_version("digits", ARCH, data)}, data

    cases = {
        "shapes": forged(_weights(), shapes=[[3, 3, 1, 4], [5]]),
        "NaN": forged([np.full((3, 3, 1, 4), np.nan, np.float32), np.zeros(4, np.float32)], shapes=None),
        "strings": forged([np.array(["x"])], shapes=None),
        "not an archive": ({**version.meta, "version": compute_version("digits", ARCH, b"junk")}, b"junk"),
    }
    for name, (meta, data) in cases.items():
        with pytest.raises(IntegrityError):  # the transport answers it as an error, with one log line
            await svc.ctx.deliver(M, _commit(version, meta=meta, data=data))
        assert _stored(svc) == ([], []) and _files(svc.ctx.home / "models") == [], name
    with pytest.raises(IntegrityError):  # the content must hash to its version id
        await svc.ctx.deliver(M, _commit(version, data=to_bytes(_weights(1))))


async def test_the_master_checks_its_clients_replies():
    ok = {"num_examples": 10, "metrics": {"loss": 0.5}, "base_version": "", "compressed": False, "eval": None}
    assert messages.check_update({**ok, "t": "re", "re": 1, "ok": True, "data": b"x"})["num_examples"] == 10
    for bad in ({"num_examples": "x"}, {"metrics": {"loss": math.nan}}, {"eval": {"accuracy": "x"}}, {"metrics": []}):
        with pytest.raises(ValueError):
            messages.check_update({**ok, **bad})
    assert messages.check_eval({"eval": None}) is None
    with pytest.raises(ValueError):
        messages.check_eval({"eval": {"accuracy": 0.5, "loss": 1.0}})  # no n: it would weigh nothing


# ----------------------------------------------------------------------------- dataset parts
def _part(n: int = 4) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((n, 8, 8, 1), np.float32), y=np.arange(n, dtype=np.int64) % 2)
    return buf.getvalue()


async def test_a_dataset_part_named_to_escape_is_refused_and_nothing_is_written(svc, tmp_path):
    before = _files(tmp_path)
    for name in ("../../x", "a/b", "..", ".", "/etc/x", "", "x\x00", "a\\b", "x" * 65):
        reply = await svc.ctx.deliver(R, {"t": "fl.data", "name": name, "labels": [], "data": _part()})
        assert reply["ok"] is False and svc.ctx.refused[-1].kind == "field name", name
    with pytest.raises(DatasetError):  # a Name the dataset registry does not take: refused before writing
        await svc.ctx.deliver(R, {"t": "fl.data", "name": "_x", "data": _part()})
    for name in ("../../x", "..", "a/b"):  # the dataset registry refuses them too, whoever calls it
        with pytest.raises(DatasetError):
            svc.datasets.receive_part(name, _part())
    assert _files(tmp_path) == before


async def test_a_dataset_part_is_kept_once_checked(svc):
    reply = await svc.ctx.deliver(R, {"t": "fl.data", "name": "digits", "labels": ["a", "b"], "data": _part(6)})
    assert reply == {"name": "digits", "count": 6}
    x, y, labels = svc.datasets.load("digits")
    assert x.shape == (6, 8, 8, 1) and list(y) == [0, 1] * 3 and labels == ["a", "b"]
    assert "data:digits" in svc.ctx.capabilities()
    with pytest.raises(DatasetError, match="class indices"):  # labels that y does not fit
        await svc.ctx.deliver(R, {"t": "fl.data", "name": "other", "labels": ["a"], "data": _part(6)})


def _lying_zip(declared: int) -> bytes:
    """A small archive whose directory says its x.npy unpacks to ``declared`` bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", b"\0" * 1024)
        z.writestr("y.npy", b"\0" * 16)
    raw = bytearray(buf.getvalue())
    cd = raw.index(b"PK\x01\x02")  # the first central directory entry: x.npy
    struct.pack_into("<I", raw, cd + 24, declared)  # its uncompressed size
    return bytes(raw)


def _npy_claiming(shape: tuple[int, ...]) -> bytes:
    """An npz whose x.npy header declares ``shape`` but holds a few bytes (np.load would allocate it)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", header.getvalue() + b"\0" * 64)
        z.writestr("y.npy", header.getvalue())
    return buf.getvalue()


async def test_a_zip_bomb_is_refused_before_anything_is_decompressed(svc, tmp_path, monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("np.load was called on a refused archive")

    monkeypatch.setattr(np, "load", no_load)
    before = _files(tmp_path)
    bomb = _lying_zip(2**31)
    assert len(bomb) < 4096
    with pytest.raises(DatasetError, match="unpacks to"):
        await svc.ctx.deliver(R, {"t": "fl.data", "name": "bomb", "data": bomb})
    ratio = io.BytesIO()  # a real one: 64 MiB of zeros in ~64 KiB
    with zipfile.ZipFile(ratio, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", b"\0" * (64 * 1024 * 1024))
    with pytest.raises(DatasetError, match="times its size"):
        await svc.ctx.deliver(R, {"t": "fl.data", "name": "bomb", "data": ratio.getvalue()})
    with pytest.raises(DatasetError, match="declares"):
        await svc.ctx.deliver(R, {"t": "fl.data", "name": "bomb", "data": _npy_claiming((10**9, 1000))})
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as z:
        for k in range(100):
            z.writestr(f"a{k}.npy", b"")
    with pytest.raises(DatasetError, match="members"):
        svc.datasets.receive_part("many", many.getvalue())
    assert _files(tmp_path) == before


def test_check_npz_reads_shapes_from_the_headers():
    assert check_npz(_part(3), 1 << 20, 4) == {"x": ((3, 8, 8, 1), np.dtype("<f4")), "y": ((3,), np.dtype("<i8"))}
    buf = io.BytesIO()
    np.savez(buf, x=np.array([object()], dtype=object))
    with pytest.raises(DatasetError, match="objects"):
        check_npz(buf.getvalue(), 1 << 20, 4)
    with pytest.raises(DatasetError, match="not an npz"):
        check_npz(b"junk", 1 << 20, 4)


# ----------------------------------------------------------------------------- bad state on disk
def _run(run_id: str, created: float, **kw) -> RunState:
    return RunState(run_id=run_id, config=RunConfig().__dict__.copy(), created=created, **kw)


def test_bad_run_files_are_moved_aside_and_the_good_ones_still_list_in_order(tmp_path, caplog):
    store = RunStore(tmp_path)
    store.commit(_run("aaaa000000000002", 200.0))
    store.commit(_run("aaaa000000000001", 5.0))  # a number, as it must be: it sorts first
    forged = _run("bbbb000000000001", 1.0).to_dict()
    (store.dir / "bbbb000000000001.json").write_text(json.dumps({**forged, "created": "x"}))
    (store.dir / "bbbb000000000002.json").write_text(
        json.dumps({**forged, "run_id": "bbbb000000000002", "config": {"rounds": "x"}})
    )
    (store.dir / "cccc000000000001.json").write_text("{not json")
    (store.dir / "cccc000000000002.json").write_text(json.dumps({**forged, "run_id": "cccc000000000009"}))
    with caplog.at_level(logging.WARNING, "collab.training"):
        assert [s.run_id for s in store.list()] == ["aaaa000000000001", "aaaa000000000002"]
        assert [s.run_id for s in store.list()] == ["aaaa000000000001", "aaaa000000000002"]
    warned = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    assert len(warned) == 4, warned  # one line per bad file, once: it is out of the way afterwards
    assert sorted(p.name.split(".bad-")[0] for p in store.dir.glob("*.bad-*")) == [
        "bbbb000000000001.json",
        "bbbb000000000002.json",
        "cccc000000000001.json",
        "cccc000000000002.json",
    ]
    with pytest.raises(LookupError):
        store.get("bbbb000000000001")
    with pytest.raises(ValueError):  # the store never writes what it would refuse to read
        store.commit(_run("dddd000000000001", 1.0, status="hacked"))
    assert not (store.dir / "dddd000000000001.json").exists()


def test_the_heartbeat_and_the_runs_command_survive_forged_run_files(svc):
    for k, created in enumerate(("x", 5.0)):
        run = _run(f"eeee00000000000{k}", 1.0).to_dict()
        (svc.runs.dir / f"eeee00000000000{k}.json").write_text(json.dumps({**run, "created": created}))
    assert svc.current_version() == ""  # the heartbeat's model_version provider
    assert [s.run_id for s in svc.runs.list()] == ["eeee000000000001"]


def test_a_bad_model_metadata_file_is_moved_aside_and_the_other_versions_still_list(tmp_path, caplog):
    reg = ModelRegistry(tmp_path)
    v = reg.put("m", _weights(0), ARCH)
    folder = tmp_path / "models" / "m"
    good = json.loads((folder / f"{v}.json").read_text())
    (folder / f"{'1' * 16}.json").write_text(json.dumps({**good, "version": "1" * 16, "created": "abc"}))
    (folder / f"{'2' * 16}.json").write_text("{not json")
    (folder / f"{'3' * 16}.json").write_text(json.dumps({**good, "version": "3" * 16, "metrics": {"a": [1]}}))
    with caplog.at_level(logging.WARNING, "collab.models"):
        assert [m["version"] for m in reg.versions("m")] == [v]
        assert reg.list()[0]["latest"] == v and reg.list()[0]["versions"] == 1
    assert len([r for r in caplog.records if "unusable" in r.getMessage()]) == 3
    assert len(list(folder.glob("*.json.bad-*"))) == 3
    with pytest.raises(RegistryError):  # nor does the registry write what it would refuse to read
        reg.put("m", _weights(1), ARCH, metrics={"loss": math.nan})
    assert [m["version"] for m in reg.versions("m")] == [v]


def test_a_bad_dataset_list_is_moved_aside_and_the_node_still_starts(tmp_path, caplog):
    state = tmp_path / "top" / "home" / "state"
    state.mkdir(parents=True)
    for text in ('{"datasets": {"../x": {"kind": "digits"}}}', '{"datasets": 5}', "{not json"):
        (state / "datasets.json").write_text(text)
        with caplog.at_level(logging.WARNING, "collab.ml.datasets"):
            svc = TrainingService(FakeContext("d" * 64, home=tmp_path / "top" / "home"))
        assert svc.datasets.list() == [] and not (state / "datasets.json").exists()
    assert len(list(state.glob("datasets.json.bad-*"))) == 3
    assert len([r for r in caplog.records if "unusable" in r.getMessage()]) == 3
    svc.datasets.add("d", {"kind": "digits"})  # and it is written again as usual
    assert [d["name"] for d in svc.datasets.list()] == ["d"]


def test_child_path_and_move_aside(tmp_path):
    assert child_path(tmp_path, "a.npz") == tmp_path / "a.npz"
    for bad in ("", ".", "..", "../x", "a/b", "a\\b", "x\x00", "/etc", "x" * 300, 7):
        with pytest.raises(ValueError):
            child_path(tmp_path, bad)
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(ValueError, match="outside"):
        child_path(tmp_path, "link")
    f = tmp_path / "s.json"
    f.write_text("1")
    first = move_aside(f)
    f.write_text("2")
    second = move_aside(f)
    assert first != second and first.read_text() == "1" and second.read_text() == "2" and not f.exists()
    assert move_aside(f) is None


# ----------------------------------------------------------------------------- member commands and phases
async def test_control_messages_are_bounded_and_only_the_master_acts_on_them(svc):
    for msg in (
        {"t": "fl.start", "rounds": 10**9},
        {"t": "fl.start", "lr": math.nan},
        {"t": "fl.start", "arch": {"keras_json": 5, "k": {"nested": 1}}},
        {"t": "fl.start", "model": "../../x"},
        {"t": "fl.stop", "run_id": "x" * 1_000_000},
        {"t": "fl.resume", "run_id": ["x"]},
    ):
        reply = await svc.ctx.deliver(R, msg)
        assert reply["ok"] is False and svc.ctx.refused[-1].kind.startswith("field"), msg
    for msg in ({"t": "fl.start", "rounds": 2}, {"t": "fl.stop", "run_id": "abcd"}, {"t": "fl.resume"}):
        assert await svc.ctx.deliver(R, msg) == {"ok": False, "error": "this node is not the master"}
    with pytest.raises(ValueError, match="input_shape"):
        RunConfig(arch={"name": "small-cnn", "input_shape": 5, "num_classes": 10}).validate()


async def test_a_phase_is_published_only_from_a_client_of_a_run_this_master_coordinates(svc):
    ctx = svc.ctx
    ctx.is_master, ctx.master_id = True, ctx.node_id
    sub = ctx.subscribe({"fl_phase"})
    phase = {"t": "fl.phase", "run_id": RUN_ID, "round": 1, "phase": "train"}
    assert (await ctx.deliver(W, phase))["ok"] is False  # no such run here
    task = asyncio.get_running_loop().create_task(asyncio.sleep(30))
    svc.coordinators[RUN_ID] = (SimpleNamespace(clients={W}), task)
    try:
        assert (await ctx.deliver(R, phase))["ok"] is False  # not a client of it
        assert await ctx.deliver(W, phase) is None
        assert (await ctx.deliver(W, {**phase, "phase": "x" * 100}))["ok"] is False
        ev = await sub.get(timeout=1.0)
        assert (ev["node_id"], ev["phase"], ev["round"]) == (W, "train", 1)
        with pytest.raises(TimeoutError):
            await sub.get(timeout=0.1)  # exactly one was published
    finally:
        task.cancel()
        sub.close()


async def test_a_running_run_its_coordinator_cannot_take_is_failed_once(svc, caplog):
    ctx = svc.ctx
    ctx.is_master, ctx.master_id = True, ctx.node_id
    cfg = RunConfig(strategy="fedadam").validate().__dict__.copy()
    bad = RunState(run_id=RUN_ID, config=cfg, strategy_state={"m": {"__weights__": "!!!!"}}, created=time.time())
    svc.runs.commit(bad)
    with caplog.at_level(logging.INFO, "collab.training"):
        await svc._resume_runs()
        await svc._resume_runs()
    st = svc.runs.get(RUN_ID)
    assert st.status == "failed" and "cannot be resumed" in st.error and svc.coordinators == {}
    assert [r.levelname for r in caplog.records if "cannot be resumed" in r.getMessage()] == ["WARNING"]
    assert not any(r.exc_info for r in caplog.records)


# ----------------------------------------------------------------------------- random messages
# Valid messages of every kind with one value anywhere inside (however deep) replaced by junk, or one field
# left out, or one added: the node must refuse or handle each without a traceback, and a refused one must
# change nothing on disk.
HEAVY = {"fl.train", "fl.eval", "fl.start", "fl.resume"}  # valid ones start real ML work: tested elsewhere


def _seeds(version) -> list[dict]:
    return [
        _commit(version),
        {"t": "fl.state", "term": TERM, "run": version.run},
        {"t": "fl.data", "name": "part", "labels": ["a", "b"], "data": _part()},
        {"t": "fl.phase", "run_id": RUN_ID, "round": 1, "phase": "train"},
        {"t": "fl.stop", "run_id": RUN_ID},
        {"t": "fl.start", "rounds": 2, "arch": dict(ARCH)},
        {"t": "fl.train", "term": TERM, "run_id": RUN_ID, "round": 1, "config": version.run["config"], "data": b""},
        {"t": "fl.sa.keys", "term": TERM, "run_id": RUN_ID, "round": 1},
        {"t": "fl.sa.shares", "term": TERM, "run_id": RUN_ID, "round": 1, "adverts": [_ADVERT]},
        {
            "t": "fl.sa.unmask",
            "term": TERM,
            "run_id": RUN_ID,
            "round": 1,
            "survivors": [W, M, R],
            "dropped": [],
            "sealed": [{"from": W, "sealed": "ab" * 148}],
        },
    ]


_ADVERT = {"node": W, "c_pk": "01" * 32, "s_pk": "02" * 32, "commit": "03" * 32, "spki": "30" * 91, "sig": "30" * 70}


async def test_secure_aggregation_steps_come_from_the_master_only_and_refuse_what_they_cannot_check(svc):
    keys = {"t": "fl.sa.keys", "term": TERM, "run_id": RUN_ID, "round": 1}
    with pytest.raises(Refused):
        admit(svc.ctx.schemas["fl.sa.keys"], R, keys, M, TERM)  # a member that is not the master
    advert = await svc.ctx.deliver(M, keys)
    assert advert["node"] == svc.ctx.node_id and len(bytes.fromhex(advert["sig"])) > 60
    shares = {"t": "fl.sa.shares", "term": TERM, "run_id": RUN_ID, "round": 1, "adverts": [_ADVERT, advert]}
    refused = await svc.ctx.deliver(M, shares)
    assert refused["ok"] is False and "not a member" in refused["error"]
    late = {
        "t": "fl.sa.unmask",
        "term": TERM,
        "run_id": RUN_ID,
        "round": 2,
        "survivors": [],
        "dropped": [],
        "sealed": [],
    }
    refused = await svc.ctx.deliver(M, late)
    assert refused["ok"] is False and "no secure-aggregation keys" in refused["error"]


def _paths(value, at: tuple = ()):
    if at:
        yield at
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield from _paths(v, (*at, k))


def _mutate(value, path: tuple, new, delete: bool = False):
    if not path:
        return new
    head, rest = path[0], path[1:]
    out = dict(value) if isinstance(value, dict) else list(value)
    if delete and not rest:
        del out[head]
    else:
        out[head] = _mutate(value[head], rest, new, delete)
    return out


@st.composite
def _mutants(draw, seeds: list[dict]) -> dict:
    msg = draw(st.sampled_from(seeds))
    paths = [p for p in _paths(msg) if p != ("t",)]
    how = draw(st.sampled_from(["junk", "junk", "junk", "delete", "add"]))
    if how == "add":
        return {**msg, draw(st.text(max_size=8)): draw(JUNK)} | {"t": msg["t"]}
    path = draw(st.sampled_from(paths))
    return _mutate(msg, path, draw(JUNK), delete=how == "delete")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_training_messages_never_raise_and_refused_ones_change_nothing(svc, version, data):
    msg = data.draw(_mutants(_seeds(version)))
    sender = data.draw(st.sampled_from([M, R]))
    schema = svc.ctx.schemas[msg["t"]]
    try:
        admit(schema, sender, msg, M, TERM)
        valid = True
    except Refused:
        valid = False
    event(f"{msg['t']} {'admitted' if valid else 'refused'}")
    if valid and schema.type_name() in HEAVY:
        return
    before = _files(svc.ctx.home)
    try:
        asyncio.run(svc.ctx.deliver(sender, msg))
    except (ValueError, LookupError, PermissionError) as exc:  # what the transport answers without a traceback
        assert valid, f"a refused message reached its handler: {exc}"
    if not valid:
        assert _files(svc.ctx.home) == before
