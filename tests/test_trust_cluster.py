"""Trust that survives the node that made the cluster, with real `collab daemon` processes on 127.0.0.1.

The root (node0, `collab init`) makes node1 an admin and is SIGKILLed; node1 then invites and admits a new
node (node3, joined with the CLI word for word), renews node2's certificate (lifetimes are 40 s here, so
renewals happen during the test) and revokes node2, which is cut off within seconds. A member that is not
an admin cannot sign. After the root returns every node shows the same trust log in the same order; the
root then removes the admin, which can no longer sign. A node whose certificate expired is refused with
the documented message.
"""

from __future__ import annotations

import signal
import time

import pytest
from conftest import run_cli, run_cli_json, wait_for

from collab_tui.localcluster import LocalCluster
from collab_tui.textfmt import short_id

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LIFETIME_S = 40.0


@pytest.fixture(scope="module")
def cluster():
    import asyncio

    from collab_tui.net.identity import create_cluster
    from collab_tui.net.join import join_cluster
    from collab_tui.node.state import JsonState

    c = LocalCluster(6, heartbeat=0.2, env={"COLLAB_CERT_DAYS": str(LIFETIME_S / 86400)})
    try:
        create_cluster(c.homes[0], c.names[0])
        c.start(0)
        token = c.call(0, "invite", ttl=600, uses=2)["token"]
        host, port = c.info[0]["addr"].rsplit(":", 1)
        for i in (1, 2):
            _, members, _ = asyncio.run(join_cluster(c.homes[i], token, [(host, int(port))], c.names[i]))
            JsonState(c.homes[i] / "state" / "members.json").set("members", members)
        c.start(1)
        c.start(2)
        c.wait_agreement([0, 1, 2], timeout=20)
        yield c
    finally:
        c.close()


def _alive(c: LocalCluster, i: int) -> set[str]:
    return {r["name"] for r in c.call(i, "nodes", timeout=3.0) if r["state"] == "alive"}


def _log_ids(c: LocalCluster, i: int) -> list[str]:
    return [r["id"] for r in c.call(i, "trust_log", timeout=3.0)]


def test_admin_signs_joins_renewals_and_revocations_after_the_root_dies(cluster):
    c, home = cluster, lambda i: str(cluster.homes[i])
    node1, node2 = c.node_id(1), c.node_id(2)

    # a member that is not an admin cannot sign anything, and says where to go
    for args in (("invite",), ("trust", "revoke", "node1")):
        res = run_cli(*args, "--home", home(2))
        assert res.returncode != 0 and "cannot sign" in res.stderr and "trust admin add" in res.stderr, res.stderr

    granted = run_cli_json("trust", "admin", "add", "node1", "--home", home(0))
    assert granted["admin"] is True and granted["node_id"] == node1
    wait_for(lambda: c.call(1, "status")["admin"], 10, "node1 to learn it is an admin")

    c.kill(0, signal.SIGKILL)
    c.wait_exit(0, 10)
    c.wait_agreement([1, 2], timeout=20)

    # the admin invites; a new machine joins with the README's commands, by --peer here
    token = run_cli_json("invite", "--home", home(1))["token"]
    joined = run_cli_json("join", token, "--peer", c.info[1]["addr"], "--name", "node3", "--home", home(3))
    assert joined["cluster"] == c.call(1, "status")["cluster"]
    c.start(3)
    wait_for(lambda: {"node1", "node2"} <= _alive(c, 3), 20, "node3 to see node1 and node2")
    join = next(r for r in c.call(1, "trust_log") if r["kind"] == "join" and r["node"] == joined["node_id"])
    assert join["by"] == node1 and join["token"] == token.split(".")[2] and join["name"] == "node3"

    # node2's certificate (from the root, 40 s) is renewed by the admin, with no connection dropped
    first_expiry = c.call(2, "status")["certificate"]["expires"]
    wait_for(
        lambda: c.call(2, "status")["certificate"]["issued_by"] == short_id(node1),
        LIFETIME_S,
        "node2's certificate to be renewed by the admin",
        poll=0.5,
    )
    assert c.call(2, "status")["certificate"]["expires"] > first_expiry
    renewals = [r for r in c.call(1, "trust_log") if r["kind"] == "renew" and r["node"] == node2]
    assert renewals and all(r["by"] == node1 for r in renewals)
    assert c.call(1, "status")["refused_connections"] == 0
    assert c.call(1, "status")["memory"]["ml_rss"] is None  # no ML work here: no TensorFlow process
    peer_lines = [r["msg"] for r in c.call(1, "logs", n=1000) if f"peer {short_id(node2)}:" in r["msg"]]
    assert not any("dead" in m or "leave" in m for m in peer_lines), peer_lines
    status = run_cli_json("trust", "status", "--home", home(3))
    rows = {m["name"]: m for m in status["members"]}
    assert rows["node1"]["admin"] and not rows["node2"]["admin"] and 0 < rows["node2"]["expires_in"] <= LIFETIME_S

    # the admin revokes node2: cut off everywhere within seconds
    run_cli_json("trust", "revoke", "node2", "--reason", "test", "--home", home(1))
    wait_for(lambda: "node2" not in _alive(c, 1) | _alive(c, 3), 10, "node2 to be cut off")
    wait_for(lambda: c.call(2, "status")["peers_alive"] == 0, 10, "node2 to lose its peers")

    # the root returns: every node holds the same trust log, in the same order
    c.start(0)
    wait_for(lambda: _log_ids(c, 0) == _log_ids(c, 1) == _log_ids(c, 3), 20, "the trust logs to agree")
    kinds = [r["kind"] for r in c.call(3, "trust_log")]
    assert {"join", "admin_add", "renew", "revoke"} <= set(kinds)

    # a node that missed the admin's grant (here: it has no trust log at all) still gets in through the admin,
    # whose certificate it issued itself by now: the admin's HELLO carries the root's grant
    _joined_by_admin_with_no_log(c, node1)

    # the root takes the admin's power away: node1 can no longer sign
    run_cli_json("trust", "admin", "remove", "node1", "--home", home(0))
    wait_for(lambda: not c.call(1, "status")["admin"], 10, "node1 to learn it is no longer an admin")
    res = run_cli("invite", "--home", home(1))
    assert res.returncode != 0 and "cannot sign" in res.stderr


