"""The layers, checked on the source: who may import whom inside ``collab_tui``.

Every module under ``collab_tui/`` is parsed; every import in it (module level, inside functions or
``if TYPE_CHECKING`` blocks, absolute or relative) is resolved to the ``collab_tui`` module it names.
A failure names the file, the line and the import.

From the bottom up::

    sans-IO cores (CORE below)    pure: bytes/events in, events/bytes out; no asyncio, no sockets
    net/                          identity & trust, wire, transport, discovery, membership, election
    ml/                           images, recognisers, models, local training, strategies
    jobs/, training/, people/     the services, on top of net and ml
    node/                         the runtime, composing net and the services
    cli*.py | app.py, screens/, widgets/, tui_client.py     the two frontends (+ client.py, which both use)

Neutral leaves (``api``, ``config``, ``fsutil``, ``logs``, ``textfmt``) may be used from any layer.
Limit: a module named by a string (``importlib.import_module("...")``) is not seen; none is used today.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

PKG_DIR = REPO / "collab_tui"

# The sans-IO cores: pure logic, unit-tested without sockets or sleeps (DESIGN.md, principle 1).
# Each may import only the standard library's non-IO parts, third-party pure code, and other cores.
CORE = {
    # named in DESIGN.md / issue 9
    "collab_tui/net/codec.py",  # wire codec: frames and messages, bytes in / bytes out
    "collab_tui/net/schema.py",  # peer message schemas: validation and sender rules (issue 15)
    "collab_tui/net/messages.py",  # the runtime's own peer message types: data only
    "collab_tui/net/log_messages.py",  # the cluster-wide logs' peer message types: data only
    "collab_tui/net/log_flow.py",  # cluster-wide logs: merging, rate limits, leases (clock passed in)
    "collab_tui/net/election.py",  # bully election state machine, clock passed in
    "collab_tui/net/membership.py",  # member table and suspicion, clock passed in
    "collab_tui/net/refusals.py",  # refusal summaries per source and reason
    "collab_tui/net/addresses.py",  # which addresses to advertise / dial (reads interfaces via ifaddr)
    "collab_tui/jobs/scheduler.py",  # capacity-based placement of items on nodes
    "collab_tui/jobs/health.py",  # per-kind worker health and back-off
    "collab_tui/training/rounds.py",  # federated round logic and run config
    "collab_tui/training/run_sync.py",  # which copy of a run wins, when a round is committed, what a new master adopts
    "collab_tui/training/secagg.py",  # secure aggregation's client and master state machines
    "collab_tui/training/secagg_math.py",  # Shamir, masks, key agreement, fixed point: in-memory only
    "collab_tui/net/control.py",  # membership + election glued (the daemon's and the simulator's rules)
    "collab_tui/ml/strategies.py",  # aggregation strategies (FedAvg, FedAdam, ...)
    # found pure in the tree
    "collab_tui/net/blobs.py",  # blob chunking and SHA-256 reassembly (sans-IO by its docstring)
    "collab_tui/net/pki.py",  # keys, CA, CSRs, signing, pins: in-memory crypto only
    "collab_tui/ml/updates.py",  # weight (de)serialisation, deltas, validation: used by rounds.py
    "collab_tui/screens/live.py",  # what the TUI knows between polls: a plain object, no widgets
    "collab_tui/textfmt.py",  # formatting helpers shared by the CLI and the TUI
    "collab_tui/net/election_events.py",  # the events the cores emit: plain dataclasses
    "collab_tui/net/membership_events.py",
    "collab_tui/jobs/scheduler_events.py",
    "collab_tui/training/rounds_events.py",
    "collab_tui/ml/strategy_specs.py",  # names, options and defaults of the strategies: data only
    "collab_tui/ml/client_spec.py",  # what local training takes from a run config: data only
}
# asyncio/socket per issue 9; ssl and selectors are the same kind of I/O.
IO_MODULES = {"asyncio", "socket", "ssl", "selectors"}
# Leaves anything may import; they import only each other, so they cannot pull a layer in sideways.
NEUTRAL = {"", "api", "config", "fsutil", "logs", "textfmt"}  # "" is the package root, collab_tui/__init__.py
TUI = {"app", "screens", "widgets", "tui_client"}
SHARED_FRONTEND = {"client"}  # the control-API client both frontends use


@dataclass(frozen=True)
class Import:
    path: str  # repo-relative file
    line: int
    text: str  # the import statement as written
    target: str  # resolved module: "collab_tui.node.runtime", or an external top-level name ("asyncio")

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text}  (-> {self.target})"


def module_name(rel: str) -> str:
    parts = list(Path(rel).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def collect(sources: dict[str, str], also_known: Iterable[str] = ()) -> list[Import]:
    """Every import of every module in ``sources`` (repo-relative path -> source), resolved against those
    modules and the files ``also_known`` (not scanned)."""
    known = {module_name(rel) for rel in [*sources, *also_known]}
    found: dict[tuple, Import] = {}
    for rel, src in sources.items():
        parts = module_name(rel).split(".")
        package = parts if rel.endswith("__init__.py") else parts[:-1]
        for node in ast.walk(ast.parse(src, filename=rel)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    up = node.level - 1
                    assert up < len(package), f"{rel}:{node.lineno}: relative import above the package"
                    base = ".".join(package[: len(package) - up] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from pkg import name`: name may be a submodule (from ..net import identity) or an attribute
                names = [f"{base}.{a.name}" for a in node.names] if base.split(".")[0] == "collab_tui" else [base]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "collab_tui":
                    pieces = name.split(".")
                    while len(pieces) > 1 and ".".join(pieces) not in known:
                        pieces.pop()
                    target = ".".join(pieces)
                else:
                    target = name.split(".")[0]
                text = ast.get_source_segment(src, node) or ast.unparse(node)
                found.setdefault((rel, node.lineno, target), Import(rel, node.lineno, text, target))
    return list(found.values())


def area(module: str) -> str:
    """'collab_tui.net.codec' -> 'net'; 'collab_tui.cli_output' -> 'cli_output'; 'collab_tui' -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def is_cli(module: str) -> bool:
    a = area(module)
    return a == "cli" or a.startswith("cli_")


