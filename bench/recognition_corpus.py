"""Real-photo corpus for the `recognition` group's cluster figure, and Ray 2.60 on the same photos.

`make_corpus` writes JPEG copies of the shared face photos (../shared/data/faces) and of the photographs
that ship inside scikit-image, each at several sizes (max side 640..1000 px), every other one mirrored.
`run_ray` runs ../shared/bench/peers/run_ray.sh (root only: it makes a loopback-only network namespace
and its own venv) on a folder of photos and returns its summary line. The Ray peer's detector is fixed:
OpenCV's Haar cascade (peers/ray_faces_work.py), not dlib HOG.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from collab_tui.ml.face_eval_set import FACES_DIR

# photographs shipped inside scikit-image (file names in skimage/data; nothing is downloaded)
SKIMAGE_PHOTOS = [
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "ihc.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "moon.png",
    "page.png",
    "clock_motion.png",
]
MIN_SIDE, MAX_SIDE = 640, 1000
JPEG_QUALITY = 90
PEERS = FACES_DIR.parents[1] / "bench" / "peers"


def sources() -> list[tuple[str, Path]]:
    """(short name, file) of every source photo found on this machine."""
    import skimage.data

    out = [
        (p.stem, p)
        for p in sorted((FACES_DIR / "gallery").glob("*/*")) + sorted((FACES_DIR / "extra").glob("*"))
        if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    ]
    sk = Path(skimage.data.__file__).parent
    out += [(f"sk-{Path(n).stem}", sk / n) for n in SKIMAGE_PHOTOS if (sk / n).is_file()]
    return out


def make_corpus(folder: Path, n: int) -> list[Path]:
    """``n`` JPEGs cycling over the sources, source k's j-th copy scaled to a max side stepping through
    640..1000 px and mirrored every other copy. Returns the files, sorted by name."""
    from collab_tui.ml.cvload import cv2

    folder.mkdir(parents=True, exist_ok=True)
    srcs = sources()
    imgs = []
    for _name, path in srcs:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise RuntimeError(f"cannot read {path}")
        imgs.append(img)
    rounds = -(-n // len(srcs))
    out = []
    for k in range(n):
        j, s = divmod(k, len(srcs))
        img = imgs[s]
        side = MIN_SIDE + round((MAX_SIDE - MIN_SIDE) * ((j * 7 + s * 3) % max(1, rounds)) / max(1, rounds - 1))
        h, w = img.shape[:2]
        f = side / max(h, w)
        img = cv2.resize(
            img,
            (max(1, round(w * f)), max(1, round(h * f))),
            interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC,
        )
        if j % 2:
            img = cv2.flip(img, 1)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        path = folder / f"{k:04d}-{srcs[s][0]}.jpg"
        path.write_bytes(buf.tobytes())
        out.append(path)
    return sorted(out)


def ray_available() -> str | None:
    """None when the Ray peer can run here, else why not."""
    if not (PEERS / "run_ray.sh").is_file():
        return f"no {PEERS / 'run_ray.sh'}"
    if os.geteuid() != 0:
        return "the Ray peer needs root (network namespace)"
    return None


def run_ray(root: Path, timeout: float = 900.0) -> dict:
    """``FACES_ROOT=root bash peers/run_ray.sh`` (root's sub-folders hold the photos); its summary line
    plus the loadavg at its start/end and its standalone/cold-pass records."""
    env = dict(os.environ, FACES_ROOT=str(root))
    proc = subprocess.run(
        ["bash", str(PEERS / "run_ray.sh")], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    records = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    summary = next((r for r in reversed(records) if r.get("kind") == "summary"), None)
    if proc.returncode != 0 or summary is None:
        raise RuntimeError(f"run_ray.sh exited {proc.returncode}: {(proc.stderr or proc.stdout)[-600:]}")
    by_kind = {r.get("kind"): r for r in records}
    summary["loadavg_start"] = by_kind.get("meta", {}).get("loadavg_start")
    summary["loadavg_end"] = by_kind.get("memory", {}).get("loadavg_end")
    return summary
