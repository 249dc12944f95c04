"""Classification with the cluster's own models: a CNN made for a folder dataset (its image size, its
label folders' names), trained federated on two real daemons, then a classify job that answers with those
class names; and the checks around it (relabelling by name, augmentation, a grayscale model refusing a
colour photo)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli, wait_for, wait_job

from collab_tui.ml.classify import ModelMismatch, check_fits, is_colour
from collab_tui.ml.client_spec import ClientSpec
from collab_tui.ml.datasets import DatasetRegistry, augment_images, relabel

SIZE = 32


def _shape_image(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A 48 px picture: a reddish disc ("circle") or a bluish square ("square") on a noisy background."""
    img = rng.integers(0, 80, (48, 48, 3), dtype=np.uint8)
    cx, cy, r = int(rng.integers(16, 32)), int(rng.integers(16, 32)), int(rng.integers(9, 14))
    colour = (int(rng.integers(0, 60)), int(rng.integers(0, 60)), int(rng.integers(180, 255)))  # BGR: red
    if kind == "circle":
        cv2.circle(img, (cx, cy), r, colour, -1)
    else:
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colour[::-1], -1)  # blue
    return img


def _folder(root: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for kind in ("circle", "square"):
        (root / kind).mkdir(parents=True)
        for k in range(n):
            cv2.imwrite(str(root / kind / f"{k:03d}.png"), _shape_image(kind, rng))
    return root


# ----------------------------------------------------------------------------- fast checks
def test_describe_names_the_label_folders_without_decoding(tmp_path: Path) -> None:
    reg = DatasetRegistry(tmp_path / "home")
    root = _folder(tmp_path / "shapes", 3, 0)
    (root / "square" / "broken.png").write_bytes(b"not a png")  # listed, never decoded by describe
    reg.add("shapes", {"kind": "folder", "path": str(root), "input_shape": [SIZE, SIZE, 3]})
    assert reg.describe("shapes") == {"input_shape": [SIZE, SIZE, 3], "labels": ["circle", "square"]}


def test_relabel_maps_by_name_and_drops_other_classes() -> None:
    x = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1)
    y = np.array([0, 1, 2, 1])
    x2, y2 = relabel(x, y, ["cat", "dog", "fox"], ["dog", "cat"])
    assert y2.tolist() == [1, 0, 0] and x2.ravel().tolist() == [0.0, 1.0, 3.0]


def test_augmentation_flips_and_shifts_but_keeps_the_batch() -> None:
    x = np.random.default_rng(0).random((16, 12, 12, 3)).astype(np.float32)
    a = augment_images(x, np.random.default_rng(1))
    assert a.shape == x.shape and a.dtype == x.dtype and not np.array_equal(a, x)
    assert np.array_equal(augment_images(x, np.random.default_rng(1)), a)  # seeded: the same each time
    assert set(np.unique(a)) <= set(np.unique(x))  # pixels moved, none made up


def test_a_grayscale_model_refuses_a_colour_photo() -> None:
    from skimage import data

    photo = cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR)
    gray_as_bgr = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert is_colour(photo) and not is_colour(gray_as_bgr)
    with pytest.raises(ModelMismatch, match="takes 8x8 grayscale images; this is a 451x300 colour photo"):
        check_fits(photo, (8, 8, 1), "builtin-digits")
    check_fits(gray_as_bgr, (8, 8, 1), "builtin-digits")
    check_fits(photo, (32, 32, 3), "shapes@0123")


def test_a_run_config_from_before_labels_still_makes_a_client_spec() -> None:
    from collab_tui.training.rounds import RunConfig

    cfg = RunConfig(labels=["a", "b"], arch={"name": "small-cnn", "input_shape": [8, 8, 3], "num_classes": 2})
    spec = ClientSpec.from_config(cfg.__dict__)
    assert spec.labels == ["a", "b"] and spec.augment is False
    old = {k: v for k, v in cfg.__dict__.items() if k not in ("labels", "augment")}
    assert ClientSpec.from_config(old).labels == []
    with pytest.raises(ValueError, match="list of names"):
        ClientSpec.from_config({**cfg.__dict__, "labels": [1, 2]})
    with pytest.raises(ValueError, match="one per output"):
        RunConfig(labels=["a", "a"], arch=cfg.arch).validate()


# ----------------------------------------------------------------------------- two daemons
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_model_trained_on_two_folder_classes_labels_new_photos_with_them(tmp_path: Path) -> None:
    from collab_tui.localcluster import LocalCluster

    c = LocalCluster(2, priorities=[0, 1], heartbeat=0.2)
    try:
        c.provision()
        c.start_all()
        c.wait_agreement(timeout=20)
        for i in range(2):  # each node its own images, registered as a user would
            folder = _folder(tmp_path / f"shapes{i}", 40, seed=i)
            res = run_cli(
                "data", "add", "shapes", "--folder", str(folder), "--size", str(SIZE), "--home", str(c.homes[i]),
                "--json", timeout=90,
            )  # fmt: skip
            assert res.returncode == 0, res.stdout + res.stderr
        res = run_cli(
            "train", "--model", "shapes", "--dataset", "shapes", "--rounds", "4", "--epochs", "2", "--lr", "0.1",
            "--min-clients", "2", "--augment", "--home", str(c.homes[0]), "--json", timeout=200,
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        run_id = json.loads(res.stdout.splitlines()[0])["run_id"]
        run = wait_for(
            lambda: (r := c.call(0, "run_show", run_id=run_id))["status"] in ("done", "failed") and r, 180, "the run"
        )
        assert run["status"] == "done", run
        meta = c.call(1, "models_show", ref="shapes")
        assert meta["extra"]["labels"] == ["circle", "square"]
        assert meta["arch"]["input_shape"] == [SIZE, SIZE, 3] and meta["arch"]["num_classes"] == 2

        fresh = tmp_path / "fresh"
        fresh.mkdir()
        rng = np.random.default_rng(99)
        truth = {}
        for k in range(12):
            kind = ("circle", "square")[k % 2]
            cv2.imwrite(str(fresh / f"{k:02d}.png"), _shape_image(kind, rng))
            truth[f"{k:02d}.png"] = kind
        job = c.call(1, "submit", paths=[str(fresh)], task="classify", options={"model": "shapes"}, timeout=20)
        job = wait_job(c, 1, job["job_id"], 90)
        got = {Path(it["path"]).name: (it.get("result") or {}).get("labels") for it in job["items"]}
        assert all(v and v[0] in ("circle", "square") for v in got.values()), job["items"]
        right = sum(got[f][0] == truth[f] for f in truth)
        assert right >= 10, (right, got)
        # every node votes with its replica of the model: the ensemble names the same classes
        job = c.call(0, "submit", paths=[str(fresh)], task="ensemble", options={"model": "shapes", "method": "mean"})
        job = wait_job(c, 0, job["job_id"], 90)
        results = [it.get("result") or {} for it in job["items"]]
        assert all(len(r.get("voters", [])) == 2 for r in results), results
        votes = {Path(it["path"]).name: (it.get("result") or {}).get("labels", [""])[0] for it in job["items"]}
        assert sum(votes[f] == truth[f] for f in truth) >= 10, votes

        from skimage import data  # the digits demo model and a colour photo: an error, not a digit

        cv2.imwrite(str(tmp_path / "cat.png"), cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR))
        job = c.call(1, "submit", paths=[str(tmp_path / "cat.png")], task="classify", timeout=20)
        [item] = wait_job(c, 1, job["job_id"], 90)["items"]
        assert item["status"] == "error" and "grayscale images" in item["error"], item
    finally:
        c.close()
