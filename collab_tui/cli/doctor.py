"""`collab doctor`: why nodes don't see each other, one check per line with what to do.

The CLI checks what it can see from outside the daemon: that the daemon answers on its control socket
(1), that its listen port takes a TCP connection on every advertised address (2) and that the static
peers do (4). The daemon's `doctor` command (`node/doctor.py`) adds mDNS (3), clock skew (5),
certificates (6), disk space (7), the ML imports (8) and versions (9). Exit code 0 when no check FAILs,
1 when one does, 3 when no daemon runs. No heavy import here: TensorFlow is imported in the daemon's ML
process only.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from .common import HomeOpt, JsonOpt, home_of
from .output import EXIT_ERROR, EXIT_NO_NODE, Out

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
CONNECT_TIMEOUT = 2.0
START_HINT = "start it: collab daemon"
NODE_SIDE = ("mdns", "clock_skew", "node_certificate", "ca_certificate", "disk_space", "ml_imports", "versions")


def _check(name: str, status: str, detail: str, hint: str = "") -> dict:
    return {"name": name, "status": status, "detail": detail, "hint": hint}


def tcp_probe(addr: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """None when ``host:port`` takes a TCP connection, else why not."""
    host, sep, port = addr.strip().rpartition(":")
    if not sep or not port.isdigit():
        return "not host:port"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except ConnectionRefusedError:
        return "connection refused"
    except OSError as exc:
        return exc.strerror or str(exc)


def port_check(addrs: list[str], probe=tcp_probe) -> dict:
    name = "listen_port"
    if not addrs:
        return _check(name, FAIL, "the daemon advertises no address", "set --host/--advertise to this machine's IP")
    bad = {a: why for a in addrs if (why := probe(a)) is not None}
    if not bad:
        return _check(name, PASS, f"{', '.join(addrs)} reachable")
    port = addrs[0].rpartition(":")[2]
    detail = "; ".join(f"{a}: {why}" for a, why in bad.items())
    ok = [a for a in addrs if a not in bad]
    if ok:
        detail += f" (reachable: {', '.join(ok)})"
    return _check(
        name,
        FAIL,
        detail,
        f"open TCP {port} in the firewall (e.g. `ufw allow {port}/tcp`), or advertise a reachable address "
        "with --advertise IP",
    )


def static_peers_check(peers: list[str], probe=tcp_probe) -> dict:
    name = "static_peers"
    if not peers:
        return _check(name, PASS, "none configured (peers are found by mDNS and the known members)")
    bad = {p: why for p in peers if (why := probe(p)) is not None}
    if not bad:
        return _check(name, PASS, f"{', '.join(peers)} answer")
    detail = "; ".join(f"{p}: {why}" for p, why in bad.items())
    if len(bad) < len(peers):
        detail += f" ({len(peers) - len(bad)} of {len(peers)} answer)"
    return _check(
        name,
        FAIL,
        detail,
        "check that its daemon runs and that TCP 7373 (its port) is open there; fix the address in --peer / "
        "config.toml `peers`",
    )


def _static_from_config(home: Path) -> list[str]:
    from ..config import ConfigError, load_config

    try:
        return list(load_config(home).peers)
    except ConfigError:
        return []


def collect(home: Path, ml: bool = True, ml_timeout: float = 60.0, probe=tcp_probe) -> list[dict]:
    """Every check, in order: the CLI's and the daemon's."""
    from ..client import Client, ControlError, NoNodeRunning

    try:
        client = Client(home, timeout=10.0)
    except NoNodeRunning:
        client = None
    except OSError as exc:
        return _down(home, f"its control socket does not answer ({exc})", probe)
    if client is None:
        return _down(home, f"no daemon runs for {home}", probe)
    with client:
        try:
            st = client.status()
        except (ControlError, OSError, ValueError) as exc:
            return _down(home, f"the control socket does not answer `status` ({exc})", probe)
        checks = [
            _check("daemon", PASS, f"{st.get('name')} (pid {st.get('pid')}, {st.get('role')}, term {st.get('term')})")
        ]
        addrs = list(st.get("addrs") or ([st["addr"]] if st.get("addr") else []))
        checks.append(port_check(addrs, probe))
        try:
            report = client.using(timeout=ml_timeout + 30.0).doctor(ml=ml, ml_timeout=ml_timeout)
        except (ControlError, OSError, ValueError) as exc:
            why = f"the daemon's doctor command failed: {exc}"
            checks += [_check(n, FAIL, why, "update the daemon (restart it with this collab)") for n in NODE_SIDE]
            checks.insert(3, static_peers_check(_static_from_config(home), probe))
            return checks
    node_side = list(report.get("checks") or [])
    checks.append(node_side.pop(0) if node_side and node_side[0].get("name") == "mdns" else None)
    checks.append(static_peers_check(list(report.get("static_peers") or []), probe))
    return [c for c in checks if c is not None] + node_side


def _down(home: Path, why: str, probe) -> list[dict]:
    not_checked = ("not checked (the daemon does not run)", "start the daemon first: collab daemon")
    checks = [_check("daemon", FAIL, why, START_HINT), _check("listen_port", FAIL, *not_checked)]
    checks += [_check(name, FAIL, *not_checked) for name in NODE_SIDE]
    checks.insert(3, static_peers_check(_static_from_config(home), probe))  # from config.toml / COLLAB_PEERS
    return checks


def line(c: dict) -> str:
    text = f"{c['status']:<4}  {c['name']}: {c['detail']}"
    return text + (f" — {c['hint']}" if c.get("hint") and c["status"] != PASS else "")


def doctor(
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    no_ml: Annotated[bool, typer.Option("--no-ml", help="Skip the TensorFlow/OpenCV import check.")] = False,
    ml_timeout: Annotated[float, typer.Option(help="Seconds the ML import check may take.")] = 60.0,
) -> None:
    """Check this node and its view of the cluster; each line says what to do. Exit 0 when nothing FAILs."""
    out, h = Out(json_out), home_of(home)
    checks = collect(h, ml=not no_ml, ml_timeout=ml_timeout)
    ok = all(c["status"] != FAIL for c in checks)
    out.data({"checks": checks, "ok": ok}, "\n".join(line(c) for c in checks))
    if not ok:
        daemon_down = checks and checks[0]["name"] == "daemon" and checks[0]["status"] == FAIL
        raise typer.Exit(EXIT_NO_NODE if daemon_down else EXIT_ERROR)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
