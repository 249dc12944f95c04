"""Image decoding, collection and OpenCV detectors (fast, no TensorFlow)."""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from collab_tui.ml import detectors
from collab_tui.ml.classify import ensemble_combine
from collab_tui.ml.detectors import TaskError, annotate, detect_people, encode_jpeg, encode_png, run_task
from collab_tui.ml.images import ImageError, collect_images, decode_image, read_dimensions, sniff_format


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return cv2.cvtColor(skdata.chelsea(), cv2.COLOR_RGB2BGR)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png(width: int, height: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


# ---------------------------------------------------------------- detection


def test_face_found_in_astronaut(astronaut: np.ndarray) -> None:
    res = run_task("faces", encode_png(astronaut))
    assert res["labels"] == ["face"]
    assert (res["width"], res["height"]) == (512, 512)
    assert len(res["detections"]) >= 1
    det = res["detections"][0]
    assert det["label"] == "face" and isinstance(det["score"], float)
    x, y, w, h = det["box"]
    assert 150 <= x + w / 2 <= 300 and 60 <= y + h / 2 <= 200  # Eileen Collins' face
    assert set(res["timings"]) == {"decode_ms", "detect_ms"}


def test_no_face_in_chelsea(chelsea: np.ndarray) -> None:
    res = run_task("faces", encode_jpeg(chelsea))
    assert res["detections"] == [] and res["labels"] == []
    assert (res["width"], res["height"]) == (451, 300)


def test_people_detection_format(astronaut: np.ndarray) -> None:
    res = run_task("people", encode_png(astronaut))
    assert isinstance(res["detections"], list)
    assert res["labels"] in ([], ["person"])
    for det in res["detections"]:
        assert det["label"] == "person" and isinstance(det["score"], float)
        assert len(det["box"]) == 4 and all(isinstance(v, int) for v in det["box"])
    # tiny and large inputs are handled (upscale / downscale with boxes mapped back)
    assert detect_people(np.zeros((40, 30, 3), np.uint8)) == []
    big = cv2.resize(astronaut, (1600, 1600))
    for det in detect_people(big):
        x, y, w, h = det["box"]
        assert 0 <= x + w / 2 <= 1600 and 0 <= y + h / 2 <= 1600


def test_unknown_task_and_result_is_jsonable(astronaut: np.ndarray) -> None:
    import json

    with pytest.raises(TaskError):
        run_task("cats", encode_png(astronaut))
    json.dumps(run_task("faces", encode_png(astronaut)))


def test_annotate_draws(astronaut: np.ndarray) -> None:
    dets = [
        {"label": "face", "box": [177, 67, 93, 93], "score": 7.4},
        {"label": "person", "box": [0, 0, 50, 80], "score": 0.7},
    ]
    out = annotate(astronaut, dets)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    assert np.any(out != astronaut)
    assert np.array_equal(annotate(astronaut, []), astronaut)
    gray = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    assert annotate(gray, dets).shape == astronaut.shape  # gray in, BGR out


def test_set_threads() -> None:
    before = cv2.getNumThreads()
    detectors.set_threads(1)
    assert cv2.getNumThreads() == 1
    cv2.setNumThreads(before)


# ---------------------------------------------------------------- decoding


def test_roundtrip_formats(astronaut: np.ndarray) -> None:
    small = astronaut[:100, :150]
    for ext in (".png", ".jpg", ".bmp", ".webp"):
        ok, buf = cv2.imencode(ext, small)
        assert ok
        raw = buf.tobytes()
        assert sniff_format(raw) == {".jpg": "jpeg"}.get(ext, ext[1:])
        assert read_dimensions(raw)[1:] == (150, 100)
        img = decode_image(raw)
        assert img.shape == (100, 150, 3) and img.dtype == np.uint8
    # lossless WebP (VP8L) and grayscale PNG
    ok, buf = cv2.imencode(".webp", small, [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert read_dimensions(buf.tobytes())[1:] == (150, 100)
    gray = decode_image(encode_png(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)))
    assert gray.shape == (100, 150, 3)


def _bad_corpus(astronaut: np.ndarray) -> dict[str, tuple[bytes, str]]:
    rng = np.random.default_rng(1)
    png = encode_png(astronaut)
    jpg = encode_jpeg(astronaut)
    return {
        "empty": (b"", "empty"),
        "random": (b"\x00" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "unsupported"),
        "text": (b"hello, this is not an image\n" * 20, "unsupported"),
        "gif": (b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + b"\x00" * 30 + b";", "unsupported"),
        "truncated_png": (png[: len(png) // 2], "corrupt"),
        "truncated_jpeg": (jpg[: len(jpg) // 2], "corrupt"),
        "jpeg_header_only": (jpg[:20], "corrupt"),
        "png_sig_then_noise": (png[:8] + rng.integers(0, 256, 100, dtype=np.uint8).tobytes(), "corrupt"),
        "png_garbage_idat": (_png(10, 10, b"not zlib data at all" * 5), "corrupt"),
        "bomb_png": (_png(100_000, 100_000, zlib.compress(b"\x00" * 1000)), "bomb"),
        "bomb_png_truncated": (_png(100_000, 100_000, b"")[:40], "bomb"),
    }


def test_bad_images(astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    real = cv2.imdecode
    calls: list[int] = []

    def spy(buf, flags):  # type: ignore[no-untyped-def]
        calls.append(len(buf))
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", spy)
    for name, (raw, code) in _bad_corpus(astronaut).items():
        calls.clear()
        with pytest.raises(ImageError) as info:
            decode_image(raw)
        assert info.value.code == code, f"{name}: {info.value}"
        assert isinstance(info.value, ValueError)
        if code in ("bomb", "unsupported", "empty") or name.startswith("truncated"):
            assert calls == [], f"{name}: decoder must not be reached"
        with pytest.raises(ImageError):
            run_task("faces", raw)


def test_limits(astronaut: np.ndarray) -> None:
    png = encode_png(astronaut)
    with pytest.raises(ImageError) as info:
        decode_image(png, max_bytes=1000)
    assert info.value.code == "too_large"
    with pytest.raises(ImageError) as info:
        decode_image(png, max_pixels=512 * 511)
    assert info.value.code == "bomb"
    assert decode_image(png, max_pixels=512 * 512).shape == (512, 512, 3)


def test_jpeg_and_webp_bomb_headers_refused() -> None:
    # JPEG: SOI + SOF0 declaring 60000x60000 + SOS + EOI, never decodable
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 60000, 60000, 1) + b"\x01\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00\x00\x3f\x00"
    jpg = b"\xff\xd8" + sof + sos + b"\x00" * 16 + b"\xff\xd9"
    assert read_dimensions(jpg) == ("jpeg", 60000, 60000)
    # WebP VP8X canvas 16384x16384
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + (16383).to_bytes(3, "little") * 2
    webp = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body
    assert read_dimensions(webp) == ("webp", 16384, 16384)
    for raw in (jpg, webp):
        with pytest.raises(ImageError) as info:
            decode_image(raw)
        assert info.value.code == "bomb"


# ---------------------------------------------------------------- collection


def test_collect_images(tmp_path: Path) -> None:
    files = [
        "a.jpg",
        "b.PNG",
        "notes.txt",
        "sub/c.webp",
        "sub/d.JPEG",
        "sub/e.gif",
        "sub/deeper/f.bmp",
        ".hidden/g.png",
        "other/h.png",
        "other/i.doc",
    ]
    for f in files:
        p = tmp_path / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    got = collect_images([str(tmp_path)])
    rel = [p.relative_to(tmp_path).as_posix() for p in got]
    assert rel == sorted(["a.jpg", "b.PNG", "sub/c.webp", "sub/d.JPEG", "sub/deeper/f.bmp", "other/h.png"])
    # glob: supported suffixes only (a matched folder is walked, like a shell-expanded
    # folder argument); explicit file kept whatever its suffix; no duplicates
    got = collect_images([str(tmp_path / "sub" / "*"), str(tmp_path / "notes.txt"), str(tmp_path / "sub" / "c.webp")])
    rel = [p.relative_to(tmp_path).as_posix() for p in got]
    assert rel == ["sub/c.webp", "sub/d.JPEG", "sub/deeper/f.bmp", "notes.txt"]
    names = {p.name for p in collect_images([str(tmp_path / "**" / "*.png")])}
    assert "h.png" in names and "g.png" not in names and "a.jpg" not in names
    assert collect_images([str(tmp_path / "*.nothing")]) == []
    with pytest.raises(FileNotFoundError):
        collect_images([str(tmp_path / "missing.jpg")])


def test_explicit_unsupported_file_errors_per_item(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("not an image")
    (path,) = collect_images([str(p)])
    with pytest.raises(ImageError) as info:
        decode_image(path.read_bytes())
    assert info.value.code == "unsupported"


# ---------------------------------------------------------------- ensembles (pure numpy)


def test_ensemble_mean_and_vote() -> None:
    labels = ["cat", "dog", "fox"]
    a = np.array([0.6, 0.3, 0.1])
    b = np.array([0.1, 0.5, 0.4])
    c = np.array([0.2, 0.45, 0.35])
    mean = ensemble_combine([a, b, c], "mean", labels)
    assert mean["label"] == "dog" and mean["score"] == pytest.approx(1.25 / 3, abs=1e-6)
    vote = ensemble_combine([a, b, c], "vote", labels)
    assert vote["label"] == "dog" and vote["votes"] == [1, 2, 0] and vote["score"] == pytest.approx(2 / 3, abs=1e-6)
    # tie 1-1: broken by mean probability
    tie = ensemble_combine([np.array([0.9, 0.1, 0.0]), np.array([0.4, 0.6, 0.0])], "vote", labels)
    assert tie["label"] == "cat" and tie["votes"] == [1, 1, 0]
    tie2 = ensemble_combine([np.array([0.51, 0.49, 0.0]), np.array([0.0, 1.0, 0.0])], "vote", labels)
    assert tie2["label"] == "dog"
    # majority beats a confident minority under vote, but not under mean
    xs = [np.array([0.4, 0.35, 0.25])] * 2 + [np.array([0.0, 1.0, 0.0])]
    assert ensemble_combine(xs, "vote", labels)["label"] == "cat"
    assert ensemble_combine(xs, "mean", labels)["label"] == "dog"
    assert ensemble_combine([a], "mean")["label"] == "0"


def test_ensemble_bad_input() -> None:
    with pytest.raises(ValueError):
        ensemble_combine([], "mean", ["a"])
    with pytest.raises(ValueError):
        ensemble_combine([np.ones(3) / 3, np.ones(2) / 2], "mean")
    with pytest.raises(ValueError):
        ensemble_combine([np.ones(3) / 3], "median")
    with pytest.raises(ValueError):
        ensemble_combine([np.ones(3) / 3], "mean", ["a", "b"])
    with pytest.raises(ValueError):
        ensemble_combine([np.array([np.nan, 0.5, 0.5])], "vote")


def test_no_tensorflow_imported() -> None:
    import subprocess

    code = "import sys, collab_tui.ml.detectors, collab_tui.ml.classify; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
