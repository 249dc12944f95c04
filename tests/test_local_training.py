"""Local training with TensorFlow: protocol model, fit/evaluate, FedProx, Keras import/export."""

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

BENCH = Path("/work/shared/bench")
MNIST = Path("/work/shared/data/mnist")
if not (BENCH / "protocol_model.keras").is_file() or not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
    pytest.skip("benchmark files not available", allow_module_level=True)


@pytest.fixture(scope="module")
def setup():
    from collab_tui.ml.architectures import architecture_spec, load_protocol_model
    from collab_tui.ml.datasets import load_mnist

    x, y = load_mnist(MNIST)
    model, w0 = load_protocol_model(BENCH)
    return {"x": x, "y": y, "model": model, "w0": w0, "arch": architecture_spec(model)}


def test_protocol_model_and_builtin_architecture(setup):
    from collab_tui.ml.architectures import build_from_spec, build_model

    assert setup["model"].count_params() == 56_714
    assert setup["arch"] == {"name": "small-cnn", "input_shape": [28, 28, 1], "num_classes": 10}
    built = build_model("small-cnn", (28, 28, 1), 10)
    assert built.count_params() == 56_714
    assert [w.shape for w in built.get_weights()] == [w.shape for w in setup["w0"]]
    small = build_from_spec({"name": "small-cnn", "input_shape": [8, 8, 1], "num_classes": 10})
    assert small.count_params() < 56_714


def test_fit_raises_accuracy_and_is_deterministic(setup):
    from collab_tui.ml import local_training as lt

    x, y, arch, w0 = setup["x"], setup["y"], setup["arch"], setup["w0"]
    xe, ye = x[8000:8500], y[8000:8500]
    before = lt.evaluate(arch, w0, xe, ye)
    new, n, m = lt.fit(arch, w0, x[:2000], y[:2000], epochs=3, batch_size=32, lr=0.05, seed=0)
    after = lt.evaluate(arch, new, xe, ye)
    assert n == 2000 and m["fit_seconds"] > 0 and 0 < m["loss"] < 2.0
    assert before["accuracy"] < 0.3 < 0.7 < after["accuracy"] and after["n"] == 500
    again, _, _ = lt.fit(arch, w0, x[:2000], y[:2000], epochs=3, batch_size=32, lr=0.05, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(new, again))
    assert lt.get_model(arch) is lt.get_model(arch)  # cached, not rebuilt
    with pytest.raises(ValueError):
        lt.fit(arch, w0, x[:0], y[:0])


def test_fit_matches_plain_keras_fit(setup):
    import keras

    from collab_tui.ml import local_training as lt
    from collab_tui.ml.architectures import build_from_spec

    x, y, arch, w0 = setup["x"][:640], setup["y"][:640], setup["arch"], setup["w0"]
    ours, _, m = lt.fit(arch, w0, x, y, epochs=1, batch_size=32, lr=0.05, seed=5)
    ref = build_from_spec(arch)
    ref.set_weights(w0)
    ref.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    keras.utils.set_random_seed(5)
    h = ref.fit(x, y, epochs=1, batch_size=32, shuffle=True, verbose=0)
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(ours, ref.get_weights()))
    assert m["loss"] == pytest.approx(h.history["loss"][-1], rel=1e-5)


def test_fedprox_stays_closer_to_global(setup):
    from collab_tui.ml import local_training as lt
    from collab_tui.ml.updates import delta_norm

    x, y, arch = setup["x"], setup["y"], setup["arch"]
    glob, _, _ = lt.fit(arch, setup["w0"], x[:1000], y[:1000], epochs=1, seed=1)
    plain, _, _ = lt.fit(arch, glob, x[2000:2500], y[2000:2500], epochs=2, seed=2, mu=0.0)
    prox, _, _ = lt.fit(arch, glob, x[2000:2500], y[2000:2500], epochs=2, seed=2, mu=1.0)
    assert delta_norm(prox, glob) < 0.8 * delta_norm(plain, glob)


def test_keras_import_export_roundtrip(setup, tmp_path):
    import keras

    from collab_tui.ml.registry import ModelRegistry

    reg = ModelRegistry(tmp_path)
    v = reg.import_keras(BENCH / "protocol_model.keras", "proto")
    meta, w = reg.get("proto")
    assert meta["arch"] == setup["arch"] and meta["weight_stats"]["num_params"] == 56_714
    assert meta["extra"]["imported_from"] == "protocol_model.keras"
    assert all(np.array_equal(a, b) for a, b in zip(w, setup["w0"]))
    out = tmp_path / "out.keras"
    assert reg.export_keras(f"proto@{v[:8]}", out)["version"] == v
    back = keras.models.load_model(out, compile=False)
    assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), setup["w0"]))
    assert reg.import_keras(out, "proto") == v  # same content, same id
