"""The `scale` group: what membership and election cost at 5, 20, 100 and 300 nodes, measured in the
deterministic simulator (collab_tui/sim/scale.py) on the real control core, today's design beside the one
before it (sim/legacy.py: full-mesh heartbeats at every size, no indirect probes, a jittered bully election
after a death); then 30 real daemons on loopback (bench/scale_real.py). Definitions: bench/README.md
("The `scale` group").
"""

from __future__ import annotations

from . import Figure, progress

G = "scale"
SIZES = (5, 20, 100, 300)
TARGET_IDLE_100 = 10.0  # messages/s per node
TARGET_FAILOVER_100 = 1.0  # seconds, simulated
TARGET_WALL_300 = 10.0  # seconds of wall time for the 300-node failover scenario
TARGET_FAILOVER_REAL = 2.0  # seconds, 30 real daemons


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"


def run() -> list[Figure]:
    from collab_tui.sim.scale import measure

    figs: list[Figure] = []
    for n in SIZES:
        progress(f"scale: {n} nodes (simulated), today's design and the one before ...")
        idle = 1.0 if n >= 300 else 2.0
        new = measure(n, idle=idle)
        old = measure(n, idle=idle, legacy=True)
        for name, f in (("today", new), ("before", old)):
            progress(
                f"scale:   n={n} {name}: idle {f.idle_msgs_per_node:.1f} msg/s, {f.idle_bytes_per_node / 1000:.1f} kB/s"
                f" a node; master dead -> noticed {_s(f.detect_s)}, agreed {_s(f.agree_s)}; {f.failover_msgs}"
                f" election messages ({f.failover_all_msgs} in all); {f.wall_s:.1f} s of wall time"
            )
        big = n == 100
        figs += [
            Figure(
                G,
                f"scale.idle_msgs_{n}",
                f"idle messages/s per node, n={n}",
                new.idle_msgs_per_node,
                "",
                TARGET_IDLE_100 if big else None,
                reference=f"before: {old.idle_msgs_per_node:.0f}",
                detail=f"{new.idle_bytes_per_node / 1000:.1f} kB/s (before {old.idle_bytes_per_node / 1000:.1f});"
                + (" full mesh" if n <= 8 else " fan-in to the master"),
            ),
            Figure(
                G,
                f"scale.failover_{n}",
                f"failover (dead master -> agreement), n={n}",
                new.agree_s,
                "s",
                TARGET_FAILOVER_100 if big else None,
                reference=f"before: {_s(old.agree_s)}",
                detail=f"first node off the dead master after {_s(new.detect_s)}; {new.failover_msgs} election messages"
                f" (before {old.failover_msgs}), {new.failover_all_msgs} messages in all (before {old.failover_all_msgs})",
            ),
        ]
        if n == 300:
            figs.append(
                Figure(
                    G,
                    "scale.wall_300",
                    "wall time of the 300-node failover scenario",
                    new.wall_s,
                    "s",
                    TARGET_WALL_300,
                    reference=f"before: {old.wall_s:.1f} s",
                    detail="boot, 3 s settle, 1 s idle, silent master death, to agreement",
                )
            )
    return figs + _real()


def _real() -> list[Figure]:
    from collab_tui.sim.scale import measure

    from .scale_real import N
    from .scale_real import measure as measure_real

    progress(f"scale: {N} real daemons on 127.0.0.1 (no job tasks, no ML process) ...")
    try:
        r = measure_real()
    except Exception as exc:  # noqa: BLE001 - the figure says why
        why = f"failed: {type(exc).__name__}: {exc}"[:300]
        return [
            Figure(
                G, "scale.real_failover_30", f"failover, {N} real daemons", None, "s", TARGET_FAILOVER_REAL, detail=why
            )
        ]
    sim = measure(N)
    return [
        Figure(
            G,
            "scale.real_cpu_30",
            f"idle CPU per daemon, {N} real daemons",
            100 * r["cpu_mean"],
            "%",
            detail=f"of one core; max {100 * r['cpu_max']:.1f} %, the master {100 * r['cpu_master']:.1f} %; "
            f"simulated at n={N}: {sim.idle_msgs_per_node:.1f} messages/s a node",
        ),
        Figure(
            G,
            "scale.real_rss_30",
            f"RSS per daemon, {N} real daemons",
            r["rss_mean"],
            "MiB",
            detail=f"set-up (init, {N - 1} joins, start, agreement) {r['setup_s']:.1f} s",
        ),
        Figure(
            G,
            "scale.real_failover_30",
            f"failover, {N} real daemons (master frozen)",
            r["failover_s"],
            "s",
            TARGET_FAILOVER_REAL,
            reference=f"simulated at n={N}: {_s(sim.agree_s)}",
            detail="SIGSTOP of the master -> every other daemon's status names one new master (polled)",
        ),
    ]