def is_frontend(module: str) -> bool:
    return is_cli(module) or area(module) in TUI | SHARED_FRONTEND


def violations(sources: dict[str, str], core: set[str] = CORE, also_known: Iterable[str] = ()) -> list[str]:
    packages = {module_name(rel) for rel in [*sources, *also_known] if rel.endswith("__init__.py")}
    cores = {module_name(c) for c in core}
    out: list[str] = []
    for imp in collect(sources, also_known):
        src = module_name(imp.path)
        internal = imp.target.split(".")[0] == "collab_tui"
        a, t = area(src), area(imp.target) if internal else None
        rule = None
        if internal and a == "net" and (t in {"node", "jobs", "training", "people"} or is_frontend(imp.target)):
            rule = "net must not import the runtime (node), the services (jobs, training, people) or a frontend"
        elif internal and a == "ml" and t in {"training", "jobs", "people", "node", "net"}:
            rule = "ml must not import training, jobs, people, node or net"
        elif internal and a in {"jobs", "training", "people"} and is_frontend(imp.target):
            rule = "a service (jobs, training, people) must not import a frontend"
        elif (
            internal
            and a == "node"
            and (is_frontend(imp.target) or t in {"jobs", "training", "people", "compose", "daemon"})
        ):
            rule = "the runtime (node) must not import a service, the composition root or a frontend"
        elif internal and (a in TUI) and is_cli(imp.target):
            rule = "the TUI (widgets, screens, app, tui_client) must not import CLI code"
        elif not internal and imp.target == "textual" and a not in {"app", "screens", "widgets"}:
            rule = "only the TUI (app, screens, widgets) imports Textual"
        elif internal and a in NEUTRAL and src.count(".") < 2 and t not in NEUTRAL:
            rule = f"a neutral leaf ({', '.join(sorted(NEUTRAL - {''}))}) imports only other leaves"
        elif imp.path in core:
            if not internal and imp.target in IO_MODULES:
                rule = f"a sans-IO core must not import {imp.target}"
            elif internal and imp.target not in cores and imp.target not in packages:
                # package __init__ files (collab_tui, collab_tui.net, ...) are import-free: see below
                rule = "a sans-IO core may import only other cores (add it to CORE if it is one)"
        if rule:
            out.append(f"{imp}\n    {rule}")
    return out


