"""Centralized reference of the `fl_photos` group, run as a subprocess so TensorFlow stays out of the bench:
``python -m bench.fl_photos_central SPEC_JSON`` prints one JSON line on stdout.

SPEC: {"dirs": [the clients' folders], "eval_dir", "input_shape", "arch", "init" (an .npz of the initial
weights, keys in order), "epochs", "batch_size", "lr", "seed"}. The union of the folders is loaded by the
same loader the nodes use (``load_folder``), trained with the same step the clients use
(``local_training.fit``, one epoch at a time, seed + epoch), and evaluated on ``eval_dir`` after every epoch.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(spec_path: str) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from collab_tui.ml.datasets import load_folder
    from collab_tui.ml.local_training import evaluate, fit

    spec = json.loads(open(spec_path).read())
    shape = tuple(spec["input_shape"])
    xs, ys, labels = [], [], None
    for d in spec["dirs"]:
        x, y, labs = load_folder(d, shape)
        if labels is not None and labs != labels:
            raise ValueError(f"{d}: classes {labs} differ from {labels}")
        labels = labs
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    xe, ye, labs = load_folder(spec["eval_dir"], shape)
    if labs != labels:
        raise ValueError(f"eval classes {labs} differ from {labels}")
    with np.load(spec["init"], allow_pickle=False) as z:
        weights = [np.array(z[k]) for k in sorted(z.files)]
    accs, t0 = [], time.monotonic()
    for epoch in range(int(spec["epochs"])):
        weights, _, _ = fit(
            spec["arch"],
            weights,
            x,
            y,
            epochs=1,
            batch_size=spec["batch_size"],
            lr=spec["lr"],
            seed=spec["seed"] + epoch,
        )
        accs.append(evaluate(spec["arch"], weights, xe, ye)["accuracy"])
    return {
        "accuracy": accs,
        "train_images": int(len(x)),
        "eval_images": int(len(xe)),
        "seconds": time.monotonic() - t0,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
