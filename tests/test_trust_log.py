"""The trust log's rules without sockets: who may author what, what a removed admin's signature is worth,
one order for one set, schema bounds; the admin certificate chain; the join rate limit; renewal timing."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from collab_tui.net import pki
from collab_tui.net.identity import create_cluster, load_identity
from collab_tui.net.join_limit import JoinLimiter
from collab_tui.net.trust_log import TrustLogError, build_state, parse_entry, sign_entry
from collab_tui.net.trust_store import TrustLogStore

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A root and three member keys with root-issued certificates."""
    root = create_cluster(tmp_path_factory.mktemp("root"), "root-node")
    members = []
    for name in ("alpha", "beta", "gamma"):
        key = pki.new_key()
        cert = pki.sign_csr(root.ca_key, root.ca_cert, pki.make_csr(key, name), days=30)
        members.append((key, cert, pki.node_id_of(cert)))
    return root, members


def _grant(root, cert, at=T0):
    signer = pki.make_signer_cert(root.ca_key, root.ca_cert, cert)
    return signer, sign_entry(
        root.ca_key, root.cluster_id, "admin_add", at, node=pki.node_id_of(cert), cert=pki.cert_pem(signer).decode()
    )


def _issue(signer_key, signer_cert, name="newbie", days=30):
    key = pki.new_key()
    return key, pki.sign_csr(signer_key, signer_cert, pki.make_csr(key, name), days=days)


def _join_entry(key, author, cert, at, token="0badc0de"):
    return sign_entry(
        key,
        author,
        "join",
        at,
        node=pki.node_id_of(cert),
        name="newbie",
        token=token,
        serial=format(cert.serial_number, "x"),
        not_after=cert.not_valid_after_utc.timestamp(),
    )


def test_root_entries_count_and_priorities_take_the_latest(cluster):
    root, ((_, _, a), (_, _, b), _) = cluster
    rid = root.cluster_id
    entries = [
        sign_entry(root.ca_key, rid, "priority", T0, node=a, priority=3),
        sign_entry(root.ca_key, rid, "priority", T0 + 1, node=a, priority=5),
        sign_entry(root.ca_key, rid, "revoke", T0 + 2, node=b, reason="lost laptop", keep=[]),
    ]
    st, errors = build_state(root.ca_cert, [e.wire() for e in entries])
    assert errors == []
    assert st.priority_of(a) == 5 and st.is_revoked(b) and not st.is_revoked(a)
    assert st.revoked[b]["reason"] == "lost laptop" and st.version == 3


def test_an_admin_signs_with_its_granted_key_and_a_member_cannot(cluster):
    root, ((ka, ca, a), (kb, _, b), (_, _, c)) = cluster
    _, grant = _grant(root, ca)
    by_admin = sign_entry(ka, a, "priority", T0 + 5, node=c, priority=2)
    by_member = sign_entry(kb, b, "revoke", T0 + 5, node=c, reason="", keep=[])
    forged_grant = sign_entry(ka, a, "admin_add", T0 + 6, node=b, cert=grant.body["cert"])
    st, errors = build_state(root.ca_cert, [grant, by_admin, by_member, forged_grant])
    assert st.is_admin(a) and not st.is_admin(b)
    assert st.priority_of(c) == 2 and not st.is_revoked(c)  # the member's revocation counts for nothing
    assert len(errors) == 2 and any("not an admin" in e for e in errors) and any("only the root" in e for e in errors)


def test_a_tampered_or_misattributed_entry_is_dropped(cluster):
    root, ((ka, ca, a), _, (_, _, c)) = cluster
    _, grant = _grant(root, ca)
    good = sign_entry(ka, a, "priority", T0 + 5, node=c, priority=2)
    tampered = good.wire()
    tampered["body"] = {**tampered["body"], "priority": 9}
    as_root = sign_entry(ka, root.cluster_id, "priority", T0 + 6, node=c, priority=7)  # signed by a, claims root
    st, errors = build_state(root.ca_cert, [grant.wire(), tampered, as_root.wire()])
    assert st.priority_of(c) == 0 and len(errors) == 2 and all("signature" in e for e in errors)