@functools.cache
def _tree_sources() -> tuple[tuple[str, str], ...]:
    return tuple((p.relative_to(REPO).as_posix(), p.read_text(encoding="utf-8")) for p in sorted(PKG_DIR.rglob("*.py")))


def tree_sources() -> dict[str, str]:
    return dict(_tree_sources())


def test_layers_are_respected():
    bad = violations(tree_sources())
    assert not bad, f"{len(bad)} layer violation(s):\n" + "\n".join(bad)


def test_core_list_names_real_files():
    missing = sorted(c for c in CORE if not (REPO / c).is_file())
    assert not missing, f"CORE lists files that do not exist (renamed? update tests/test_layers.py): {missing}"


def test_package_inits_import_nothing():
    """Lazy packages (cores may import `collab_tui.<pkg>` because of this)."""
    bad = [str(i) for i in collect(tree_sources()) if i.path.endswith("__init__.py") and i.target != "__future__"]
    assert not bad, "package __init__ files must stay import-free:\n" + "\n".join(bad)


# ------------------------------------------------------------------ the checker itself


def _one(path: str, src: str, core: set[str] = frozenset()) -> list[str]:
    """The violations of one planted module, resolved against the real tree's module names."""
    return violations({path: src}, set(core), also_known=[p for p, _ in _tree_sources()])


@pytest.mark.parametrize(
    "path, src, rule",
    [
        ("collab_tui/net/codec.py", "def f():\n    from ..node import runtime\n", "net must not import the runtime"),
        ("collab_tui/net/codec.py", "import collab_tui.jobs.service as s\n", "net must not import"),
        ("collab_tui/net/x.py", "from collab_tui.cli.output import Out\n", "net must not import"),
        ("collab_tui/ml/x.py", "from ..training.rounds import RunConfig\n", "ml must not import training"),
        ("collab_tui/ml/x.py", "from .. import net\n", "ml must not import"),
        ("collab_tui/jobs/x.py", "from ..screens import base\n", "a service"),
        ("collab_tui/training/x.py", "from ..tui_client import connect\n", "a service"),
        ("collab_tui/widgets/x.py", "from ..cli.output import human_bytes\n", "must not import CLI code"),
        ("collab_tui/node/x.py", "from textual.app import App\n", "only the TUI"),
        ("collab_tui/node/x.py", "def f():\n    from ..compose import compose\n", "the runtime (node) must not"),
        ("collab_tui/node/x.py", "from ..jobs.service import JobService\n", "the runtime (node) must not"),
        ("collab_tui/textfmt.py", "from .net.pki import short_id\n", "a neutral leaf"),
    ],
)
def test_checker_flags_upward_imports(path, src, rule):
    bad = _one(path, src)
    assert bad and rule in bad[0], bad
    assert bad[0].startswith(f"{path}:"), bad


def test_checker_flags_io_in_a_core():
    bad = _one("collab_tui/net/codec.py", "def f():\n    import asyncio\n", core={"collab_tui/net/codec.py"})
    assert bad and "collab_tui/net/codec.py:2:" in bad[0] and "must not import asyncio" in bad[0], bad
    bad = _one("collab_tui/net/codec.py", "from .transport import Connection\n", core={"collab_tui/net/codec.py"})
    assert bad and "only other cores" in bad[0], bad


def test_checker_allows_downward_imports():
    assert _one("collab_tui/node/x.py", "from ..net import codec\nfrom .. import api\n") == []
    assert _one("collab_tui/compose.py", "from .jobs.service import JobService\nfrom .node.runtime import Node\n") == []
    assert _one("collab_tui/net/x.py", "from ..fsutil import atomic_write\nfrom .codec import encode\n") == []
    assert _one("collab_tui/widgets/x.py", "from ..textfmt import human_bytes\n") == []
