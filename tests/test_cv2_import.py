"""OpenCV's first import, done by several threads at once (the job pool's threads start together), must give
every one of them the whole package: a half-initialised cv2 made one node fail every face task with
``module 'cv2' has no attribute 'data'``. Each round runs in a fresh interpreter (cv2 not imported yet)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, clean_env

pytestmark = pytest.mark.timeout(120)

PROBE = r"""
import json, sys, threading
assert "cv2" not in sys.modules
N = 8
barrier = threading.Barrier(N)
seen, errors = [], []

def first_import(k):
    barrier.wait()
    try:
        if k % 4 == 3:  # some threads come in through the modules the job types import
            from collab_tui.ml import detectors
            cv2 = detectors.cv2
        elif k % 4 == 2:
            from collab_tui.jobs.worker_side import _one_cv_thread
            _one_cv_thread()
            from collab_tui.ml.cvload import import_cv2
            cv2 = import_cv2()
        else:
            from collab_tui.ml.cvload import import_cv2
            cv2 = import_cv2()
        seen.append((id(cv2), cv2.data.haarcascades, hasattr(cv2, "CascadeClassifier")))
    except Exception as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=first_import, args=(k,)) for k in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join(60)
import cv2
from collab_tui.ml import images
print(json.dumps({"errors": errors, "ids": sorted({s[0] for s in seen}), "n": len(seen),
                  "cascades": sorted({s[1] for s in seen}), "all_have_api": all(s[2] for s in seen),
                  "same_as_sys_modules": {s[0] for s in seen} == {id(cv2)} and images.cv2 is cv2}))
"""


@pytest.mark.parametrize("round_", range(4))
def test_concurrent_first_import_of_cv2_gives_every_thread_the_whole_package(round_):
    res = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=90, cwd=REPO, env=clean_env()
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["errors"] == [], out
    assert out["n"] == 8 and len(out["ids"]) == 1 and out["same_as_sys_modules"], out
    assert len(out["cascades"]) == 1 and out["cascades"][0].endswith("/"), out
    assert out["all_have_api"]


def test_importing_the_helper_does_not_import_cv2():
    code = "import sys; import collab_tui.ml.cvload, collab_tui.jobs.worker_side; print('cv2' in sys.modules)"
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO, env=clean_env()
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
