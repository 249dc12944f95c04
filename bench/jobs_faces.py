"""Face-detection corpus and the standalone single-thread baseline for the `jobs` group.

`make_corpus` writes PNG variants of scikit-image's astronaut (one face) and cat (none); `standalone`
runs `python -m bench.jobs_faces DIR` in fresh processes (one, or two at the same moment):
``cv2.setNumThreads(1)``, all image bytes read first, a warm-up over a few images, then
``collab_tui.ml.detectors.run_task("faces", bytes)`` over every image once, timed. Such a process is
what one worker thread of the cluster does without the cluster around it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

WARMUP = 5


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


def standalone(folder: Path, copies: int = 1, timeout: float = 300.0) -> list[dict]:
    """One pass of the single-thread standalone loop in ``copies`` fresh processes started at the same
    moment: one {"images", "seconds", "faces"} each."""
    cmd = [sys.executable, "-m", "bench.jobs_faces", str(folder)]
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


def _main(folder: str) -> None:
    import cv2

    from collab_tui.ml import detectors

    cv2.setNumThreads(1)
    blobs = [p.read_bytes() for p in sorted(Path(folder).glob("*.png"))]
    for b in blobs[:WARMUP]:
        detectors.run_task("faces", b)
    faces = 0
    t0 = time.perf_counter()
    for b in blobs:
        faces += len(detectors.run_task("faces", b)["detections"])
    dt = time.perf_counter() - t0
    print(json.dumps({"images": len(blobs), "seconds": dt, "faces": faces}))


if __name__ == "__main__":
    _main(sys.argv[1])
