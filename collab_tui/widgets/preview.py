"""An image in the terminal, at the terminal's pixel resolution where it speaks Sixel or the Kitty graphics
protocol (drawn by `textual-image`), else with half blocks: each cell shows two pixels with the upper half
block (fg = top, bg = bottom). `terminal_images.probe` decides which, before the app starts.

OpenCV and Pillow are imported inside the worker thread only (never on the app's import path); the decoded
image is downscaled to the panel's size before anything is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.message import Message
from textual.widgets import Static

from .terminal_images import image_widget, load_picture

UPPER_HALF = "▀"


class HalfBlocks:
    """A Rich renderable made of rows of (top RGB, bottom RGB) pairs."""

    def __init__(self, rows: list[list[tuple[tuple[int, int, int], tuple[int, int, int]]]]) -> None:
        self.rows = rows
        self.width = max((len(r) for r in rows), default=0)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        styles: dict = {}
        for row in self.rows:
            for top, bottom in row:
                key = (top, bottom)
                style = styles.get(key)
                if style is None:
                    style = styles[key] = Style(color=Color.from_rgb(*top), bgcolor=Color.from_rgb(*bottom))
                yield Segment(UPPER_HALF, style)
            yield Segment.line()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(self.width, self.width)


def image_to_halfblocks(path: str | Path, width: int, height: int) -> HalfBlocks:
    """Read an image file and fit it in ``width`` x ``height`` cells (aspect kept). Blocking: use a thread."""
    import cv2  # lazy: heavy, and only this worker needs it

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read {Path(path).name} as an image")
    h, w = img.shape[:2]
    scale = min(width / w, (2 * height) / h)
    nw, nh = max(1, int(w * scale)), max(2, int(h * scale))
    nh -= nh % 2
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    rgb = small[:, :, ::-1].tolist()
    rows = []
    for y in range(0, nh, 2):
        top, bottom = rgb[y], rgb[y + 1]
        rows.append([(tuple(top[x]), tuple(bottom[x])) for x in range(nw)])
    return HalfBlocks(rows)


class ImagePreview(Static):
    """Shows one image file, rendered in a worker thread at the panel's size. ``protocol``: "halfblocks"
    (any terminal), or "sixel" / "kitty" for full resolution (a textual-image widget inside the panel)."""

    @dataclass
    class Rendered(Message):
        path: str
        image: Any  # HalfBlocks, or a PIL image for a graphics protocol; None when it failed
        error: str = ""

    def __init__(self, *args, protocol: str = "halfblocks", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.path: str | None = None
        self.protocol = protocol
        self.picture: Any = None  # the textual-image widget, once mounted

    def show(self, path: str | None) -> None:
        self.path = path
        if not path:
            self._show_picture(None)
            self.update("no image to preview")
            return
        size = self.content_size
        self._render_image(path, max(8, size.width), max(4, size.height))

    @work(thread=True, exclusive=True, group="preview")
    def _render_image(self, path: str, width: int, height: int) -> None:
        try:
            if self.protocol == "halfblocks":
                image: Any = image_to_halfblocks(path, width, height)
            else:
                image = load_picture(path, (width, height))
        except Exception as exc:  # noqa: BLE001 - any decode failure is shown, not raised
            self.post_message(self.Rendered(path, None, str(exc)))
            return
        self.post_message(self.Rendered(path, image))

    def on_image_preview_rendered(self, message: Rendered) -> None:
        message.stop()
        if message.path != self.path:
            return
        self.border_subtitle = Path(message.path).name
        if message.image is None:
            self._show_picture(None)
            self.update(f"preview failed: {message.error}", layout=False)
        elif self.protocol == "halfblocks":
            self.update(message.image, layout=False)
        else:
            self.update("", layout=False)
            self._show_picture(message.image)

    def _show_picture(self, image: Any) -> None:
        if image is None:
            if self.picture is not None:
                self.picture.display = False
            return
        if self.picture is None:
            self.picture = image_widget(self.protocol)
            self.picture.styles.width = "auto"  # as large as the panel allows, the aspect kept
            self.picture.styles.height = "auto"
            self.mount(self.picture)
        self.picture.display = True
        self.picture.image = image

    def on_resize(self) -> None:
        if self.path:
            self.show(self.path)
