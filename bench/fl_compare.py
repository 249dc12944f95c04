"""Figures of the `fl` group that set one run beside another, measured in the same bench run: the cycle
breakdown of a run, secure aggregation against the same run in the clear, and our cluster against Flower
1.41 on the same protocol (``../shared/bench/peers/run_flower.sh``, as root; skipped with a line saying
why when it cannot run). Definitions: bench/README.md ("The `fl` group").
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from pathlib import Path

from . import Figure, progress, stats

G = "fl"
TARGET_CYCLE_VS_FIT = 1.15  # round cycle <= 1.15 x the slowest client's fit
TARGET_CYCLE_VS_FLOWER = 0.5  # our round cycle <= 0.5 x Flower's round wall
TARGET_TOTAL_VS_FLOWER = 0.6
TARGET_RSS_VS_FLOWER = 0.8
TARGET_SECURE_OVERHEAD = 15.0  # % of the round cycle
FLOWER_TIMEOUT_S = 900.0  # its first run installs Flower and TensorFlow in their own venv


def cycles(res: dict) -> list[float]:
    at = res["rounds_at"]
    return [at[r] - at[r - 1] for r in sorted(at) if r - 1 in at]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def cycle_breakdown(res: dict) -> tuple[list[Figure], str]:
    """Where a cycle's milliseconds go (medians over the rounds), and the cycle / fit figure."""
    hist = res["history"]
    cyc = cycles(res)
    if not cyc:
        return [], "no cycle measured"
    bd = res.get("breakdown") or {}
    t = {
        k: _median([float((h.get("timing") or {}).get(k, 0.0)) for h in hist[1:]])
        for k in ("aggregate", "server_eval", "store")
    }
    fit = _median([float(h["fit_seconds_max"]) for h in hist[1:]])
    wall = _median([float(h["wall_seconds"]) for h in hist[1:]])
    cycle = _median(cyc)
    parts = {
        "dispatch (round start -> last client trains)": _median(bd.get("dispatch", [])),
        "longest client call (train -> upload)": _median(bd.get("call", [])),
        "  of which the slowest fit": fit,
        "tail (last upload -> aggregated)": _median(bd.get("tail", [])),
        "  of which screen + aggregate": t["aggregate"],
        "registry write + run state": t["store"],
        "rest (replication, events, next round's start)": cycle - wall - t["store"],
        "  server eval (2,000 images; overlaps the next fits)": t["server_eval"],
    }
    lines = [f"fl: cycle breakdown (medians over rounds 2..{len(hist)}), cycle {cycle * 1000:.0f} ms:"]
    lines += [f"fl:   {name:<52} {ms * 1000:7.1f} ms" for name, ms in parts.items()]
    text = "\n".join(lines)
    fig = Figure(
        G,
        "fl.cycle_vs_fit",
        "round cycle / slowest client's fit",
        cycle / fit if fit else None,
        "x",
        TARGET_CYCLE_VS_FIT,
        detail=f"cycle {cycle:.3f} s, fit {fit:.3f} s; "
        + ", ".join(f"{k.strip()} {v * 1000:.0f} ms" for k, v in parts.items() if not k.startswith("  ")),
    )
    return [fig], text


def secure_figures(plain: dict, secure: dict) -> list[Figure]:
    pc, sc = _median(cycles(plain)), _median(cycles(secure))
    own = [float((h.get("secure") or {}).get("seconds", 0.0)) for h in secure["history"]]
    acc_p = plain["history"][-1]["server_eval"]["accuracy"]
    acc_s = secure["history"][-1]["server_eval"]["accuracy"]
    return [
        Figure(
            G,
            "fl.secure_overhead_pct",
            "secure aggregation: round cycle overhead",
            100.0 * (sc - pc) / pc if pc else None,
            "%",
            TARGET_SECURE_OVERHEAD,
            detail=f"cycle median {sc:.3f} s secure vs {pc:.3f} s in the clear, same protocol, same run; the protocol's"
            f" own steps (keys, shares, unmask, unmasking) median {_median(own) * 1000:.0f} ms a round",
            samples=cycles(secure),
        ),
        Figure(
            G,
            "fl.secure_final_acc",
            "secure aggregation: final accuracy",
            acc_s,
            "",
            reference=f"same run in the clear: {acc_p:.4f}",
            detail="FedAvg of the masked updates: the same sum up to fixed-point rounding (2^-24)",
        ),
    ]


