"""The people gallery on three real `collab daemon` processes on 127.0.0.1 (mDNS pinned to 127.0.0.1):
enrolment with the CLI on one node, identification from another, the gallery surviving SIGKILL of the
master (the new master serves the same version, and commits the next), a restarted node catching up."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from conftest import run_cli, three_node_cluster, wait_for

from collab_tui.ml.face_eval_set import FACES_DIR as FACES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
MASTER, ENROLLER, SUBMITTER = 2, 0, 1


@pytest.fixture(scope="module")
def cluster():
    if not (FACES / "gallery").is_dir():
        pytest.skip(f"{FACES} is not on this machine")
    yield from three_node_cluster(agreed=True)


def _cli(c, i: int, *args: str, timeout: float = 90.0):
    res = run_cli(*args, "--home", str(c.homes[i]), "--json", timeout=timeout)
    return res


def _versions(c, nodes) -> set[tuple[int, int]]:
    out = set()
    for i in nodes:
        rep = c.call(i, "people_list", timeout=5.0)
        out.add((rep["version"], len(rep["people"])))
    return out


def test_enrol_here_identify_there(cluster, tmp_path: Path) -> None:
    c = cluster
    for who in PEOPLE:
        res = _cli(c, ENROLLER, "people", "add", who, str(FACES / "gallery" / who))
        assert res.returncode == 0, res.stdout + res.stderr
        rep = json.loads(res.stdout)
        assert rep["added"] == len(list((FACES / "gallery" / who).iterdir())) and rep["replicas"] >= 2
    wait_for(lambda: _versions(c, range(3)) == {(5, 5)}, 10.0, "every node to hold gallery version 5")
    listed = json.loads(_cli(c, SUBMITTER, "people", "list").stdout)
    assert [p["name"] for p in listed["people"]] == PEOPLE and listed["people"][0]["nodes"] == ["node0"]
    shown = json.loads(_cli(c, MASTER, "people", "show", "obama").stdout)
    assert sorted(e["source"] for e in shown["embeddings"]) == ["obama.jpg", "obama2.jpg"]

    photos = [FACES / "extra" / n for n in ("alex-lacamoire.png", "obama-720p.jpg", "lin-manuel-miranda.png")]
    out = tmp_path / "out"
    res = _cli(c, SUBMITTER, "submit", *map(str, photos), "--task", "identify", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    items = {Path(e["path"]).name: e for e in map(json.loads, res.stdout.splitlines()) if e.get("kind") == "job_item"}
    names = {f: (it.get("result") or {}).get("names") for f, it in items.items()}
    assert names == {
        "alex-lacamoire.png": ["alex_lacamoire"],
        "obama-720p.jpg": ["obama"],
        "lin-manuel-miranda.png": ["unknown"],
    }, items
    for it in items.values():
        r = it["result"]
        assert r["gallery_version"] == 5 and r["detector"] == "dlib_hog" and r["embedding"] == "dlib_resnet_v1"
        [face] = r["detections"]
        assert set(face) >= {"box", "name", "distance"} and (face["distance"] < 0.6) == (face["name"] != "unknown")
    assert len(list(out.glob("*.png"))) == 3  # the annotated copies, names drawn


def test_the_gallery_survives_sigkill_of_the_master(cluster) -> None:
    c = cluster
    wait_for(lambda: _versions(c, range(3)) == {(5, 5)}, 10.0, "gallery version 5 everywhere")
    c.kill(MASTER, signal.SIGKILL)
    new = c.wait_agreement([ENROLLER, SUBMITTER], timeout=20)
    assert new == c.node_id(SUBMITTER)
    assert _versions(c, [ENROLLER, SUBMITTER]) == {(5, 5)}
    res = _cli(c, ENROLLER, "people", "remove", "biden")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["version"] == 6  # the next version, committed by the new master
    c.start(MASTER)
    c.wait_agreement(list(range(3)), timeout=25)
    wait_for(lambda: _versions(c, range(3)) == {(6, 4)}, 15.0, "the restarted node to catch up to version 6")
