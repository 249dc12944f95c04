"""The `net` group: discovery, failover, graceful handover, TLS handshakes, blob throughput (mTLS vs TCP),
`collab --help` wall time and idle daemon memory. Definitions: bench/README.md.

Each sub-benchmark is guarded: one that fails yields figures with value None (and the reason in the
detail column) and the others still run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import Figure, progress, stats

G = "net"
HANDSHAKES = 50
THROUGHPUT_REPS = 3
HELP_RUNS = 10


def _failed(keys_names: list[tuple[str, str, float | None, str]], exc: BaseException) -> list[Figure]:
    why = f"failed: {type(exc).__name__}: {exc}"[:300]
    return [Figure(G, key, name, None, unit, target, detail=why) for key, name, target, unit in keys_names]


def _tls_figures(a, b) -> list[Figure]:
    from . import net_inproc as ip

    progress(f"net: {HANDSHAKES} mutual-TLS 1.3 handshakes (+ {HANDSHAKES} with HELLO/ACK)")
    tls = asyncio.run(ip.handshakes(a, b, HANDSHAKES, hello=False))
    full = asyncio.run(ip.handshakes(a, b, HANDSHAKES, hello=True))
    ctx = ip.context_build_times(b)
    s, f, c = stats(tls), stats(full), stats(ctx)
    return [
        Figure(
            G,
            "net.tls_handshake_ms",
            "mTLS 1.3 handshake (TLS only)",
            s.median * 1000,
            "ms",
            detail=f"median of {s.n}, min {s.min * 1000:.2f} max {s.max * 1000:.2f} ms; P-256, in-process",
            samples=[x * 1000 for x in tls],
        ),
        Figure(
            G,
            "net.tls_hello_ms",
            "mTLS 1.3 handshake + HELLO/ACK",
            f.median * 1000,
            "ms",
            detail=f"median of {f.n}, min {f.min * 1000:.2f} max {f.max * 1000:.2f} ms; until the dialer holds the ACK",
            samples=[x * 1000 for x in full],
        ),
        Figure(
            G,
            "net.client_ctx_ms",
            "client_ssl_context() build (once per node)",
            c.median * 1000,
            "ms",
            detail=f"median of {c.n}; built once per node and cached by PeerTable",
            samples=[x * 1000 for x in ctx],
        ),
    ]


def _throughput_figures(a, b) -> list[Figure]:
    from . import net_inproc as ip

    data = os.urandom(ip.BLOB)
    figs = []
    for label, fn in (("same process", None), ("receiver forked", ip.throughput_forked)):
        progress(f"net: blob throughput, {label}: {THROUGHPUT_REPS} x {ip.BLOBS} x 4 MiB over mTLS and over TCP")
        res = {}
        for tls in (True, False):
            if fn is None:
                res[tls] = asyncio.run(ip.throughput_inproc(a, b, tls, THROUGHPUT_REPS, data))
            else:
                res[tls] = fn(a, b, tls, THROUGHPUT_REPS, data)
        mt = [ip.mbps(x) for x in res[True]]
        mp = [ip.mbps(x) for x in res[False]]
        st, sp = stats(mt), stats(mp)
        key = "inproc" if fn is None else "forked"
        figs += [
            Figure(
                G,
                f"net.blob_tls_{key}_mbps",
                f"blob throughput mTLS ({label})",
                st.median,
                "MB/s",
                detail=f"median of {st.n} x 64 MiB in 4 MiB blobs, min {st.min:.0f} max {st.max:.0f}; SHA-256 checked",
                samples=mt,
            ),
            Figure(
                G,
                f"net.blob_tcp_{key}_mbps",
                f"blob throughput raw TCP ({label})",
                sp.median,
                "MB/s",
                detail=f"median of {sp.n}, min {sp.min:.0f} max {sp.max:.0f}",
                samples=mp,
            ),
            Figure(
                G,
                f"net.blob_ratio_{key}",
                f"mTLS / TCP throughput ratio ({label})",
                st.median / sp.median,
                "x",
                0.5,
                op=">=",
                detail="ratio of the medians",
            ),
        ]
    return figs


def _help_figure() -> list[Figure]:
    exe = Path(sys.executable).parent / "collab"
    if not exe.exists():
        exe = Path(shutil.which("collab") or exe)
    progress(f"net: `{exe} --help` x {HELP_RUNS} (+1 warm-up)")
    samples = []
    for k in range(HELP_RUNS + 1):
        t0 = time.perf_counter()
        subprocess.run(
            [str(exe), "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=True
        )
        if k:
            samples.append(time.perf_counter() - t0)
    floor = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], timeout=30, check=True)
        floor.append(time.perf_counter() - t0)
    s = stats(samples)
    return [
        Figure(
            G,
            "net.help_wall_s",
            "`collab --help` wall time",
            s.median,
            "s",
            0.3,
            detail=f"median of {s.n}, min {s.min:.3f} max {s.max:.3f} s; bare `python -c pass` "
            f"{stats(floor).median:.3f} s",
            samples=samples,
        )
    ]


def run() -> list[Figure]:
    from . import net_cluster
    from . import net_inproc as ip

    figs: list[Figure] = []
    try:
        figs += net_cluster.run()
    except Exception as exc:
        figs += _failed(
            [
                ("net.discovery_s", "discovery, 3 nodes", 2.0, "s"),
                ("net.idle_rss_mb", "idle daemon RSS (max of 3)", 80.0, "MiB"),
                ("net.failover_s", "failover (SIGKILL master)", 2.0, "s"),
                ("net.leave_handover_s", "graceful leave (SIGTERM master)", 0.5, "s"),
            ],
            exc,
        )
    base = Path(tempfile.mkdtemp(prefix="collab-bench-"))
    try:
        a, b = ip.make_identities(base)
        for fn, fallback in (
            (_tls_figures, [("net.tls_handshake_ms", "mTLS 1.3 handshake", None, "ms")]),
            (_throughput_figures, [("net.blob_ratio_inproc", "mTLS / TCP throughput ratio", 0.5, "x")]),
        ):
            try:
                figs += fn(a, b)
            except Exception as exc:
                figs += _failed(fallback, exc)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    from . import net_lan

    figs += net_lan.run()
    try:
        figs += _help_figure()
    except Exception as exc:
        figs += _failed([("net.help_wall_s", "`collab --help` wall time", 0.3, "s")], exc)
    order = [
        "discovery",
        "daemon_startup",
        "failover",
        "leave",
        "heal",
        "join",
        "tls",
        "client_ctx",
        "blob",
        "help",
        "idle_rss",
    ]
    return sorted(figs, key=lambda f: next((k for k, o in enumerate(order) if f.key[4:].startswith(o)), len(order)))
