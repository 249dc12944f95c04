"""`python -m bench [GROUP ...] [--json] [--strict] [--list]`: run benchmark groups, print the figures.

Groups are the modules ``bench/<group>_bench.py`` that define ``run() -> list[Figure]`` (found by name,
so a new group is a new file). With no GROUP every group runs. Progress goes to stderr; the table (or
the JSON with ``--json``) goes to stdout. Exit code: 0 ok, 1 a group crashed (or, with ``--strict``,
a figure missed its target), 2 usage.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from . import Figure, progress

ORDER = ["net", "jobs", "fl", "tui"]  # groups listed here run first, in this order; others follow by name


def discover() -> list[str]:
    names = [
        m.name[: -len("_bench")]
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.endswith("_bench")
    ]
    return sorted(names, key=lambda g: (ORDER.index(g) if g in ORDER else len(ORDER), g))


def run_group(group: str) -> tuple[list[Figure], str | None]:
    try:
        module = importlib.import_module(f"bench.{group}_bench")
        figures = list(module.run())
    except Exception:
        return [], traceback.format_exc()
    return figures, None


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit in ("MB/s", "MB", "MiB"):
        return f"{value:.1f} {unit}"
    if unit == "x":
        return f"{value:.2f}"
    if abs(value) >= 10_000:
        return f"{value:,.0f} {unit}".strip()
    return f"{value:.4g} {unit}".strip()


def fmt_target(fig: Figure) -> str:
    if fig.target is None:
        return "-"
    return f"{'≤' if fig.op == '<=' else '≥'} {fmt_value(fig.target, fig.unit)}"


def table(figures: list[Figure]) -> str:
    head = ["figure", "ours", "target", "pass", "reference", "detail"]
    rows = [
        [
            f.name,
            fmt_value(f.value, f.unit),
            fmt_target(f),
            {True: "PASS", False: "FAIL", None: "info"}[f.passed],
            f.reference or "-",
            f.detail,
        ]
        for f in figures
    ]
    widths = [max(len(r[c]) for r in [head] + rows) for c in range(len(head) - 1)]
    lines = []
    for r in [head] + rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
        if r is head:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    return "\n".join(lines)


def _loadavg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def main(argv: list[str] | None = None) -> int:
    known = discover()
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run benchmark groups and print the figures "
        "(ours, target, pass/fail, reference). See bench/README.md.",
    )
    ap.add_argument("groups", nargs="*", metavar="GROUP", help=f"groups to run (default: all of {', '.join(known)})")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a figure misses its target")
    ap.add_argument("--list", action="store_true", help="list the groups and exit")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(known))
        return 0
    unknown = [g for g in args.groups if g not in known]
    if unknown:
        ap.error(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(known)}")
    groups = args.groups or known
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    t0 = time.monotonic()
    load0 = _loadavg()
    for group in groups:
        progress(f"group {group} ...")
        tg = time.monotonic()
        figs, err = run_group(group)
        figures += figs
        if err:
            errors[group] = err
            progress(f"group {group} CRASHED:\n{err}")
        progress(f"group {group} done in {time.monotonic() - tg:.1f} s")
    wall = time.monotonic() - t0
    load = _loadavg()
    if args.json:
        print(
            json.dumps(
                {
                    "figures": [f.to_dict() for f in figures],
                    "errors": errors,
                    "wall_s": round(wall, 2),
                    "loadavg_start_end": [load0, load],
                    "cpus": os.cpu_count(),
                },
                indent=2,
            )
        )
    else:
        print(table(figures))
        failed = [f.name for f in figures if f.passed is False]
        print(
            f"\n{len(figures)} figures, {sum(f.passed is True for f in figures)} pass, {len(failed)} fail, "
            f"{sum(f.passed is None for f in figures)} informational; {wall:.1f} s; "
            f"{os.cpu_count()} CPUs, 1-min load average {load0:.2f} at start, {load:.2f} at end"
            + (f"; crashed groups: {', '.join(errors)}" if errors else "")
        )
    if errors or (args.strict and any(f.passed is False for f in figures)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
