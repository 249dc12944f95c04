"""Tests for collab_tui.net.tokens."""

from __future__ import annotations

import json
import os
import stat

import pytest

from collab_tui.net.tokens import (
    JoinToken,
    TokenBadSecret,
    TokenError,
    TokenExpired,
    TokenStore,
    TokenUnknown,
    TokenUsedUp,
    parse_token,
)

PIN = "sha256:" + "ab" * 32
NOW = 1_700_000_000.0


@pytest.fixture
def store(tmp_path):
    return TokenStore(tmp_path / "tokens.json")


def test_issue_format_and_parse(store, tmp_path):
    text = store.issue(PIN, now=NOW, label="for bob")
    parts = text.split(".")
    assert parts[0] == "collab1" and parts[1] == "ab" * 32
    assert len(parts[2]) == 8 and len(parts[3]) == 26 and parts[3] == parts[3].lower()
    tok = parse_token(text)
    assert isinstance(tok, JoinToken)
    assert tok.pin == PIN and tok.pin_hex == "ab" * 32 and tok.text() == text
    assert parse_token("  " + text.upper() + "\n") == tok  # blanks and case tolerated
    assert stat.S_IMODE(os.stat(tmp_path / "tokens.json").st_mode) == 0o600
    raw = (tmp_path / "tokens.json").read_text()
    assert tok.secret not in raw  # only the hash is stored
    rec = json.loads(raw)[tok.token_id]
    assert set(rec) == {"secret_sha256", "expires_at", "uses_left", "created_at", "label"}


@pytest.mark.parametrize(
    "bad, msg",
    [
        ("", "start with"),
        ("hello", "start with"),
        ("collab2." + "a" * 64 + ".0123abcd." + "a" * 26, "start with"),
        ("collab1." + "a" * 64 + ".0123abcd", "4 dot-separated"),
        ("collab1." + "a" * 63 + ".0123abcd." + "a" * 26, "pin"),
        ("collab1." + "g" * 64 + ".0123abcd." + "a" * 26, "pin"),
        ("collab1." + "a" * 64 + ".0123abc." + "a" * 26, "token id"),
        ("collab1." + "a" * 64 + ".0123abcd." + "a" * 25, "secret"),
        ("collab1." + "a" * 64 + ".0123abcd." + "1" * 26, "secret"),
    ],
)
def test_parse_malformed(bad, msg):
    with pytest.raises(TokenError, match=msg):
        parse_token(bad)


def test_redeem_once(store):
    tok = parse_token(store.issue(PIN, now=NOW))
    store.check(tok.token_id, tok.secret, now=NOW + 1)
    store.check(tok.token_id, tok.secret, now=NOW + 1)  # check does not consume
    store.redeem(tok.token_id, tok.secret, now=NOW + 1)
    with pytest.raises(TokenUsedUp):
        store.redeem(tok.token_id, tok.secret, now=NOW + 2)
    with pytest.raises(TokenUsedUp):
        store.check(tok.token_id, tok.secret, now=NOW + 2)


def test_multi_use(store):
    tok = parse_token(store.issue(PIN, uses=3, now=NOW))
    for _ in range(3):
        store.redeem(tok.token_id, tok.secret, now=NOW)
    with pytest.raises(TokenUsedUp):
        store.redeem(tok.token_id, tok.secret, now=NOW)


def test_expiry(store):
    tok = parse_token(store.issue(PIN, ttl_s=60, now=NOW))
    store.check(tok.token_id, tok.secret, now=NOW + 59)
    with pytest.raises(TokenExpired):
        store.redeem(tok.token_id, tok.secret, now=NOW + 60)
    with pytest.raises(TokenExpired):
        store.check(tok.token_id, tok.secret, now=NOW + 3600)


def test_unknown(store):
    with pytest.raises(TokenUnknown):
        store.redeem("deadbeef", "a" * 26, now=NOW)
    store.issue(PIN, now=NOW)
    with pytest.raises(TokenUnknown):
        store.check("deadbeef", "a" * 26, now=NOW)


def test_bad_secret_does_not_consume(store):
    tok = parse_token(store.issue(PIN, now=NOW))
    for _ in range(5):
        with pytest.raises(TokenBadSecret):
            store.redeem(tok.token_id, "b" * 26, now=NOW)
    assert store.list(NOW)[0].uses_left == 1
    store.redeem(tok.token_id, tok.secret, now=NOW)  # the real secret still works once


def test_list_prune_delete(store):
    a = parse_token(store.issue(PIN, ttl_s=10, now=NOW, label="short"))
    b = parse_token(store.issue(PIN, ttl_s=1000, now=NOW + 1, label="used"))
    c = parse_token(store.issue(PIN, ttl_s=1000, now=NOW + 2, label="live"))
    store.redeem(b.token_id, b.secret, now=NOW + 3)
    infos = store.list(NOW + 20)
    assert [(i.label, i.status) for i in infos] == [("short", "expired"), ("used", "used up"), ("live", "active")]
    assert store.prune(NOW + 20) == 2
    assert [i.token_id for i in store.list(NOW + 20)] == [c.token_id]
    with pytest.raises(TokenUnknown):
        store.check(a.token_id, a.secret, now=NOW)
    assert store.delete(c.token_id) and not store.delete(c.token_id)
    assert store.list(NOW) == []


def test_issue_validation(store):
    with pytest.raises(TokenError):
        store.issue("sha256:xyz", now=NOW)
    with pytest.raises(TokenError):
        store.issue(PIN, ttl_s=0, now=NOW)
    with pytest.raises(TokenError):
        store.issue(PIN, uses=0, now=NOW)
    assert parse_token(store.issue("cd" * 32, now=NOW)).pin == "sha256:" + "cd" * 32


def test_store_persists_across_instances(tmp_path):
    tok = parse_token(TokenStore(tmp_path / "t.json").issue(PIN, uses=2, now=NOW))
    TokenStore(tmp_path / "t.json").redeem(tok.token_id, tok.secret, now=NOW)
    assert TokenStore(tmp_path / "t.json").list(NOW)[0].uses_left == 1


def test_corrupt_store(tmp_path):
    (tmp_path / "t.json").write_text("{nope")
    with pytest.raises(TokenError, match="corrupt"):
        TokenStore(tmp_path / "t.json").check("deadbeef", "a" * 26, now=NOW)
