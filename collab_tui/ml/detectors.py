"""Face and people detectors working on image bytes (no TensorFlow).

Face detectors, by name (``--detector``; results say which one ran): ``dlib_hog`` (the default),
``dlib_cnn`` (see ml/dlib_faces.py) and ``haar`` (OpenCV's Haar cascade: the fast path, which also finds
faces in cats and textures). People: OpenCV's HOG pedestrian detector (standing, full-body people).
Detectors are lazy per-process singletons; each is guarded by a lock so that
threads of one worker can share it safely (OpenCV parallelises internally).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from collab_tui.ml.cvload import cv2  # never `import cv2` (see cvload)
from collab_tui.ml.images import MAX_BYTES, MAX_PIXELS, decode_image

__all__ = [
    "TASKS",
    "FACE_DETECTORS",
    "DEFAULT_FACE_DETECTOR",
    "TaskError",
    "face_detector",
    "detect_faces",
    "detect_faces_haar",
    "detect_people",
    "annotate",
    "encode_png",
    "encode_jpeg",
    "run_task",
    "set_threads",
]

FACE_MAX_SIDE = 1600  # larger images are downscaled before the cascade
PEOPLE_MAX_SIDE = 800  # HOG is slow: downscale to this max side
PEOPLE_MIN_SCORE = 0.3  # minimum SVM weight kept
PEOPLE_NMS = 0.4  # IoU threshold for non-max suppression

_COLOURS = {"face": (0, 200, 0), "person": (0, 140, 255)}


class TaskError(ValueError):
    """Unknown recognition task or detector name."""


class Lazy:
    """Create an object on first use (double-checked under a lock) and serialise its use."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._obj: Any = None
        self._create_lock = threading.Lock()
        self.use_lock = threading.Lock()

    def get(self) -> Any:
        if self._obj is None:
            with self._create_lock:
                if self._obj is None:
                    self._obj = self._factory()
        return self._obj


def _make_cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"could not load Haar cascade from {path}")
    return cascade


def _make_hog() -> cv2.HOGDescriptor:
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


_CASCADE = Lazy(_make_cascade)
_HOG = Lazy(_make_hog)


def set_threads(n: int) -> None:
    """Set OpenCV's worker thread count for this process (0 = sequential, -1 = default)."""
    cv2.setNumThreads(int(n))


