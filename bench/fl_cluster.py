"""Federated runs of the FL protocol on a real 4-node `LocalCluster` on loopback (helper of `fl_bench`).

Every node is a `python -m collab_tui daemon` process (127.0.0.1, mDNS pinned to 127.0.0.1); TensorFlow
runs only in each daemon's ML child process. The bench talks to the daemons through their control
sockets: `data_add` (each node's label-shard part; the 2,000 eval images on every node, so whichever
node is master can evaluate), `models_import` of ``protocol_model.keras`` on the master, `train`, and a
`run_watch` stream read by a thread that timestamps the `round` events as they arrive.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import numpy as np

from collab_tui.localcluster import LocalCluster
from collab_tui.ml.registry import ModelRegistry
from collab_tui.node.control import ControlClient

from . import progress

N = 4
HEARTBEAT = 0.25  # the shipped default
TRAIN_DS, EVAL_DS = "mnist-fl", "mnist-eval"


# ----------------------------------------------------------------- memory
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss(roots: list[int]) -> tuple[float, int, dict[int, float]]:
    """(summed VmRSS in MiB, process count, {pid: MiB}) of ``roots`` and all their descendants."""
    kids, seen, todo = _children(), {}, list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen[pid] = _rss_mib(pid)
        todo += kids.get(pid, [])
    return sum(seen.values()), len(seen), seen


# ----------------------------------------------------------------- cluster set-up
class FLCluster:
    def __init__(self, proto: dict, base: Path) -> None:
        self.proto, self.base = proto, base
        self.data_dir = str((base / proto["data"]["dir"]).resolve())
        self.cluster = LocalCluster(N, mdns=True, heartbeat=HEARTBEAT)
        self.master_i = -1
        self.arch: dict = {}
        self.init_weights: list[np.ndarray] = []

    def start(self) -> None:
        c = self.cluster
        c.provision()
        c.start_all()
        self.master_i = c.index_of(c.wait_agreement(timeout=30))
        ids = sorted(c.node_id(i) for i in range(N))  # TrainingClient.client_index() = rank of the node id
        part = self.proto["partition"]
        shards = part["label_shards"]
        for i in range(N):
            k = ids.index(c.node_id(i))
            spec = {
                "kind": "mnist",
                "path": self.data_dir,
                "subset": "train",
                "partition": {
                    "scheme": "shards",
                    "num_clients": part["num_clients"],
                    "client": k,
                    "num_shards": shards["num_shards"],
                    "shard_size": shards["shard_size"],
                },
            }
            st = c.call(i, "data_add", timeout=60, name=TRAIN_DS, spec=spec)
            c.call(
                i, "data_add", timeout=60, name=EVAL_DS, spec={"kind": "mnist", "path": self.data_dir, "subset": "eval"}
            )
            labels = {lab: n for lab, n in st["per_label"].items() if n}
            progress(f"fl: node{i} = client {k}: {st['count']} images, labels {labels}")

    def master(self) -> int:
        c = self.cluster
        self.master_i = c.index_of(c.wait_agreement(timeout=30))
        return self.master_i

    def import_model(self, name: str) -> str:
        """`models_import` of protocol_model.keras on the master; the initial weights put as its latest
        version unless the file already holds them. Returns the version a run of ``name`` starts from."""
        m = self.master()
        mdl = self.proto["model"]
        home = self.cluster.homes[m]
        reg = ModelRegistry(home)
        if not self.arch:
            self.cluster.call(m, "models_import", timeout=120, path=str(self.base / mdl["model_file"]), name=name)
            self.arch = reg.latest(name)["arch"]
            with np.load(self.base / mdl["init_weights_file"], allow_pickle=False) as z:
                self.init_weights = [np.array(z[k]) for k in sorted(z.files)]
        version = reg.put(
            name, self.init_weights, self.arch, extra={"initial": True, "source": mdl["init_weights_file"]}
        )
        latest = reg.latest(name)
        if latest["version"] != version:  # the imported file held other weights and was stored later
            raise RuntimeError(f"{name}: latest version {latest['version']} is not the initial weights {version}")
        return version


# ----------------------------------------------------------------- one run
class Watch(threading.Thread):
    """Reads `run_watch` from the master; timestamps every `round` event (monotonic clock)."""

    def __init__(self, home: Path, run_id: str, rounds: int, roots: list[int]) -> None:
        super().__init__(daemon=True)
        self.client = ControlClient(home, timeout=30)
        self.run_id, self.rounds, self.roots = run_id, rounds, roots
        self.rounds_at: dict[int, float] = {}
        self.events: list[dict] = []
        self.marks: list[tuple[float, str, int, str]] = []  # (time, round_started|train|upload, round, node)
        self.rss: tuple[float, int, dict] | None = None
        self.final: dict | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            for ev in self.client.stream("run_watch", run_id=self.run_id):
                now = time.monotonic()
                if ev.get("kind") == "fl_phase" or ev.get("what") == "round_started":
                    self.marks.append(
                        (
                            now,
                            ev.get("what") or ev.get("phase"),
                            int(ev.get("round") or 0),
                            str(ev.get("node_id") or ""),
                        )
                    )
                if ev.get("kind") == "fl" and ev.get("what") == "round":
                    r = int(ev["round"])
                    self.rounds_at[r] = time.monotonic()
                    self.events.append(ev)
                    progress(
                        f"fl:   round {r:2d}  wall {ev.get('wall_seconds')} s  fit_max {ev.get('fit_seconds_max')} s"
                    )
                if ev.get("kind") == "fl" and ev.get("what") == "server_eval":  # during the next round's fits
                    progress(f"fl:   round {int(ev['round']):2d}  eval acc {ev['server_eval']['accuracy']:.4f}")
                    if r >= self.rounds and self.rss is None:
                        self.rss = tree_rss(self.roots)
                if ev.get("kind") == "fl" and ev.get("what") in ("final", "failed", "stopped", "done"):
                    if ev.get("what") == "final" or ev.get("status") != "running":
                        self.final = ev
                        return
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            self.error = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.client.close()


NO_SCREEN = 1000.0  # outlier_z: the protocol aggregates every client's update (see fl_bench.py)


def run_federated(
    fc: FLCluster,
    name: str,
    strategy: str,
    options: dict,
    deadline: float,
    outlier_z: float = NO_SCREEN,
    secure: bool = False,
) -> dict:
    """One protocol run; returns history, round timestamps, RSS at the end of training, timings."""
    proto, c = fc.proto, fc.cluster
    tr, fed = proto["training"], proto["federation"]
    fc.import_model(name)
    m = fc.master_i
    args = {
        "model": name,
        "dataset": TRAIN_DS,
        "rounds": int(fed["num_rounds"]),
        "epochs": int(tr["local_epochs"]),
        "batch_size": int(tr["batch_size"]),
        "lr": float(tr["learning_rate"]),
        "strategy": strategy,
        "strategy_options": options,
        "min_clients": int(fed["clients_per_round"]),
        "fraction": float(fed["fraction_fit"]),
        "eval_dataset": EVAL_DS,
        "holdout": 0.0,
        "seed": int(tr["base_seed"]),
        "round_timeout": 120.0,
        "outlier_z": float(outlier_z),
        "secure": secure,
    }
    if strategy == "fedprox":
        args["mu"] = float(options.get("mu", 0.01))
    t_train = time.monotonic()
    res = c.call(m, "train", timeout=60, **args)
    roots = [p.pid for p in c.procs.values()]
    watch = Watch(c.homes[m], res["run_id"], args["rounds"], roots)
    watch.start()
    try:
        while watch.is_alive() and time.monotonic() < deadline:
            watch.join(0.5)
    finally:
        watch.close()
        watch.join(5)
    st = c.call(m, "run_show", run_id=res["run_id"])
    if st["status"] != "done" or len(st["history"]) < args["rounds"]:
        raise RuntimeError(
            f"{strategy} run {st['status']} at round {st['round']}/{args['rounds']}"
            f"{': ' + st.get('error', '') if st.get('error') else ''}"
            f"{'; watcher: ' + watch.error if watch.error else ''}"
            f"{'; bench deadline reached' if time.monotonic() >= deadline else ''}"
        )
    return {
        "history": st["history"],
        "rounds_at": watch.rounds_at,
        "t_train": t_train,
        "rss": watch.rss,
        "breakdown": breakdown(watch.marks, st["history"]),
        "config": args,
        "run_id": res["run_id"],
    }


def breakdown(marks: list[tuple[float, str, int, str]], history: list[dict]) -> dict[str, list[float]]:
    """Per round, from the event times seen by the bench: ``dispatch`` = round_started -> the last client
    began (its `train` phase), ``call`` = the longest client's train -> upload (ML-process call, incl. the
    fit), ``tail`` = wall_seconds - (round_started -> last upload) (last reply in, decode, screen, aggregate)."""
    out: dict[str, list[float]] = {"dispatch": [], "call": [], "tail": []}
    for h in history:
        r = int(h["round"])
        started = [t for t, what, rr, _ in marks if rr == r and what == "round_started"]
        train = {n: t for t, what, rr, n in marks if rr == r and what == "train"}
        upload = {n: t for t, what, rr, n in marks if rr == r and what == "upload"}
        if not started or not train or set(train) != set(upload):
            continue
        t0 = started[-1]
        out["dispatch"].append(max(train.values()) - t0)
        out["call"].append(max(upload[n] - train[n] for n in train))
        out["tail"].append(float(h["wall_seconds"]) - (max(upload.values()) - t0))
    return out
