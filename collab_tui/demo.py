"""`collab demo`: a local multi-node cluster, start to finish.

As root (where network namespaces can be made) the nodes are machines of a virtual LAN: one network
namespace each on a bridged segment, each with its own HOME, every command with its default options as
in the README's quick start (`collab daemon` on 0.0.0.0:7373, `collab join TOKEN` by mDNS alone). Other
users get the same on loopback (127.0.0.1, mDNS pinned there).

1. node0 creates the cluster; the others join it with a real token over mutual TLS.
2. Every node starts as a daemon; we wait until all see each other and agree on one master.
3. The master is killed with SIGKILL; we time the failover to a new master agreed by all.
4. Everything is shut down gracefully; nothing is left running and the temporary homes are removed.
"""

from __future__ import annotations

import signal
import sys
import time

from .localcluster import ClusterError, LocalCluster


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _own_status(cluster: LocalCluster, live: list[int], timeout: float = 3.0) -> dict[str, dict]:
    """Each live node's own ``status`` by node id, once they all report the same term (or at the timeout):
    a node knows its own term and role, while the rows of ``nodes`` about its peers come from heartbeats,
    which lag by up to one interval (right after a failover they show the old terms)."""
    deadline = time.monotonic() + timeout
    while True:
        own = {}
        for i in live:
            try:
                st = cluster.call(i, "status", timeout=2.0)
            except Exception:  # noqa: BLE001 - a node that does not answer keeps its row as its peers see it
                continue
            own[st["node_id"]] = st
        if len({st["term"] for st in own.values()}) <= 1 or time.monotonic() >= deadline:
            return own
        time.sleep(0.05)


def _table(cluster: LocalCluster, i: int, live: list[int]) -> None:
    from .cli.node import NODE_COLUMNS
    from .cli.output import Out

    own = _own_status(cluster, live)
    rows = cluster.call(i, "nodes")
    for row in rows:
        st = own.get(row["node_id"])
        if st is not None:  # a live node's own word on its term and role beats its last heartbeat
            row["term"], row["role"] = st["term"], st["role"]
    cols = NODE_COLUMNS[:6]  # name, id, address, role, term, state
    for line in Out().table(sorted(rows, key=lambda r: r["name"]), cols).splitlines():
        _say("    " + line)


def _cluster(n: int, lan: bool | None) -> tuple[LocalCluster, str]:
    from .vlan import available

    ok, why = available() if lan is not False else (False, "")
    if ok:
        from .lancluster import LanCluster

        c = LanCluster(n)
        return c, (
            f"{n} machines on a virtual LAN {c.lan.subnet}.0/24 (a network namespace each), "
            f"every command with its default options, machines' homes in {c.base}"
        )
    if lan:
        raise ClusterError(f"no virtual LAN here: {why}")
    note = "" if lan is False else f"; no virtual LAN here: {why}"
    return LocalCluster(n, mdns=True, heartbeat=0.2), f"{n} nodes on 127.0.0.1 (mDNS pinned to 127.0.0.1{note})"


def run_demo(n: int = 3, keep: bool = False, lan: bool | None = None) -> int:
    """``lan``: None = a virtual LAN when possible, True = insist on one, False = loopback."""
    try:
        cluster, where = _cluster(n, lan)
    except ClusterError as exc:
        _say(f"demo failed: {exc}")
        return 1
    try:
        _say(f"== collab demo: {where}")
        t0 = time.monotonic()
        cluster.provision()
        _say(
            f"-- node0 created the cluster; {n - 1} node(s) joined with a token over mutual TLS "
            f"({time.monotonic() - t0:.2f}s)"
        )
        t1 = time.monotonic()
        cluster.start_all()
        master = cluster.wait_agreement(list(range(n)), timeout=20)
        _say(
            f"-- all {n} nodes discovered each other and agreed on master "
            f"{cluster.names[cluster.index_of(master)]} in {time.monotonic() - t1:.2f}s"
        )
        _table(cluster, 0, list(range(n)))

        mi = cluster.index_of(master)
        _say(f"-- killing the master {cluster.names[mi]} (pid {cluster.procs[mi].pid}) with SIGKILL")
        t2 = time.monotonic()
        cluster.kill(mi, signal.SIGKILL)
        cluster.wait_exit(mi, 5)
        rest = [i for i in range(n) if i != mi]
        new_master = cluster.wait_agreement(rest, timeout=20, exclude=master)
        _say(
            f"-- failover: {cluster.names[cluster.index_of(new_master)]} is master, agreed by all "
            f"{len(rest)} survivors, {time.monotonic() - t2:.2f}s after the kill"
        )
        _table(cluster, rest[0], rest)
        for extra in _extensions():
            extra(cluster, rest, _say)
        _say("-- shutting down (graceful leave)")
        return 0
    except ClusterError as exc:
        _say(f"demo failed: {exc}")
        for i in range(n):
            tail = cluster.stderr(i)[-1500:]
            if tail:
                _say(f"--- {cluster.names[i]} stderr ---\n{tail}")
        return 1
    finally:
        cluster.close(keep=keep)
        left = cluster.running()
        _say("-- done: " + ("all nodes stopped" if not left else f"still running: {left}"))


def _extensions():
    """Later parts of the demo (recognition, training) register here."""
    from . import demo_parts

    return demo_parts.PARTS