def _joined_by_admin_with_no_log(c: LocalCluster, admin: str) -> None:
    from collab_tui.net import pki
    from collab_tui.net.identity import install_joined_identity, load_identity
    from collab_tui.net.trust_store import TrustLogStore

    wait_for(
        lambda: c.call(1, "status")["certificate"]["issued_by"] == short_id(admin),
        LIFETIME_S,
        "the admin to renew its own certificate",
        poll=0.5,
    )
    ident = load_identity(c.homes[1])
    signer = TrustLogStore(c.homes[1] / "state" / "trust_log.json", ident.ca_cert).current.signer_cert(admin)
    key = pki.new_key()
    cert = pki.sign_csr(ident.key, signer, pki.make_csr(key, "node5"), days=1)
    install_joined_identity(c.homes[5], key, cert, ident.ca_cert, issuer=signer)
    c.start(5, extra=["--no-mdns", "--peer", c.info[1]["addr"]])
    wait_for(lambda: "node1" in _alive(c, 5), 15, "node5 to reach the admin")
    wait_for(lambda: _log_ids(c, 5) == _log_ids(c, 1), 15, "node5 to have the whole trust log")


def test_an_expired_certificate_is_refused_with_what_to_do(cluster):
    from collab_tui.net import pki
    from collab_tui.net.identity import install_joined_identity, load_identity

    c = cluster
    if 0 not in c.running():
        c.start(0)
    root = load_identity(c.homes[0])
    key = pki.new_key()
    cert = pki.sign_csr(root.ca_key, root.ca_cert, pki.make_csr(key, "node4"), days=1.0 / 86400)  # one second
    install_joined_identity(c.homes[4], key, cert, root.ca_cert)
    time.sleep(max(0.0, cert.not_valid_after_utc.timestamp() - time.time()) + 1.0)
    c.start(4, extra=["--peer", c.info[0]["addr"]])
    wait_for(lambda: "has expired" in c.call(4, "status")["certificate"].get("error", ""), 10, "the expiry error")
    error = c.call(4, "status")["certificate"]["error"]
    assert "collab join --force" in error and "collab invite" in error
    wait_for(
        lambda: any("certificate has expired" in r["msg"] for r in c.call(0, "logs", n=500)),
        15,
        "node0 to refuse the expired certificate and say so",
    )
    assert c.call(4, "status")["peers_alive"] == 0
