"""30 real `collab daemon` processes on 127.0.0.1 for the `scale` group: the simulator's model held against
reality. Each daemon is small: it runs no job tasks (`job_threads = -1`) and starts no ML process. Measured:
idle CPU and RSS per daemon, and a failover: the master is frozen (SIGSTOP: its sockets stay open, so
the others must notice its silence, like a power cut), until every other daemon reports one new master;
then it is killed. Every process here is one this module started, ended by its PID.
"""

from __future__ import annotations

import os
import signal
import time

from . import progress

N = 30
IDLE_S = 10.0


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _new_master(c, others: list[int], old: str, deadline: float) -> str:
    """Poll the others' `status` (never the frozen node's: its control socket would hang) until they all
    name one master other than ``old``, and that one says it is master."""
    while time.monotonic() < deadline:
        named = {c.call(i, "status", timeout=2.0)["master"] for i in others}
        if len(named) == 1 and (new := named.pop()) not in (None, old):
            if c.call(c.index_of(new), "status", timeout=2.0)["role"] == "master":
                return new
        time.sleep(0.01)
    raise TimeoutError("no new master within 30 s")


def measure(n: int = N) -> dict:
    from collab_tui.localcluster import LocalCluster
    from collab_tui.node.resources import process_rss

    t0 = time.monotonic()
    c = LocalCluster(n, mdns=False, heartbeat=0.25, env={"COLLAB_JOB_THREADS": "-1"})
    try:
        c.provision()
        c.start_all()
        master = c.wait_agreement(timeout=60)
        setup = time.monotonic() - t0
        progress(f"scale: {n} real daemons up and agreed in {setup:.1f} s")
        time.sleep(3.0)
        pids = {i: c.procs[i].pid for i in c.running()}
        before = {i: _cpu_s(p) for i, p in pids.items()}
        time.sleep(IDLE_S)
        cpu = {i: (_cpu_s(p) - before[i]) / IDLE_S for i, p in pids.items()}
        rss = {i: (process_rss(p) or 0) / 2**20 for i, p in pids.items()}
        m = c.index_of(master)
        others = [i for i in c.running() if i != m]
        os.kill(pids[m], signal.SIGSTOP)
        t_stop = time.monotonic()
        try:
            new = _new_master(c, others, master, deadline=t_stop + 30)
            failover = time.monotonic() - t_stop
        finally:
            c.kill(m)
        return {
            "n": n,
            "setup_s": setup,
            "cpu_mean": sum(cpu.values()) / len(cpu),
            "cpu_max": max(cpu.values()),
            "cpu_master": cpu[m],
            "rss_mean": sum(rss.values()) / len(rss),
            "failover_s": failover,
            "new_master": new,
        }
    finally:
        c.close()
