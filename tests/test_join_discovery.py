"""`collab join` with no --peer while several members run (127.0.0.1, mDNS pinned there).

mDNS answers come in any order and most members cannot sign: the joiner must try every address it is
offered (signers first, by their TXT hint) and follow a non-signer's pointer to the signer, never
sending its secret to a node that cannot sign.
"""

from __future__ import annotations

import pytest
from conftest import three_node_cluster

from collab_tui.localcluster import LocalCluster
from collab_tui.net.tokens import TokenStore, parse_token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def members():
    yield from three_node_cluster(agreed=True)


def _uses_left(c: LocalCluster, token: str) -> int:
    tid = parse_token(token).token_id
    return {t.token_id: t.uses_left for t in TokenStore(c.homes[0] / "state" / "tokens.json").list()}[tid]


def test_ten_joins_by_mdns_with_three_members_running_all_succeed(members, cli, cli_json, tmp_path):
    token = cli_json("invite", "--uses", "10", "--home", members.homes[0])["token"]
    outcomes = []
    for k in range(10):
        res = cli(
            "join", token, "--mdns-interface", "127.0.0.1", "--name", f"j{k}", "--home", tmp_path / f"j{k}", timeout=60
        )
        outcomes.append(res.returncode)
        assert res.returncode == 0, f"join {k}: {res.stderr}"
        assert (tmp_path / f"j{k}" / "identity").exists()
    assert outcomes == [0] * 10
    assert _uses_left(members, token) == 0


def test_a_member_that_cannot_sign_points_the_joiner_to_the_signer(members, cli, cli_json, tmp_path):
    token = cli_json("invite", "--home", members.homes[0])["token"]
    res = cli(
        "join", token, "--peer", members.info[1]["addr"], "--name", "redirected", "--home", tmp_path / "r", timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert _uses_left(members, token) == 0


def _join_via(cli, token: str, peers: list[str], home):
    """`collab join TOKEN --peer A --peer B ...` with 2 s per attempt, named after its home."""
    args = [arg for peer in peers for arg in ("--peer", peer)]
    return cli("join", token, *args, "--timeout", "2", "--name", home.name, "--home", home, timeout=60)


def test_when_no_address_can_sign_the_error_names_each_address_and_why(members, cli, cli_json, tmp_path):
    token = cli_json("invite", "--home", members.homes[0])["token"]
    dead = "127.0.0.1:1"
    res = _join_via(cli, token, [dead, members.info[1]["addr"]], tmp_path / "x")
    # node1 points at node0, which signs: the join succeeds even though the first address is dead
    assert res.returncode == 0, res.stderr
    token2 = cli_json("invite", "--home", members.homes[0])["token"]
    members.kill(0)
    members.wait_exit(0, 10)
    try:
        res = _join_via(cli, token2, [dead, members.info[1]["addr"]], tmp_path / "y")
        assert res.returncode == 1
        err = res.stderr
        assert dead in err and "ConnectionRefused" in err, err
        assert members.info[1]["addr"] in err and "cannot sign" in err, err
        assert not (tmp_path / "y").exists()
    finally:
        members.start(0)
