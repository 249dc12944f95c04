"""Dataset loaders, partitioners (per /work/shared/bench/fl_protocol.json) and the dataset registry. No TF."""

import gzip
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from collab_tui.ml.datasets import (
    DatasetError,
    DatasetRegistry,
    dataset_stats,
    load_digits8,
    load_folder,
    load_mnist,
    partition_dirichlet,
    partition_iid,
    partition_label_shards,
    split_holdout,
)

MNIST = Path("/work/shared/data/mnist")
PROTOCOL = Path("/work/shared/bench/fl_protocol.json")
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason="no MNIST copy")


def _disjoint_cover(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n


# ------------------------------------------------------------- partitioners
def test_iid_matches_protocol_rule():
    parts = partition_iid(8000, 4, seed=0)
    perm = np.random.default_rng(0).permutation(8000)
    assert [len(p) for p in parts] == [2000] * 4
    for i, p in enumerate(parts):
        assert np.array_equal(p, perm[i * 2000 : (i + 1) * 2000])
    _disjoint_cover(parts, 8000)
    assert not np.array_equal(partition_iid(8000, 4, seed=1)[0], parts[0])
    assert [len(p) for p in partition_iid(10, 3, 0)] == [4, 3, 3]


def test_label_shards_exact_small():
    y = np.array([3, 1, 2, 0, 1, 3, 0, 2])
    # stable argsort: [3, 6, 1, 4, 2, 7, 0, 5]; shards [3,6] [1,4] [2,7] [0,5]
    parts = partition_label_shards(y, num_clients=2, num_shards=4, shard_size=2)
    assert [p.tolist() for p in parts] == [[3, 6, 2, 7], [1, 4, 0, 5]]
    # generalised: 3 shards per client -> client i gets shards i, i+2, i+4
    y6 = np.arange(12)[::-1] // 2  # labels 5,5,4,4,...,0,0
    parts = partition_label_shards(y6, 2, num_shards=6, shard_size=2)
    order = np.argsort(y6, kind="stable")
    assert parts[0].tolist() == order[[0, 1, 4, 5, 8, 9]].tolist()
    assert parts[1].tolist() == order[[2, 3, 6, 7, 10, 11]].tolist()


def test_label_shards_errors():
    y = np.zeros(10, int)
    with pytest.raises(DatasetError):
        partition_label_shards(y, 4, num_shards=6, shard_size=1)  # not a multiple
    with pytest.raises(DatasetError):
        partition_label_shards(y, 2, num_shards=4, shard_size=3)  # 12 > 10
    with pytest.raises(DatasetError):
        partition_iid(10, 0, 0)


@needs_mnist
def test_label_shards_protocol_on_mnist():
    proto = json.loads(PROTOCOL.read_text())["partition"]
    _, y = load_mnist(MNIST)
    pool = y[:8000]
    ls = proto["label_shards"]
    parts = partition_label_shards(pool, proto["num_clients"], ls["num_shards"], ls["shard_size"])
    order = np.argsort(pool, kind="stable")
    for i, p in enumerate(parts):
        expect = np.concatenate([order[i * 1000 : (i + 1) * 1000], order[(i + 4) * 1000 : (i + 5) * 1000]])
        assert np.array_equal(p, expect)
        assert len(np.unique(pool[p])) <= 6  # each 1,000-shard spans at most 3 labels
    _disjoint_cover(parts, 8000)


def test_dirichlet_sums_and_determinism():
    y = np.repeat(np.arange(10), 100)
    parts = partition_dirichlet(y, 5, alpha=0.3, seed=7)
    _disjoint_cover(parts, 1000)
    assert all(len(p) >= 1 for p in parts)
    assert all(np.array_equal(a, b) for a, b in zip(parts, partition_dirichlet(y, 5, alpha=0.3, seed=7)))
    # large alpha ~ balanced; small alpha ~ skewed
    big = partition_dirichlet(y, 5, alpha=1000.0, seed=0)
    assert max(len(p) for p in big) - min(len(p) for p in big) < 60
    small = partition_dirichlet(y, 5, alpha=0.05, seed=0)
    share = [np.bincount(y[p], minlength=10).max() / max(len(p), 1) for p in small]
    assert np.mean(share) > 0.5
    with pytest.raises(DatasetError):
        partition_dirichlet(y, 5, alpha=0.0)


def test_split_holdout_and_stats():
    x = np.arange(50, dtype=np.float32).reshape(50, 1, 1, 1)
    y = np.arange(50) % 3
    xt, yt, xh, yh = split_holdout(x, y, frac=0.2, seed=0)
    assert len(xh) == 10 and len(xt) == 40
    assert set(xt.ravel().tolist()).isdisjoint(xh.ravel().tolist())
    assert np.array_equal(yt, xt.ravel().astype(int) % 3)
    s = dataset_stats(y, ["a", "b", "c", "d"])
    assert s == {"count": 50, "num_classes": 4, "per_label": {"a": 17, "b": 17, "c": 16, "d": 0}}


# ------------------------------------------------------------------ loaders
def _img(path: Path, value: int, color=False) -> None:
    import cv2

    arr = np.full((12, 10, 3) if color else (12, 10), value, np.uint8)
    assert cv2.imwrite(str(path), arr)


def test_load_folder_both_layouts_and_corrupt(tmp_path, caplog):
    sub = tmp_path / "sub"
    for lab, v in (("cat", 40), ("dog", 200)):
        (sub / lab).mkdir(parents=True)
        for i in range(3):
            _img(sub / lab / f"{i}.png", v, color=True)
    (sub / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xffnot really a jpeg")
    (sub / ".hidden").mkdir()
    _img(sub / ".hidden" / "x.png", 1)
    skipped: list = []
    with caplog.at_level(logging.WARNING, logger="collab.ml.datasets"):
        x, y, labels = load_folder(sub, (28, 28, 1), skipped=skipped)
    assert labels == ["cat", "dog"] and x.shape == (6, 28, 28, 1) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [3, 3]
    assert np.allclose(x[y == 0], 40 / 255, atol=1e-3) and np.allclose(x[y == 1], 200 / 255, atol=1e-3)
    assert len(skipped) == 1 and skipped[0][0].endswith("broken.jpg")
    assert "broken.jpg" in caplog.text

    flat = tmp_path / "flat"
    flat.mkdir()
    for name, v in (("cat.1.jpg", 10), ("cat.2.jpg", 10), ("dog.7.png", 250), ("bird_3.bmp", 128)):
        _img(flat / name, v)
    (flat / "notes.txt").write_text("ignored")
    x, y, labels = load_folder(flat, (8, 8, 3))
    assert labels == ["bird", "cat", "dog"] and x.shape == (4, 8, 8, 3)
    assert sorted(np.bincount(y).tolist()) == [1, 1, 2]
    with pytest.raises(DatasetError):
        load_folder(tmp_path / "missing")


def test_load_digits8():
    x, y = load_digits8()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(np.unique(y)) == set(range(10))


@needs_mnist
def test_load_mnist_matches_protocol():
    proto = json.loads(PROTOCOL.read_text())["data"]
    for key in ("images", "labels"):
        raw = gzip.open(MNIST / proto[f"{key}_file"]).read()
        assert hashlib.md5(raw).hexdigest() == proto[f"{key}_md5_decompressed"]
    x, y = load_mnist(MNIST)
    assert x.shape == (10000, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert y[0] == 7


def test_load_mnist_rejects_bad_files(tmp_path):
    imgs = b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(2 * 784)
    labs = b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + bytes([1, 2])
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(imgs))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labs))
    x, y = load_mnist(tmp_path)
    assert x.shape == (2, 28, 28, 1) and y.tolist() == [1, 2]
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + labs[4:]))
    with pytest.raises(ValueError, match="magic"):
        load_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labs[:-1]))
    with pytest.raises(ValueError, match="header says"):
        load_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="not found"):
        load_mnist(tmp_path / "nowhere")


