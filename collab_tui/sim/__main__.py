"""``python -m collab_tui.sim --seed S`` replays one scenario and prints its faults, verdict and trace;
``--sweep N [--from S]`` runs N seeds and prints every failing one (exit 1 if any fails); ``--nodes K``
fixes the cluster size; ``--plant skip-quorum|no-grants|same-term`` breaks a rule on purpose, to watch the
invariants catch it; ``--full`` prints every traced line, not only the minimal trace."""

from __future__ import annotations

import argparse
import sys
import time

from .scenarios import run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m collab_tui.sim", description=__doc__)
    ap.add_argument("--seed", type=int, help="replay this scenario")
    ap.add_argument("--sweep", type=int, help="run this many seeds")
    ap.add_argument("--from", dest="start", type=int, default=0, help="first seed of a sweep")
    ap.add_argument("--nodes", type=int, default=None)
    ap.add_argument("--plant", default="", help="skip-quorum, no-grants or same-term")
    ap.add_argument("--full", action="store_true")
    args = ap.parse_args(argv)
    if args.seed is None and args.sweep is None:
        ap.error("give --seed S or --sweep N")
    if args.seed is not None:
        res = run(args.seed, args.nodes, args.plant, full_trace=args.full)
        print(res.report(trace=True))
        return 0 if res.ok else 1
    t0, failed = time.perf_counter(), 0
    for seed in range(args.start, args.start + args.sweep):
        res = run(seed, args.nodes, args.plant)
        if not res.ok:
            failed += 1
            print(res.report(trace=True), flush=True)
    print(f"{args.sweep} seeds from {args.start}: {failed} failed, {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
