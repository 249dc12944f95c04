"""RunConfig.holdout: the share of a client's data kept back for client-side evaluation (0 = train on all,
as the benchmark protocol does)."""

from __future__ import annotations

import numpy as np
import pytest

from collab_tui.ml import mltasks
from collab_tui.ml.datasets import DatasetRegistry
from collab_tui.training.rounds import RunConfig


def test_holdout_default_and_bounds():
    assert RunConfig().validate().holdout == 0.2
    assert RunConfig.from_dict({"holdout": 0.0}).holdout == 0.0
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="holdout"):
            RunConfig(holdout=bad).validate()


def test_local_data_honours_holdout(tmp_path, monkeypatch):
    x = np.arange(50 * 4, dtype=np.float32).reshape(50, 2, 2, 1)
    y = np.arange(50) % 10
    np.savez(tmp_path / "d.npz", x=x, y=y, labels=np.array([str(i) for i in range(10)]))
    DatasetRegistry(tmp_path).add("d", {"kind": "npz", "path": str(tmp_path / "d.npz")})
    monkeypatch.setitem(mltasks._state, "home", str(tmp_path))  # what mltasks.init does in the ML process
    monkeypatch.setitem(mltasks._state, "data", {})
    xt, yt, xh, yh = mltasks._local_data("d", 0, 0.0)
    assert len(yt) == 50 and len(yh) == 0 and np.array_equal(xt, x)  # all of it, in order
    xt, yt, xh, yh = mltasks._local_data("d", 0, 0.2)
    assert (len(yt), len(yh)) == (40, 10)
