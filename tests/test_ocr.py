"""OCR for real: the `ocr` job type runs Debian's tesseract on the image and returns its text.

Skips where tesseract is not installed (the set-up script installs it only as root)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli, three_node_cluster, wait_job

from collab_tui.jobs.types import get_type

pytestmark = pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")

TEXTS = ("COLLAB 2026", "HELLO WORLD")


def text_png(text: str) -> bytes:
    """Black text on white, in a large font: what tesseract reads without fail."""
    img = np.full((200, 1000, 3), 255, np.uint8)
    cv2.putText(img, text, (30, 130), cv2.FONT_HERSHEY_SIMPLEX, 3.0, (0, 0, 0), 8, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().upper()


def test_ocr_job_type_reads_the_rendered_text():
    ocr = get_type("ocr")
    out = ocr.run(text_png("COLLAB 2026"), {})
    assert _norm(out.result["text"]) == "COLLAB 2026", out.result
    assert out.result["words"] == 2 and out.result["lines"] == 1 and out.result["chars"] == len("COLLAB 2026")
    assert out.attachment is None
    summary = ocr.merge([out.result, {"text": "", "words": 0, "lines": 0, "chars": 0}])
    assert summary == {"items": 2, "items_with_text": 1, "words": 2, "lines": 1, "chars": 11}


def test_ocr_refuses_what_is_not_an_image():
    with pytest.raises(Exception):  # noqa: B017 - decode_image's own error type; tesseract never runs
        get_type("ocr").run(b"not an image at all", {})


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ocr_job_through_a_real_cluster(tmp_path: Path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for k, text in enumerate(TEXTS):
        (folder / f"scan{k}.png").write_bytes(text_png(text))
    gen = three_node_cluster(agreed=True)
    c = next(gen)
    try:
        job = c.call(0, "submit", paths=[str(folder)], task="ocr", timeout=20)
        done = wait_job(c, 0, job["job_id"], timeout=60)
        assert done["status"] == "done" and done["counts"]["error"] == 0, done
        by_name = {Path(it["path"]).name: it["result"] for it in done["items"]}
        assert {name: _norm(res["text"]) for name, res in by_name.items()} == {
            f"scan{k}.png": text for k, text in enumerate(TEXTS)
        }
        assert done["summary"]["items_with_text"] == 2 and done["summary"]["words"] == 4
        # `collab submit`'s human output ends with a sentence, not a dict
        res = run_cli("submit", str(folder), "--task", "ocr", "--home", str(c.homes[1]), timeout=60)
        assert res.returncode == 0, res.stderr
        last = res.stdout.rstrip().splitlines()[-1]
        assert re.fullmatch(
            r"2 images, text in 2 of them \(22 characters, 2 lines\), 0 errors, \d+\.\d s on [1-3] nodes?", last
        ), res.stdout
    finally:
        gen.close()
