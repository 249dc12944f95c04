"""The `recognition` group: face detectors' precision / recall / single-thread speed on the labelled set,
the people detector the same way, identification accuracy on the shared gallery, and cluster dispatch
efficiency of dlib-HOG face detection over real photos beside Ray 2.60 (../shared/bench/README.md, and
../shared/bench/peers/run_ray.sh run on the same photos when this runs as root). Definitions:
bench/README.md.

Each part is guarded: one that fails yields figures with value None (the reason in the detail column) and
the others still run.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from . import Figure, progress
from . import jobs_cluster as jc
from . import recognition_eval as ev

G = "recognition"
DEFAULT_P, DEFAULT_R = 0.95, 0.9  # targets for the default face detector
ID_TARGET = 0.95
EFF_TARGET = 0.95
CLUSTER_DETECTOR = "dlib_hog"
CLUSTER_N = 1200  # photos of the cluster job: ~20-25 s on 2 worker threads with dlib HOG
CLUSTER_WARMUP = 8  # photos of a first, untimed job (each worker thread builds its dlib models)
RAY_EVERY = 10  # Ray (Haar, ~10x slower per photo than dlib HOG here) gets every 10th photo
REF_EFF = "Ray 2.60: 0.977 (README)"


def _load() -> str:
    try:
        return f"load {os.getloadavg()[0]:.1f}"
    except OSError:
        return "load n/a"


def _failed(specs: list[tuple[str, str, float | None, str]], exc: BaseException, ref: str | None = None) -> list:
    why = f"failed: {type(exc).__name__}: {exc}"[:300]
    return [
        Figure(G, key, name, None, unit, target, op=">=", reference=ref, detail=why)
        for key, name, target, unit in specs
    ]


def _wrong(items: list[str], limit: int = 20) -> str:
    if not items:
        return "none wrong"
    more = f" +{len(items) - limit} more" if len(items) > limit else ""
    return "wrong (found/expected): " + ", ".join(items[:limit]) + more


# ----------------------------------------------------------------------------- detection accuracy
def _detection(images: list) -> list[Figure]:
    from collab_tui.ml import detectors

    figs: list[Figure] = []
    installed = detectors.installed_face_detectors()
    default = detectors.DEFAULT_FACE_DETECTOR
    order = [default] + [n for n in installed if n != default] if default in installed else installed
    for name in order:
        progress(f"recognition: face detector {name} over {len(images)} labelled images (1 OpenCV thread)")
        tag = " (default)" if name == default else ""
        try:
            with ev.one_cv_thread():
                s = ev.score(images, lambda img, n=name: detectors.detect_faces(img, n))
        except Exception as exc:
            target = DEFAULT_P if name == default else None
            figs += _failed([(f"recognition.{name}_precision", f"faces {name}{tag}: precision", target, "")], exc)
            continue
        base = f"{s['images']} images, TP {s['tp']} FP {s['fp']} FN {s['fn']}"
        is_def = name == default
        figs += [
            Figure(
                G,
                f"recognition.{name}_precision",
                f"faces {name}{tag}: precision",
                s["precision"],
                "",
                DEFAULT_P if is_def else None,
                op=">=",
                detail=f"{base}; {_wrong(s['wrong'])}",
            ),
            Figure(
                G,
                f"recognition.{name}_recall",
                f"faces {name}{tag}: recall",
                s["recall"],
                "",
                DEFAULT_R if is_def else None,
                op=">=",
                detail=base,
            ),
            Figure(
                G,
                f"recognition.{name}_ips",
                f"faces {name}{tag}: images/s, 1 thread",
                s["ips"],
                "img/s",
                detail=f"{s['seconds']:.1f} s over {s['images']} images (detect_faces only, decoded first, "
                f"1 warm-up); slowest {s['slowest'][0]} {s['slowest'][1]:.2f} s; {_load()}",
            ),
        ]
    missing = [n for n in detectors.FACE_DETECTORS if n not in installed]
    if missing:
        figs.append(
            Figure(
                G,
                "recognition.missing_detectors",
                "face detectors not installed",
                float(len(missing)),
                detail=", ".join(missing),
            )
        )
    return figs


def _people(images: list) -> list[Figure]:
    from collab_tui.ml import detectors

    progress(f"recognition: people detector (OpenCV HOG) over {len(images)} labelled images")
    with ev.one_cv_thread():
        s = ev.score(images, detectors.detect_people)
    base = f"{s['images']} images, expected persons = expected faces, TP {s['tp']} FP {s['fp']} FN {s['fn']}"
    note = "OpenCV HOG pedestrian detector (standing full bodies): portraits and head shots are not its subject"
    return [
        Figure(
            G,
            "recognition.people_precision",
            "people (opencv_hog): precision",
            s["precision"],
            "",
            detail=f"{base}; {_wrong(s['wrong'])}" + ("" if s["precision"] is not None else "; nothing found"),
        ),
        Figure(
            G, "recognition.people_recall", "people (opencv_hog): recall", s["recall"], "", detail=f"{base}; {note}"
        ),
        Figure(
            G,
            "recognition.people_ips",
            "people (opencv_hog): images/s, 1 thread",
            s["ips"],
            "img/s",
            detail=f"{s['seconds']:.1f} s over {s['images']} images (downscaled to 800 px inside); slowest "
            f"{s['slowest'][0]} {s['slowest'][1]:.2f} s; {_load()}",
        ),
    ]


# ----------------------------------------------------------------------------- identification
def _identification() -> list[Figure]:
    progress("recognition: identification (enrol the gallery; extra photos and leave-one-out)")
    with ev.one_cv_thread():
        r = ev.identification()
    dist = []
    if r["far_same"]:
        dist.append(f"largest same-person distance {r['far_same'][0]:.3f} ({r['far_same'][1]} ~ {r['far_same'][2]})")
    if r["near_diff"]:
        dist.append(
            f"smallest different-person distance {r['near_diff'][0]:.3f} ({r['near_diff'][1]} ~ {r['near_diff'][2]})"
        )
    refused = f"; enrolment refused: {'; '.join(r['refused'])}" if r["refused"] else ""
    return [
        Figure(
            G,
            "recognition.id_accuracy",
            "identification accuracy (dlib ResNet embeddings)",
            r["accuracy"],
            "",
            ID_TARGET,
            op=">=",
            detail=f"{r['right']}/{r['total']} right ({len(ev.EXTRA_QUERIES)} extra photos vs the gallery of "
            f"{r['enrolled']} photos / {r['people']} people, + leave-one-out over the gallery); "
            f"{'wrong: ' + '; '.join(r['wrong']) if r['wrong'] else 'none wrong'}; "
            + "; ".join(dist)
            + f" (threshold {r['threshold']}){refused}; enrol {r['enrol_s']:.1f} s, identify {r['identify_s']:.1f} s",
        )
    ]


# ----------------------------------------------------------------------------- cluster efficiency
def _cluster(base: Path) -> list[Figure]:
    from . import jobs_faces as jf
    from . import recognition_corpus as rc

    options = {"annotate": False, "detector": CLUSTER_DETECTOR}
    photos = base / "photos"
    progress(f"recognition: writing {CLUSTER_N} real photos (JPEG, max side {rc.MIN_SIDE}-{rc.MAX_SIDE} px)")
    files = rc.make_corpus(photos, CLUSTER_N)
    n_src = len(rc.sources())
    mb = sum(p.stat().st_size for p in files) / 1e6
    warm = base / "photos-warmup"
    warm.mkdir()
    for path in files[:CLUSTER_WARMUP]:
        shutil.copy(path, warm / path.name)
    progress("recognition: provisioning a 2-node cluster (1 job thread each)")
    c = jc.provision(2, [0, 1], [1, 1], base / "faces-cluster")
    singles: list[float] = []
    try:
        jc.start_timed(c)
        time.sleep(2.0)
        jc.run_job(c, 0, [str(warm)], "faces", options, timeout=120.0)  # untimed warm-up
        progress("recognition: standalone, one process alone")
        singles.append(jf.rate(jf.standalone(photos, timeout=600.0, detector=CLUSTER_DETECTOR)))
        progress(f"recognition: {CLUSTER_DETECTOR} face job of {CLUSTER_N} photos on the cluster")
        load_cluster = _load()
        r = jc.run_job(c, 0, [str(photos)], "faces", options, timeout=600.0)
        if r["counts"]["done"] != CLUSTER_N:
            raise RuntimeError(f"{r['counts']} (errors: {r['errors']})")
        progress("recognition: standalone, two processes at once, then one alone")
        pair = jf.rate(jf.standalone(photos, copies=2, timeout=900.0, detector=CLUSTER_DETECTOR))
        singles.append(jf.rate(jf.standalone(photos, timeout=600.0, detector=CLUSTER_DETECTOR)))
    finally:
        c.close()
    cluster = CLUSTER_N / r["wall_s"]
    alone = statistics.mean(singles)
    eff = cluster / (2 * alone)
    split = "/".join(str(n) for n in sorted(r["per_worker"].values(), reverse=True))

    ray_ref, ray_detail = REF_EFF, ""
    why = rc.ray_available()
    if why is None:
        ray_root = base / "ray"
        (ray_root / "photos").mkdir(parents=True)
        subset = files[::RAY_EVERY]
        for path in subset:
            shutil.copy(path, ray_root / "photos" / path.name)
        progress(f"recognition: Ray 2.60 peer (run_ray.sh, Haar, 2 workers) on {len(subset)} of the same photos")
        try:
            s = rc.run_ray(ray_root)
            ray_ref = f"Ray 2.60 this run: {s['ray_b1_eff2']:.3f} (README 0.977)"
            la = s.get("loadavg_start") or ["?"]
            ray_detail = (
                f"; Ray (peers/run_ray.sh, its fixed Haar task, 1 photo per task, {s['images']} of these photos): "
                f"{s['ray_b1_ips']:.2f} img/s vs standalone 1-thread {s['standalone_ips']:.2f} img/s -> "
                f"{s['ray_b1_eff2']:.3f} (batch 8: {s.get('ray_b8_eff2', float('nan')):.3f}; "
                f"foreign cores max {s.get('foreign_cores_max')}, load at its start {la[0]})"
            )
        except Exception as exc:
            ray_detail = f"; Ray peer failed ({type(exc).__name__}: {str(exc)[:200]}), README figure shown"
    else:
        ray_detail = f"; Ray peer not run ({why}), README figure shown"

    return [
        Figure(
            G,
            "recognition.faces_efficiency",
            "dlib HOG faces: cluster / (2 x one standalone process alone)",
            eff,
            "x",
            EFF_TARGET,
            op=">=",
            reference=ray_ref,
            detail=f"2 nodes x 1 job thread, {CLUSTER_N} JPEGs ({n_src} real photos at {rc.MIN_SIDE}-{rc.MAX_SIDE} "
            f"px, {mb:.0f} MB), 1 photo = 1 task; cluster {cluster:.1f} img/s ({r['wall_s']:.1f} s, items per "
            f"worker {split}, {load_cluster} at its start); denominator 2 x {alone:.1f} img/s (mean of "
            f"{len(singles)} passes alone: {', '.join(f'{x:.1f}' for x in singles)}){ray_detail}",
        ),
        Figure(
            G,
            "recognition.faces_cluster_ips",
            "dlib HOG faces: cluster throughput",
            cluster,
            "img/s",
            detail=f"submit -> last result recorded, 2 worker threads, {r['submit_s']:.2f} s until `submit` answered",
        ),
        Figure(
            G,
            "recognition.faces_standalone_alone_ips",
            "dlib HOG faces: one standalone 1-thread process alone",
            alone,
            "img/s",
            detail=f"passes {', '.join(f'{x:.1f}' for x in singles)}; cv2.setNumThreads(1), run_task('faces', "
            f"bytes, detector='{CLUSTER_DETECTOR}') over the same photos",
        ),
        Figure(
            G,
            "recognition.faces_standalone_pair_ips",
            "dlib HOG faces: 2 standalone processes at once",
            pair,
            "img/s",
            detail=f"summed; cluster / this = {cluster / pair:.3f}; {_load()}",
        ),
    ]


def run() -> list[Figure]:
    figs: list[Figure] = []
    try:
        images = ev.load_eval_set()
    except Exception as exc:
        images = []
        figs += _failed([("recognition.dlib_hog_precision", "faces: labelled set", DEFAULT_P, "")], exc)
    if images:
        figs += _detection(images)
        try:
            figs += _people(images)
        except Exception as exc:
            figs += _failed([("recognition.people_recall", "people (opencv_hog): recall", None, "")], exc)
    try:
        figs += _identification()
    except Exception as exc:
        figs += _failed([("recognition.id_accuracy", "identification accuracy", ID_TARGET, "")], exc)
    base = Path(tempfile.mkdtemp(prefix="collab-bench-recognition-"))
    try:
        figs += _cluster(base)
    except Exception as exc:
        figs += _failed(
            [("recognition.faces_efficiency", "dlib HOG faces dispatch efficiency", EFF_TARGET, "x")], exc, REF_EFF
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return figs
