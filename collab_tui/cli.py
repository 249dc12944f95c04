"""`collab` command line. Sub-apps per area; heavy modules are imported inside the commands only, so
`collab --help` and the node-inspection commands start fast (no TensorFlow, no Textual, no OpenCV).

Exit codes: 0 ok, 1 error, 2 usage, 3 no local node running, 4 refused by the node.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_output import EXIT_ERROR, EXIT_NO_NODE, EXIT_REFUSED, Out, human_bytes, parse_duration

app = typer.Typer(
    help="collab: turn the machines of a LAN into one collaborative ML cluster.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
trust_app = typer.Typer(help="Cluster members and revocation.", no_args_is_help=True)
app.add_typer(trust_app, name="trust")

HomeOpt = Annotated[Optional[Path], typer.Option("--home", envvar="COLLAB_HOME", help="Node home directory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


class State:
    home: Path


state = State()


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context, home: HomeOpt = None) -> None:
    from .config import resolve_home

    state.home = resolve_home(home)
    if ctx.invoked_subcommand is None:  # no subcommand: the TUI (Textual is imported only here)
        from .app import run_tui

        raise typer.Exit(run_tui(state.home))


def _home(home: Optional[Path]) -> Path:
    from .config import resolve_home

    return resolve_home(home) if home else state.home


def _client(home: Path, out: Out):
    """The typed client of the local node (`client.Client`); exits 3 when no node runs."""
    from .client import Client, NoNodeRunning

    try:
        return Client(home)
    except NoNodeRunning as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_NO_NODE) from None


def _call(home: Path, out_: Out, ask: Callable):
    """``ask(client)`` against the local node: a refusal exits 4 with the node's reason."""
    from .client import ControlError

    with _client(home, out_) as client:
        try:
            return ask(client)
        except ControlError as exc:
            out_.error(str(exc))
            raise typer.Exit(EXIT_REFUSED) from None


