"""Which way this terminal can show an image: Sixel, the Kitty graphics protocol, or half-blocks.

Sixel and Kitty show a photo at the terminal's own pixel resolution (the `textual-image` package draws
them); half-blocks (two pixels a cell) work in any colour terminal. The terminal has to be asked before
Textual starts reading its input, so `probe` runs once in `collab`'s TUI entry point, never on import.
``COLLAB_IMAGES=sixel|kitty|halfblocks`` overrides what the terminal answers (``auto``, the default, asks).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

PROTOCOLS = ("sixel", "kitty", "halfblocks")
ENV = "COLLAB_IMAGES"

log = logging.getLogger("collab.tui")


def _is_tty() -> bool:
    out = sys.__stdout__
    return bool(out and out.isatty())


def probe(env: Mapping[str, str] = os.environ) -> str:
    """The protocol to draw images with: ``env[COLLAB_IMAGES]`` when it names one, else what the terminal
    answers (no terminal, or a package that cannot load: half-blocks)."""
    wanted = env.get(ENV, "auto").strip().lower()
    if wanted in PROTOCOLS:
        if wanted != "halfblocks":
            _load_widgets()
        return wanted
    if wanted not in ("", "auto"):
        log.warning("%s=%s is none of auto, %s: asking the terminal", ENV, wanted[:20], ", ".join(PROTOCOLS))
    if not _is_tty():
        return "halfblocks"
    try:
        from textual_image import renderable  # asks the terminal (Sixel, then Kitty) on import

        _load_widgets()
    except Exception as exc:  # noqa: BLE001 - images are a nicety: never keep the TUI from starting
        log.info("terminal images unavailable (%s): half-blocks", exc)
        return "halfblocks"
    if renderable.Image is renderable.SixelImage:
        return "sixel"
    if renderable.Image is renderable.TGPImage:
        return "kitty"
    return "halfblocks"


def _load_widgets() -> None:
    """Import textual-image's widgets now: the import measures the terminal's cell size in pixels."""
    import textual_image.widget  # noqa: F401


MAX_CELL_PIXELS = (24, 48)  # no terminal font cell is larger: pictures are cut to this per cell first


def load_picture(path: str, cells: tuple[int, int]):
    """The image at ``path`` as a PIL image no larger than ``cells`` can show at full resolution (a big
    photo is shrunk here, in the caller's thread, not while the screen is drawn). Blocking: use a thread."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        img = img.convert("RGB")
    img.thumbnail((cells[0] * MAX_CELL_PIXELS[0], cells[1] * MAX_CELL_PIXELS[1]))
    return img


def image_widget(protocol: str):
    """A new textual-image widget for ``protocol`` ("sixel" or "kitty")."""
    from textual_image.widget import SixelImage, TGPImage

    return SixelImage() if protocol == "sixel" else TGPImage()
