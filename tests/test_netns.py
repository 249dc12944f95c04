"""Cross-host test: three nodes in three network namespaces joined by a bridge (in a fourth namespace).

Needs root and iproute2; skipped otherwise. The virtual LAN (collab_tui/vlan.py) creates every link
and address (10.231.X.0/24) inside namespaces this test owns; nothing is added to the host's interfaces.
Homes are provisioned offline (CA on node0, CSRs signed by it) with no member list and no static peers,
so the nodes can only find each other by mDNS on the bridged segment. The namespaces are always deleted
at the end.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, clean_env, wait_for

from collab_tui.localcluster import LocalCluster
from collab_tui.net import identity as idm
from collab_tui.net import pki
from collab_tui.vlan import VirtualLan, available

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.timeout(120)]

PORT = 7373


def _host_addrs() -> str:
    return subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, timeout=10).stdout


class NetnsCluster(LocalCluster):
    """LocalCluster whose daemons run under `ip netns exec` on the namespaced addresses."""

    def __init__(self, lan: VirtualLan, base: Path) -> None:
        super().__init__(lan.n, base=base, priorities=list(range(lan.n)), heartbeat=0.2)
        self.lan = lan
        self.addrs = [lan.addr(i) for i in range(lan.n)]
        self.env = clean_env()
        self.cwd = str(REPO)

    def provision_offline(self) -> None:
        ca = idm.create_cluster(self.homes[0], self.names[0])
        ids = [ca.node_id]
        for i in range(1, self.n):
            key = pki.new_key()
            cert = pki.sign_csr(ca.ca_key, ca.ca_cert, pki.make_csr(key, self.names[i]))
            ids.append(idm.install_joined_identity(self.homes[i], key, cert, ca.ca_cert).node_id)
        self.sign_priorities_offline(ids)

    def daemon_command(self, i: int, ready: Path, extra: list[str]) -> list[str]:
        # `ip netns exec` execs the command: the PID LocalCluster gets is the daemon's own
        return self.lan.exec_argv(i, self.daemon_args(i, ready, self.addrs[i], PORT, self.addrs[i]) + extra)


@pytest.fixture
def lan():
    ok, why = available()
    if not ok:
        pytest.skip(why)
    with VirtualLan(3) as vlan:
        yield vlan


def test_three_namespaces_discover_by_mdns_elect_and_fail_over(lan, tmp_path):
    addrs = [lan.addr(i) for i in range(lan.n)]
    assert lan.subnet + "." not in _host_addrs()  # nothing on the host's own interfaces
    # the namespaces reach each other (sanity check of the topology)
    ping = subprocess.run(lan.exec_argv(0, ["ping", "-c", "1", "-W", "2", addrs[2]]), capture_output=True, timeout=10)
    if ping.returncode != 0 and shutil.which("ping") is not None:
        pytest.fail(f"namespaces cannot reach each other: {ping.stdout!r} {ping.stderr!r}")

    c = NetnsCluster(lan, tmp_path)
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
        wait_for(
            lambda: all({r["node_id"]: r["state"] for r in c.call(i, "nodes")}[master] != "alive" for i in (0, 1)),
            5.0,
            "the dead master to be marked not alive",
        )
    finally:
        c.close()
    assert lan.subnet + "." not in _host_addrs()
