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
    say(
        f"-- face detection on {len(list(folder.iterdir()))} scikit-image pictures, submitted from "
        f"{cluster.names[submitter]}, annotated copies in {out}"
    )
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
    from .cli.jobs import job_sentence

    say(f"   done in {time.monotonic() - t0:.2f}s: {job_sentence(shown)}")


def training_part(cluster, live: list[int], say) -> None:
    """Federated training of the digits CNN: each node keeps its own share of scikit-learn's digits."""
    for k, i in enumerate(live):
        cluster.call(
            i,
            "data_add",
            name="default",
            spec={"kind": "digits", "partition": {"scheme": "iid", "num_clients": len(live), "client": k}},
        )
    say(
        f"-- federated training: {len(live)} nodes, each with its own 1/{len(live)} of the 8x8 digits "
        f"(images never leave a node; only weights travel)"
    )
    t0 = time.monotonic()
    run = cluster.call(live[0], "train", model="digits", rounds=5, epochs=3, lr=0.1, min_clients=len(live), timeout=120)
    shown_round, deadline = 0, time.monotonic() + 300
    while time.monotonic() < deadline:
        st = cluster.call(live[0], "run_show", run_id=run["run_id"])
        for h in st["history"][shown_round:]:
            if h is st["history"][-1] and st["status"] == "running":
                break  # its held-out accuracy arrives with the next round
            acc = (h.get("client_eval") or {}).get("accuracy")
            say(
                f"    round {h['round']}: held-out accuracy {acc if acc is None else f'{acc:.3f}'}, "
                f"{len(h['clients'])} clients, {h['wall_seconds']:.2f}s, {h['bytes'] / 1e3:.0f} kB moved, "
                f"version {h['version']}"
            )
            shown_round += 1
        if st["status"] != "running":
            break
        time.sleep(0.2)
    else:
        raise RuntimeError("training did not finish in 300 s")
    say(f"   run {st['status']} in {time.monotonic() - t0:.1f}s (TensorFlow start-up included)")


PARTS: list = [recognition_part, training_part]
