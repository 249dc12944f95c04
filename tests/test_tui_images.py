"""The image preview at the terminal's own resolution: Sixel or the Kitty graphics protocol where the
terminal speaks one (textual-image draws them), half-blocks elsewhere; `probe` picks, before the app runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_tui_snapshots import ID, make_app, settle

from collab_tui.widgets.terminal_images import probe

pytestmark = pytest.mark.timeout(60)


def test_probe_follows_the_override_and_falls_back_to_halfblocks():
    assert probe({"COLLAB_IMAGES": "halfblocks"}) == "halfblocks"
    assert probe({"COLLAB_IMAGES": "Sixel"}) == "sixel"
    assert probe({"COLLAB_IMAGES": "kitty"}) == "kitty"
    # no terminal to ask (the tests' stdout is not a tty): half-blocks, whatever else is asked for
    assert probe({}) == "halfblocks"
    assert probe({"COLLAB_IMAGES": "auto"}) == "halfblocks"
    assert probe({"COLLAB_IMAGES": "holograms"}) == "halfblocks"


@pytest.fixture
def photo_job(tmp_path, monkeypatch) -> Path:
    """A 640x480 result image, larger than any panel shows with half-blocks, as the job's only item."""
    import cv2
    import numpy as np

    y, x = np.mgrid[0:480, 0:640]
    img = np.stack([x % 256, y % 256, ((x + y) // 2) % 256], axis=-1).astype(np.uint8)
    (tmp_path / "fixtures").mkdir()
    path = tmp_path / "fixtures" / "photo.png"
    cv2.imwrite(str(path), img)
    monkeypatch.chdir(tmp_path)
    return path


def _app_with(photo: Path, protocol: str):
    app = make_app()
    app.images = protocol
    item = {
        "item_id": "000000",
        "path": str(photo),
        "status": "done",
        "error": None,
        "worker": ID["node0"],
        "result": {"detections": [], "worker_name": "node0", "annotated": str(photo)},
    }
    app.client.data["job_show"] = {**app.client.data["job_show"], "total": 1, "items": [item]}
    return app


async def _preview(app, pilot):
    await settle(pilot, lambda: app.connected and app.live.nodes, "connected")
    await app.switch_mode("jobs")
    preview = app.screen.query_one("#job-preview")
    await settle(pilot, lambda: preview.border_subtitle == "photo.png" and preview.picture is not None, "picture")
    await pilot.pause(0.2)
    return preview


async def test_sixel_preview_draws_the_photo_at_pixel_resolution(photo_job):
    from textual.geometry import Region
    from textual_image.widget import SixelImage

    app = _app_with(photo_job, "sixel")
    async with app.run_test(size=(120, 40)) as pilot:
        preview = await _preview(app, pilot)
        assert isinstance(preview.picture, SixelImage)
        inner = preview.picture.children[0]
        lines = inner.render_lines(Region(0, 0, inner.size.width, inner.size.height))
        data = "".join(seg.text for line in lines for seg in line)
        assert "\x1bP" in data and "\x1b\\" in data  # a sixel image: a DCS string
        raster = re.search(r'"1;1;(\d+);(\d+)', data)
        assert raster, data[:200]
        width_px, height_px = int(raster[1]), int(raster[2])
        # half-blocks would give one pixel a column and two a row; Sixel gives the cell's pixels (10x20 here)
        assert width_px >= 5 * inner.size.width and height_px >= 5 * inner.size.height
        assert abs(width_px / height_px - 640 / 480) < 0.1  # the aspect kept


async def test_kitty_preview_uses_the_graphics_protocol_placeholders(photo_job):
    from textual_image.widget import TGPImage

    app = _app_with(photo_job, "kitty")
    async with app.run_test(size=(80, 24)) as pilot:
        preview = await _preview(app, pilot)
        assert isinstance(preview.picture, TGPImage)
        rendered = preview.picture.render()
        from rich.console import Console

        console = Console(width=80, file=open("/dev/null", "w"))
        text = "".join(seg.text for seg in console.render(rendered))
        assert chr(0x10EEEE) in text  # Kitty's unicode placeholders: the terminal draws the image under them


async def test_halfblocks_preview_stays_text(photo_job):
    app = _app_with(photo_job, "halfblocks")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, lambda: app.connected and app.live.nodes, "connected")
        await app.switch_mode("jobs")
        preview = app.screen.query_one("#job-preview")
        await settle(pilot, lambda: preview.border_subtitle == "photo.png", "preview")
        assert preview.picture is None
        from collab_tui.widgets.preview import HalfBlocks

        assert isinstance(preview.content, HalfBlocks) and preview.content.width > 8
