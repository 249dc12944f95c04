"""A virtual LAN on one machine: n "hosts" on one Ethernet segment, built from network namespaces.

Network rule: everything lives inside network namespaces this class creates and deletes. One namespace
holds the switch (a Linux bridge ``br0``, multicast snooping off so mDNS floods like on a plain switch);
each host namespace gets one veth link ``eth0`` plugged into it, the address ``10.231.X.(i+1)/24`` (X
random per LAN) and a default route via ``.254``, which nobody holds. Both ends of every veth are created
inside the namespaces, so the machine's own interfaces never see a link, an address or a packet, and
the segment has no uplink: nothing can leave it. Needs root and iproute2 (see :func:`available`).

Processes run in a host with ``ip netns exec``, which execs the program: the PID you get is the
program's own. Each host shares the machine's file system and hostname; only the network is its own.

``partition(indices)`` unplugs hosts from the switch by detaching their switch-side veth from the
bridge (``ip link set vI nomaster``). The host keeps its link up and its address: its frames are
silently dropped, exactly like a cable cut behind a switch port, with no carrier loss or error a node
could notice. ``heal(indices)`` plugs them back (``master br0``; STP is off, so the port forwards at
once).

    with VirtualLan(3) as lan:
        lan.run(0, ["ping", "-c1", lan.addr(2)])
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence

__all__ = ["VirtualLan", "VlanError", "available"]


class VlanError(RuntimeError):
    """An `ip` command failed while building or changing the virtual LAN."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if check and res.returncode != 0:
        raise VlanError(f"ip {' '.join(args)}: {res.stderr.strip() or f'exit {res.returncode}'}")
    return res


def available() -> tuple[bool, str]:
    """Whether a VirtualLan can be built here: (True, "") or (False, why not).

    Checks root, iproute2, and builds a throwaway namespace with a bridge and a veth pair in it."""
    if os.geteuid() != 0:
        return False, "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return False, "needs iproute2 (the `ip` command)"
    probe = f"cvlprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (VlanError, OSError, subprocess.SubprocessError) as exc:
        return False, f"cannot create a network namespace: {exc}"
    try:
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
        _ip("-n", probe, "link", "add", "va", "type", "veth", "peer", "name", "vb")
    except (VlanError, OSError, subprocess.SubprocessError) as exc:
        return False, f"no bridge/veth support: {exc}"
    finally:
        _ip("netns", "del", probe, check=False)
    return True, ""


class VirtualLan:
    """n hosts (namespaces) on one bridged segment; host i has address ``subnet.(i+1)``."""

    def __init__(self, n: int, prefix: str = "cvl") -> None:
        if not 1 <= n <= 250:
            raise ValueError("a VirtualLan has 1 to 250 hosts")
        tag = f"{prefix}{secrets.token_hex(3)}"
        self.n = n
        self.subnet = f"10.231.{secrets.randbelow(254) + 1}"  # /24
        self.bridge = f"{tag}-sw"
        self.hosts = [f"{tag}-h{i}" for i in range(n)]
        self._made: list[str] = []  # namespaces that exist, in creation order (for close())
        self._procs: list[subprocess.Popen] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        for ns in (self.bridge, *self.hosts):
            _ip("netns", "add", ns)
            self._made.append(ns)
        _ip("-n", self.bridge, "link", "set", "lo", "up")
        _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0", "stp_state", "0")
        _ip("-n", self.bridge, "link", "set", "br0", "up")
        for i, ns in enumerate(self.hosts):
            port = self._port(i)
            _ip("-n", self.bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.bridge, "link", "set", port, "master", "br0")
            _ip("-n", self.bridge, "link", "set", port, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "route", "add", "default", "via", f"{self.subnet}.254", "dev", "eth0")

    @staticmethod
    def _port(i: int) -> str:
        return f"v{i}"  # host i's switch port (the bridge-side end of its veth)

    # ----------------------------------------------------------------- hosts
    def addr(self, i: int) -> str:
        return f"{self.subnet}.{i + 1}"

    def exec_argv(self, i: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside host i (``ip netns exec`` execs it: same PID)."""
        return ["ip", "netns", "exec", self.hosts[i], *map(str, argv)]

    def run(
        self,
        i: int,
        argv: Sequence[str],
        env: dict | None = None,
        timeout: float = 30.0,
        cwd: str | os.PathLike | None = None,
    ) -> subprocess.CompletedProcess:
        """Run to completion in host i; text output captured; raises TimeoutExpired after ``timeout``."""
        return subprocess.run(
            self.exec_argv(i, argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )

    def popen(
        self,
        i: int,
        argv: Sequence[str],
        env: dict | None = None,
        stdout=None,
        stderr=None,
        cwd: str | os.PathLike | None = None,
    ) -> subprocess.Popen:
        """Start in host i, in its own session (no terminal signals). ``close()`` ends it if still running."""
        proc = subprocess.Popen(
            self.exec_argv(i, argv),
            env=env,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    # ----------------------------------------------------------------- faults
    def partition(self, indices: Iterable[int]) -> None:
        """Unplug these hosts from the switch (frames silently dropped; links stay up)."""
        for i in indices:
            _ip("-n", self.bridge, "link", "set", self._port(i), "nomaster")

    def heal(self, indices: Iterable[int]) -> None:
        """Plug these hosts back into the switch."""
        for i in indices:
            _ip("-n", self.bridge, "link", "set", self._port(i), "master", "br0")

    # ----------------------------------------------------------------- tear-down
    def close(self) -> None:
        """End the processes ``popen`` started that still run, delete every namespace made. Idempotent."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()
        while self._made:
            _ip("netns", "del", self._made.pop(), check=False)

    def __enter__(self) -> VirtualLan:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
