"""Folders of colour photos for the `fl_photos` group, generated from the colour photographs that ship inside
scikit-image (nothing is downloaded): the class of a photo is the photograph it was cut from.

Each photo is a random crop (30-70 % of the source's shorter side, anywhere in it) of its class's source,
flipped left-right half of the time, its brightness scaled by 0.75-1.25 and each colour channel by
0.9-1.1, resized to a random width and height between 80 and 320 px, and saved as JPEG, PNG or WebP in
turn. Every folder gets its own seed, so no two folders share a photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SOURCES = {"astronaut": "astronaut.png", "cat": "chelsea.png", "coffee": "coffee.png", "rocket": "rocket.jpg"}
FORMATS = (".jpg", ".png", ".webp")


def _sources() -> dict[str, np.ndarray]:
    import cv2
    import skimage

    data = Path(skimage.__file__).parent / "data"
    out = {}
    for label, name in SOURCES.items():
        img = cv2.imread(str(data / name), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"{name} is not in scikit-image's data folder {data}")
        out[label] = img
    return out


def make_folder(root: Path, per_class: int, seed: int, bad_files: bool = False) -> int:
    """``root/<class>/*`` with ``per_class`` photos a class; with ``bad_files`` also a torn JPEG and a text
    file named like a photo (a loader must skip and count them). Returns the number of good photos."""
    import cv2

    rng = np.random.default_rng(seed)
    n = 0
    for label, src in _sources().items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        h, w = src.shape[:2]
        for i in range(per_class):
            side = int(min(h, w) * rng.uniform(0.3, 0.7))
            y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            img = src[y0 : y0 + side, x0 : x0 + side].astype(np.float32)
            if rng.random() < 0.5:
                img = img[:, ::-1]
            img = img * rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, 3)
            size = (int(rng.integers(80, 321)), int(rng.integers(80, 321)))
            img = cv2.resize(np.clip(img, 0, 255).astype(np.uint8), size, interpolation=cv2.INTER_AREA)
            if not cv2.imwrite(str(folder / f"{label}-{seed}-{i}{FORMATS[i % 3]}"), img):
                raise OSError(f"could not write a photo under {folder}")
            n += 1
    if bad_files:
        first = next(iter(sorted((root / "cat").glob("*.jpg"))))
        (root / "cat" / "torn.jpg").write_bytes(first.read_bytes()[:200])
        (root / "coffee" / "notes.jpg").write_text("not a photo, only named like one")
    return n
