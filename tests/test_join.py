"""`collab join` through the real CLI against one running daemon (127.0.0.1 only).

Every refused join must exit non-zero with a clear message on stderr and write nothing in the
joiner's home. A wrong secret and a CA-pin mismatch must not consume a use of the token.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from collab_tui.localcluster import LocalCluster
from collab_tui.net.identity import create_cluster, load_identity
from collab_tui.net.tokens import TokenStore, format_token, parse_token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def inviter():
    c = LocalCluster(1, heartbeat=0.2, mdns=False)
    try:
        c.provision()  # init + start node0 (it holds the CA)
        yield c
    finally:
        c.close()


def _invite(cli_json, c: LocalCluster, *extra: str) -> str:
    return cli_json("invite", "--home", c.homes[0], *extra)["token"]


def _join(cli, home: Path, token: str, c: LocalCluster, *extra: str):
    return cli(
        "join", token, "--peer", c.info[0]["addr"], "--name", home.name, "--timeout", "5", "--home", home, *extra
    )


def _uses_left(c: LocalCluster, token: str) -> int:
    tid = parse_token(token).token_id
    return {t.token_id: t.uses_left for t in TokenStore(c.homes[0] / "state" / "tokens.json").list()}[tid]


def _assert_refused(res, *needles: str) -> None:
    assert res.returncode != 0, f"join should have failed:\n{res.stdout}\n{res.stderr}"
    err = res.stderr.lower()
    assert err.startswith("error: "), res.stderr
    assert any(n in err for n in needles), f"expected one of {needles} in stderr: {res.stderr!r}"
    assert "traceback" not in err, res.stderr


def _assert_untouched(home: Path) -> None:
    """Nothing written for a failed join: the home was never even created."""
    assert not home.exists(), f"{home} was written: {sorted(p.name for p in home.rglob('*'))}"


def test_join_with_a_fresh_token_succeeds_and_a_second_use_is_refused(inviter, cli, cli_json, tmp_path):
    token = _invite(cli_json, inviter)
    assert _uses_left(inviter, token) == 1
    home = tmp_path / "joiner1"
    res = _join(cli, home, token, inviter, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    ident = load_identity(home)
    ca = load_identity(inviter.homes[0])
    assert out["node_id"] == ident.node_id and out["cluster"] == ca.cluster_id
    assert ident.ca_cert == ca.ca_cert and not ident.is_ca
    assert (home / "identity" / "node.key").stat().st_mode & 0o777 == 0o600
    members = json.loads((home / "state" / "members.json").read_text())["members"]
    assert inviter.node_id(0) in {m["node_id"] for m in members}
    assert _uses_left(inviter, token) == 0

    again = tmp_path / "joiner2"
    res = _join(cli, again, token, inviter)
    _assert_refused(res, "already been used", "used")
    _assert_untouched(again)


def test_expired_token_is_refused(inviter, cli, cli_json, tmp_path):
    token = _invite(cli_json, inviter, "--ttl", "1s")
    time.sleep(1.2)
    home = tmp_path / "late"
    res = _join(cli, home, token, inviter)
    _assert_refused(res, "expired")
    _assert_untouched(home)


def test_wrong_secret_is_refused_and_does_not_consume_a_use(inviter, cli, cli_json, tmp_path):
    token = _invite(cli_json, inviter)
    tok = parse_token(token)
    wrong = format_token(tok.pin, tok.token_id, ("a" if tok.secret[0] != "a" else "b") + tok.secret[1:])
    home = tmp_path / "guesser"
    res = _join(cli, home, wrong, inviter)
    _assert_refused(res, "wrong secret")
    _assert_untouched(home)
    assert _uses_left(inviter, token) == 1
    # the real token still works afterwards
    ok = _join(cli, tmp_path / "rightful", token, inviter)
    assert ok.returncode == 0, ok.stderr


def test_pin_of_another_ca_is_refused_before_the_secret_is_sent(inviter, cli, cli_json, tmp_path):
    token = _invite(cli_json, inviter)
    tok = parse_token(token)
    other = create_cluster(tmp_path / "other-ca", "evil")
    assert other.pin != tok.pin
    forged = format_token(other.pin, tok.token_id, tok.secret)
    home = tmp_path / "pinned"
    res = _join(cli, home, forged, inviter)
    _assert_refused(res, "pin mismatch")
    assert "secret was not sent" in res.stderr
    _assert_untouched(home)
    assert not (home / "identity").exists()
    # the inviter never saw the secret: the token still has its use and works
    assert _uses_left(inviter, token) == 1
    ok = _join(cli, tmp_path / "after-pin", token, inviter)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    "text, needle",
    [
        ("hello", "not a collab join token"),
        ("collab1.abc", "expected 4 dot-separated parts"),
        ("collab1." + "0" * 64 + ".zzzzzzzz." + "a" * 26, "token id must be 8 hex"),
        ("collab1." + "0" * 64 + ".0123abcd.short", "secret must be 26 base32"),
        ("collab1." + "g" * 64 + ".0123abcd." + "a" * 26, "ca pin must be 64 hex"),
    ],
)
def test_malformed_token_text_is_refused_clearly(inviter, cli, cli_json, tmp_path, text, needle):
    home = tmp_path / "typo"
    res = _join(cli, home, text, inviter)
    assert res.returncode == 1
    _assert_refused(res, needle)
    _assert_untouched(home)


def test_unknown_token_id_is_refused(inviter, cli, cli_json, tmp_path):
    token = _invite(cli_json, inviter)
    tok = parse_token(token)
    fake_id = "%08x" % ((int(tok.token_id, 16) + 1) % 2**32)
    home = tmp_path / "unknown"
    res = _join(cli, home, format_token(tok.pin, fake_id, tok.secret), inviter)
    _assert_refused(res, "unknown join token")
    _assert_untouched(home)
    assert _uses_left(inviter, token) == 1


def test_no_inviter_listening_fails_cleanly(cli, cli_json, tmp_path, inviter):
    token = _invite(cli_json, inviter)
    home = tmp_path / "nowhere"
    res = cli("join", token, "--peer", "127.0.0.1:1", "--timeout", "2", "--home", home)
    _assert_refused(res, "could not reach an inviter")
    _assert_untouched(home)
