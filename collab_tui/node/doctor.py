"""`collab doctor`, the node's side: the checks that need the running daemon.

Each check is a plain dict ``{"name", "status", "detail", "hint"}`` with ``status`` one of ``PASS``, ``WARN``,
``FAIL`` (`check`). The control command `doctor` (`commands.py`) returns `run_checks`'s report; the CLI
(`cli/doctor.py`) adds what it checks from outside the daemon (that it answers, that its port is reachable,
that the static peers answer) and prints them all.

The judgements are pure functions of what was measured (`skew_check`, `cert_check`, `disk_check`,
`version_check`, ...) so that they are tested without a cluster; `measure_skew` takes the clock and the
ping as arguments for the same reason. `ml_imports` runs in the node's ML process (`ml/mlproc.py`: it is
pickled by reference, so it is a top-level function of this module and imports TensorFlow only there).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from .. import PROTOCOL_VERSION, __version__
from ..textfmt import short_id

log = logging.getLogger("collab.doctor")

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
SKEW_WARN = 1.0  # seconds
SKEW_FAIL = 30.0
CERT_WARN_DAYS = 30
DISK_WARN = 1024**3  # bytes free in the home
DISK_FAIL = 100 * 1024**2
PING_TIMEOUT = 3.0
ML_TIMEOUT = 60.0
NTP_HINT = "synchronise the clocks with NTP (e.g. `timedatectl set-ntp true`, or chrony) on every machine"


def check(name: str, status: str, detail: str, hint: str = "") -> dict:
    return {"name": name, "status": status, "detail": detail, "hint": hint}


def worst(statuses: Iterable[str]) -> str:
    found = set(statuses)
    return FAIL if FAIL in found else WARN if WARN in found else PASS


# --------------------------------------------------------------------------- clock skew
def skew_of(sent: float, pong: float, received: float) -> float:
    """The peer's clock minus ours: its answer ``pong`` against the midpoint of our round trip."""
    return pong - (sent + received) / 2.0


async def measure_skew(
    ping: Callable[[], Awaitable[dict]], clock: Callable[[], float] = time.time
) -> tuple[float, float]:
    """One ping round trip: (skew in seconds, round trip in seconds). ``ping`` returns the peer's
    ``{"pong": its time.time()}``; ``clock`` is ours (a fake in the tests)."""
    sent = clock()
    reply = await ping()
    received = clock()
    pong = reply.get("pong") if isinstance(reply, dict) else None
    if not isinstance(pong, (int, float)) or isinstance(pong, bool):
        raise ValueError(f"no time in the ping answer: {reply!r}")
    return skew_of(sent, float(pong), received), received - sent


def skew_check(results: dict[str, tuple[float, float] | str], expected_peers: int = 0) -> dict:
    """``results``: peer name -> (skew, round trip) or the error of its ping. WARN over `SKEW_WARN`,
    FAIL over `SKEW_FAIL` (certificates and join tokens are checked against the clock)."""
    name = "clock_skew"
    if not results:
        if expected_peers:
            return check(name, WARN, "no peer is connected: nothing to compare with", "see the checks above")
        return check(name, PASS, "no other member to compare with")
    parts, statuses = [], []
    for peer, res in sorted(results.items()):
        if isinstance(res, str):
            parts.append(f"{peer}: no answer ({res})")
            statuses.append(WARN)
            continue
        skew, rtt = res
        parts.append(f"{peer} {skew:+.3f} s (round trip {rtt * 1000:.0f} ms)")
        statuses.append(FAIL if abs(skew) > SKEW_FAIL else WARN if abs(skew) > SKEW_WARN else PASS)
    status = worst(statuses)
    return check(name, status, "; ".join(parts), "" if status == PASS else NTP_HINT)


# --------------------------------------------------------------------------- certificates
def cert_check(
    name: str, what: str, not_after: dt.datetime, now: dt.datetime, fix: str, warn_under: dt.timedelta | None = None
) -> dict:
    """WARN under ``warn_under`` left (`CERT_WARN_DAYS` days unless given), FAIL once expired."""
    left = not_after - now
    days = left.total_seconds() / 86400
    when = not_after.strftime("%Y-%m-%d %H:%M UTC")
    if left.total_seconds() <= 0:
        return check(name, FAIL, f"{what} expired on {when}", fix)
    if left < (warn_under if warn_under is not None else dt.timedelta(days=CERT_WARN_DAYS)):
        return check(name, WARN, f"{what} expires on {when} (in {days:.0f} days)", fix)
    return check(name, PASS, f"{what} valid until {when} ({days:.0f} days)")