# ----------------------------------------------------------------- registry
@needs_mnist
def test_dataset_registry(tmp_path):
    reg = DatasetRegistry(tmp_path)
    part = {"scheme": "shards", "num_clients": 4, "client": 1, "num_shards": 8, "shard_size": 1000}
    reg.add("mnist-c1", {"kind": "mnist", "path": str(MNIST), "partition": part})
    reg.add("mnist-eval", {"kind": "mnist", "path": str(MNIST), "subset": "eval"})
    reg.add("digits-iid", {"kind": "digits", "partition": {"scheme": "iid", "num_clients": 3, "client": 0, "seed": 0}})
    reg2 = DatasetRegistry(tmp_path)  # persisted as JSON
    assert [d["name"] for d in reg2.list()] == ["digits-iid", "mnist-c1", "mnist-eval"]
    assert json.loads((tmp_path / "state" / "datasets.json").read_text())["datasets"]["mnist-c1"]["kind"] == "mnist"
    x, y, labels = reg2.load("mnist-c1")
    _, y_all = load_mnist(MNIST)
    expect = partition_label_shards(y_all[:8000], 4, 8, 1000)[1]
    assert x.shape == (2000, 28, 28, 1) and np.array_equal(y, y_all[:8000][expect])
    assert reg2.stats("mnist-eval")["count"] == 2000
    st = reg2.stats("digits-iid")
    assert st["count"] == 599 and st["input_shape"] == [8, 8, 1] and sum(st["per_label"].values()) == 599
    reg2.remove("digits-iid")
    with pytest.raises(KeyError):
        reg2.load("digits-iid")


