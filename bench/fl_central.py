"""Centralized reference of the FL protocol, run as a subprocess so TensorFlow stays out of the bench:
``python -m bench.fl_central PROTOCOL_JSON`` prints one JSON line on stdout.

Plain Keras, as the protocol says: the model in ``protocol_model.keras`` with ``init_weights.npz``
(keys sorted = ``get_weights()`` order), SGD(lr) compiled once, ``keras.utils.set_random_seed(base_seed
+ epoch)`` before each one-epoch ``fit`` (batch B, shuffled) over the 8,000-image training pool,
evaluation (batch ``eval_batch_size``) on the 2,000-image eval set after every epoch.
"""

from __future__ import annotations

import json
import os
import sys
import time

T_START = time.monotonic()


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(protocol_path: str) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pathlib import Path

    import numpy as np

    from collab_tui.ml.datasets import load_mnist

    proto = json.loads(Path(protocol_path).read_text())
    base = Path(protocol_path).parent
    d, tr, mdl = proto["data"], proto["training"], proto["model"]
    x, y = load_mnist(base / d["dir"])
    (lo, hi), (elo, ehi) = d["train_pool"], d["eval_set"]
    xtr, ytr, xev, yev = x[lo:hi], y[lo:hi], x[elo:ehi], y[elo:ehi]

    import keras

    t_import = time.monotonic() - T_START
    model = keras.models.load_model(base / mdl["model_file"], compile=False)
    with np.load(base / mdl["init_weights_file"], allow_pickle=False) as z:
        model.set_weights([np.array(z[k]) for k in sorted(z.files)])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=tr["learning_rate"]), loss=tr["loss"], metrics=list(tr["metrics"])
    )
    epochs = int(proto["centralized"]["epochs"])
    accs, fit_s = [], []
    for epoch in range(epochs):
        keras.utils.set_random_seed(int(tr["base_seed"]) + epoch)
        t0 = time.monotonic()
        model.fit(xtr, ytr, epochs=1, batch_size=int(tr["batch_size"]), shuffle=True, verbose=0)
        fit_s.append(time.monotonic() - t0)
        res = model.evaluate(xev, yev, batch_size=int(tr["eval_batch_size"]), verbose=0, return_dict=True)
        accs.append(float(res["accuracy"]))
    return {
        "accuracy": accs,
        "fit_seconds": fit_s,
        "import_seconds": t_import,
        "total_seconds": time.monotonic() - T_START,
        "rss_mib": _rss_mib("VmRSS"),
        "peak_rss_mib": _rss_mib("VmHWM"),
        "n_train": int(len(ytr)),
        "n_eval": int(len(yev)),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