def test_schema_bounds_refuse_before_anything_counts(cluster):
    root, ((_, _, a), _, _) = cluster
    rid = root.cluster_id
    ok = sign_entry(root.ca_key, rid, "priority", T0, node=a, priority=1).wire()
    for body in (
        {**ok["body"], "priority": 10**9},
        {**ok["body"], "kind": "make_me_root"},
        {**ok["body"], "node": "not-a-node"},
        {**ok["body"], "extra": 1},
        {**ok["body"], "at": float("nan")},
    ):
        with pytest.raises(TrustLogError):
            parse_entry({"body": body, "sig": ok["sig"]})
    with pytest.raises(TrustLogError):
        sign_entry(root.ca_key, rid, "revoke", T0, node=a, reason="x" * 500, keep=[])


def test_removing_an_admin_keeps_what_it_signed_before_and_refuses_what_it_signs_after(cluster):
    root, ((ka, ca, a), _, _) = cluster
    signer, grant = _grant(root, ca)
    _, before = _issue(ka, signer)
    join_before = _join_entry(ka, a, before, T0 + 10)
    st, _ = build_state(root.ca_cert, [grant, join_before])
    removal = sign_entry(
        root.ca_key, root.cluster_id, "admin_remove", T0 + 20, node=a, keep=st.authored_by(a)
    )  # what `collab trust admin remove` signs
    _, after = _issue(ka, signer)
    backdated = _join_entry(ka, a, after, T0 + 5)  # the removed admin pretends it was earlier
    st, _ = build_state(root.ca_cert, [grant, join_before, removal, backdated])
    assert not st.is_admin(a) and st.signer_cert(a) is None
    assert st.refuses(before, root.ca_cert.subject) is None
    why = st.refuses(after, root.ca_cert.subject)
    assert why and "lost its power to sign" in why and "collab join --force" in why
    assert st.ignored == 1 and backdated.id not in {e.id for e in st.entries}


def test_a_revoked_admin_is_cut_off_and_loses_its_power(cluster):
    root, ((ka, ca, a), (_, _, b), _) = cluster
    signer, grant = _grant(root, ca)
    revoke = sign_entry(root.ca_key, root.cluster_id, "revoke", T0 + 20, node=a, reason="stolen", keep=[])
    later = sign_entry(ka, a, "priority", T0 + 30, node=b, priority=9)
    st, _ = build_state(root.ca_cert, [grant, revoke, later])
    assert st.is_revoked(a) and not st.is_admin(a) and st.priority_of(b) == 0
    assert st.refuses(ca, root.ca_cert.subject) == "node is revoked"


def test_a_certificate_from_an_unknown_signer_is_refused(cluster):
    root, ((ka, ca, _), _, _) = cluster
    signer = pki.make_signer_cert(root.ca_key, root.ca_cert, ca)
    _, cert = _issue(ka, signer)
    st, _ = build_state(root.ca_cert, [])  # no admin_add seen (yet)
    assert "does not know" in (st.refuses(cert, root.ca_cert.subject) or "")


def test_one_set_gives_one_order_whatever_order_it_arrives_in(cluster):
    root, ((ka, ca, a), (_, _, b), (_, _, c)) = cluster
    _, grant = _grant(root, ca)
    entries = [grant] + [
        sign_entry(
            ka if i % 2 else root.ca_key, a if i % 2 else root.cluster_id, "priority", T0 + i % 3, node=n, priority=i
        )
        for i, n in enumerate([b, c, b, c, b, c], start=1)
    ]
    orders = set()
    for seed in range(5):
        shuffled = entries[:]
        random.Random(seed).shuffle(shuffled)
        st, errors = build_state(root.ca_cert, shuffled)
        assert not errors
        orders.add(tuple(e.id for e in st.entries))
    assert len(orders) == 1


def test_the_store_only_grows_and_survives_a_reload(cluster, tmp_path):
    root, ((_, _, a), (_, _, b), _) = cluster
    store = TrustLogStore(tmp_path / "trust_log.json", root.ca_cert)
    e1 = sign_entry(root.ca_key, root.cluster_id, "priority", T0, node=a, priority=1)
    e2 = sign_entry(root.ca_key, root.cluster_id, "revoke", T0 + 1, node=b, reason="", keep=[])
    assert store.merge([e1.wire()]) == (True, [])
    assert store.merge([e1.wire()])[0] is False  # nothing new
    grew, errors = store.merge([e2.wire(), {"body": {}, "sig": ""}])
    assert grew and len(errors) == 1
    again = TrustLogStore(tmp_path / "trust_log.json", root.ca_cert)
    assert [e.id for e in again.current.stored] == [e1.id, e2.id] and again.current.is_revoked(b)
    assert oct((tmp_path / "trust_log.json").stat().st_mode & 0o777) == "0o600"


