"""Face-detection corpus and the standalone single-thread baseline for the `jobs` group.

`make_corpus` writes PNG variants of scikit-image's astronaut (one face) and cat (none); `standalone`
runs `python -m bench.jobs_faces DIR DETECTOR` in fresh processes (one, or two at the same moment):
``cv2.setNumThreads(1)``, the bytes of every image file of DIR (``*.jpg``, ``*.jpeg``, ``*.png``, sorted
by name) read first, a warm-up over a few images, then
``collab_tui.ml.detectors.run_task("faces", bytes, detector=DETECTOR)`` over every image once, timed.
Such a process is what one worker thread of the cluster does without the cluster around it. The `jobs`
group uses it with ``haar``, the `recognition` group with ``dlib_hog``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

WARMUP = 5
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def make_corpus(folder: Path, n: int) -> list[Path]:
    """``n`` PNG images, 192..256 px square, 3 in 4 with a face, some mirrored."""
    import cv2
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    astro = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cat = cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR)
    out = []
    for k in range(n):
        side = 192 + (k * 13) % 65
        img = cat if k % 4 == 3 else (astro if k % 3 else astro[32:480, 48:464])
        img = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
        if k % 2:
            img = cv2.flip(img, 1)
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        path = folder / f"img{k:04d}.png"
        path.write_bytes(buf.tobytes())
        out.append(path)
    return out


def image_files(folder: Path) -> list[Path]:
    """Every image file (jpg/jpeg/png, any case) directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def standalone(folder: Path, copies: int = 1, timeout: float = 300.0, *, detector: str) -> list[dict]:
    """One pass of the single-thread standalone loop with face detector ``detector`` in ``copies`` fresh
    processes started at the same moment: one {"images", "seconds", "faces", "detector"} each."""
    cmd = [sys.executable, "-m", "bench.jobs_faces", str(folder), detector]
    procs = [
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1]
        )
        for _ in range(copies)
    ]
    out = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"standalone run failed: {stderr[-1000:]}")
            out.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for proc in procs:  # only on an error: ours, by PID
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    return out


def rate(runs: list[dict]) -> float:
    """Summed throughput (images/s) of standalone runs made at the same time."""
    return sum(r["images"] / r["seconds"] for r in runs)


def _main(folder: str, detector: str) -> None:
    import cv2

    from collab_tui.ml import detectors

    cv2.setNumThreads(1)
    detector = detectors.face_detector(detector)
    blobs = [p.read_bytes() for p in image_files(Path(folder))]
    for b in blobs[:WARMUP]:
        detectors.run_task("faces", b, detector=detector)
    faces = 0
    t0 = time.perf_counter()
    for b in blobs:
        faces += len(detectors.run_task("faces", b, detector=detector)["detections"])
    dt = time.perf_counter() - t0
    print(json.dumps({"images": len(blobs), "seconds": dt, "faces": faces, "detector": detector}))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m bench.jobs_faces DIR DETECTOR   (DETECTOR: dlib_hog, dlib_cnn or haar)")
    _main(sys.argv[1], sys.argv[2])