def run_flower(shared_bench: Path) -> dict:
    """``bash peers/run_flower.sh`` (label shards): its result line and per-round rows. Raises with why."""
    script = shared_bench / "peers" / "run_flower.sh"
    if os.geteuid() != 0:
        raise PermissionError("run_flower.sh makes a network namespace: run the bench as root")
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=FLOWER_TIMEOUT_S, check=False)
    result, rows = None, []
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "flower_result" in rec:
            result = rec["flower_result"]
        elif isinstance(rec.get("round"), int) and rec["round"] >= 1 and "round_wall_s" in rec and "client" not in rec:
            rows.append(rec)
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"run_flower.sh exited {proc.returncode}: {(proc.stderr or proc.stdout)[-400:]}")
    result["rows"] = rows
    return result


def flower_figures(ours: dict, t_cluster0: float, flower: dict | None, why: str = "") -> list[Figure]:
    """Our cycle, total wall and summed RSS over Flower's, both measured in this bench run."""
    cyc = _median(cycles(ours))
    at = ours["rounds_at"]
    total = at[max(at)] - t_cluster0 if at else None
    rss = ours["rss"][0] if ours.get("rss") else None
    if flower is None:
        return [
            Figure(G, key, name, None, "x", target, detail=f"Flower could not run: {why}"[:300])
            for key, name, target in (
                ("fl.cycle_vs_flower", "round cycle / Flower's round wall", TARGET_CYCLE_VS_FLOWER),
                ("fl.total_vs_flower", "total wall / Flower's", TARGET_TOTAL_VS_FLOWER),
                ("fl.rss_vs_flower", "summed RSS / Flower's", TARGET_RSS_VS_FLOWER),
            )
        ]
    walls = [float(r["round_wall_s"]) for r in flower["rows"]]
    fw = stats(walls).median if walls else float((flower.get("summary") or {}).get("mean_round_wall_s") or 0)
    ft = float(flower["total_wall_s"])
    frss = float(flower["peak_rss_kb_sum"]) / 1024
    facc = (flower.get("summary") or {}).get("final_accuracy")
    progress(
        f"fl: Flower 1.41, same protocol, this run: round wall median {fw:.3f} s, total {ft:.1f} s, "
        f"summed peak RSS {frss:.0f} MiB, final accuracy {facc}"
    )
    return [
        Figure(
            G,
            "fl.cycle_vs_flower",
            "round cycle / Flower's round wall",
            cyc / fw if fw else None,
            "x",
            TARGET_CYCLE_VS_FLOWER,
            reference=f"Flower 1.41 this run: {fw:.3f} s median",
            detail=f"ours {cyc:.3f} s (commit -> next commit, server eval included); Flower: send -> evaluated",
        ),
        Figure(
            G,
            "fl.total_vs_flower",
            "total wall / Flower's",
            total / ft if total and ft else None,
            "x",
            TARGET_TOTAL_VS_FLOWER,
            reference=f"Flower 1.41 this run: {ft:.1f} s",
            detail=f"ours {total:.1f} s: 4 daemons started -> round 20 committed" if total else "",
        ),
        Figure(
            G,
            "fl.rss_vs_flower",
            "summed RSS / Flower's",
            rss / frss if rss and frss else None,
            "x",
            TARGET_RSS_VS_FLOWER,
            reference=f"Flower 1.41 this run: {frss:.0f} MiB peak, 5 processes",
            detail=f"ours {rss:.0f} MiB at the end of training (4 daemons + their ML processes)" if rss else "",
        ),
    ]
