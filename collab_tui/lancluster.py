"""Real `collab daemon` processes on a virtual LAN (one network namespace per machine, see vlan.py),
run the way users run them: every machine has its own HOME and no COLLAB_* settings, so each command
uses the default home and default options (`collab daemon` listens on 0.0.0.0:7373 and advertises its
LAN address; `collab join TOKEN` finds the cluster by mDNS only). Used by `collab demo` when it runs as
root, and by the benchmarks. Root only: check `vlan.available()` first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .localcluster import ClusterError, LocalCluster
from .vlan import VirtualLan

COLLAB = [sys.executable, "-m", "collab_tui"]


class LanCluster(LocalCluster):
    def __init__(self, n: int = 3, base: Path | None = None) -> None:
        # short base: the control socket's path must fit in a sockaddr_un (108 bytes)
        super().__init__(n, base=base or Path(tempfile.mkdtemp(prefix="collab-lan-")), mdns=True)
        self._own_base = base is None
        self.lan = VirtualLan(n)
        self.machines = [self.base / f"host{i}" for i in range(n)]  # each machine's HOME
        self.homes = [m / ".local" / "share" / "collab" for m in self.machines]  # collab's default home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLAB_", "XDG_"))}
        # the package as this process sees it, also when it runs from a source checkout
        pkg_root = str(Path(__file__).resolve().parents[1])
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, self.env.get("PYTHONPATH")) if p)
        for m in self.machines:
            m.mkdir(parents=True, exist_ok=True)

    def addr(self, i: int) -> str:
        return self.lan.addr(i)

    def node_env(self, i: int) -> dict:
        return {**self.env, "HOME": str(self.machines[i])}

    def collab(self, i: int, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """`collab ARGS` on machine i, as typed there."""
        return self.lan.run(i, [*COLLAB, *args], env=self.node_env(i), cwd=self.machines[i], timeout=timeout)

    def ok(self, i: int, *args: str, timeout: float = 60.0) -> str:
        res = self.collab(i, *args, timeout=timeout)
        if res.returncode != 0:
            raise ClusterError(f"host{i}: collab {' '.join(args[:2])}: {res.stderr.strip()[-600:]}")
        return res.stdout

    def daemon_command(self, i: int, ready: Path, extra: list[str]) -> list[str]:
        return self.lan.exec_argv(i, [*COLLAB, "daemon", "--quiet", "--ready-file", str(ready), *extra])

    def provision(self) -> None:
        """Machine 0: `collab init`, `collab daemon`, `collab invite`; every other machine: `collab join
        TOKEN` by mDNS alone, while the earlier ones run (their daemons are started too)."""
        self.ok(0, "init", "--name", self.names[0])
        self.start(0)
        token = json.loads(self.ok(0, "invite", "--uses", str(max(1, self.n - 1)), "--json"))["token"]
        for i in range(1, self.n):
            self.ok(i, "join", token, "--name", self.names[i])
            self.start(i)

    def close(self, keep: bool = False) -> None:
        try:
            super().close(keep)
        finally:
            self.lan.close()
