"""Join hardening against one real daemon on 127.0.0.1: a token brute force meets the per-address limit
(and costs no use of the real token); tokens are listed and revoked before use with the CLI."""

from __future__ import annotations

import asyncio

import pytest
from conftest import run_cli, run_cli_json

from collab_tui.localcluster import LocalCluster
from collab_tui.net.join import JoinError, join_cluster
from collab_tui.net.tokens import format_token, parse_token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def inviter():
    c = LocalCluster(1, heartbeat=0.2, mdns=False)
    try:
        c.provision()
        yield c
    finally:
        c.close()


def _try(c: LocalCluster, home, token: str) -> str:
    host, port = c.info[0]["addr"].rsplit(":", 1)
    try:
        asyncio.run(join_cluster(home, token, [(host, int(port))], "guess", timeout=5.0))
    except JoinError as exc:
        return str(exc)
    return "joined"


def test_a_token_brute_force_is_rate_limited_per_address(inviter, tmp_path):
    c = inviter
    token = run_cli_json("invite", "--home", c.homes[0])["token"]
    tok = parse_token(token)
    wrong = format_token(tok.pin, tok.token_id, "a" * 26)
    answers = [_try(c, tmp_path / f"guess{i}", wrong) for i in range(14)]
    assert all("wrong secret" in a for a in answers[:10]), answers[:10]
    assert all("too many join attempts from 127.0.0.1" in a for a in answers[10:]), answers[10:]
    # while the address is held back even the right token is refused, and its use is not spent
    assert "too many join attempts" in _try(c, tmp_path / "real", token)
    listed = {t["token_id"]: t for t in run_cli_json("invite", "list", "--home", c.homes[0])}
    assert (listed[tok.token_id]["uses_left"], listed[tok.token_id]["status"]) == (1, "active")
    assert not (tmp_path / "real").exists()


def test_a_token_is_revoked_before_use(inviter, tmp_path):
    c = inviter
    token = run_cli_json("invite", "--home", c.homes[0])["token"]
    tid = parse_token(token).token_id
    res = run_cli("invite", "revoke", tid, "--home", c.homes[0])
    assert res.returncode == 0 and f"token {tid} revoked" in res.stdout, res.stderr
    assert "unknown join token" in _try(c, tmp_path / "late", token)
    again = run_cli("invite", "revoke", tid, "--home", c.homes[0])
    assert again.returncode != 0 and "invite list" in again.stderr
    assert tid not in {t["token_id"] for t in run_cli_json("invite", "list", "--home", c.homes[0])}
