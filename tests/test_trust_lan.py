"""The README's trust commands on a virtual LAN of four machines, with default options and joins by mDNS:
the first machine makes an admin and dies; the admin invites, a new machine joins with `collab join TOKEN`
(mDNS only, whichever member it reaches first), and the admin revokes a member, which is cut off.

Same machinery as tests/test_quickstart_lan.py (network namespaces on one bridge, root only, skipped
otherwise).
"""

from __future__ import annotations

import re
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from conftest import wait_for
from test_quickstart_lan import Machine, cli_view, step, stop_machines, wait_agreement

from collab_tui.vlan import VirtualLan, available

N = 4


@pytest.fixture
def machines(request):
    ok, why = available()
    if not ok:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="collab-tl-"))
    failures = request.session.testsfailed
    with VirtualLan(N) as lan:
        ms = [Machine(lan, i, root) for i in range(N)]
        try:
            yield ms
        finally:
            stop_machines(ms)
    if request.session.testsfailed == failures:
        shutil.rmtree(root, ignore_errors=True)


def _token(out: str) -> str:
    found = re.search(r"collab1\.\S+", out)
    assert found, out
    return found.group(0)


def _alive(m: Machine) -> set[str]:
    _, rows = cli_view(m)
    return {r["node_id"] for r in rows if r["state"] in ("alive", "self")}


@pytest.mark.slow
@pytest.mark.netns
@pytest.mark.timeout(240)
def test_an_admin_keeps_the_cluster_open_after_the_first_machine_dies(machines):
    alpha, beta, gamma, delta = machines
    with step("alpha: init, daemon, invite; beta and gamma join by mDNS", machines):
        alpha.ok("init", "--name", "alpha")
        alpha.start_daemon()
        token = _token(alpha.ok("invite", "--ttl", "1h", "--uses", "2"))
        for m in (beta, gamma):
            m.ok("join", token, timeout=60)
            m.start_daemon()
        wait_agreement([alpha, beta, gamma], timeout=30)

    with step("alpha: collab trust admin add BETA", machines):
        alpha.ok("trust", "admin", "add", beta.node_id[:12])
        wait_for(lambda: beta.json("status")["admin"], 10, "beta to learn it is an admin")
        res = gamma.collab("invite")
        assert res.returncode != 0 and "cannot sign" in res.stderr, res.stderr

    with step("SIGKILL alpha; beta invites; delta joins by mDNS", machines):
        alpha.kill(signal.SIGKILL)
        assert alpha.wait_exit(10)
        wait_agreement([beta, gamma], timeout=20, exclude=alpha.node_id)
        token = _token(beta.ok("invite"))
        delta.ok("join", token, timeout=60)
        delta.start_daemon()
        wait_for(lambda: {beta.node_id, gamma.node_id} <= _alive(delta), 30, "delta to see beta and gamma")
        joins = [r for r in delta.json("trust", "log") if r["kind"] == "join" and r["node"] == delta.node_id]
        assert [(r["by"], r["token"]) for r in joins] == [(beta.node_id, token.split(".")[2])], joins

    with step("beta: collab trust revoke GAMMA; gamma is cut off", machines):
        beta.ok("trust", "revoke", gamma.node_id[:12])
        wait_for(lambda: gamma.node_id not in _alive(beta) | _alive(delta), 10, "beta and delta to drop gamma")
        wait_for(lambda: beta.json("trust", "log") == delta.json("trust", "log"), 10, "the same trust log")
