"""Several real `collab daemon` processes on loopback: used by `collab demo`, the multi-process tests
and the benchmarks. Everything binds 127.0.0.1 and mDNS is pinned to 127.0.0.1: no traffic leaves the
machine. Processes are ended by the PIDs this class started, never by name.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .node.control import ControlClient, ControlError, NoNodeRunning


class ClusterError(RuntimeError):
    pass


class LocalCluster:
    def __init__(
        self,
        n: int = 3,
        base: Path | None = None,
        mdns: bool = True,
        heartbeat: float = 0.2,
        priorities: list[int] | None = None,
        extra_args: list[str] | None = None,
        env: dict | None = None,
    ) -> None:
        self.n = n
        self._own_base = base is None
        self.base = Path(base or tempfile.mkdtemp(prefix="collab-cluster-"))
        self.homes = [self.base / f"node{i}" for i in range(n)]
        self.names = [f"node{i}" for i in range(n)]
        self.mdns = mdns
        self.heartbeat = heartbeat
        self.priorities = priorities or [0] * n
        self.extra_args = extra_args or []
        self.env = {**os.environ, **(env or {})}
        # n nodes on this machine's cores: each ML process gets its share of them (config ml_threads)
        self.env.setdefault("COLLAB_ML_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, self.n))))
        self.cwd: str | None = None
        self.procs: dict[int, subprocess.Popen] = {}
        self.info: dict[int, dict] = {}

    # ----------------------------------------------------------------- set-up
    def provision(self) -> None:
        """node0 runs `init` and serves; every other node joins it with a real token over TLS."""
        from .net.identity import create_cluster
        from .net.join import join_cluster
        from .node.state import JsonState

        create_cluster(self.homes[0], self.names[0])
        self.start(0)
        token = self.call(0, "invite", ttl=600, uses=max(1, self.n - 1))["token"]
        addr = self.info[0]["addr"]
        host, port = addr.rsplit(":", 1)
        for i in range(1, self.n):
            ident, members, _ = asyncio.run(join_cluster(self.homes[i], token, [(host, int(port))], self.names[i]))
            JsonState(self.homes[i] / "state" / "members.json").set("members", members)
            if self.priorities[i]:
                self.call(0, "set_priority", node=ident.node_id, priority=self.priorities[i])
        self.share_records()

    def sign_priorities_offline(self, node_ids: list[str]) -> None:
        """Provisioning with no node running: node0's CA key signs each node's priority into the member
        records (node ids in node order), and every home gets a copy."""
        import time

        from .net.identity import load_identity
        from .net.trust_log import sign_entry
        from .net.trust_store import TrustLogStore

        ca = load_identity(self.homes[0])
        store = TrustLogStore(self.homes[0] / "state" / "trust_log.json", ca.ca_cert)
        store.merge(
            [
                sign_entry(ca.ca_key, ca.cluster_id, "priority", time.time(), node=node_id, priority=priority)
                for node_id, priority in zip(node_ids, self.priorities)
                if priority
            ]
        )
        self.share_records()

    def share_records(self) -> None:
        """Copy node0's trust log (priorities) into every other home, so each node starts with it (it would
        reach it from its peers anyway, a little later)."""
        records = self.homes[0] / "state" / "trust_log.json"
        for i in range(1, self.n):
            if records.exists():
                (self.homes[i] / "state").mkdir(parents=True, exist_ok=True)
                shutil.copy(records, self.homes[i] / "state" / "trust_log.json")

    def daemon_args(self, i: int, ready: Path, host: str, port: int, mdns_interface: str) -> list[str]:
        """`python -m collab_tui daemon` for node i, listening on host:port, mDNS pinned to one interface."""
        args = [sys.executable, "-m", "collab_tui", "daemon", "--home", str(self.homes[i]), "--host", host]
        args += ["--port", str(port), "--name", self.names[i], "--priority", str(self.priorities[i])]
        args += ["--heartbeat", str(self.heartbeat), "--quiet", "--ready-file", str(ready)]
        return args + (["--mdns", "--mdns-interface", mdns_interface] if self.mdns else ["--no-mdns"])

    def daemon_command(self, i: int, ready: Path, extra: list[str]) -> list[str]:
        """The command that runs node i (subclasses change where and how, e.g. in a network namespace)."""
        return self.daemon_args(i, ready, "127.0.0.1", 0, "127.0.0.1") + self.extra_args + extra

    def node_env(self, i: int) -> dict:
        """The environment node i runs in (subclasses give each node its own, e.g. its own HOME)."""
        return self.env

    def start(self, i: int, timeout: float = 20.0, extra: list[str] | None = None) -> dict:
        """Spawn node i and wait for its ready file (pid, port, node id)."""
        ready = self.homes[i] / "run" / "ready.json"
        ready.unlink(missing_ok=True)
        args = self.daemon_command(i, ready, extra or [])
        self.homes[i].mkdir(parents=True, exist_ok=True)
        log = open(self.homes[i].parent / f"{self.names[i]}.stderr", "ab")
        self.procs[i] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=log, env=self.node_env(i), cwd=self.cwd, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.exists():
                self.info[i] = json.loads(ready.read_text())
                return self.info[i]
            if self.procs[i].poll() is not None:
                raise ClusterError(f"{self.names[i]} exited with {self.procs[i].returncode}: {self.stderr(i)[-2000:]}")
            time.sleep(0.02)
        raise ClusterError(f"{self.names[i]} did not become ready within {timeout}s")

    def start_all(self, skip: set[int] = frozenset()) -> None:
        for i in range(self.n):
            if i not in self.procs and i not in skip:
                self.start(i)

    def stderr(self, i: int) -> str:
        try:
            return (self.homes[i].parent / f"{self.names[i]}.stderr").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ----------------------------------------------------------------- control
    def call(self, i: int, cmd: str, timeout: float = 10.0, **args):
        with ControlClient(self.homes[i], timeout=timeout) as client:
            return client.call(cmd, **args)

    def running(self) -> list[int]:
        return [i for i, p in self.procs.items() if p.poll() is None]

    def node_id(self, i: int) -> str:
        return self.info[i]["node_id"]

    def index_of(self, node_id: str) -> int:
        for i, info in self.info.items():
            if info["node_id"] == node_id:
                return i
        raise KeyError(node_id)

    def agreement(self, indices: list[int] | None = None) -> str | None:
        """The master every given node agrees on (each seeing all the others alive), else None."""
        indices = self.running() if indices is None else indices
        masters = set()
        for i in indices:
            try:
                st = self.call(i, "status", timeout=2.0)
                rows = self.call(i, "nodes", timeout=2.0)
            except (NoNodeRunning, ControlError, OSError, ValueError):
                return None
            alive = {r["node_id"] for r in rows if r["state"] in ("alive", "self")}
            if not {self.node_id(j) for j in indices} <= alive:
                return None
            masters.add(st["master"])
        if len(masters) == 1:
            master = masters.pop()
            if master and self.call(self.index_of(master), "status")["role"] == "master":
                return master
        return None

    def wait_agreement(
        self, indices: list[int] | None = None, timeout: float = 15.0, exclude: str | None = None, poll: float = 0.02
    ) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                master = self.agreement(indices)
            except (KeyError, NoNodeRunning, ControlError, OSError):
                master = None
            if master and master != exclude:
                return master
            time.sleep(poll)
        raise ClusterError(f"no agreement on one master within {timeout}s")

    # ----------------------------------------------------------------- tear-down
    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(i)
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, sig)

    def wait_exit(self, i: int, timeout: float = 10.0) -> int | None:
        proc = self.procs[i]
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self, keep: bool = False) -> None:
        for i in self.running():
            self.kill(i, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self._own_base and not keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