# --------------------------------------------------------------------------- identity
@app.command()
def init(
    name: Annotated[str, typer.Option(help="This node's name.")] = "",
    cluster: Annotated[str, typer.Option(help="Cluster name.")] = "collab",
    force: Annotated[bool, typer.Option(help="Replace an existing identity.")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a cluster CA and this node's key pair (private keys 0600)."""
    import socket

    from .net.identity import create_cluster
    from .net.pki import IdentityError

    out, h = Out(json_out), _home(home)
    try:
        ident = create_cluster(h, name or socket.gethostname()[:64], cluster_name=cluster, force=force)
    except IdentityError as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    out.data(
        {"node_id": ident.node_id, "short_id": ident.short_id, "cluster": ident.cluster_id, "home": str(h)},
        f"created cluster {cluster!r} in {h}\nnode id  {ident.short_id}  ({ident.node_id})\nCA pin   {ident.pin}",
    )


@app.command()
def invite(
    ttl: Annotated[str, typer.Option(help="Token lifetime (e.g. 15m, 1h, 2d).")] = "1h",
    uses: Annotated[int, typer.Option(min=1, help="How many nodes may join with it.")] = 1,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print a join token (pins the cluster CA, carries a secret). Needs the running node that holds the CA."""
    out = Out(json_out)
    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    res = _call(_home(home), out, lambda c: c.invite(ttl=seconds, uses=uses))
    peers = " or ".join(f"--peer {a}" for a in res.get("addrs") or [res["addr"]])
    out.data(res, f"{res['token']}\n\non another machine of this LAN:  collab join {res['token']}\n"
                  f"(it finds this cluster with mDNS; where multicast does not reach, add {peers})")


@app.command()
def join(
    token: Annotated[str, typer.Argument(help="Token printed by `collab invite`.")],
    peer: Annotated[Optional[list[str]], typer.Option("--peer", help="Inviter host:port (else mDNS).")] = None,
    name: Annotated[str, typer.Option(help="This node's name.")] = "",
    mdns_interface: Annotated[Optional[list[str]], typer.Option(help="Interfaces for the mDNS search.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per attempt.")] = 5.0,
    search: Annotated[float, typer.Option(help="Seconds to look for members with mDNS.")] = 10.0,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Join a cluster: find a member that can sign (mDNS or --peer), check the CA pin, then send the secret
    and a CSR; receive a certificate. Every address found is tried until one signs."""
    import asyncio
    import socket

    from .config import ConfigError, parse_hostport, write_config
    from .net.identity import identity_exists
    from .net.join import JoinError, join_cluster
    from .net.tokens import TokenError, parse_token
    from .node.state import JsonState
    from .textfmt import short_id

    out, h = Out(json_out), _home(home)
    if identity_exists(h):
        out.error(f"{h} already has an identity; use another --home")
        raise typer.Exit(EXIT_ERROR)
    try:
        tok = parse_token(token)
        addrs = [parse_hostport(p) for p in (peer or [])]
    except (TokenError, ConfigError) as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    discovery = None
    if not addrs:
        from functools import partial

        from .net.discovery import browser

        out.info("looking for the cluster with mDNS ...")
        discovery = partial(browser, tok.pin_hex[:16], interfaces=mdns_interface or None)
    node_name = name or socket.gethostname()[:64]
    try:
        ident, members, blob = asyncio.run(join_cluster(h, token, addrs, node_name, timeout, discovery, search))
    except JoinError as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    JsonState(h / "state" / "members.json").set("members", members)
    if blob:
        from .net.revocation import DenyListStore

        DenyListStore(h / "state" / "denylist.json").accept(blob, ident.ca_cert)
    if not (h / "config.toml").exists():
        write_config(h, {"name": node_name})
    out.data(
        {"node_id": ident.node_id, "short_id": short_id(ident.node_id), "cluster": ident.cluster_id, "members": members},
        f"joined cluster {ident.cluster_id[:12]} as {short_id(ident.node_id)} ({len(members)} member(s) known)",
    )


@trust_app.command("list")
def trust_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Known members and revoked nodes."""
    out = Out(json_out)
    res = _call(_home(home), out, lambda c: c.trust_list())
    cols = [("short_id", "ID"), ("name", "NAME"), ("addr", "ADDRESS"), ("revoked", "REVOKED")]
    out.data(res, out.table(res["members"], cols) + f"\n(deny-list version {res['denylist_version']})")


@trust_app.command("revoke")
def trust_revoke(
    node: Annotated[str, typer.Argument(help="Node id, short id or name.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the signed deny-list).")] = "",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a node: signs a new deny-list; the master spreads it; the node is cut off within seconds."""
    out = Out(json_out)
    res = _call(_home(home), out, lambda c: c.revoke(node=node, reason=reason))
    out.data(res, f"revoked {res['revoked'][:12]} (deny-list version {res['version']})")


# --------------------------------------------------------------------------- the node
@app.command()
def daemon(
    port: Annotated[Optional[int], typer.Option(help="TCP port (0 = any free port).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on.")] = None,
    advertise: Annotated[Optional[str], typer.Option(help="Address peers should dial.")] = None,
    peer: Annotated[Optional[list[str]], typer.Option("--peer", help="Static peer host:port (repeatable).")] = None,
    priority: Annotated[Optional[int], typer.Option(help="Election priority (higher wins).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Node name.")] = None,
    mdns: Annotated[Optional[bool], typer.Option("--mdns/--no-mdns", help="mDNS discovery.")] = None,
    mdns_interface: Annotated[Optional[list[str]], typer.Option(help="Pin mDNS to these interface addresses.")] = None,
    heartbeat: Annotated[Optional[float], typer.Option(help="Heartbeat interval, seconds.")] = None,
    preempt: Annotated[Optional[bool], typer.Option("--preempt/--no-preempt", help="A higher node takes over a healthy master.")] = None,
    log_level: Annotated[Optional[str], typer.Option(help="DEBUG, INFO, WARNING.")] = None,
    quiet: Annotated[bool, typer.Option(help="Log to the file only.")] = False,
    ready_file: Annotated[Optional[Path], typer.Option(help="Write pid/port JSON here once serving.")] = None,
    home: HomeOpt = None,
) -> None:
    """Run this node headless. SIGTERM = graceful leave (an immediate election if it was master)."""
    import asyncio

    from .config import ConfigError, load_config
    from .net.identity import NotInitialized
    from .node.daemon import run_daemon

    out, h = Out(), _home(home)
    overrides = {
        "port": port, "host": host, "advertise": advertise, "peers": peer or None, "priority": priority,
        "name": name, "mdns": mdns, "mdns_interfaces": mdns_interface or None, "heartbeat_interval": heartbeat,
        "preempt": preempt, "log_level": log_level,
    }
    try:
        cfg = load_config(h, overrides)
        code = asyncio.run(run_daemon(h, cfg, log_to_stderr=not quiet, ready_file=ready_file))
    except (ConfigError, NotInitialized, RuntimeError, OSError) as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    raise typer.Exit(code)


@app.command()
def status(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """This node: id, role, term, master, peers, health."""
    out = Out(json_out)
    res = _call(_home(home), out, lambda c: c.status())
    if json_out:
        out.data(res)
        return
    shown = dict(res)
    bad = shown.pop("unhealthy", None) or {}
    if bad:  # one line: which task kinds this node keeps failing, and why
        shown["health"] = "unhealthy: " + "; ".join(f"{kind} failing: {why}" for kind, why in bad.items())
    out.data(shown)


def _health_cell(row: dict) -> str:
    """HEALTH column: "ok", "faces failing", ... ("" for a node too old to report it)."""
    bad = row.get("unhealthy") or {}
    if bad:
        return ", ".join(f"{kind} failing" for kind in bad)
    return str(row.get("health") or "")


def _health_lines(rows: list[dict]) -> list[str]:
    """One line per unhealthy node, with the full reasons (shown under the table)."""
    lines = []
    for r in rows:
        bad = r.get("unhealthy") or {}
        if bad:
            who = f"{r.get('name', '')} ({r.get('short_id') or str(r.get('node_id', ''))[:12]})"
            lines.append(f"{who} is unhealthy: " + "; ".join(f"{kind} tasks fail: {why}" for kind, why in bad.items()))
    return lines


def _node_rows(rows: list[dict]) -> list[dict]:
    for r in rows:
        r["mem"] = human_bytes(r.get("mem_free"))
        r["model"] = (r.get("model_version") or "")[:12]
    return [{**r, "health_cell": _health_cell(r)} for r in rows]  # copies: --json keeps its keys


NODE_COLUMNS = [
    ("name", "NAME"), ("short_id", "ID"), ("addr", "ADDRESS"), ("role", "ROLE"), ("term", "TERM"),
    ("state", "STATE"), ("health_cell", "HEALTH"), ("cpus", "CPU"), ("load", "LOAD"), ("mem", "MEM FREE"),
    ("queue", "QUEUE"), ("model", "MODEL"),
]


@app.command()
def nodes(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Refresh interval for --watch.")] = 1.0,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The cluster's nodes as this node sees them."""
    out, h = Out(json_out), _home(home)
    try:
        while True:
            rows = _call(h, out, lambda c: c.nodes())
            if watch and not json_out:
                sys.stdout.write("\x1b[2J\x1b[H")
            out.data(rows, "\n".join([out.table(_node_rows(rows), NODE_COLUMNS), *_health_lines(rows)]))
            if not watch:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


@app.command()
def logs(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    lines: Annotated[int, typer.Option("-n", help="How many recent lines.")] = 50,
    level: Annotated[str, typer.Option(help="Minimum level.")] = "DEBUG",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The node's recent log lines."""
    import logging

    out, h = Out(json_out), _home(home)
    floor = logging.getLevelName(level.upper())
    floor = floor if isinstance(floor, int) else 0

    def show(item: dict) -> None:
        if logging.getLevelName(item["level"]) < floor:
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(item["ts"]))
        out.data(item, f"{stamp} {item['level']:<7} {item['logger']}: {item['msg']}")

    try:
        if follow:
            with _client(h, out) as client:
                for item in client.logs_follow(n=lines):
                    show(item)
        else:
            for item in _call(h, out, lambda c: c.logs(n=lines)):
                show(item)
    except (KeyboardInterrupt, BrokenPipeError):
        return


@app.command()
def stop(home: HomeOpt = None) -> None:
    """Ask the local node to leave the cluster gracefully and exit."""
    out = Out()
    _call(_home(home), out, lambda c: c.stop())
    out.info("node is leaving")


@app.command()
def demo(
    nodes_: Annotated[int, typer.Option("--nodes", min=2, max=8, help="How many local nodes.")] = 3,
    keep: Annotated[bool, typer.Option(help="Keep the temporary homes for inspection.")] = False,
    lan: Annotated[Optional[bool], typer.Option("--lan/--loopback",
                                                help="Virtual LAN of network namespaces (default: when root).")] = None,
) -> None:
    """Start N nodes (a virtual LAN as root, else loopback), show discovery and the master, kill it, show the
    failover, run a recognition job and a federated training run, clean up."""
    from .demo import run_demo

    raise typer.Exit(run_demo(nodes_, keep=keep, lan=lan))


from .cli_jobs import register as _register_jobs  # noqa: E402  (light: Typer only)
from .cli_training import register as _register_training  # noqa: E402

_register_jobs(app)
_register_training(app)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
