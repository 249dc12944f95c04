"""Tests for collab_tui.net.revocation."""

from __future__ import annotations

import json
import os
import stat

import pytest

from collab_tui.net.identity import create_cluster
from collab_tui.net.pki import make_csr, new_key, node_id_of, sign_csr
from collab_tui.net.revocation import (
    DenyList,
    DenyListStore,
    RevocationError,
    sign_denylist,
    verify_denylist,
)

NID = "ab" * 32


@pytest.fixture
def ca(tmp_path):
    return create_cluster(tmp_path / "ca", "ca-node")


def test_sign_and_verify(ca):
    blob = sign_denylist(ca.ca_key, 3, {NID: {"at": 1.5, "reason": "lost laptop"}})
    dl = verify_denylist(ca.ca_cert, blob)
    assert isinstance(dl, DenyList) and dl.version == 3
    assert dl.is_revoked(NID) and dl.is_revoked(NID.upper()) and not dl.is_revoked("cd" * 32)
    assert dl.entries[NID] == {"at": 1.5, "reason": "lost laptop"}


def test_tampered_rejected(ca):
    blob = sign_denylist(ca.ca_key, 1, {NID: {"at": 1.0, "reason": "x"}})
    obj = json.loads(blob)
    for mutate in (
        lambda o: o.update(version=2),
        lambda o: o["entries"].pop(NID),
        lambda o: o["entries"].update({"cd" * 32: {"at": 1.0, "reason": "y"}}),
        lambda o: o["entries"][NID].update(reason="z"),
        lambda o: o.update(sig=o["sig"][:-4] + "AAAA"),
        lambda o: o.update(sig="!!notbase64"),
    ):
        o = json.loads(json.dumps(obj))
        mutate(o)
        with pytest.raises(RevocationError):
            verify_denylist(ca.ca_cert, json.dumps(o).encode())


def test_wrong_ca_and_garbage(ca, tmp_path):
    other = create_cluster(tmp_path / "other", "o")
    blob = sign_denylist(other.ca_key, 1, {})
    with pytest.raises(RevocationError, match="another cluster"):
        verify_denylist(ca.ca_cert, blob)
    # forged: claims our cluster but signed by the other key
    o = json.loads(blob)
    o["cluster"] = ca.cluster_id
    with pytest.raises(RevocationError, match="signature"):
        verify_denylist(ca.ca_cert, json.dumps(o).encode())
    for bad in (b"", b"not json", b"[]", b'{"format":"x"}'):
        with pytest.raises(RevocationError):
            verify_denylist(ca.ca_cert, bad)


def test_sign_validates_input(ca):
    with pytest.raises(RevocationError):
        sign_denylist(ca.ca_key, -1, {})
    with pytest.raises(RevocationError):
        sign_denylist(ca.ca_key, 1, {"short": {"at": 1.0, "reason": ""}})
    with pytest.raises(RevocationError):
        sign_denylist(ca.ca_key, 1, {NID: {"at": "now", "reason": ""}})


def test_store_accept_keeps_newer_only(ca, tmp_path):
    store = DenyListStore(tmp_path / "node" / "denylist.json")
    assert store.load(ca.ca_cert) == DenyList() and store.blob() is None
    v2 = sign_denylist(ca.ca_key, 2, {NID: {"at": 1.0, "reason": "a"}})
    v1 = sign_denylist(ca.ca_key, 1, {})
    assert store.accept(v2, ca.ca_cert) is True
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.accept(v1, ca.ca_cert) is False  # older version ignored
    assert store.accept(v2, ca.ca_cert) is False  # same version: no change
    assert store.load(ca.ca_cert).version == 2 and store.blob() == v2
    with pytest.raises(RevocationError):
        store.accept(b"{}", ca.ca_cert)
    assert store.load(ca.ca_cert).is_revoked(NID)


def test_store_revoke(ca, tmp_path):
    key = new_key()
    cert = sign_csr(ca.ca_key, ca.ca_cert, make_csr(key, "bad-node"))
    nid = node_id_of(cert)
    master = DenyListStore(tmp_path / "master.json")
    blob1 = master.revoke(ca.ca_key, ca.ca_cert, nid, "compromised", now=10.0)
    blob2 = master.revoke(ca.ca_key, ca.ca_cert, NID, "retired", now=11.0)
    dl = master.load(ca.ca_cert)
    assert dl.version == 2 and dl.is_revoked(nid) and dl.is_revoked(NID)
    assert dl.entries[nid] == {"at": 10.0, "reason": "compromised"}
    # spreading: a follower accepts in any order and ends on the newest
    follower = DenyListStore(tmp_path / "follower.json")
    assert follower.accept(blob2, ca.ca_cert) and not follower.accept(blob1, ca.ca_cert)
    assert follower.load(ca.ca_cert).version == 2
    with pytest.raises(RevocationError):
        master.revoke(ca.ca_key, ca.ca_cert, "nope", "x")
    with pytest.raises(RevocationError):
        master.revoke(ca.ca_key, ca.ca_cert, ca.cluster_id, "x")


def test_priorities_are_signed_member_records(ca, tmp_path):
    """A priority is set only with the CA key, survives a revocation, and a forged change does not verify."""
    ca_key, ca_cert = ca.ca_key, ca.ca_cert
    store = DenyListStore(tmp_path / "denylist.json")
    nid = "c" * 64
    blob = store.set_priority(ca_key, ca_cert, nid, 7)
    assert blob is not None and verify_denylist(ca_cert, blob).priority_of(nid) == 7
    assert store.set_priority(ca_key, ca_cert, nid, 7) is None  # unchanged: no new version
    store.revoke(ca_key, ca_cert, "d" * 64, "lost")
    records = store.load(ca_cert)
    assert records.priority_of(nid) == 7 and records.is_revoked("d" * 64) and records.version == 2
    forged = json.loads(store.blob())
    forged["priorities"][nid] = 10**6
    with pytest.raises(RevocationError, match="signature"):
        verify_denylist(ca_cert, json.dumps(forged).encode())
    with pytest.raises(RevocationError):
        store.set_priority(ca_key, ca_cert, nid, 10**9)
