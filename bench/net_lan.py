"""Figures of the real-LAN issue: partition heal time and join success with members running.

Heal (root only): a `LanCluster` of 5 machines on a virtual LAN (vlan.py: a network namespace each,
every daemon with its default options, joined by mDNS alone). Each rep cuts 2 machines off the segment
for 10 s (alternately with and without the master), plugs them back, and times the heal: from the
moment the link is back to the agreement of all 5 on one master (`Probe` from net_cluster, polled every
~10 ms through the control sockets). Median of the reps, with min and max.

Joins: 3 members running (node0 can sign, nodes 1 and 2 cannot), then 20 `collab join TOKEN` with no
--peer from a fourth machine, each into a fresh home: on the virtual LAN as root, else on loopback with
mDNS pinned to 127.0.0.1. Figure = joins that succeeded, of 20.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from collab_tui.vlan import available

from . import Figure, progress, stats
from .net_cluster import Probe

G = "net"
HEAL_NODES, HEAL_CUT, PARTITION_S, HEAL_REPS = 5, 2, 10.0, 3
JOINS = 20


def heal_figures() -> list[Figure]:
    ok, why = available()
    name = f"heal after a {PARTITION_S:.0f} s partition ({HEAL_CUT} of {HEAL_NODES}, virtual LAN)"
    if not ok:
        return [Figure(G, "net.heal_s", name, None, "s", 1.0, detail=f"skipped: {why}")]
    from collab_tui.lancluster import LanCluster

    progress(f"net: virtual LAN of {HEAL_NODES} machines, {HEAL_REPS} partitions of {PARTITION_S:.0f} s")
    cluster = LanCluster(HEAL_NODES)
    try:
        cluster.provision()
        ids = [cluster.node_id(i) for i in range(HEAL_NODES)]
        probe = Probe(cluster, ids)
        everyone = list(range(HEAL_NODES))
        samples = []
        for rep in range(HEAL_REPS):
            master, _ = probe.wait(everyone, hold=0.5)
            mi = ids.index(master)
            others = [i for i in everyone if i != mi]
            cut = ([mi] + others[: HEAL_CUT - 1]) if rep % 2 == 0 else others[-HEAL_CUT:]
            cluster.lan.partition(cut)
            time.sleep(PARTITION_S)
            cluster.lan.heal(cut)
            t0 = time.time()
            _, seen = probe.wait(everyone)
            samples.append(seen - t0)
            progress(
                f"net: heal {rep + 1}/{HEAL_REPS} ({'with' if mi in cut else 'without'} the master): "
                f"{samples[-1]:.3f} s"
            )
        probe.reset()
    finally:
        cluster.close()
    s = stats(samples)
    return [
        Figure(
            G,
            "net.heal_s",
            name,
            s.median,
            "s",
            1.0,
            detail=f"median of {s.n}, min {s.min:.3f} max {s.max:.3f} s; link back -> all {HEAL_NODES} agree",
            samples=samples,
        )
    ]


def _join_on_lan() -> tuple[int, list[float], str]:
    from collab_tui.lancluster import COLLAB, LanCluster

    cluster = LanCluster(4)
    try:
        cluster.ok(0, "init", "--name", "node0")
        cluster.start(0)
        token = json.loads(cluster.ok(0, "invite", "--uses", str(JOINS + 2), "--json"))["token"]
        for i in (1, 2):
            cluster.ok(i, "join", token, "--name", f"node{i}")
            cluster.start(i)
        Probe(cluster, [cluster.node_id(i) for i in range(3)]).wait([0, 1, 2])
        good, times = 0, []
        for k in range(JOINS):
            env = {**cluster.node_env(3), "HOME": str(cluster.base / f"joiner{k}")}
            t0 = time.perf_counter()
            res = cluster.lan.run(3, [*COLLAB, "join", token, "--name", f"j{k}"], env=env, timeout=60)
            times.append(time.perf_counter() - t0)
            good += res.returncode == 0
            if res.returncode:
                progress(f"net: join {k + 1} failed: {res.stderr.strip()[-300:]}")
        return good, times, "virtual LAN, mDNS only"
    finally:
        cluster.close()


def _join_on_loopback() -> tuple[int, list[float], str]:
    from collab_tui.localcluster import LocalCluster

    cluster = LocalCluster(3)
    base = Path(tempfile.mkdtemp(prefix="collab-joins-"))
    try:
        cluster.provision()
        cluster.start_all()
        cluster.wait_agreement(timeout=20)
        token = cluster.call(0, "invite", ttl=600, uses=JOINS)["token"]
        good, times = 0, []
        for k in range(JOINS):
            t0 = time.perf_counter()
            res = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "collab_tui",
                    "join",
                    token,
                    "--mdns-interface",
                    "127.0.0.1",
                    "--name",
                    f"j{k}",
                    "--home",
                    str(base / f"j{k}"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            times.append(time.perf_counter() - t0)
            good += res.returncode == 0
        return good, times, "loopback, mDNS pinned to 127.0.0.1 (a virtual LAN needs root)"
    finally:
        cluster.close()
        subprocess.run(["rm", "-rf", str(base)], timeout=30)


def join_figures() -> list[Figure]:
    ok, _ = available()
    progress(f"net: {JOINS} joins by mDNS with 3 members running ({'virtual LAN' if ok else 'loopback'})")
    good, times, where = _join_on_lan() if ok else _join_on_loopback()
    s = stats(times)
    return [
        Figure(
            G,
            "net.join_success",
            f"joins by mDNS with 3 members running, of {JOINS}",
            good,
            "joins",
            JOINS,
            op=">=",
            detail=f"{where}; `collab join` wall time median {s.median:.2f} s, max {s.max:.2f} s",
            samples=times,
        )
    ]


def run() -> list[Figure]:
    figs = []
    for fn, key, name, target, unit, op in (
        (heal_figures, "net.heal_s", "heal after a 10 s partition", 1.0, "s", "<="),
        (join_figures, "net.join_success", f"joins by mDNS with 3 members running, of {JOINS}", JOINS, "joins", ">="),
    ):
        try:
            figs += fn()
        except Exception as exc:
            figs.append(
                Figure(G, key, name, None, unit, target, op=op, detail=f"failed: {type(exc).__name__}: {exc}"[:300])
            )
    return figs


if __name__ == "__main__":  # pragma: no cover - quick look: python -m bench.net_lan
    for f in run():
        print(f.key, f.value, f.detail)
