"""The labelled face set used to choose the default face detector (see bench/recognition_bench.py).

Counts come from ../shared/data/faces/SOURCE.txt (one face per photo, none in the pets) and from looking
at the scikit-image pictures. Matching is count-based: per image, true positives = min(found, expected),
false positives = found - that, false negatives = expected - that. Only shipped or shared files are used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _faces_dir() -> Path:
    """``../shared/data/faces`` beside the checkout; ``$COLLAB_SHARED_DATA/faces`` or /work/shared's when the
    checkout is elsewhere (a CI clone), so that the tests that need the photos find them."""
    env = os.environ.get("COLLAB_SHARED_DATA")
    for root in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[2].parent / "shared" / "data"]:
        if (root / "faces").is_dir():
            return root / "faces"
    return Path("/work/shared/data/faces")


FACES_DIR = _faces_dir()

# (relative path under FACES_DIR, faces in the photo)
SHARED_IMAGES: list[tuple[str, int]] = [
    ("gallery/alex_lacamoire/img1.jpg", 1),
    ("gallery/biden/biden.jpg", 1),
    ("gallery/kit_harington/john1.jpeg", 1),
    ("gallery/kit_harington/john2.jpeg", 1),
    ("gallery/obama/obama.jpg", 1),
    ("gallery/obama/obama2.jpg", 1),
    ("gallery/rose_leslie/img1.jpg", 1),
    ("gallery/rose_leslie/img2.jpg", 1),
    ("extra/alex-lacamoire.png", 1),
    ("extra/lin-manuel-miranda.png", 1),
    ("extra/obama-240p.jpg", 1),
    ("extra/obama-720p.jpg", 1),
    ("extra/obama_partial_face2.jpg", 1),
    ("extra/cat.jpg", 0),
    ("extra/dog.jpeg", 0),
]

# scikit-image pictures that ship with the package: (loader name, faces)
SKIMAGE_IMAGES: list[tuple[str, int]] = [
    ("astronaut", 1),
    ("chelsea", 0),  # a cat
    ("coffee", 0),
    ("rocket", 0),
    ("coins", 0),
    ("horse", 0),
    ("moon", 0),
    ("page", 0),
    ("hubble_deep_field", 0),
]


# scaled copies (max side in pixels) of scikit-image pictures: boxes must be found at every size
SCALED_IMAGES: list[tuple[str, int, int]] = [
    ("astronaut", 256, 1),
    ("astronaut", 800, 1),
    ("astronaut", 2048, 1),
    ("chelsea", 1200, 0),
    ("coffee", 1600, 0),
]


def _scaled(img: np.ndarray, side: int) -> np.ndarray:
    from collab_tui.ml.cvload import cv2

    h, w = img.shape[:2]
    f = side / max(h, w)
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, (round(w * f), round(h * f)), interpolation=interp)


def _as_bgr(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8:  # e.g. horse is boolean
        rgb = (rgb.astype(np.float64) * (255.0 / max(1.0, float(rgb.max())))).astype(np.uint8)
    if rgb.ndim == 2:
        return rgb
    return np.ascontiguousarray(rgb[:, :, :3][:, :, ::-1])


def load_set() -> Iterator[tuple[str, np.ndarray, int]]:
    """Yield (name, BGR or gray image, expected faces); shared photos missing on this machine are skipped."""
    from skimage import data

    from collab_tui.ml.images import decode_image

    for rel, n in SHARED_IMAGES:
        path = FACES_DIR / rel
        if path.is_file():
            yield rel, decode_image(path.read_bytes()), n
    for name, n in SKIMAGE_IMAGES:
        yield f"skimage:{name}", _as_bgr(getattr(data, name)()), n
    for name, side, n in SCALED_IMAGES:
        yield f"skimage:{name}@{side}", _scaled(_as_bgr(getattr(data, name)()), side), n
