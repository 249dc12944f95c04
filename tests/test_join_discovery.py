"""`collab join` with no --peer while several members run (127.0.0.1, mDNS pinned there).

mDNS answers come in any order and most members cannot sign: the joiner must try every address it is
offered (signers first, by their TXT hint) and follow a non-signer's pointer to the signer, never
sending its secret to a node that cannot sign.
"""

from __future__ import annotations

import pytest

from collab_tui.localcluster import LocalCluster
from collab_tui.net.tokens import TokenStore, parse_token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def members():
    c = LocalCluster(3, priorities=[0, 1, 2], heartbeat=0.2)
    try:
        c.provision()
        c.start_all()
        c.wait_agreement(timeout=20)
        yield c
    finally:
        c.close()


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


def test_when_no_address_can_sign_the_error_names_each_address_and_why(members, cli, cli_json, tmp_path):
    token = cli_json("invite", "--home", members.homes[0])["token"]
    dead = "127.0.0.1:1"
    res = cli(
        "join",
        token,
        "--peer",
        dead,
        "--peer",
        members.info[1]["addr"],
        "--timeout",
        "2",
        "--name",
        "x",
        "--home",
        tmp_path / "x",
        timeout=60,
    )
    # node1 points at node0, which signs: the join succeeds even though the first address is dead
    assert res.returncode == 0, res.stderr
    token2 = cli_json("invite", "--home", members.homes[0])["token"]
    members.kill(0)
    members.wait_exit(0, 10)
    try:
        res = cli(
            "join",
            token2,
            "--peer",
            dead,
            "--peer",
            members.info[1]["addr"],
            "--timeout",
            "2",
            "--name",
            "y",
            "--home",
            tmp_path / "y",
            timeout=60,
        )
        assert res.returncode == 1
        err = res.stderr
        assert dead in err and "ConnectionRefused" in err, err
        assert members.info[1]["addr"] in err and "cannot sign" in err, err
        assert not (tmp_path / "y").exists()
    finally:
        members.start(0)
