"""Real `collab daemon` clusters for the `jobs` group: provisioning with per-node job settings, a timed
simultaneous start, process and memory accounting, and the job measurements read from the daemons.

Everything binds 127.0.0.1 (mDNS pinned to 127.0.0.1); daemons are started and ended by `LocalCluster`
(by PID). Times of results come from the submitter's store (`finished_at`, wall clock, same machine).
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path

from collab_tui.config import write_config
from collab_tui.localcluster import ClusterError, LocalCluster

HEARTBEAT = 0.25  # the shipped default


def provision(n: int, priorities: list[int], job_threads: list[int], base: Path | None = None) -> LocalCluster:
    """Create a cluster (node0 runs `init`, the others join with a token), give each node its
    ``job_threads`` (config.toml) and leave every daemon stopped."""
    c = LocalCluster(n, base=base, priorities=priorities, heartbeat=HEARTBEAT, env={"COLLAB_DIAGNOSTICS": "1"})
    c.provision()  # starts node0
    for i, threads in enumerate(job_threads):
        write_config(c.homes[i], {"job_threads": threads})
    c.kill(0, signal.SIGTERM)  # graceful
    if c.wait_exit(0, 10) is None:
        raise ClusterError("node0 did not stop after provisioning")
    c.procs.clear()
    return c


def start_timed(c: LocalCluster, timeout: float = 30.0) -> dict:
    """Start every daemon at the same moment (one thread each) and wait until all agree on one master
    and each knows it. Returns {"ready_s", "master"}: seconds from just before the first Popen."""
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            c.start(i, timeout=timeout)
        except BaseException as exc:  # reported below
            errors.append(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=start, args=(i,)) for i in range(c.n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    if errors:
        raise errors[0]
    master = c.wait_agreement(list(range(c.n)), timeout=timeout, poll=0.01)
    return {"ready_s": time.monotonic() - t0, "master": master}


def processes(c: LocalCluster) -> list[int]:
    """PIDs of the daemons and of every process below them (ML helpers, if any ran)."""
    pids = [p.pid for p in c.procs.values() if p.poll() is None]
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return sorted(out)


def rss_mib(pids: list[int]) -> float:
    """Sum of VmRSS over ``pids``, MiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(samples)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def wait_job(c: LocalCluster, i: int, job_id: str, timeout: float, poll: float = 0.1) -> dict:
    """Poll the job's counters (`jobs`, one row per job) until it is finished. The poll period does not
    enter the figures (they use the recorded `finished_at`); a slow poll steals less CPU from the run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [j for j in c.call(i, "jobs", timeout=10.0) if j["job_id"] == job_id]
        if rows and rows[0]["status"] != "running":
            return rows[0]
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} did not finish within {timeout}s")


def run_job(
    c: LocalCluster, i: int, paths: list[str], task: str, options: dict | None = None, timeout: float = 120.0
) -> dict:
    """Submit through node i's control socket and wait for the end. Returns the seconds from just before
    the `submit` call to the last result recorded (``wall_s``), to the `submit` answer (``submit_s``),
    the job's counts and the items per worker."""
    t0 = time.time()
    job = c.call(i, "submit", timeout=timeout, paths=paths, task=task, options=options or {})
    t_submit = time.time()
    wait_job(c, i, job["job_id"], timeout)
    shown = c.call(i, "job_show", timeout=60.0, job_id=job["job_id"])
    items = shown["items"]
    end = max(it["finished_at"] for it in items)
    per_worker: dict[str, int] = {}
    for it in items:
        per_worker[it["worker"] or "?"] = per_worker.get(it["worker"] or "?", 0) + 1
    return {
        "job_id": job["job_id"],
        "items": len(items),
        "wall_s": end - t0,
        "submit_s": t_submit - t0,
        "counts": shown["counts"],
        "per_worker": per_worker,
        "errors": [it["error"] for it in items if it["status"] != "done"][:3],
    }
