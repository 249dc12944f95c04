"""Face identification, sans-IO: enrolment photos to embeddings, and faces to the nearest enrolled person.

A person of the gallery is a name with one or more 128-d embeddings (dlib's ResNet, ml/dlib_faces.py). A
face is that person when its nearest embedding of theirs is the nearest of the whole gallery and closer
than `THRESHOLD` (Euclidean); else it is ``unknown``. 0.6 is dlib's own threshold for its model (99.38%
of LFW pairs right). On ../shared/data/faces the gallery's same-person pairs are within 0.41 and its
different-person pairs 0.78 apart or more; the extra photos of enrolled people come within 0.52, the one
stranger (lin-manuel-miranda.png) stays 0.70 away.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from .detectors import decode_image, detect_faces, face_detector

THRESHOLD = 0.6
EMBEDDING_MODEL = "dlib_resnet_v1"  # dlib_face_recognition_resnet_model_v1.dat, 128-d
EMBEDDING_DIM = 128
MIN_FACE_PX = 40  # an enrolment face smaller than this (box side, in the photo's pixels) is refused


class EnrolError(ValueError):
    """A photo that cannot enrol a person: no face, several faces, a face too small, bad bytes."""


def distance(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def valid_embedding(vec: Sequence[float]) -> bool:
    """128 finite numbers of a sane size (dlib's embeddings have a norm near 1)."""
    return len(vec) == EMBEDDING_DIM and all(math.isfinite(v) and -2.0 <= v <= 2.0 for v in vec)


def nearest(vec: Sequence[float], people: Iterable[tuple[str, Sequence[Sequence[float]]]]) -> tuple[str, float]:
    """(name, distance) of the nearest enrolled embedding; ("", inf) for an empty gallery."""
    best, best_d = "", math.inf
    v = np.asarray(vec, dtype=np.float64)
    for name, vecs in people:
        if not len(vecs):
            continue
        d = float(np.min(np.linalg.norm(np.asarray(vecs, dtype=np.float64) - v, axis=1)))
        if d < best_d:
            best, best_d = name, d
    return best, best_d


def name_for(
    vec: Sequence[float], people: Iterable[tuple[str, Sequence[Sequence[float]]]], threshold: float = THRESHOLD
) -> tuple[str, float]:
    """(name or "unknown", distance to the nearest enrolled face)."""
    name, d = nearest(vec, people)
    return (name if name and d < threshold else "unknown"), d


def enrol_photo(data: bytes, detector: str | None = None) -> dict:
    """The embedding of the one face in an enrolment photo: {"embedding", "box", "detector", "width",
    "height"}; EnrolError saying what is wrong with the photo otherwise (ImageError's message included)."""
    from . import dlib_faces
    from .images import ImageError

    name = face_detector(detector)
    try:
        img = decode_image(data)
    except ImageError as exc:
        raise EnrolError(f"not a usable image ({exc})") from None
    faces = detect_faces(img, name)
    if not faces:
        raise EnrolError("no face found")
    if len(faces) > 1:
        raise EnrolError(f"{len(faces)} faces found: an enrolment photo must show one person")
    face = faces[0]
    if min(face["box"][2:]) < MIN_FACE_PX:
        raise EnrolError(f"the face is too small ({min(face['box'][2:])} px, at least {MIN_FACE_PX})")
    if "landmarks" not in face:
        raise EnrolError(f"the {name} detector gives no landmarks to align a face: use dlib_hog or dlib_cnn")
    [vec] = dlib_faces.embed(img, [face])
    return {
        "embedding": vec,
        "box": face["box"],
        "detector": name,
        "width": int(img.shape[1]),
        "height": int(img.shape[0]),
    }


def identify(
    img: np.ndarray,
    people: list[tuple[str, list[list[float]]]],
    detector: str | None = None,
    threshold: float = THRESHOLD,
) -> tuple[str, list[dict]]:
    """(detector, faces): each face found with its box, score, "name" (or "unknown") and "distance"."""
    from . import dlib_faces

    name = face_detector(detector)
    if name == "haar":
        name = "dlib_hog"  # identification needs landmarks to align faces: Haar gives none
    faces = detect_faces(img, name)
    for face, vec in zip(faces, dlib_faces.embed(img, faces)):
        who, d = name_for(vec, people, threshold)
        face["label"], face["name"], face["distance"] = "face", who, round(d, 4) if math.isfinite(d) else None
        face.pop("landmarks", None)
    return name, faces