def cert_checks(ident, now: dt.datetime | None = None) -> list[dict]:
    """The node certificate renews itself at a third of its lifetime left: a quarter left means renewal
    keeps failing (no signer reachable)."""
    from ..net.pki import lifetime

    now = now or dt.datetime.now(dt.UTC)
    return [
        cert_check(
            "node_certificate",
            "this node's certificate",
            ident.cert.not_valid_after_utc,
            now,
            "it renews from the root or an admin while a third of its lifetime is left: start one of them; "
            "once expired, get a token on an admin (`collab invite`) and run `collab join --force TOKEN` here",
            lifetime(ident.cert) / 4,
        ),
        cert_check(
            "ca_certificate",
            "the cluster CA",
            ident.ca_cert.not_valid_after_utc,
            now,
            "the CA's expiry ends the cluster: make a new one (`collab init`) and re-join every node to it",
        ),
    ]


# --------------------------------------------------------------------------- disk
def disk_check(home: Path, free: int | None = None) -> dict:
    """WARN under 1 GiB free in the home, FAIL under 100 MiB."""
    from ..textfmt import human_bytes

    name = "disk_space"
    if free is None:
        try:
            free = shutil.disk_usage(home).free
        except OSError as exc:
            return check(name, FAIL, f"cannot read the free space of {home}: {exc}", "check that the home exists")
    text = f"{human_bytes(free)} free in {home}"
    hint = "free some space (old job results and models are in HOME/state), or move the home to a bigger disk"
    if free < DISK_FAIL:
        return check(name, FAIL, text, hint)
    if free < DISK_WARN:
        return check(name, WARN, text, hint)
    return check(name, PASS, text)


# --------------------------------------------------------------------------- versions
def version_check(rows: list[dict], mine: str = __version__, proto: int = PROTOCOL_VERSION) -> dict:
    """``rows``: one per connected peer, ``{"name", "version" (None when the peer does not say),
    "protocol"}``. FAIL when any version or protocol differs from ours."""
    name = "versions"
    if not rows:
        return check(name, PASS, f"collab {mine}, protocol {proto} (no peer connected to compare with)")
    odd = [r for r in rows if (r.get("version") and r["version"] != mine) or r.get("protocol") not in (None, proto)]
    if odd:
        what = ", ".join(f"{r['name']} runs collab {r.get('version') or '?'} protocol {r.get('protocol')}" for r in odd)
        return check(
            name,
            FAIL,
            f"this node runs collab {mine} protocol {proto}; {what}",
            "install the same collab version on every node (then restart their daemons)",
        )
    silent = [r["name"] for r in rows if not r.get("version")]
    detail = f"collab {mine}, protocol {proto} on all {len(rows) + 1} nodes"
    if silent:
        detail = (
            f"protocol {proto} on all {len(rows) + 1} nodes; collab {mine} here, "
            f"{len(silent)} peer(s) do not report their collab version ({', '.join(sorted(silent))})"
        )
    return check(name, PASS, detail)


def peer_versions(node) -> list[dict]:
    """What each connected peer says of its version: its HELLO (protocol, and ``version`` when it sends
    one), else its latest heartbeat."""
    rows = []
    for peer_id, conn in list(node.peers.conns.items()):
        hello = getattr(conn, "hello", None) or {}
        info = node.membership.get(peer_id)
        extra = (info.extra if info is not None else None) or {}
        version = hello.get("version") or extra.get("version")
        name = (info.name if info is not None else "") or hello.get("name") or short_id(peer_id)
        rows.append(
            {"name": name, "version": version if isinstance(version, str) else None, "protocol": hello.get("proto")}
        )
    return rows


# --------------------------------------------------------------------------- mDNS
def mdns_instances(discovery) -> set[str]:
    """Instance names of collab services in the mDNS cache (any cluster, this node's excluded)."""
    try:
        from zeroconf.const import _CLASS_IN, _TYPE_PTR

        from ..config import SERVICE_TYPE

        zc = discovery._azc.zeroconf
        records = zc.cache.get_all_by_details(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN)
        names = {r.alias for r in records}
    except Exception as exc:  # zeroconf internals: a report, never a crash
        log.debug("mDNS cache not readable: %s", exc)
        return set()
    return names - {discovery.instance_name}