def test_dataset_registry_rejects_bad_specs(tmp_path):
    reg = DatasetRegistry(tmp_path)
    for name, spec in [
        ("ok", {"kind": "webcam"}),
        ("ok", {"kind": "folder"}),
        ("ok", {"kind": "digits", "subset": "train"}),
        ("ok", {"kind": "digits", "partition": {"scheme": "iid", "num_clients": 2, "client": 2}}),
        ("ok", {"kind": "digits", "partition": {"scheme": "random", "num_clients": 2, "client": 0}}),
        ("../evil", {"kind": "digits"}),
    ]:
        with pytest.raises(DatasetError):
            reg.add(name, spec)
    assert reg.list() == []


def test_imports_stay_light():
    code = (
        "import sys; import collab_tui.ml.datasets, collab_tui.ml.registry, collab_tui.ml.local_training, "
        "collab_tui.ml.architectures; bad = [m for m in ('tensorflow', 'keras', 'cv2', 'sklearn') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_folder_stats_report_classes_balance_sizes_and_what_was_skipped(tmp_path):
    import cv2

    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for lab, n in (("cat", 4), ("dog", 2)):
        (root / lab).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 255, (30 + 10 * i, 50 + 20 * i, 3), dtype=np.uint8)
            assert cv2.imwrite(str(root / lab / f"{i}.{('jpg', 'png', 'webp')[i % 3]}"), img)
    (root / "cat" / "torn.jpg").write_bytes((root / "cat" / "0.jpg").read_bytes()[:100])  # a corrupt JPEG
    (root / "dog" / "notes.jpg").write_text("this is not a photo")  # a non-image named like one
    (root / "dog" / "README.txt").write_text("neither is this")  # not an image suffix: not a photo at all
    reg = DatasetRegistry(tmp_path / "home")
    reg.add("pets", {"kind": "folder", "path": str(root), "input_shape": [16, 16, 3]})
    st = reg.stats("pets")
    assert st["count"] == 6 and st["per_label"] == {"cat": 4, "dog": 2} and st["balance"] == 0.5
    assert st["skipped"] == 2 and sorted(f.split(":")[0] for f in st["skipped_files"]) == ["notes.jpg", "torn.jpg"]
    assert st["image_sizes"]["min"] == "50x30" and st["image_sizes"]["max"] == "110x60"
    assert set(st["image_sizes"]["formats"]) == {"JPEG", "PNG", "WEBP"}
    assert st["input_shape"] == [16, 16, 3]


def test_colour_jitter_changes_colours_within_range_and_is_seeded():
    from collab_tui.ml.datasets import augment_images

    x = np.random.default_rng(0).random((8, 10, 10, 3)).astype(np.float32)
    a = augment_images(x, np.random.default_rng(3), jitter=0.3)
    assert a.shape == x.shape and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
    assert not set(np.unique(a)) <= set(np.unique(x))  # new colours, unlike a flip or a shift
    assert np.array_equal(a, augment_images(x, np.random.default_rng(3), jitter=0.3))
