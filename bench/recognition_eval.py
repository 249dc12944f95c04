"""Accuracy and single-thread speed of the face and people detectors, and identification accuracy, for the
`recognition` group (in the bench process, OpenCV pinned to 1 thread while it runs).

Detection: every image of ``collab_tui.ml.face_eval_set.load_set()`` with its expected face count;
count-based matching (per image: true positives = min(found, expected), false positives = found - that,
false negatives = expected - that), summed over the set. Identification: the shared gallery enrolled with
``face_id.enrol_photo``, queries identified with ``face_id.identify``; a query's answer is the name of the
largest face found (no face = wrong).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from collab_tui.ml.face_eval_set import FACES_DIR

# (path under FACES_DIR, expected name) of the photos identified against the whole gallery
EXTRA_QUERIES: list[tuple[str, str]] = [
    ("extra/alex-lacamoire.png", "alex_lacamoire"),
    ("extra/obama-240p.jpg", "obama"),
    ("extra/obama-720p.jpg", "obama"),
    ("extra/obama_partial_face2.jpg", "obama"),
    ("extra/lin-manuel-miranda.png", "unknown"),  # not enrolled
]
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


class one_cv_thread:
    """``cv2.setNumThreads(1)`` for the duration of a block (restored afterwards)."""

    def __enter__(self) -> None:
        from collab_tui.ml.cvload import cv2

        self._before = cv2.getNumThreads()
        cv2.setNumThreads(1)

    def __exit__(self, *exc: object) -> None:
        from collab_tui.ml.cvload import cv2

        cv2.setNumThreads(self._before)


def load_eval_set() -> list[tuple[str, np.ndarray, int]]:
    from collab_tui.ml.face_eval_set import load_set

    return list(load_set())


def score(
    images: list[tuple[str, np.ndarray, int]], detect: Callable[[np.ndarray], list[dict]], warmup: int = 1
) -> dict:
    """Run ``detect`` over ``images`` once (after ``warmup`` untimed calls on the first image): precision,
    recall, images/s (sum of per-call times) and the images it got wrong ("name: found f, expected e")."""
    for _ in range(warmup):
        detect(images[0][1])
    tp = fp = fn = 0
    seconds = 0.0
    wrong: list[str] = []
    slowest = ("", 0.0)
    for name, img, expected in images:
        t0 = time.perf_counter()
        found = len(detect(img))
        dt = time.perf_counter() - t0
        seconds += dt
        slowest = max(slowest, (name, dt), key=lambda s: s[1])
        hit = min(found, expected)
        tp, fp, fn = tp + hit, fp + found - hit, fn + expected - hit
        if found != expected:
            wrong.append(f"{name}: {found}/{expected}")
    return {
        "images": len(images),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else None,  # None: found nothing at all
        "recall": tp / (tp + fn) if tp + fn else None,
        "ips": len(images) / seconds,
        "seconds": seconds,
        "wrong": wrong,
        "slowest": slowest,
    }


def gallery_photos() -> list[tuple[str, Path]]:
    """(person, photo) of every image under FACES_DIR/gallery/<person>/, sorted."""
    root = FACES_DIR / "gallery"
    return [
        (d.name, p)
        for d in sorted(root.iterdir())
        if d.is_dir()
        for p in sorted(d.iterdir())
        if p.suffix.lower() in IMAGE_EXTS
    ]


def _people(enrolled: list[tuple[str, Path, list[float]]], leave_out: Path | None = None) -> list:
    by: dict[str, list[list[float]]] = {}
    for person, path, vec in enrolled:
        if path != leave_out:
            by.setdefault(person, []).append(vec)
    return sorted(by.items())


def identification() -> dict:
    """Enrol the gallery; identify the extra photos against it and every gallery photo against the gallery
    without it (leave-one-out: a person whose only photo it was is expected as "unknown")."""
    from collab_tui.ml import face_id
    from collab_tui.ml.images import decode_image

    enrolled: list[tuple[str, Path, list[float]]] = []
    refused: list[str] = []
    t0 = time.perf_counter()
    for person, path in gallery_photos():
        try:
            enrolled.append((person, path, face_id.enrol_photo(path.read_bytes())["embedding"]))
        except face_id.EnrolError as exc:
            refused.append(f"{person}/{path.name}: {exc}")
    enrol_s = time.perf_counter() - t0
    people = _people(enrolled)
    names = {person for person, _p, _v in enrolled}

    queries: list[tuple[str, Path, str, list]] = [
        (rel, FACES_DIR / rel, expected, people) for rel, expected in EXTRA_QUERIES if (FACES_DIR / rel).is_file()
    ]
    for person, path, _vec in enrolled:
        rest = _people(enrolled, leave_out=path)
        expected = person if any(n == person for n, _vecs in rest) else "unknown"
        queries.append((f"loo:{person}/{path.name}", path, expected, rest))

    right, wrong, rows = 0, [], []
    t0 = time.perf_counter()
    for label, path, expected, gallery in queries:
        _detector, faces = face_id.identify(decode_image(path.read_bytes()), gallery)
        if faces:
            face = max(faces, key=lambda f: f["box"][2] * f["box"][3])
            got, dist = face["name"], face["distance"]
        else:
            got, dist = "(no face)", None
        rows.append((label, expected, got, dist, len(faces)))
        if got == expected:
            right += 1
        else:
            wrong.append(f"{label}: {got} (expected {expected}, d={dist})")
    identify_s = time.perf_counter() - t0

    # distances between all labelled photos that enrol (gallery + extras; the stranger is its own person)
    labelled = [(p, f"{p}/{path.name}", vec) for p, path, vec in enrolled]
    for rel, expected in EXTRA_QUERIES:
        path = FACES_DIR / rel
        if path.is_file():
            try:
                vec = face_id.enrol_photo(path.read_bytes())["embedding"]
            except face_id.EnrolError:
                continue
            labelled.append((expected if expected != "unknown" else Path(rel).stem, rel, vec))
    same = [(face_id.distance(a[2], b[2]), a, b) for a, b in itertools.combinations(labelled, 2) if a[0] == b[0]]
    diff = [(face_id.distance(a[2], b[2]), a, b) for a, b in itertools.combinations(labelled, 2) if a[0] != b[0]]
    far_same = max(same, key=lambda s: s[0]) if same else None
    near_diff = min(diff, key=lambda s: s[0]) if diff else None
    return {
        "right": right,
        "total": len(queries),
        "accuracy": right / len(queries) if queries else None,
        "wrong": wrong,
        "rows": rows,
        "enrolled": len(enrolled),
        "people": len(names),
        "refused": refused,
        "enrol_s": enrol_s,
        "identify_s": identify_s,
        "far_same": None if far_same is None else (far_same[0], far_same[1][1], far_same[2][1]),
        "near_diff": None if near_diff is None else (near_diff[0], near_diff[1][1], near_diff[2][1]),
        "threshold": face_id.THRESHOLD,
    }
