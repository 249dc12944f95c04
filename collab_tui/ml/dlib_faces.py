"""dlib's face detectors, 5-point landmarks and 128-d face embeddings (no TensorFlow).

The model files ship inside the ``face-recognition-models`` package (nothing is downloaded at run time);
dlib itself comes from the prebuilt ``dlib-bin`` wheel.

- ``hog``: dlib's HOG + linear SVM frontal face detector (built into dlib). The default: on the labelled
  set of bench/recognition_bench.py it finds every face and invents none, ~50x faster than the CNN.
- ``cnn``: dlib's MMOD CNN face detector (``mmod_human_face_detector.dat``): a DNN, better at odd angles,
  ~4 s per photo on one core.
- `embed`: dlib's ResNet face embedding (``dlib_face_recognition_resnet_model_v1.dat``) of an aligned face
  chip cut with the 5 landmarks; two photos of one person are within ~0.6 of each other (Euclidean).

Detectors take a BGR/gray uint8 image and return ``[{"label": "face", "box": [x, y, w, h], "score",
"landmarks": [[x, y] x 5]}]`` in the image's own coordinates: large images are downscaled for detection
and small ones upscaled (faces of ~40 px reach the detectors' 80 px window), boxes mapped back. Each model
is built on first use by each thread that uses it (dlib objects are not shared across threads; dlib lets go
of the GIL while it works, so two worker threads detect twice as fast as one). Building the HOG detector
and the landmark model takes ~0.9 s *holding* the GIL, which stalls the node's event loop (its heartbeats)
as long: they are built once per process (`prepare`, before the node joins its cluster) and every thread
gets a copy (unpickled in ~0.1 s).
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from collab_tui.ml.cvload import cv2

MAX_SIDE = 800  # detection cost grows with pixels: photos are downscaled to this max side
MIN_SIDE = 400  # and small ones upscaled to this
CNN_MIN_SCORE = 0.3  # MMOD confidence kept (its decision threshold is 0)
HOG_MIN_SCORE = 0.3  # SVM margin kept: faces of the labelled set score >= 0.58, its false hits <= 0.17
EMBED_JITTER = 0  # dlib's re-sampling of the chip (each one ~doubles the cost): none


def models_dir() -> str:
    import face_recognition_models  # data-only package: the .dat files live inside it

    return face_recognition_models.__path__[0] + "/models/"


def installed() -> bool:
    """dlib and its model files are importable here."""
    try:
        import dlib  # noqa: F401

        models_dir()
    except ImportError:
        return False
    return True


def _make_cnn() -> Any:
    import dlib

    return dlib.cnn_face_detection_model_v1(models_dir() + "mmod_human_face_detector.dat")


def _make_hog() -> Any:
    import dlib

    return dlib.get_frontal_face_detector()


def _make_shape5() -> Any:
    import dlib

    return dlib.shape_predictor(models_dir() + "shape_predictor_5_face_landmarks.dat")


def _make_encoder() -> Any:
    import dlib

    return dlib.face_recognition_model_v1(models_dir() + "dlib_face_recognition_resnet_model_v1.dat")


_local = threading.local()
_proto_lock = threading.Lock()
_protos: dict[str, bytes] = {}  # factory name -> the pickled model it made (our own objects, never read from outside)


def _copy_of(factory: Callable[[], Any]) -> Any:
    """A fresh instance of what ``factory`` makes: built once per process, unpickled for every later thread."""
    with _proto_lock:
        blob = _protos.get(factory.__name__)
        if blob is None:
            blob = _protos[factory.__name__] = pickle.dumps(factory())
    return pickle.loads(blob)


def prepare() -> None:
    """Build the slow models now (HOG detector, 5-point landmarks: ~0.9 s holding the GIL), so that the first
    task does not stall the node's event loop; the daemon calls it before it connects to anyone."""
    if installed():
        for factory in SLOW_TO_BUILD:
            _copy_of(factory)


def _mine(factory: Callable[[], Any]) -> Any:
    """This thread's instance of what `factory` makes."""
    obj = getattr(_local, factory.__name__, None)
    if obj is None:
        obj = _copy_of(factory) if factory in SLOW_TO_BUILD else factory()
        setattr(_local, factory.__name__, obj)
    return obj


SLOW_TO_BUILD = (_make_hog, _make_shape5)


def rgb_of(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _resize_to(img: np.ndarray, max_side: int, min_side: int = 0) -> tuple[np.ndarray, float]:
    """Scale so that min_side <= max(h, w) <= max_side; return (image, factor original/resized)."""
    h, w = img.shape[:2]
    side = max(h, w)
    target = min(max(side, min_side), max_side)
    if target == side:
        return img, 1.0
    f = target / side
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=interp), 1.0 / f


def _clip_box(x0: float, y0: float, x1: float, y1: float, k: float, w: int, h: int) -> list[int]:
    xa, ya = max(0, round(x0 * k)), max(0, round(y0 * k))
    xb, yb = min(w, round(x1 * k)), min(h, round(y1 * k))
    return [xa, ya, max(0, xb - xa), max(0, yb - ya)]


def _detect(img: np.ndarray, cnn: bool) -> list[dict]:
    import dlib

    rgb = rgb_of(img)
    small, k = _resize_to(rgb, MAX_SIDE, MIN_SIDE)
    h, w = rgb.shape[:2]
    if cnn:
        found = [(d.rect, float(d.confidence)) for d in _mine(_make_cnn)(small, 0)]
    else:
        rects, scores, _idx = _mine(_make_hog).run(small, 0, 0.0)
        found = list(zip(rects, (float(s) for s in scores)))
    out = []
    floor = CNN_MIN_SCORE if cnn else HOG_MIN_SCORE
    shaper = _mine(_make_shape5)
    for rect, score in found:
        if score < floor:
            continue
        r = dlib.rectangle(rect.left(), rect.top(), rect.right(), rect.bottom())
        marks = [[round(p.x * k, 1), round(p.y * k, 1)] for p in shaper(small, r).parts()]
        box = _clip_box(r.left(), r.top(), r.right() + 1, r.bottom() + 1, k, w, h)
        if box[2] > 0 and box[3] > 0:
            out.append({"label": "face", "box": box, "score": round(score, 4), "landmarks": marks})
    out.sort(key=lambda d: -d["score"])
    return out


def detect_cnn(img: np.ndarray) -> list[dict]:
    """dlib MMOD CNN faces with 5-point landmarks."""
    return _detect(img, cnn=True)


def detect_hog(img: np.ndarray) -> list[dict]:
    """dlib HOG faces with 5-point landmarks."""
    return _detect(img, cnn=False)


def embed(img: np.ndarray, faces: list[dict]) -> list[list[float]]:
    """The 128-d embedding of each face (its 5 landmarks, as the detectors give them, place the chip)."""
    import dlib

    rgb = np.ascontiguousarray(rgb_of(img))
    out = []
    encoder = _mine(_make_encoder)
    for face in faces:
        x, y, bw, bh = (int(v) for v in face["box"])
        rect = dlib.rectangle(x, y, x + bw - 1, y + bh - 1)
        parts = [dlib.point(round(px), round(py)) for px, py in face["landmarks"]]
        shape = dlib.full_object_detection(rect, parts)
        vec = encoder.compute_face_descriptor(rgb, shape, EMBED_JITTER)
        out.append([round(float(v), 6) for v in vec])
    return out
