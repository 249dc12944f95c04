"""`collab daemon`, `status`, `nodes`, `logs`, `stop`, `demo`: the local node."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .common import HomeOpt, JsonOpt, call, home_of, node_client
from .output import EXIT_ERROR, Out, human_bytes


def daemon(
    port: Annotated[int | None, typer.Option(help="TCP port (0 = any free port).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    advertise: Annotated[str | None, typer.Option(help="Address peers should dial.")] = None,
    peer: Annotated[list[str] | None, typer.Option("--peer", help="Static peer host:port (repeatable).")] = None,
    priority: Annotated[int | None, typer.Option(help="Election priority (higher wins).")] = None,
    name: Annotated[str | None, typer.Option(help="Node name.")] = None,
    mdns: Annotated[bool | None, typer.Option("--mdns/--no-mdns", help="mDNS discovery.")] = None,
    mdns_interface: Annotated[list[str] | None, typer.Option(help="Pin mDNS to these interface addresses.")] = None,
    heartbeat: Annotated[float | None, typer.Option(help="Heartbeat interval, seconds.")] = None,
    preempt: Annotated[
        bool | None, typer.Option("--preempt/--no-preempt", help="A higher node takes over a healthy master.")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING.")] = None,
    quiet: Annotated[bool, typer.Option(help="Log to the file only.")] = False,
    ready_file: Annotated[Path | None, typer.Option(help="Write pid/port JSON here once serving.")] = None,
    home: HomeOpt = None,
) -> None:
    """Run this node headless. SIGTERM = graceful leave (an immediate election if it was master)."""
    import asyncio

    from ..config import ConfigError, load_config
    from ..daemon import run_daemon
    from ..net.identity import NotInitialized

    out, h = Out(), home_of(home)
    overrides = {
        "port": port,
        "host": host,
        "advertise": advertise,
        "peers": peer or None,
        "priority": priority,
        "name": name,
        "mdns": mdns,
        "mdns_interfaces": mdns_interface or None,
        "heartbeat_interval": heartbeat,
        "preempt": preempt,
        "log_level": log_level,
    }
    try:
        cfg = load_config(h, overrides)
        code = asyncio.run(run_daemon(h, cfg, log_to_stderr=not quiet, ready_file=ready_file))
    except (ConfigError, NotInitialized, RuntimeError, OSError) as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    raise typer.Exit(code)


def status(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """This node: id, role, term, master, peers, health."""
    out = Out(json_out)
    res = call(home_of(home), out, lambda c: c.status())
    if json_out:
        out.data(res)
        return
    shown = dict(res)
    bad = shown.pop("unhealthy", None) or {}
    if bad:  # one line: which task kinds this node keeps failing, and why
        shown["health"] = "unhealthy: " + "; ".join(f"{kind} failing: {why}" for kind, why in bad.items())
    faults = shown.pop("faults", None) or {}
    if faults:  # background tasks that died and were restarted
        shown["faults"] = "; ".join(f"{task}: {why}" for task, why in faults.items())
    if isinstance(cert := shown.get("certificate"), dict):
        left = (cert.get("expires_in") or 0) / 86400
        shown["certificate"] = cert.get("error") or f"issued by {cert.get('issued_by')}, expires in {left:.1f} days"
    if isinstance(mem := shown.get("memory"), dict):
        ml = mem.get("ml_rss")
        shown["memory"] = f"node {_mib(mem.get('node_rss'))}, ML process " + (_mib(ml) if ml else "not started")
    out.data(shown)


def _mib(n) -> str:
    return f"{n / 2**20:.0f} MiB" if n else "?"


def _health_cell(row: dict) -> str:
    """HEALTH column: "ok", "faces failing", ... ("" for a node too old to report it)."""
    bad = row.get("unhealthy") or {}
    if bad:
        return ", ".join(f"{kind} failing" for kind in bad)
    return str(row.get("health") or "")


def _health_lines(rows: list[dict]) -> list[str]:
    """One line per unhealthy node, with the full reasons, and one per node whose background tasks died and
    were restarted (shown under the table)."""
    lines = []
    for r in rows:
        bad = r.get("unhealthy") or {}
        who = f"{r.get('name', '')} ({r.get('short_id') or str(r.get('node_id', ''))[:12]})"
        if bad:
            lines.append(f"{who} is unhealthy: " + "; ".join(f"{kind} tasks fail: {why}" for kind, why in bad.items()))
        faults = r.get("faults") or {}
        if faults:
            lines.append(f"{who} restarted a background task: " + "; ".join(f"{t}: {why}" for t, why in faults.items()))
    return lines


def _node_rows(rows: list[dict]) -> list[dict]:
    for r in rows:
        r["mem"] = human_bytes(r.get("mem_free"))
        r["model"] = (r.get("model_version") or "")[:12]
    return [{**r, "health_cell": _health_cell(r)} for r in rows]  # copies: --json keeps its keys


NODE_COLUMNS = [
    ("name", "NAME"),
    ("short_id", "ID"),
    ("addr", "ADDRESS"),
    ("role", "ROLE"),
    ("term", "TERM"),
    ("state", "STATE"),
    ("health_cell", "HEALTH"),
    ("cpus", "CPU"),
    ("load", "LOAD"),
    ("mem", "MEM FREE"),
    ("queue", "QUEUE"),
    ("model", "MODEL"),
]


def nodes(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Refresh interval for --watch.")] = 1.0,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The cluster's nodes as this node sees them."""
    out, h = Out(json_out), home_of(home)
    try:
        while True:
            rows = call(h, out, lambda c: c.nodes())
            if watch and not json_out:
                sys.stdout.write("\x1b[2J\x1b[H")
            out.data(rows, "\n".join([out.table(_node_rows(rows), NODE_COLUMNS), *_health_lines(rows)]))
            if not watch:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def logs(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    lines: Annotated[int, typer.Option("-n", help="How many recent lines (at most 1000 with --cluster).")] = 50,
    level: Annotated[str, typer.Option(help="Minimum level.")] = "DEBUG",
    cluster: Annotated[bool, typer.Option("--cluster", help="Every node's lines, merged by time.")] = False,
    node: Annotated[
        str | None, typer.Option("--node", help="Only this node's lines (by name; implies --cluster).")
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The node's recent log lines; with --cluster, every node's (through the master), each prefixed by its node."""
    import logging

    out, h = Out(json_out), home_of(home)
    floor = logging.getLevelName(level.upper())
    floor = floor if isinstance(floor, int) else 0
    cluster = cluster or node is not None
    wire_level = level.upper() if cluster else None

    def show(item: dict) -> None:
        if "msg" not in item or logging.getLevelName(item.get("level", "INFO")) < floor:
            return  # (a cluster stream's keepalive)
        stamp = time.strftime("%H:%M:%S", time.localtime(item["ts"]))
        who = f"{item.get('node', '') or '?':<10} " if cluster else ""
        out.data(item, f"{stamp} {who}{item['level']:<7} {item['logger']}: {item['msg']}")

    try:
        if follow:
            with node_client(h, out) as client:
                for item in client.logs_follow(n=lines, cluster=cluster, node=node, level=wire_level):
                    show(item)
        else:
            for item in call(h, out, lambda c: c.logs(n=lines, cluster=cluster, node=node, level=wire_level)):
                show(item)
    except (KeyboardInterrupt, BrokenPipeError):
        return


def stop(home: HomeOpt = None) -> None:
    """Ask the local node to leave the cluster gracefully and exit."""
    out = Out()
    call(home_of(home), out, lambda c: c.stop())
    out.info("node is leaving")


def demo(
    nodes_: Annotated[int, typer.Option("--nodes", min=2, max=8, help="How many local nodes.")] = 3,
    keep: Annotated[bool, typer.Option(help="Keep the temporary homes for inspection.")] = False,
    lan: Annotated[
        bool | None, typer.Option("--lan/--loopback", help="Virtual LAN of network namespaces (default: when root).")
    ] = None,
) -> None:
    """Start N nodes (a virtual LAN as root, else loopback), show discovery and the master, kill it, show the
    failover, run a recognition job and a federated training run, clean up."""
    from ..demo import run_demo

    raise typer.Exit(run_demo(nodes_, keep=keep, lan=lan))


def register(app: typer.Typer) -> None:
    for fn in (daemon, status, nodes, logs, stop):
        app.command()(fn)
    app.command(name="demo")(demo)