def test_admin_chain_verifies_and_a_pre_admin_ca_cannot_grant(cluster, tmp_path):
    root, ((ka, ca, a), _, _) = cluster
    signer = pki.make_signer_cert(root.ca_key, root.ca_cert, ca)
    pki.verify_signer_cert(signer, root.ca_cert, a)
    _, cert = _issue(ka, signer)
    pki.verify_chain(cert, root.ca_cert, signer)
    with pytest.raises(pki.IdentityError):
        pki.verify_chain(cert, root.ca_cert, None)  # without the admin's certificate it does not chain
    other = create_cluster(tmp_path / "other", "x")
    with pytest.raises(pki.IdentityError):
        pki.verify_signer_cert(signer, other.ca_cert, a)
    # a CA made with path length 0 (before admins existed) says why it cannot grant
    old_ca = pki.make_ca(root.ca_key, "old", 10)
    old_ca = old_ca  # same key, path length 1 now; build one with 0 by hand
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    builder = x509.CertificateBuilder().subject_name(old_ca.subject).issuer_name(old_ca.subject)
    builder = builder.public_key(root.ca_key.public_key()).serial_number(1)
    builder = builder.not_valid_before(old_ca.not_valid_before_utc).not_valid_after(old_ca.not_valid_after_utc)
    for ext in old_ca.extensions:
        value = (
            x509.BasicConstraints(ca=True, path_length=0) if isinstance(ext.value, x509.BasicConstraints) else ext.value
        )
        builder = builder.add_extension(value, ext.critical)
    pathlen0 = builder.sign(root.ca_key, hashes.SHA256())
    with pytest.raises(pki.IdentityError, match="before admins existed"):
        pki.make_signer_cert(root.ca_key, pathlen0, ca)


def test_an_identity_issued_by_an_admin_loads_with_its_chain(cluster, tmp_path):
    from collab_tui.net.identity import install_joined_identity, replace_certificate

    root, ((ka, ca, _), _, _) = cluster
    signer = pki.make_signer_cert(root.ca_key, root.ca_cert, ca)
    key, cert = _issue(ka, signer)
    install_joined_identity(tmp_path, key, cert, root.ca_cert, issuer=signer)
    ident = load_identity(tmp_path)
    assert ident.issuer is not None and ident.chain_pem().count(b"BEGIN CERTIFICATE") == 2
    renewed = pki.sign_csr(root.ca_key, root.ca_cert, pki.make_csr(key, "newbie"), days=30)
    replace_certificate(ident, renewed, None)  # renewed by the root: the chain is the certificate alone
    again = load_identity(tmp_path)
    assert again.issuer is None and again.cert.serial_number == renewed.serial_number


def test_renewal_is_due_once_a_third_of_the_lifetime_is_left(cluster):
    root, _ = cluster
    key = pki.new_key()
    cert = pki.sign_csr(root.ca_key, root.ca_cert, pki.make_csr(key, "n"), days=30)
    start = cert.not_valid_after_utc - dt.timedelta(days=30)
    assert not pki.renewal_due(cert, start + dt.timedelta(days=19))
    assert pki.renewal_due(cert, start + dt.timedelta(days=21))
    assert pki.lifetime(cert) == dt.timedelta(days=30)


def test_join_limiter_spends_only_failures_and_refills():
    lim = JoinLimiter(burst=3, every=10.0)
    for _ in range(3):
        assert lim.wait("10.0.0.1", 0.0) == 0.0
        lim.failed("10.0.0.1", 0.0)
    assert lim.wait("10.0.0.1", 1.0) == pytest.approx(9.0)
    assert lim.wait("10.0.0.2", 1.0) == 0.0  # another address is not held back
    assert lim.wait("10.0.0.1", 10.5) == 0.0  # one attempt back after `every` seconds
    small = JoinLimiter(burst=1, every=1.0, max_addrs=2)
    for i in range(5):
        small.failed(f"a{i}", 0.0)
    assert len(small._buckets) == 2
