"""`collab --help` and the node-inspection commands must not load TensorFlow, Keras, Textual or OpenCV."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, clean_env

HEAVY = ("tensorflow", "keras", "textual", "cv2")

PROBE = f"""
import json, sys
sys.argv = ["collab", *json.loads(sys.argv[1])]
from collab_tui.cli import main as cli
code = 0
try:
    cli.main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {set(HEAVY)})
sys.stdout.flush()
sys.stderr.write("\\nPROBE " + json.dumps({{"code": code, "heavy": heavy}}) + "\\n")
"""


def _probe(args: list[str]) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=clean_env(),
    )
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("PROBE ")]
    assert line, f"probe did not finish:\n{res.stdout}\n{res.stderr}"
    return {**json.loads(line[-1][len("PROBE ") :]), "stdout": res.stdout, "stderr": res.stderr}


def test_help_loads_no_heavy_modules():
    out = _probe(["--help"])
    assert out["code"] == 0
    assert "collab" in out["stdout"] and "daemon" in out["stdout"]
    assert out["heavy"] == []


@pytest.mark.parametrize("args", [["nodes"], ["status", "--json"], ["logs"], ["trust", "list"]])
def test_inspection_commands_load_no_heavy_modules(tmp_path, args):
    out = _probe([*args, "--home", str(tmp_path / "no-node")])
    assert out["code"] == 3, out["stderr"]  # no node runs there
    assert "no collab node is running" in out["stderr"]
    assert out["heavy"] == []


def test_subcommand_help_loads_no_heavy_modules():
    for args in (["join", "--help"], ["daemon", "--help"], ["trust", "--help"]):
        out = _probe(args)
        assert out["code"] == 0, out["stderr"]
        assert out["heavy"] == [], args
