"""Cross-host test: three nodes in three network namespaces joined by a bridge (in a fourth namespace).

Needs root and iproute2; skipped otherwise. Every link and address (10.231.X.0/24) is created inside
namespaces this test owns; nothing is added to the host's interfaces. Homes are provisioned offline
(CA on node0, CSRs signed by it) with no member list and no static peers, so the nodes can only find
each other by mDNS on the bridged segment. The namespaces are always deleted at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from collab_tui.localcluster import LocalCluster
from collab_tui.net import identity as idm

from conftest import REPO, clean_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.timeout(120)]

PORT = 7373
SUBNET = f"10.231.{secrets.randbelow(200) + 20}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


class NetnsCluster(LocalCluster):
    """LocalCluster whose daemons run under `ip netns exec` on the namespaced addresses."""

    def __init__(self, namespaces: list[str], addrs: list[str], base: Path) -> None:
        super().__init__(len(namespaces), base=base, priorities=list(range(len(namespaces))), heartbeat=0.2)
        self.namespaces = namespaces
        self.addrs = addrs
        self.env = clean_env()
        self.cwd = str(REPO)

    def provision_offline(self) -> None:
        ca = idm.create_cluster(self.homes[0], self.names[0])
        for i in range(1, self.n):
            key = idm.new_key()
            cert = idm.sign_csr(ca.ca_key, ca.ca_cert, idm.make_csr(key, self.names[i]))
            idm.install_joined_identity(self.homes[i], key, cert, ca.ca_cert)

    def daemon_command(self, i: int, ready: Path, extra: list[str]) -> list[str]:
        # `ip netns exec` execs the command: the PID LocalCluster gets is the daemon's own
        return [
            "ip", "netns", "exec", self.namespaces[i],
            sys.executable, "-m", "collab_tui", "daemon", "--home", str(self.homes[i]),
            "--host", self.addrs[i], "--port", str(PORT), "--name", self.names[i],
            "--priority", str(self.priorities[i]), "--heartbeat", str(self.heartbeat), "--quiet",
            "--ready-file", str(ready), "--mdns", "--mdns-interface", self.addrs[i], *extra,
        ]


@pytest.fixture
def namespaces():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    prefix = f"collabt{os.getpid() % 100000}{secrets.token_hex(2)}-"
    bridge, nodes = prefix + "br", [prefix + f"n{i}" for i in range(3)]
    created: list[str] = []
    try:
        for ns in (bridge, *nodes):
            res = _ip("netns", "add", ns, check=False)
            if res.returncode != 0:
                pytest.skip(f"cannot create network namespaces: {res.stderr.strip()}")
            created.append(ns)
        addrs = []
        try:
            _ip("-n", bridge, "link", "set", "lo", "up")
            _ip("-n", bridge, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            _ip("-n", bridge, "link", "set", "br0", "up")
            for i, ns in enumerate(nodes):
                # both ends are created inside namespaces: the host never sees these links
                _ip("-n", bridge, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("-n", bridge, "link", "set", f"v{i}", "master", "br0")
                _ip("-n", bridge, "link", "set", f"v{i}", "up")
                addr = f"{SUBNET}.{i + 1}"
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "link", "set", "eth0", "up")
                addrs.append(addr)
        except RuntimeError as exc:  # e.g. no veth/bridge support in this kernel
            pytest.skip(f"cannot build the namespace topology: {exc}")
        yield nodes, addrs
    finally:
        for ns in reversed(created):
            _ip("netns", "del", ns, check=False)


def test_three_namespaces_discover_by_mdns_elect_and_fail_over(namespaces, tmp_path):
    nodes, addrs = namespaces
    host_addrs = _ip("-o", "addr", "show").stdout
    assert SUBNET + "." not in host_addrs  # nothing on the host's own interfaces
    # the namespaces reach each other (sanity check of the topology)
    ping = subprocess.run(["ip", "netns", "exec", nodes[0], "ping", "-c", "1", "-W", "2", addrs[2]],
                          capture_output=True, timeout=10)
    if ping.returncode != 0 and shutil.which("ping") is not None:
        pytest.fail(f"namespaces cannot reach each other: {ping.stdout!r} {ping.stderr!r}")

    c = NetnsCluster(nodes, addrs, tmp_path)
    try:
        c.provision_offline()
        assert not (c.homes[1] / "state" / "members.json").exists()  # mDNS is the only way to meet
        c.start_all()
        master = c.wait_agreement(timeout=25)
        assert master == c.node_id(2)  # highest priority
        for i in range(3):
            rows = {r["node_id"]: r for r in c.call(i, "nodes")}
            for j in range(3):
                assert rows[c.node_id(j)]["addr"] == f"{addrs[j]}:{PORT}"
                assert rows[c.node_id(j)]["state"] == ("self" if i == j else "alive")
            assert c.call(i, "status")["mdns"] is True
        term = c.call(2, "status")["term"]

        c.kill(2, signal.SIGKILL)
        c.wait_exit(2, 10)
        new = c.wait_agreement([0, 1], timeout=15, exclude=master)
        assert new == c.node_id(1)
        assert all(c.call(i, "status")["term"] > term for i in (0, 1))
        wait_for(lambda: all({r["node_id"]: r["state"] for r in c.call(i, "nodes")}[master] != "alive"
                             for i in (0, 1)), 5.0, "the dead master to be marked not alive")
    finally:
        c.close()
    assert SUBNET + "." not in _ip("-o", "addr", "show").stdout
