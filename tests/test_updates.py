"""Client update validation, clipping, outliers, stats, compression, serialization and DP."""

import io

import numpy as np
import pytest

from collab_tui.ml.updates import (
    ClientUpdate,
    UpdateRejected,
    clip_delta,
    compress_delta,
    decompress_delta,
    delta_norm,
    dp_privatize,
    from_bytes,
    norm_outliers,
    to_bytes,
    validate_update,
    weight_stats,
)

REF = [np.array([1.0, 0.0], np.float32), np.array([[0.5]], np.float32)]


def make(weights, n=10):
    return ClientUpdate(node_id="abc", weights=weights, num_examples=n, base_version="v1", metrics={"loss": 0.1})


# ---------------------------------------------------------------- validation
def test_valid_update_passes():
    validate_update(make([np.array([1.1, 0.2], np.float32), np.array([[0.4]], np.float32)]), REF)
    assert make(list(REF)).lag == 0


@pytest.mark.parametrize(
    "weights,n,reason",
    [
        ([np.array([np.nan, 0.0], np.float32), REF[1]], 10, "NaN"),
        ([np.array([np.inf, 0.0], np.float32), REF[1]], 10, "Inf"),
        ([np.array([1.0, 0.0, 0.0], np.float32), REF[1]], 10, "shape"),
        ([np.array([1, 0], np.int32), REF[1]], 10, "dtype"),
        ([REF[0]], 10, "number of tensors"),
        (list(REF), 0, "num_examples"),
        (list(REF), -3, "num_examples"),
        # |ref| = sqrt(1 + 0.25) = 1.118; delta 100 > 10 * 1.118
        ([np.array([101.0, 0.0], np.float32), REF[1]], 10, "norm"),
    ],
)
def test_validation_rejects(weights, n, reason):
    with pytest.raises(UpdateRejected) as exc:
        validate_update(make(weights, n), REF)
    assert reason in exc.value.reason
    assert isinstance(exc.value, ValueError)


def test_norm_ratio_is_configurable():
    u = make([np.array([4.0, 0.0], np.float32), REF[1]])  # delta 3, ref norm 1.118
    validate_update(u, REF, max_norm_ratio=10.0)
    with pytest.raises(UpdateRejected, match="norm"):
        validate_update(u, REF, max_norm_ratio=2.0)


# ---------------------------------------------------------------- clipping
def test_clip_delta():
    ref = [np.array([0.0, 0.0])]
    out, clipped = clip_delta([np.array([3.0, 4.0])], ref, 1.0)  # |delta| = 5 -> scaled by 1/5
    assert clipped is True
    np.testing.assert_allclose(out[0], [0.6, 0.8])
    out, clipped = clip_delta([np.array([3.0, 4.0])], ref, 10.0)
    assert clipped is False
    np.testing.assert_allclose(out[0], [3.0, 4.0])
    # offset reference: delta (3,4) around (1,1) -> (1.6, 1.8)
    out, _ = clip_delta([np.array([4.0, 5.0])], [np.array([1.0, 1.0])], 1.0)
    np.testing.assert_allclose(out[0], [1.6, 1.8])
    assert delta_norm(out, [np.array([1.0, 1.0])]) == pytest.approx(1.0)


# ---------------------------------------------------------------- outliers
def test_norm_outliers_flags_100x_update():
    # median 1.05, MAD 0.05; robust z(100) = 0.6745*98.95/0.05 = 1334.8 ; z(0.9) = 2.02
    assert norm_outliers([1.0, 1.1, 0.9, 1.05, 100.0]) == [False, False, False, False, True]


def test_norm_outliers_edge_cases():
    assert norm_outliers([1.0, 100.0]) == [False, False]  # too few to judge
    assert norm_outliers([2.0, 2.0, 2.0]) == [False, False, False]
    assert norm_outliers([2.0, 2.0, 2.0, 9.0]) == [False, False, False, True]  # MAD = 0
    assert norm_outliers([1.0, 1.0, float("nan"), 1.0]) == [False, False, True, False]
    # tiny norms are flagged only when two-sided
    assert not any(norm_outliers([1.0, 1.02, 0.98, 1.01, 0.0001]))
    assert norm_outliers([1.0, 1.02, 0.98, 1.01, 0.0001], two_sided=True)[-1] is True