def mdns_check(
    enabled: bool,
    running: bool,
    interfaces: list[str],
    seen: set[str],
    members: dict[str, str],
    static_peers: int,
) -> dict:
    """``seen``: mDNS instance names heard; ``members``: the other members (node id -> name). An instance
    name ends with the node id's first 8 hex digits (`net/discovery.py`)."""
    name = "mdns"
    where = ", ".join(interfaces) if interfaces else "all interfaces"
    blocked = "multicast may be blocked (UDP 5353): give each node its peers with `--peer IP:7373`"
    if not enabled:
        if static_peers or members:
            return check(name, PASS, f"off; static peers: {static_peers}, known members: {len(members)}")
        return check(name, WARN, "off and no static peer: this node finds nobody", "turn it on, or use --peer IP:7373")
    if not running:
        return check(name, FAIL if not (static_peers or members) else WARN, f"on ({where}) but did not start", blocked)
    found = sorted(n for nid, n in members.items() if any(s.split(".")[0].endswith(nid[:8]) for s in seen))
    detail = f"on ({where}); {len(seen)} collab service(s) heard, {len(found)} of {len(members)} other member(s)"
    if found:
        detail += f" ({', '.join(found)})"
    if members and not found:
        return check(name, WARN, detail, blocked)
    return check(name, PASS, detail)


# --------------------------------------------------------------------------- ML process
def ml_imports() -> dict:
    """Run in the ML process: import TensorFlow (Keras) and OpenCV; their versions or the errors."""
    out: dict = {}
    t0 = time.perf_counter()
    try:
        import tensorflow as tf

        out["tensorflow"] = tf.__version__
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        out["tensorflow_error"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        import keras

        out["keras"] = keras.__version__
    except Exception as exc:  # noqa: BLE001
        out["keras_error"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        from ..ml.cvload import import_cv2

        out["opencv"] = import_cv2().__version__
    except Exception as exc:  # noqa: BLE001
        out["opencv_error"] = f"{type(exc).__name__}: {exc}"[:300]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def ml_check(res: dict | str) -> dict:
    """``res``: `ml_imports`'s answer, or why the ML process gave none."""
    name = "ml_imports"
    hint = "install the ML extras in the daemon's environment (tensorflow, opencv-python-headless)"
    if isinstance(res, str):
        return check(name, FAIL, f"the ML process gave no answer: {res}", "see the node's log (`collab logs`)")
    errors = [f"{k.removesuffix('_error')}: {v}" for k, v in res.items() if k.endswith("_error")]
    found = ", ".join(f"{k} {res[k]}" for k in ("tensorflow", "keras", "opencv") if k in res)
    if errors:
        return check(name, FAIL, "; ".join(([found] if found else []) + errors), hint)
    return check(name, PASS, f"{found} (in the ML process, {res.get('seconds', 0)} s)")


async def _ml(home: Path, timeout: float) -> dict | str:
    from ..ml.mlproc import for_node

    try:
        return await asyncio.wait_for(for_node(home).call(ml_imports), timeout)
    except TimeoutError:
        return f"no answer within {timeout:.0f} s"
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"[:300]


# --------------------------------------------------------------------------- the report
async def _skews(node, timeout: float) -> dict[str, tuple[float, float] | str]:
    async def one(peer_id: str, conn) -> tuple[str, tuple[float, float] | str]:
        info = node.membership.get(peer_id)
        name = (info.name if info is not None else "") or short_id(peer_id)
        try:
            return name, await measure_skew(lambda: conn.request({"t": "ping"}, timeout))
        except Exception as exc:  # noqa: BLE001
            return name, f"{type(exc).__name__}: {exc}"[:200] if str(exc) else type(exc).__name__

    pairs = await asyncio.gather(*(one(pid, c) for pid, c in list(node.peers.conns.items())))
    return dict(pairs)


async def run_checks(node, ml: bool = True, ml_timeout: float = ML_TIMEOUT) -> dict:
    """Checks 3 (mDNS), 5 (clock skew), 6 (certificates), 7 (disk), 8 (ML imports), 9 (versions), and
    what the CLI needs for its own checks (the static peers, this node's version)."""
    cfg = node.cfg
    others = {
        m["node_id"]: m.get("name") or short_id(m["node_id"])
        for m in node.member_list()[1:] + list(node._known.get("members", []) or [])
        if m.get("node_id") and m["node_id"] != node.node_id and not node.is_revoked(m["node_id"])
    }
    skews = await _skews(node, PING_TIMEOUT)  # before the ML process starts and loads the CPU
    ml_task = asyncio.ensure_future(_ml(node.home, ml_timeout)) if ml else None
    discovery = node.discovery
    checks = [
        mdns_check(
            bool(cfg.mdns),
            discovery is not None,
            list(cfg.mdns_interfaces or []),
            mdns_instances(discovery) if discovery is not None else set(),
            others,
            len(cfg.peers),
        ),
        skew_check(skews, expected_peers=len(others)),
        *cert_checks(node.ident),
        disk_check(node.home),
    ]
    if ml_task is not None:
        checks.append(ml_check(await ml_task))
    else:
        checks.append(check("ml_imports", WARN, "not checked (--no-ml)", "run `collab doctor` without --no-ml"))
    checks.append(version_check(peer_versions(node)))
    return {
        "checks": checks,
        "static_peers": list(cfg.peers),
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
    }
