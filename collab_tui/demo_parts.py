"""Demo steps contributed by the recognition and training services: callables (cluster, live, say)."""

from __future__ import annotations

import time


def recognition_part(cluster, live: list[int], say) -> None:
    """Detect faces in real images that ship with scikit-image, spread over the surviving nodes."""
    import cv2
    import skimage.data as sk

    folder = cluster.base / "demo-images"
    folder.mkdir(exist_ok=True)
    for name in ("astronaut", "chelsea", "coffee", "camera", "immunohistochemistry", "rocket"):
        img = getattr(sk, name)()
        if img.ndim == 3:
            img = img[:, :, ::-1]
        cv2.imwrite(str(folder / f"{name}.png"), img)
    out = cluster.base / "demo-results"
    submitter = live[-1]
    say(f"-- face detection on {len(list(folder.iterdir()))} scikit-image pictures, submitted from "
        f"{cluster.names[submitter]}, annotated copies in {out}")
    t0 = time.monotonic()
    job = cluster.call(submitter, "submit", paths=[str(folder)], task="faces", out=str(out))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        shown = cluster.call(submitter, "job_show", job_id=job["job_id"])
        if shown["status"] == "done":
            break
        time.sleep(0.1)
    else:
        raise RuntimeError("the detection job did not finish in 120 s")
    for it in shown["items"]:
        res = it.get("result") or {}
        faces = [d for d in res.get("detections", [])]
        where = res.get("worker_name", "?")
        detail = ", ".join(f"face at {d['box']} score {d['score']:.1f}" for d in faces) or "no face"
        say(f"    {it['path'].rsplit('/', 1)[-1]:<26} {detail}  (by {where})")
    say(f"   done in {time.monotonic() - t0:.2f}s; summary {shown['summary']}")


PARTS: list = [recognition_part]
