"""The `fl_photos` group: federated training on folders of colour photos on 3 real nodes, against centralized
training on the same split, in one run. Definitions: bench/README.md ("The `fl_photos` group").

Photos (bench/fl_photos_corpus.py): 4 classes cut from scikit-image's colour photographs, any size (80 to
320 px a side), JPEG, PNG and WebP. Each node's folder holds PER_CLASS photos a class of its own; node 0's
also holds a torn JPEG and a text file named .jpg, which `data add` must skip and count. EVAL_PER_CLASS
other photos a class are the eval set, a dataset on every node (the master evaluates every version).

Federated: `train --model photos --dataset photos`: a new model, which the master makes for the nodes'
image size and class names; FedAvg, ROUNDS rounds of EPOCHS local epochs, lr LR, batch BATCH, `--augment`
off (the same examples as centralized). Centralized (a subprocess, bench/fl_photos_central.py): the same
architecture and initial weights on the union of the three folders for ROUNDS x EPOCHS epochs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import Figure, progress

G = "fl_photos"
N, PER_CLASS, EVAL_PER_CLASS = 3, 60, 50
ROUNDS, EPOCHS, BATCH, LR, SEED = 10, 2, 32, 0.05, 0
SIZE = 64
TARGET_RATIO = 90.0  # % federated final / centralized final


def run() -> list[Figure]:
    from collab_tui.localcluster import LocalCluster
    from collab_tui.ml.registry import ModelRegistry

    from .fl_photos_corpus import make_folder

    work = Path(tempfile.mkdtemp(prefix="collab-flphotos-"))
    t0 = time.monotonic()
    dirs = [work / f"node{i}" for i in range(N)]
    counts = [make_folder(d, PER_CLASS, seed=100 + i, bad_files=i == 0) for i, d in enumerate(dirs)]
    make_folder(work / "eval", EVAL_PER_CLASS, seed=999)
    progress(
        f"fl_photos: {sum(counts)} training photos in {N} folders, {4 * EVAL_PER_CLASS} eval photos "
        f"({time.monotonic() - t0:.1f} s to make)"
    )
    figs: list[Figure] = []
    c = LocalCluster(N, heartbeat=0.2)
    try:
        c.provision()
        c.start_all()
        master = c.index_of(c.wait_agreement(timeout=30))
        shape = [SIZE, SIZE, 3]
        stats = []
        for i in range(N):
            stats.append(
                c.call(
                    i,
                    "data_add",
                    timeout=120,
                    name="photos",
                    spec={"kind": "folder", "path": str(dirs[i]), "input_shape": shape},
                )
            )
            c.call(
                i,
                "data_add",
                timeout=120,
                name="photos-eval",
                spec={"kind": "folder", "path": str(work / "eval"), "input_shape": shape},
            )
        s0 = stats[0]
        progress(
            f"fl_photos: node0 `data add`: {s0['count']} photos, {s0['per_label']}, balance {s0['balance']}, "
            f"sizes {s0['image_sizes']}, skipped {s0['skipped']}: {s0['skipped_files']}"
        )
        figs.append(
            Figure(
                G,
                "fl_photos.skipped",
                "bad files skipped and counted (node0)",
                s0["skipped"],
                "",
                2,
                op=">=",
                detail="; ".join(s0["skipped_files"]),
            )
        )
        t_fed = time.monotonic()
        res = c.call(
            master,
            "train",
            timeout=120,
            model="photos",
            dataset="photos",
            rounds=ROUNDS,
            epochs=EPOCHS,
            batch_size=BATCH,
            lr=LR,
            seed=SEED,
            eval_dataset="photos-eval",
            holdout=0.0,
            min_clients=N,
        )
        deadline = time.monotonic() + 600
        while True:
            st = c.call(master, "run_show", run_id=res["run_id"])
            if st["status"] != "running" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        fed_s = time.monotonic() - t_fed
        if st["status"] != "done":
            raise RuntimeError(f"federated run {st['status']}: {st.get('error')}")
        fed = [h["server_eval"]["accuracy"] for h in st["history"]]
        reg = ModelRegistry(c.homes[master])
        meta, init = reg.get("photos", res["version"])
        np.savez(work / "init.npz", **{f"arr_{i:04d}": w for i, w in enumerate(init)})
        arch, labels = meta["arch"], st["config"]["labels"]
    finally:
        c.close()
    spec = {
        "dirs": [str(d) for d in dirs],
        "eval_dir": str(work / "eval"),
        "input_shape": shape,
        "arch": arch,
        "init": str(work / "init.npz"),
        "epochs": ROUNDS * EPOCHS,
        "batch_size": BATCH,
        "lr": LR,
        "seed": SEED,
    }
    (work / "central.json").write_text(json.dumps(spec))
    progress(f"fl_photos: centralized reference, {ROUNDS * EPOCHS} epochs over the union (subprocess) ...")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fl_photos_central", str(work / "central.json")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"centralized run failed: {proc.stderr[-500:]}")
    central = json.loads(proc.stdout.strip().splitlines()[-1])
    cen = central["accuracy"]
    progress(
        "fl_photos: accuracy on the eval photos, federated per round / centralized every "
        f"{EPOCHS} epochs: " + ", ".join(f"{f:.3f}/{cen[(r + 1) * EPOCHS - 1]:.3f}" for r, f in enumerate(fed))
    )
    figs += [
        Figure(
            G,
            "fl_photos.federated_acc",
            f"federated final accuracy ({N} nodes, {ROUNDS} rounds)",
            fed[-1],
            "",
            detail=f"classes {labels}; {st['history'][-1]['samples']} photos a round; {fed_s:.1f} s",
            samples=fed,
        ),
        Figure(
            G,
            "fl_photos.central_acc",
            f"centralized final accuracy ({ROUNDS * EPOCHS} epochs)",
            cen[-1],
            "",
            detail=f"{central['train_images']} photos, the same architecture and initial weights; "
            f"{central['seconds']:.1f} s",
            samples=cen,
        ),
        Figure(
            G,
            "fl_photos.fed_vs_central",
            "federated / centralized, same split",
            100 * fed[-1] / cen[-1] if cen[-1] else None,
            "%",
            TARGET_RATIO,
            op=">=",
            detail=f"{fed[-1]:.4f} / {cen[-1]:.4f} on {central['eval_images']} eval photos",
        ),
    ]
    return figs
