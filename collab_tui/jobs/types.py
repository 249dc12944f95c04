"""Job types: a small plugin interface (split / run / merge).

A job type is a class with a ``name``, ``accepts(path)`` (which files it takes from a folder),
``run(data, options) -> JobOutput`` (on a worker, from the item's bytes, in a worker thread unless the
type sets ``inline``) and ``merge(results) -> summary`` (on the submitter). Types are found through the ``collab.job_types`` entry-point group of
the packages installed on each node: code is never sent over the wire, so a worker without a type
refuses its tasks with a clear error and the master retries them elsewhere.

Built in: faces, people, identify, classify (image recognition), wordcount, ocr (when tesseract is installed)
and noop (for benchmarks). Ensemble classification is handled by the worker service (it asks every
node for its prediction), on top of ``classify``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

log = logging.getLogger("collab.jobs")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class JobOutput:
    result: dict
    attachment: bytes | None = None  # e.g. the annotated image (PNG)


class JobType:
    name = ""
    description = ""
    inline = False  # True: run() takes microseconds, so workers call it on their event loop (no thread hop)

    def accepts(self, path: Path) -> bool:
        return True

    def check(self, options: dict) -> None:
        """Raise ValueError when the job's options are wrong for this type (on the submitter, before the
        job is stored)."""

    def run(self, data: bytes, options: dict) -> JobOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def merge(self, results: list[dict]) -> dict:
        return {"items": len(results)}


class ImageDetection(JobType):
    """faces (option ``detector``: dlib_hog by default, dlib_cnn, haar) / people (OpenCV HOG); annotated
    PNG attached."""

    def __init__(self, task: str, description: str) -> None:
        self.name = task
        self.description = description

    def accepts(self, path: Path) -> bool:
        return path.suffix.lower() in IMAGE_SUFFIXES

    def check(self, options: dict) -> None:
        from ..ml import detectors

        name = options.get("detector")
        if name is None:
            return
        if self.name != "faces":
            raise ValueError(f"the {self.name} task takes no detector option")
        if not isinstance(name, str):
            raise ValueError("detector: a name")
        detectors.face_detector(name)  # TaskError (a ValueError) names the choices

    def run(self, data: bytes, options: dict) -> JobOutput:
        from ..ml import detectors
        from ..ml.images import decode_image

        result = detectors.run_task(self.name, data, detector=options.get("detector"))
        attachment = None
        if options.get("annotate", True):
            img = decode_image(data)
            attachment = detectors.encode_png(detectors.annotate(img, result["detections"]))
        return JobOutput(result, attachment)

    def merge(self, results: list[dict]) -> dict:
        found = sum(len(r.get("detections", [])) for r in results)
        return {
            "items": len(results),
            "detections": found,
            "items_with_detections": sum(1 for r in results if r.get("detections")),
        }


class Identify(JobType):
    """Faces named from the gallery this node holds (people/): per face its box, name (or ``unknown``),
    distance, the detector and embedding used; the gallery version on the result; names on the image."""

    name = "identify"
    description = "faces identified against the people gallery (dlib embeddings)"
    uses_home = True  # the worker calls run_at(home, ...): the gallery is the node's own replica

    def accepts(self, path: Path) -> bool:
        return path.suffix.lower() in IMAGE_SUFFIXES

    def check(self, options: dict) -> None:
        BUILTIN["faces"].check(options)

    def run_at(self, home: Path, data: bytes, options: dict) -> JobOutput:
        import time

        from ..ml import detectors, face_id
        from ..ml.images import decode_image
        from ..people.gallery import home_gallery, people_of

        gallery = home_gallery(home)
        t0 = time.perf_counter()
        img = decode_image(data)
        t1 = time.perf_counter()
        detector, faces = face_id.identify(img, people_of(gallery), options.get("detector"))
        t2 = time.perf_counter()
        names = sorted({f["name"] for f in faces})
        result = {
            "labels": names,
            "names": [f["name"] for f in faces],
            "detector": detector,
            "embedding": face_id.EMBEDDING_MODEL,
            "threshold": face_id.THRESHOLD,
            "gallery_version": gallery.version,
            "detections": faces,
            "width": int(img.shape[1]),
            "height": int(img.shape[0]),
            "timings": {"decode_ms": round((t1 - t0) * 1000, 3), "identify_ms": round((t2 - t1) * 1000, 3)},
        }
        attachment = None
        if options.get("annotate", True):
            attachment = detectors.encode_png(detectors.annotate(img, faces))
        return JobOutput(result, attachment)

    def merge(self, results: list[dict]) -> dict:
        counts: dict[str, int] = {}
        for r in results:
            for who in r.get("names", []):
                counts[who] = counts.get(who, 0) + 1
        versions = sorted({int(r.get("gallery_version", 0)) for r in results})
        return {"items": len(results), "faces": sum(counts.values()), "names": counts, "gallery_versions": versions}


class Classify(JobType):
    """Runs in the node's ML process (TensorFlow never loads in the node process itself)."""

    name = "classify"
    description = "image classification with a Keras model"
    ml_task = "classify"

    def accepts(self, path: Path) -> bool:
        return path.suffix.lower() in IMAGE_SUFFIXES

    def run(self, data: bytes, options: dict) -> JobOutput:
        from ..ml import mltasks

        return JobOutput(mltasks.classify(data, options))

    def merge(self, results: list[dict]) -> dict:
        counts: dict[str, int] = {}
        for r in results:
            for label in r.get("labels", []):
                counts[label] = counts.get(label, 0) + 1
        return {"items": len(results), "labels": counts}