def _to_gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _to_bgr(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def _fit(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so that max(h, w) <= max_side; return (image, factor original/resized)."""
    h, w = img.shape[:2]
    side = max(h, w)
    if side <= max_side:
        return img, 1.0
    f = max_side / side
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return small, 1.0 / f


def _scale_box(box: Any, k: float) -> list[int]:
    return [int(round(float(v) * k)) for v in box]


def detect_faces_haar(img: np.ndarray) -> list[dict]:
    """Frontal faces via the Haar cascade: [{"label": "face", "box": [x, y, w, h], "score": float}]."""
    gray = cv2.equalizeHist(_to_gray(img))
    gray, k = _fit(gray, FACE_MAX_SIDE)
    side = max(30, min(gray.shape[:2]) // 40)
    cascade = _CASCADE.get()
    with _CASCADE.use_lock:
        rects, _levels, weights = cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side), outputRejectLevels=True
        )
    out = []
    for i, r in enumerate(rects):
        score = float(weights[i]) if len(weights) > i else 1.0
        out.append({"label": "face", "box": _scale_box(r, k), "score": round(score, 4)})
    out.sort(key=lambda d: -d["score"])
    return out


def detect_people(img: np.ndarray) -> list[dict]:
    """Standing people via HOG + linear SVM with NMS: [{"label": "person", "box", "score"}]."""
    bgr = _to_bgr(img)
    small, k = _fit(bgr, PEOPLE_MAX_SIDE)
    h, w = small.shape[:2]
    if h < 128 or w < 64:  # smaller than the detection window: upscale to fit
        up = max(128 / h, 64 / w)
        small = cv2.resize(small, (int(np.ceil(w * up)), int(np.ceil(h * up))), interpolation=cv2.INTER_LINEAR)
        k = k / up
    hog = _HOG.get()
    with _HOG.use_lock:
        rects, weights = hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
    if len(rects) == 0:
        return []
    boxes = [[int(v) for v in r] for r in rects]
    scores = [float(s) for s in np.asarray(weights).reshape(-1)]
    keep = cv2.dnn.NMSBoxes(boxes, scores, PEOPLE_MIN_SCORE, PEOPLE_NMS)
    out = [
        {"label": "person", "box": _scale_box(boxes[i], k), "score": round(scores[i], 4)}
        for i in np.asarray(keep, dtype=int).reshape(-1)
    ]
    out.sort(key=lambda d: -d["score"])
    return out


def annotate(img: np.ndarray, detections: list[dict]) -> np.ndarray:
    """Return a BGR copy of `img` with boxes and "label score" captions drawn."""
    out = _to_bgr(img).copy()
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    font_scale = max(0.4, max(h, w) / 1200)
    for det in detections:
        x, y, bw, bh = (int(v) for v in det["box"])
        colour = _COLOURS.get(det.get("label", ""), (255, 0, 255))
        cv2.rectangle(out, (x, y), (x + bw, y + bh), colour, thick)
        if "name" in det:  # an identified face: its name and distance
            colour = (0, 200, 0) if det["name"] != "unknown" else (0, 0, 230)
            d = det.get("distance")
            text = f"{det['name']} {d:.2f}" if isinstance(d, float) else str(det["name"])
        else:
            text = f"{det.get('label', '?')} {float(det.get('score', 0.0)):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        ty = y - 4 if y - th - base - 4 >= 0 else y + bh + th + 4
        cv2.rectangle(out, (x, ty - th - base), (x + tw, ty + base), colour, cv2.FILLED)
        cv2.putText(out, text, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thick, cv2.LINE_AA)
    return out


def _encode(ext: str, img: np.ndarray, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise ValueError(f"could not encode image as {ext}")
    return buf.tobytes()


def encode_png(img: np.ndarray, compression: int = 3) -> bytes:
    """Encode a BGR/gray image as PNG bytes."""
    return _encode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    """Encode a BGR/gray image as JPEG bytes."""
    return _encode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])


def _dlib(name: str) -> Callable[[np.ndarray], list[dict]]:
    def run(img: np.ndarray) -> list[dict]:
        from . import dlib_faces

        return getattr(dlib_faces, name)(img)

    return run


FACE_DETECTORS: dict[str, Callable[[np.ndarray], list[dict]]] = {
    "dlib_hog": _dlib("detect_hog"),
    "dlib_cnn": _dlib("detect_cnn"),
    "haar": detect_faces_haar,
}
DEFAULT_FACE_DETECTOR = "dlib_hog"
PEOPLE_DETECTOR = "opencv_hog"


def installed_face_detectors() -> list[str]:
    """The face detectors this node can run (dlib's need the dlib-bin and face-recognition-models packages)."""
    from . import dlib_faces

    return [n for n in FACE_DETECTORS if not n.startswith("dlib_") or dlib_faces.installed()]


def face_detector(name: str | None) -> str:
    """The detector `name` stands for (None: the default), or TaskError naming the choices."""
    name = name or DEFAULT_FACE_DETECTOR
    if name not in FACE_DETECTORS:
        raise TaskError(f"unknown face detector {name!r} (expected one of {', '.join(FACE_DETECTORS)})")
    return name


def detect_faces(img: np.ndarray, detector: str | None = None) -> list[dict]:
    """Faces found by `detector` (default DEFAULT_FACE_DETECTOR): [{"label": "face", "box", "score", ...}]."""
    return FACE_DETECTORS[face_detector(detector)](img)


TASKS = ("faces", "people")


def run_task(
    task: str,
    data: bytes,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    detector: str | None = None,
) -> dict:
    """Decode `data` and run `task` ("faces" with `detector` | "people"); return a JSON-able result that
    names the detector that ran.

    Raises TaskError for an unknown task or detector and ImageError for bad image bytes.
    """
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r} (expected one of {sorted(TASKS)})")
    name = face_detector(detector) if task == "faces" else PEOPLE_DETECTOR
    t0 = time.perf_counter()
    img = decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    t1 = time.perf_counter()
    detections = FACE_DETECTORS[name](img) if task == "faces" else detect_people(img)
    t2 = time.perf_counter()
    labels = sorted({d["label"] for d in detections})
    return {
        "labels": labels,
        "detector": name,
        "detections": detections,
        "width": int(img.shape[1]),
        "height": int(img.shape[0]),
        "timings": {"decode_ms": round((t1 - t0) * 1000, 3), "detect_ms": round((t2 - t1) * 1000, 3)},
    }
