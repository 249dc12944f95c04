"""Content-addressed model registry: ids, idempotence, lineage, stats, replication, integrity. No TF."""

import hashlib
import json

import numpy as np
import pytest

from collab_tui.ml.registry import (
    IntegrityError,
    ModelNotFound,
    ModelRegistry,
    RegistryError,
    arch_json,
    compute_version,
    parse_ref,
)
from collab_tui.ml.updates import to_bytes

ARCH = {"name": "small-cnn", "input_shape": [8, 8, 1], "num_classes": 10}


def weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 3, 1, 4)).astype(np.float32), np.zeros(4, np.float32)]


def test_put_get_roundtrip_and_id_formula(tmp_path):
    reg = ModelRegistry(tmp_path)
    w = weights()
    v = reg.put("digits", w, ARCH, run="run-1", round=0, contributors=["a", "b"], metrics={"accuracy": np.float32(0.5)})
    expect = hashlib.sha256(b"digits\n" + arch_json(ARCH).encode() + b"\n" + to_bytes(w)).hexdigest()[:16]
    assert v == expect == compute_version("digits", ARCH, to_bytes(w))
    meta, got = reg.get("digits")
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(w, got))
    assert meta["version"] == v and meta["arch"] == ARCH and meta["run"] == "run-1" and meta["round"] == 0
    assert meta["contributors"] == ["a", "b"] and meta["metrics"] == {"accuracy": 0.5} and meta["parent"] is None
    assert meta["weight_stats"]["num_params"] == 40 and meta["weight_stats"]["max"] == pytest.approx(float(w[0].max()))
    assert (tmp_path / "models" / "digits" / f"{v}.npz").is_file()
    assert not list((tmp_path / "models" / "digits").glob(".*tmp"))


def test_idempotent_and_distinct_ids(tmp_path):
    reg = ModelRegistry(tmp_path)
    v1 = reg.put("m", weights(0), ARCH, metrics={"x": 1})
    created = reg.show(f"m@{v1}")["created"]
    assert reg.put("m", weights(0), ARCH, metrics={"x": 2}) == v1  # same content, same id, no rewrite
    assert reg.show(f"m@{v1}")["created"] == created and reg.show(f"m@{v1}")["metrics"] == {"x": 1}
    assert len(reg.versions("m")) == 1
    assert reg.put("other", weights(0), ARCH) != v1  # the name is part of the id
    assert reg.put("m", weights(0), {**ARCH, "num_classes": 9}) != v1  # so is the arch
    assert reg.put("m", weights(1), ARCH) != v1


def test_lineage_latest_versions_show_list_has(tmp_path):
    reg = ModelRegistry(tmp_path)
    v0 = reg.put("fl", weights(0), ARCH, run="r", round=0)
    v1 = reg.put("fl", weights(1), ARCH, parent=v0, run="r", round=1, contributors=["n1"], dp={"noise_multiplier": 1.1})
    v2 = reg.put("fl", weights(2), ARCH, parent=v1, run="r", round=2, extra={"dp": {"clip": 1.0}, "strategy": "fedavg"})
    assert [m["version"] for m in reg.versions("fl")] == [v0, v1, v2]
    assert reg.latest("fl")["version"] == v2 and reg.get("fl")[0]["version"] == v2
    assert [m["version"] for m in reg.lineage("fl")] == [v2, v1, v0]
    assert reg.show(f"fl@{v1[:6]}")["dp"] == {"noise_multiplier": 1.1}
    assert reg.show("fl")["dp"] == {"clip": 1.0} and reg.show("fl")["extra"]["strategy"] == "fedavg"
    assert reg.get(f"fl@{v0}")[0]["round"] == 0
    assert reg.list() == [{"name": "fl", "versions": 3, "latest": v2, "latest_meta": reg.latest("fl")}]
    assert reg.has(v1) and not reg.has("0" * 16) and not reg.has("nope")
    assert reg.latest("unknown") is None
    with pytest.raises(ModelNotFound):
        reg.get("unknown")
    with pytest.raises(ModelNotFound):
        reg.show("fl@ffff")


def test_bad_names_and_refs(tmp_path):
    reg = ModelRegistry(tmp_path)
    for bad in ("../x", "", ".hidden", "a/b", "x" * 65):
        with pytest.raises(RegistryError):
            reg.put(bad, weights(), ARCH)
    for ref in ("m@", "m@XYZ!", "m@abc", "m@" + "a" * 17):
        with pytest.raises(RegistryError):
            parse_ref(ref)
    assert parse_ref("m") == ("m", None) and parse_ref("m@abcd") == ("m", "abcd")


def test_put_raw_replication_and_hash_check(tmp_path):
    master = ModelRegistry(tmp_path / "master")
    v = master.put("g", weights(3), ARCH, round=4, contributors=["x"])
    meta, data = master.get_bytes("g", v)
    replica = ModelRegistry(tmp_path / "replica")
    assert replica.put_raw(meta, data) == v
    assert replica.put_raw(meta, data) == v  # idempotent
    rmeta, rw = replica.get("g")
    assert rmeta["created"] == meta["created"] and rmeta["round"] == 4
    assert all(np.array_equal(a, b) for a, b in zip(rw, weights(3)))
    other = ModelRegistry(tmp_path / "other")
    with pytest.raises(IntegrityError):
        other.put_raw(meta, to_bytes(weights(4)))  # different weights under the same id
    with pytest.raises(IntegrityError):
        other.put_raw({**meta, "arch": {**ARCH, "num_classes": 3}}, data)  # arch is hashed too
    with pytest.raises(IntegrityError):
        other.put_raw(meta, b"garbage")
    with pytest.raises(RegistryError):
        other.put_raw({**meta, "version": "short"}, data)
    assert other.list() == []


def test_tampered_or_corrupt_weights_rejected(tmp_path):
    reg = ModelRegistry(tmp_path)
    v = reg.put("m", weights(0), ARCH)
    path = tmp_path / "models" / "m" / f"{v}.npz"
    path.write_bytes(to_bytes(weights(1)))  # valid archive, wrong content
    with pytest.raises(IntegrityError):
        reg.get("m")
    path.write_bytes(b"\x00" * 100)  # corrupt
    with pytest.raises(IntegrityError):
        reg.get("m")
    path.unlink()
    with pytest.raises(IntegrityError):
        reg.get("m")
    assert reg.put("m", weights(0), ARCH) == v  # re-putting the same content repairs the file
    assert np.array_equal(reg.get("m")[1][0], weights(0)[0])
    path.write_bytes(b"junk")
    src = ModelRegistry(tmp_path / "src")
    meta, data = src.get_bytes("m", src.put("m", weights(0), ARCH))
    assert reg.put_raw(meta, data) == v and reg.get("m")[0]["version"] == v  # ... and so does replication
    # a metadata file that lies about its version is not listed
    (tmp_path / "models" / "m" / f"{'1' * 16}.json").write_text(json.dumps({"version": "2" * 16}))
    (tmp_path / "models" / "m" / f"{'3' * 16}.json").write_text("{not json")
    assert [m["version"] for m in reg.versions("m")] == [v]