class Noop(JobType):
    name = "noop"
    description = "does nothing (scheduler benchmarks)"
    inline = True

    def run(self, data: bytes, options: dict) -> JobOutput:
        return JobOutput({"bytes": len(data)})


class Ocr(JobType):
    """``tesseract IMAGE stdout`` in a subprocess (image bytes on stdin), one OpenMP thread, bounded time."""

    name = "ocr"
    description = "text recognition with tesseract (when installed)"
    timeout = 120.0  # seconds per image

    def accepts(self, path: Path) -> bool:
        return path.suffix.lower() in IMAGE_SUFFIXES

    def run(self, data: bytes, options: dict) -> JobOutput:
        exe = shutil.which("tesseract")
        if exe is None:
            raise RuntimeError(
                "OCR needs tesseract, which is not installed on this node (apt-get install tesseract-ocr)"
            )
        from ..ml.images import decode_image

        decode_image(data)  # validate first: tesseract must never see a bomb
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # the worker runs tasks in parallel already
        try:
            proc = subprocess.run(
                [exe, "stdin", "stdout"], input=data, capture_output=True, timeout=self.timeout, env=env
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"tesseract took more than {self.timeout:g} s on this image") from None
        if proc.returncode != 0:
            raise RuntimeError(f"tesseract failed: {proc.stderr.decode(errors='replace')[:200]}")
        text = proc.stdout.decode(errors="replace").replace("\f", "").strip()
        lines = [line for line in text.splitlines() if line.strip()]
        return JobOutput({"text": text, "words": len(text.split()), "lines": len(lines), "chars": len(text)})

    def merge(self, results: list[dict]) -> dict:
        return {
            "items": len(results),
            "items_with_text": sum(1 for r in results if str(r.get("text", "")).strip()),
            "words": sum(int(r.get("words", 0)) for r in results),
            "lines": sum(int(r.get("lines", 0)) for r in results),
            "chars": sum(int(r.get("chars", len(str(r.get("text", ""))))) for r in results),
        }


BUILTIN: dict[str, JobType] = {
    "faces": ImageDetection("faces", "face detection (dlib HOG by default; --detector dlib_cnn or haar)"),
    "people": ImageDetection("people", "standing people detection (OpenCV HOG)"),
    "identify": Identify(),
    "classify": Classify(),
    "noop": Noop(),
    "ocr": Ocr(),
}

_registry: dict[str, JobType] | None = None


def registry() -> dict[str, JobType]:
    """Built-in types plus every ``collab.job_types`` entry point installed here."""
    global _registry
    if _registry is None:
        reg = dict(BUILTIN)
        for ep in entry_points(group="collab.job_types"):
            try:
                obj = ep.load()
                inst = obj() if isinstance(obj, type) else obj
                reg[inst.name or ep.name] = inst
            except Exception as exc:  # a broken plugin must not break the node
                log.warning("job type plugin %s failed to load: %s", ep.name, exc)
        _registry = reg
    return _registry


def get_type(name: str) -> JobType:
    if name == "ensemble":
        name = "classify"
    reg = registry()
    if name not in reg:
        raise LookupError(f"unknown job type {name!r} on this node (known: {', '.join(sorted(reg))})")
    return reg[name]


def job_type_names() -> list[str]:
    return sorted(set(registry()) | {"ensemble"})
