"""What the control plane costs at a size, measured in the simulator (bench/scale_bench.py prints it):
idle messages and bytes per second per node, and a failover after the master dies: the time until a node
notices, until every live node follows one new master, and the election messages it took.

The master dies silently (power, cable: nothing closes its connections), the case the failure detector
must catch by silence; a crashed process is noticed at once by its closed connections.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .cluster import SimCluster


@dataclass
class ScaleFigures:
    n: int
    idle_msgs_per_node: float  # messages a node sends per second at idle
    idle_bytes_per_node: float
    detect_s: float | None  # master dead -> the first node declares it dead
    agree_s: float | None  # master dead -> every live node follows one new master
    failover_msgs: int  # election messages (el.*) sent from the death to agreement
    failover_all_msgs: int  # every message in that time (heartbeats included)
    wall_s: float  # real seconds the simulation took


def measure(
    n: int, seed: int = 0, idle: float = 2.0, settle: float = 3.0, bound: float = 15.0, legacy: bool = False
) -> ScaleFigures:
    """``legacy``: the design before fan-in (sim/legacy.py), for the figures beside today's."""
    from ..net.control import ControlCore
    from .legacy import LegacyCore

    t0 = time.perf_counter()
    c = SimCluster(n, seed, core_factory=LegacyCore if legacy else ControlCore)
    c.start_all()
    c.run_until(settle)
    m0, b0 = sum(c.sent.values()), c.sent_bytes
    c.run_until(settle + idle)
    msgs, nbytes = sum(c.sent.values()) - m0, c.sent_bytes - b0
    master = c.agreement()
    figs = ScaleFigures(n, msgs / n / idle, nbytes / n / idle, None, None, 0, 0, 0.0)
    if master is None:
        figs.wall_s = time.perf_counter() - t0
        return figs
    t_dead = c.now
    el0 = sum(v for k, v in c.sent.items() if k.startswith("el."))
    all0 = sum(c.sent.values())
    c.crash(master, silent=True)
    step = 0.01
    t = t_dead
    while t < t_dead + bound:
        t += step
        c.run_until(t)
        if figs.detect_s is None and any(
            c.nodes[x].core is not None and c.nodes[x].core.election.master_id != master for x in c.up_ids()
        ):
            figs.detect_s = t - t_dead
        new = c.agreement()
        if new is not None and new != master:
            figs.agree_s = t - t_dead
            break
    figs.failover_msgs = sum(v for k, v in c.sent.items() if k.startswith("el.")) - el0
    figs.failover_all_msgs = sum(c.sent.values()) - all0
    figs.wall_s = time.perf_counter() - t0
    return figs
