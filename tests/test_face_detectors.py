"""The face detectors by name (dlib HOG by default, dlib CNN, Haar): the default finds the astronaut's face
and none in the cat and dog photos; results name the detector; a wrong name is refused before a job is
stored (fast, no TensorFlow)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from collab_tui.jobs.types import get_type
from collab_tui.ml import detectors
from collab_tui.ml.detectors import TaskError, encode_png, run_task
from collab_tui.ml.face_eval_set import FACES_DIR as FACES


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _shared(rel: str) -> bytes:
    path = FACES / rel
    if not path.is_file():
        pytest.skip(f"{path} is not on this machine")
    return path.read_bytes()


def test_the_default_detector_is_dlib_hog_and_it_is_installed() -> None:
    assert detectors.DEFAULT_FACE_DETECTOR == "dlib_hog"
    assert set(detectors.installed_face_detectors()) == {"dlib_hog", "dlib_cnn", "haar"}


def test_default_finds_the_astronauts_face_with_landmarks() -> None:
    res = run_task("faces", encode_png(_bgr(skdata.astronaut())))
    assert res["detector"] == "dlib_hog"
    assert len(res["detections"]) == 1
    det = res["detections"][0]
    x, y, w, h = det["box"]
    assert 150 <= x + w / 2 <= 300 and 60 <= y + h / 2 <= 200  # Eileen Collins' face
    assert len(det["landmarks"]) == 5
    assert all(x <= px <= x + w and y <= py <= y + h for px, py in det["landmarks"])


@pytest.mark.parametrize("source", ["skimage:chelsea", "extra/cat.jpg", "extra/dog.jpeg"])
def test_default_finds_no_face_in_pets(source: str) -> None:
    data = encode_png(_bgr(skdata.chelsea())) if source.startswith("skimage:") else _shared(source)
    res = run_task("faces", data)
    assert res["detections"] == [] and res["labels"] == [] and res["detector"] == "dlib_hog"


def test_haar_is_still_there_and_finds_a_face_in_the_cat() -> None:
    """Why it is not the default: Haar takes chelsea's fur for a face."""
    res = run_task("faces", encode_png(_bgr(skdata.astronaut())), detector="haar")
    assert res["detector"] == "haar" and res["detections"]
    assert "landmarks" not in res["detections"][0]


def test_boxes_of_a_big_photo_are_mapped_back() -> None:
    """A photo bigger than the detection size is downscaled; its boxes are in its own pixels."""
    img = cv2.resize(_bgr(skdata.astronaut()), (2048, 2048), interpolation=cv2.INTER_LINEAR)
    [det] = detectors.detect_faces(img)
    x, y, w, h = det["box"]
    assert 600 <= x + w / 2 <= 1200 and 240 <= y + h / 2 <= 800
    assert w > 250  # about 4 x the 88 px face of the 512 px picture


def test_a_small_face_is_found_after_upscaling() -> None:
    img = cv2.resize(_bgr(skdata.astronaut()), (256, 256), interpolation=cv2.INTER_AREA)
    [det] = detectors.detect_faces(img)
    assert 30 <= det["box"][2] <= 60


def test_unknown_detector_is_refused_with_the_choices() -> None:
    with pytest.raises(TaskError, match="dlib_hog, dlib_cnn, haar"):
        run_task("faces", encode_png(_bgr(skdata.astronaut())), detector="yolo")
    faces = get_type("faces")
    faces.check({})
    faces.check({"detector": "haar"})
    with pytest.raises(ValueError, match="unknown face detector"):
        faces.check({"detector": "yolo"})
    with pytest.raises(ValueError, match="no detector option"):
        get_type("people").check({"detector": "haar"})


def test_the_job_type_passes_the_detector_and_annotates() -> None:
    out = get_type("faces").run(encode_png(_bgr(skdata.astronaut())), {"detector": "haar"})
    assert out.result["detector"] == "haar"
    assert out.attachment and out.attachment.startswith(b"\x89PNG")


def test_slow_models_are_built_once_per_process_and_each_thread_gets_its_own_copy(monkeypatch) -> None:
    """Building dlib's HOG detector holds the GIL ~0.5 s (the node's heartbeats wait): once per process, then
    copies; every thread's copy is its own object and finds the astronaut's face."""
    import threading

    from collab_tui.ml import dlib_faces

    built = []
    real = dlib_faces._make_hog

    def counting():
        built.append(1)
        return real()

    counting.__name__ = real.__name__
    monkeypatch.setattr(dlib_faces, "_protos", {})
    monkeypatch.setattr(dlib_faces, "SLOW_TO_BUILD", (counting, dlib_faces._make_shape5))
    dlib_faces.prepare()
    got = []

    def worker():
        det = dlib_faces._copy_of(counting)
        rects, _, _ = det.run(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2GRAY), 0, 0.0)
        got.append((det, len(rects)))  # kept alive: their ids stay distinct

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(built) == 1 and len({id(d) for d, _ in got}) == 3 and all(n >= 1 for _, n in got), got
