"""Daemon figures on a real 3-node LocalCluster on loopback: discovery, failover, graceful handover, idle RSS.

Every daemon is a `python -m collab_tui daemon` process started by `LocalCluster` (127.0.0.1, mDNS pinned
to 127.0.0.1) and ended by its PID. The bench watches the nodes through their control sockets, one
persistent `ControlClient` per node, polled every ~10 ms.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from collab_tui.localcluster import LocalCluster
from collab_tui.node.control import ControlClient, ControlError

from . import Figure, progress, stats

N = 3
HEARTBEAT = 0.25  # the shipped default (NodeConfig.heartbeat_interval)
POLL = 0.01  # control-socket poll period, seconds
DISCOVERY_REPS = 3
FAILOVER_REPS = 7
LEAVE_REPS = 5
IDLE_S = 3.0
HOLD_S = 0.5  # a master must stay agreed this long before a failover rep starts
AGREE_TIMEOUT = 20.0


class Probe:
    """Asks every node (status + nodes) whether a set of nodes agrees on one master."""

    def __init__(self, cluster: LocalCluster, ids: list[str]) -> None:
        self.cluster = cluster
        self.ids = ids
        self.clients: dict[int, ControlClient] = {}
        self.listen_at: dict[int, float] = {}  # first time (wall clock) a node's status showed a real port
        self.polls = 0

    def forget(self, i: int) -> None:
        client = self.clients.pop(i, None)
        if client is not None:
            try:
                client.close()
            except OSError:
                pass

    def reset(self) -> None:
        for i in list(self.clients):
            self.forget(i)
        self.listen_at.clear()

    def _call(self, i: int, cmd: str):
        client = self.clients.get(i)
        if client is None:
            client = ControlClient(self.cluster.homes[i], timeout=1.0)  # NoNodeRunning (an OSError) if absent
            self.clients[i] = client
        return client.call(cmd)

    def snapshot(self, i: int) -> tuple[dict, list[dict]] | None:
        try:
            st = self._call(i, "status")
            if i not in self.listen_at and not str(st.get("addr", "")).endswith(":0"):
                self.listen_at[i] = time.time()
            return st, self._call(i, "nodes")
        except (OSError, ValueError, ControlError):
            self.forget(i)
            return None

    def agreed(self, indices: list[int], exclude: str | None = None) -> str | None:
        """The master all `indices` agree on (each seeing all the others alive), else None."""
        self.polls += 1
        snaps = {i: self.snapshot(i) for i in indices}  # no short cut: listen_at needs every node
        if any(s is None for s in snaps.values()):
            return None
        want = {self.ids[i] for i in indices}
        masters = set()
        for st, rows in snaps.values():
            if not want <= {r["node_id"] for r in rows if r["state"] in ("alive", "self")}:
                return None
            masters.add(st["master"])
        if len(masters) != 1:
            return None
        master = masters.pop()
        if master is None or master == exclude or master not in want:
            return None
        return master if snaps[self.ids.index(master)][0]["role"] == "master" else None

    def wait(
        self, indices: list[int], timeout: float = AGREE_TIMEOUT, exclude: str | None = None, hold: float = 0.0
    ) -> tuple[str, float]:
        """Poll until agreement (held for `hold` s). Returns (master, wall time the agreement was seen)."""
        deadline = time.monotonic() + timeout
        cand, since = None, 0.0
        while time.monotonic() < deadline:
            tick = time.monotonic()
            master = self.agreed(indices, exclude)
            seen = time.time()
            if master is None or master != cand:
                cand, since = master, seen
            if master is not None and seen - since >= hold:
                return master, since
            time.sleep(max(0.001, POLL - (time.monotonic() - tick)))
        raise TimeoutError(f"nodes {indices} did not agree on one master within {timeout} s: {self.describe(indices)}")

    def describe(self, indices: list[int]) -> str:
        """What each node reports (for error messages)."""
        parts = []
        for i in indices:
            snap = self.snapshot(i)
            if snap is None:
                parts.append(f"node{i}: no answer")
                continue
            st, rows = snap
            seen = ", ".join(f"{r['name']}={r['state']}" for r in rows if r["state"] != "self")
            parts.append(f"node{i}: {st['role']} term {st['term']} master {(st['master'] or '-')[:8]} sees [{seen}]")
        return "; ".join(parts)


def _stop_all(cluster: LocalCluster, probe: Probe) -> None:
    probe.reset()
    for i in cluster.running():
        cluster.kill(i, signal.SIGTERM)
    for i in list(cluster.procs):
        if cluster.wait_exit(i, 10.0) is None:
            cluster.kill(i, signal.SIGKILL)
            cluster.wait_exit(i, 5.0)


def _start_together(cluster: LocalCluster) -> tuple[float, dict[int, BaseException], list[threading.Thread]]:
    """Popen every node at the same moment (one thread each). Returns (wall time before the first Popen, errors)."""
    errors: dict[int, BaseException] = {}

    def one(i: int) -> None:
        try:
            cluster.start(i, timeout=AGREE_TIMEOUT)
        except BaseException as exc:  # reported by the caller
            errors[i] = exc

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(N)]
    t0 = time.time()
    for t in threads:
        t.start()
    return t0, errors, threads


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _discovery(cluster: LocalCluster, probe: Probe) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"listen": [], "ready": [], "popen": [], "startup": [], "startup_listen": []}
    for rep in range(DISCOVERY_REPS):
        _stop_all(cluster, probe)
        t0, errors, threads = _start_together(cluster)
        try:
            _, t_agree = probe.wait(list(range(N)))
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}; start-up errors: {errors or 'none'}") from None
        finally:
            for t in threads:
                t.join(AGREE_TIMEOUT + 5)
        if errors:
            raise RuntimeError(f"start-up failed: {errors}")
        ready = [cluster.info[i]["started"] for i in range(N)]
        listen = [probe.listen_at.get(i, max(ready)) for i in range(N)]
        out["listen"].append(t_agree - max(listen))
        out["ready"].append(t_agree - max(ready))
        out["popen"].append(t_agree - t0)
        out["startup"] += [r - t0 for r in ready]
        out["startup_listen"] += [x - t0 for x in listen]
        progress(
            f"  discovery rep {rep + 1}: {t_agree - max(listen):.3f} s from all listening, "
            f"{t_agree - t0:.3f} s from Popen"
        )
    return out


def _failover(cluster: LocalCluster, probe: Probe, sig: int, reps: int, label: str) -> list[float]:
    samples = []
    for rep in range(reps):
        master, _ = probe.wait(list(range(N)), hold=HOLD_S)
        mi = probe.ids.index(master)
        survivors = [j for j in range(N) if j != mi]
        probe.forget(mi)  # only the survivors are asked from now on
        t0 = time.time()
        cluster.kill(mi, sig)
        new, t1 = probe.wait(survivors, timeout=10.0, exclude=master)
        samples.append(t1 - t0)
        progress(f"  {label} rep {rep + 1}: node{mi} -> node{probe.ids.index(new)} in {t1 - t0:.3f} s")
        if cluster.wait_exit(mi, 10.0) is None:
            cluster.kill(mi, signal.SIGKILL)
            cluster.wait_exit(mi, 5.0)
        cluster.start(mi, timeout=AGREE_TIMEOUT)
    return samples


def run() -> list[Figure]:
    from collab_tui.net.identity import load_identity

    figs: list[Figure] = []
    cluster = LocalCluster(n=N, mdns=True, heartbeat=HEARTBEAT)
    try:
        progress("net: provisioning a 3-node cluster (init + 2 joins over TLS)")
        cluster.provision()
        ids = [load_identity(h).node_id for h in cluster.homes]
        probe = Probe(cluster, ids)

        progress(f"net: discovery, {DISCOVERY_REPS} reps (all 3 daemons started at once, mDNS on 127.0.0.1)")
        d = _discovery(cluster, probe)
        s = stats(d["listen"])
        figs.append(
            Figure(
                "net",
                "net.discovery_s",
                "discovery, 3 nodes (all listening -> all agree)",
                s.median,
                "s",
                2.0,
                detail=f"median of {s.n}, min {s.min:.3f} max {s.max:.3f} s; mDNS",
                samples=d["listen"],
            )
        )
        s = stats(d["ready"])
        figs.append(
            Figure(
                "net",
                "net.discovery_from_ready_s",
                "discovery (all ready-files -> all agree)",
                s.median,
                "s",
                detail=f"min {s.min:.3f} max {s.max:.3f} s; ready-file is written after mDNS registration",
                samples=d["ready"],
            )
        )
        s = stats(d["popen"])
        figs.append(
            Figure(
                "net",
                "net.discovery_from_popen_s",
                "discovery (first Popen -> all agree)",
                s.median,
                "s",
                detail=f"min {s.min:.3f} max {s.max:.3f} s; includes Python start-up",
                samples=d["popen"],
            )
        )
        s, sl = stats(d["startup"]), stats(d["startup_listen"])
        figs.append(
            Figure(
                "net",
                "net.daemon_startup_s",
                "daemon start-up (Popen -> ready-file)",
                s.median,
                "s",
                detail=f"{s.n} starts (3 at once), min {s.min:.3f} max {s.max:.3f} s; "
                f"Popen -> listening median {sl.median:.3f} s",
                samples=d["startup"],
            )
        )

        progress(f"net: idle {IDLE_S:.0f} s, then VmRSS of every daemon")
        probe.reset()
        time.sleep(IDLE_S)
        rss = {i: _rss_mb(cluster.procs[i].pid) for i in range(N)}
        values = [v for v in rss.values() if v is not None]
        figs.append(
            Figure(
                "net",
                "net.idle_rss_mb",
                "idle daemon RSS (max of 3)",
                max(values) if values else None,
                "MiB",
                80.0,
                detail="VmRSS: " + ", ".join(f"node{i} {v:.1f}" for i, v in rss.items() if v is not None),
                samples=values,
            )
        )

        progress(f"net: failover, {FAILOVER_REPS} reps (SIGKILL the master)")
        samples = _failover(cluster, probe, signal.SIGKILL, FAILOVER_REPS, "failover")
        s = stats(samples)
        slow = sum(x > 1.0 for x in samples)
        figs.append(
            Figure(
                "net",
                "net.failover_s",
                "failover (SIGKILL master -> survivors agree)",
                s.median,
                "s",
                2.0,
                detail=f"median of {s.n}, min {s.min:.3f} max {s.max:.3f} s; {slow} of {s.n} > 1 s",
                samples=samples,
            )
        )

        progress(f"net: graceful leave, {LEAVE_REPS} reps (SIGTERM the master)")
        samples = _failover(cluster, probe, signal.SIGTERM, LEAVE_REPS, "leave")
        s = stats(samples)
        figs.append(
            Figure(
                "net",
                "net.leave_handover_s",
                "graceful leave (SIGTERM master -> survivors agree)",
                s.median,
                "s",
                0.5,
                detail=f"median of {s.n}, min {s.min:.3f} max {s.max:.3f} s",
                samples=samples,
            )
        )
        probe.reset()
    finally:
        cluster.close()
    return figs