# ---------------------------------------------------------------- stats
def test_weight_stats_by_hand():
    st = weight_stats([np.array([[1.0, 2.0]]), np.array([3.0, 4.0, 10.0], np.float32)])
    # values 1,2,3,4,10: mean 4, median 3, std sqrt((9+4+1+0+36)/5) = sqrt(10)
    assert st == pytest.approx(
        {"mean": 4.0, "median": 3.0, "std": 3.1622776601683795, "min": 1.0, "max": 10.0, "num_params": 5}
    )
    assert all(isinstance(st[k], float) for k in ("mean", "median", "std", "min", "max"))
    assert weight_stats([])["num_params"] == 0


# ---------------------------------------------------------------- compression
def test_compress_round_trip():
    rng = np.random.default_rng(0)
    ref = [rng.normal(size=(32, 16)).astype(np.float32), rng.normal(size=(16,)).astype(np.float32)]
    new = [r + rng.normal(scale=0.01, size=r.shape).astype(np.float32) for r in ref]
    d16 = compress_delta(new, ref)
    assert all(d.dtype == np.float16 for d in d16)
    back = decompress_delta(d16, ref)
    assert all(b.dtype == np.float32 for b in back)
    for b, n in zip(back, new):
        assert np.max(np.abs(b - n)) < 1e-4  # float16 relative precision ~5e-4 of |delta| ~0.04
    with pytest.raises(ValueError):
        compress_delta([np.array([1e6], np.float32)], [np.array([0.0], np.float32)])


# ---------------------------------------------------------------- bytes
def test_to_bytes_round_trip():
    ws = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.5], np.float64), np.zeros((0,), np.float32)] + [
        np.full((1,), i, np.float32) for i in range(12)
    ]
    back = from_bytes(to_bytes(ws))
    assert len(back) == len(ws)
    for a, b in zip(ws, back):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert from_bytes(to_bytes([])) == []


def test_from_bytes_garbage_raises():
    for junk in (b"", b"hello world", b"PK\x03\x04garbage", bytes(range(256))):
        with pytest.raises(ValueError):
            from_bytes(junk)
    single = io.BytesIO()
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError):
        from_bytes(single.getvalue())  # a bare .npy, not an archive
    wrong = io.BytesIO()
    np.savez(wrong, weights=np.zeros(3))
    with pytest.raises(ValueError, match="key"):
        from_bytes(wrong.getvalue())
    gap = io.BytesIO()
    np.savez(gap, arr_0000=np.zeros(1), arr_0002=np.zeros(1))
    with pytest.raises(ValueError):
        from_bytes(gap.getvalue())
    pickled = io.BytesIO()
    np.savez(pickled, arr_0000=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        from_bytes(pickled.getvalue())
    with pytest.raises(ValueError):
        from_bytes("not bytes")  # type: ignore[arg-type]


# ---------------------------------------------------------------- differential privacy
def test_dp_clip_bounds_delta_norm_without_noise():
    ref = [np.zeros(4, np.float32), np.zeros((2, 2), np.float32)]
    w = [np.full(4, 3.0, np.float32), np.full((2, 2), 4.0, np.float32)]  # |delta| = 10
    out = dp_privatize(w, ref, clip_norm=1.0, noise_multiplier=0.0, rng=np.random.default_rng(1))
    assert delta_norm(out, ref) == pytest.approx(1.0, rel=1e-6)
    assert out[0].dtype == np.float32


def test_dp_noise_changes_weights_with_right_scale():
    ref = [np.zeros(20000, np.float32)]
    w = [np.zeros(20000, np.float32)]
    out = dp_privatize(w, ref, clip_norm=0.5, noise_multiplier=1.0, rng=np.random.default_rng(2))
    assert not np.array_equal(out[0], w[0])
    assert float(np.std(out[0])) == pytest.approx(0.5, rel=0.05)  # std = 1.0 * 0.5
    again = dp_privatize(w, ref, 0.5, 1.0, np.random.default_rng(2))
    np.testing.assert_array_equal(out[0], again[0])  # deterministic given the rng
