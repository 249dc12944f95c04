"""Built-in digits classifier (TensorFlow; slow)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from collab_tui.ml import classify as clf

pytestmark = [
    pytest.mark.slow,
    # emitted inside Keras' own save_weights with numpy 2; not ours
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


def _as_bgr(x: np.ndarray, scale: int = 1) -> np.ndarray:
    """A held-out digit (8, 8, 1) in [0, 1] as a BGR uint8 image, optionally enlarged."""
    img = np.clip(x[..., 0] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if scale > 1:
        img = cv2.resize(img, (8 * scale, 8 * scale), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("collab-cache")


@pytest.fixture(scope="module")
def model(cache_dir: Path):  # type: ignore[no-untyped-def]
    return clf.builtin_digits_model(cache_dir)


def test_builtin_digits_accuracy(model, cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    assert (cache_dir / "builtin_digits.weights.h5").is_file()
    assert clf.builtin_digits_model(cache_dir) is model  # cached per process
    _, _, x_te, y_te = clf.digits_split()
    pred = np.array([int(np.argmax(clf.predict_proba(_as_bgr(x), model, clf.DIGITS_INPUT_SHAPE))) for x in x_te])
    acc = float(np.mean(pred == y_te))
    assert acc >= 0.9, acc


def test_classify_top3(model) -> None:  # type: ignore[no-untyped-def]
    _, _, x_te, y_te = clf.digits_split()
    hits = 0
    for x, y in zip(x_te[:30], y_te[:30]):
        top = clf.classify(_as_bgr(x, scale=8), model, clf.DIGITS_LABELS, clf.DIGITS_INPUT_SHAPE)
        assert len(top) == 3 and [set(t) for t in top] == [{"label", "score"}] * 3
        scores = [t["score"] for t in top]
        assert scores == sorted(scores, reverse=True) and 0.0 <= scores[-1] <= scores[0] <= 1.0
        hits += top[0]["label"] == str(y)
    assert hits >= 25  # enlarged 64x64 images are resized back to 8x8
    # inverted (dark on light) input with invert=True gives the same answer
    x = x_te[0]
    p1 = clf.predict_proba(_as_bgr(x), model, clf.DIGITS_INPUT_SHAPE)
    p2 = clf.predict_proba(255 - _as_bgr(x), model, clf.DIGITS_INPUT_SHAPE, invert=True)
    assert np.argmax(p1) == np.argmax(p2) and p1.shape == (10,)
    with pytest.raises(ValueError):
        clf.classify(_as_bgr(x), model, ["a", "b"], clf.DIGITS_INPUT_SHAPE)


def test_weights_reload_in_new_process(model, cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Another 'process' (simulated by clearing the in-memory cache) loads the weights file."""
    saved = dict(clf._model_cache)
    clf._model_cache.clear()
    try:
        t0 = time.perf_counter()
        again = clf.builtin_digits_model(cache_dir)
        elapsed = time.perf_counter() - t0
        assert again is not model
        _, _, x_te, _ = clf.digits_split()
        np.testing.assert_allclose(np.asarray(again(x_te[:20])), np.asarray(model(x_te[:20])), atol=1e-5)
        assert elapsed < 5.0
    finally:
        clf._model_cache.clear()
        clf._model_cache.update(saved)


def test_corrupt_weights_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "builtin_digits.weights.h5").write_bytes(b"garbage")
    m = clf.builtin_digits_model(tmp_path)
    _, _, x_te, y_te = clf.digits_split()
    assert float(np.mean(np.asarray(m(x_te)).argmax(1) == y_te)) >= 0.9
    assert (tmp_path / "builtin_digits.weights.h5").stat().st_size > 1000


def test_preprocess_shapes() -> None:
    img = np.zeros((50, 70, 3), np.uint8)
    assert clf.preprocess(img, (8, 8, 1)).shape == (1, 8, 8, 1)
    assert clf.preprocess(img, (32, 24, 3)).shape == (1, 32, 24, 3)
    assert clf.preprocess(img[..., 0], (16, 16, 3)).dtype == np.float32
    with pytest.raises(ValueError):
        clf.preprocess(img, (8, 8))
