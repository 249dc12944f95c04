"""Tests for collab_tui.net.identity (files), .pki (certs, pins) and .tls (real TLS on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import ssl
import stat

import pytest
from conftest import self_signed_node_cert
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from collab_tui.net import tls
from collab_tui.net.identity import (
    NodeIdentity,
    NotInitialized,
    create_cluster,
    install_joined_identity,
    load_identity,
    write_private,
    write_public,
)
from collab_tui.net.pki import (
    IdentityError,
    ca_pin,
    cert_pem,
    cluster_id_of,
    make_csr,
    new_key,
    node_id_of,
    sign_csr,
    verify_issued_by,
    verify_pinned_server,
)
from collab_tui.net.tls import client_ssl_context, join_client_ssl_context, server_ssl_context
from collab_tui.textfmt import short_id

T = 10.0  # seconds: timeout for every network wait


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _join(home, ca_ident, name="worker"):
    key = new_key()
    cert = sign_csr(ca_ident.ca_key, ca_ident.ca_cert, make_csr(key, name))
    return install_joined_identity(home, key, cert, ca_ident.ca_cert)


# ----------------------------------------------------------------------------- ids and files


def test_short_id_and_node_id():
    assert short_id("3f2a9c1b77d0" + "0" * 52) == "3F2A-9C1B-77D0"
    key = new_key()
    nid = node_id_of(key.public_key())
    assert len(nid) == 64 and nid == nid.lower()
    csr = make_csr(key, "laptop")
    assert node_id_of(csr) == nid


def test_write_private_and_public_modes(tmp_path):
    old = os.umask(0)
    try:
        write_private(tmp_path / "a" / "secret", b"x")
        write_public(tmp_path / "a" / "pub", b"y")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a" / "secret") == 0o600
    assert _mode(tmp_path / "a" / "pub") == 0o644
    write_private(tmp_path / "a" / "secret", b"z")  # overwrite stays atomic and private
    assert (tmp_path / "a" / "secret").read_bytes() == b"z"
    assert _mode(tmp_path / "a" / "secret") == 0o600
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["pub", "secret"]  # no temp left


def test_create_and_load_cluster(tmp_path):
    ident = create_cluster(tmp_path, "alpha", cluster_name="lab")
    d = tmp_path / "identity"
    assert _mode(d / "node.key") == 0o600
    assert _mode(d / "ca.key") == 0o600
    assert _mode(d / "node.crt") == 0o644 and _mode(d / "ca.crt") == 0o644
    assert _mode(d) == 0o700
    assert ident.name == "alpha" and ident.cluster_name == "lab" and ident.is_ca
    assert ident.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ident.node_id
    assert ident.node_id != ident.cluster_id
    assert ca_pin(ident.ca_cert) == "sha256:" + cluster_id_of(ident.ca_cert) == "sha256:" + ident.cluster_id
    assert ident.short_id == short_id(ident.node_id)

    again = load_identity(tmp_path)
    assert again.node_id == ident.node_id and again.cluster_id == ident.cluster_id
    assert again.ca_key is not None and again.name == "alpha"


def test_create_refuses_existing_unless_forced(tmp_path):
    first = create_cluster(tmp_path, "alpha")
    with pytest.raises(IdentityError, match="already exists"):
        create_cluster(tmp_path, "alpha")
    second = create_cluster(tmp_path, "alpha", force=True)
    assert second.cluster_id != first.cluster_id
    assert load_identity(tmp_path).cluster_id == second.cluster_id


def test_load_missing_is_not_initialized(tmp_path):
    with pytest.raises(NotInitialized, match="collab init"):
        load_identity(tmp_path)


def test_load_refuses_corrupt_or_foreign_material(tmp_path):
    home, d = tmp_path / "a", tmp_path / "a" / "identity"
    create_cluster(home, "alpha")
    (d / "node.key").write_bytes(b"not a key")
    with pytest.raises(IdentityError, match="bad private key"):
        load_identity(home)
    write_private(
        d / "node.key",
        new_key().private_bytes(  # a valid key, but not the certificate's
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    with pytest.raises(IdentityError, match="node key does not match"):
        load_identity(home)

    create_cluster(home, "alpha", force=True)
    other = create_cluster(tmp_path / "b", "beta")
    write_public(d / "ca.crt", cert_pem(other.ca_cert))  # our node cert under a foreign CA
    (d / "ca.key").unlink()
    with pytest.raises(IdentityError, match="is not issued by"):
        load_identity(home)
    (d / "ca.crt").unlink()
    with pytest.raises(IdentityError, match="ca.crt is missing"):
        load_identity(home)


def test_bad_names_rejected(tmp_path):
    for bad in ("", "x" * 65, "tab\there", " padded", "nl\n"):
        with pytest.raises(IdentityError):
            create_cluster(tmp_path / "h", bad)
    with pytest.raises(IdentityError):
        make_csr(new_key(), "x" * 65)


# ----------------------------------------------------------------------------- signing


def test_sign_csr_ignores_client_supplied_id(tmp_path):
    ca = create_cluster(tmp_path / "ca", "ca-node")
    key = new_key()
    liar = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "f" * 64), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bob")]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(liar).sign(key, hashes.SHA256())
    cert = sign_csr(ca.ca_key, ca.ca_cert, csr)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == node_id_of(key.public_key()) != "f" * 64
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "bob"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {o.dotted_string for o in eku} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}
    verify_issued_by(cert, ca.ca_cert)


def test_sign_csr_rejects_bad_signature(tmp_path):
    ca = create_cluster(tmp_path / "ca", "ca-node")
    csr = make_csr(new_key(), "bob")
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # corrupt the signature
    bad = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(IdentityError, match="signature"):
        sign_csr(ca.ca_key, ca.ca_cert, bad)


def test_verify_issued_by_other_ca_and_dates(tmp_path):
    ca = create_cluster(tmp_path / "a", "a")
    other = create_cluster(tmp_path / "b", "b")
    with pytest.raises(IdentityError, match="not issued"):
        verify_issued_by(ca.cert, other.ca_cert)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=4000)
    with pytest.raises(IdentityError, match="expired"):
        verify_issued_by(ca.cert, ca.ca_cert, now=future)
    with pytest.raises(IdentityError, match="CA certificate"):
        verify_issued_by(ca.ca_cert, ca.ca_cert)  # a CA cert is not a node cert


def test_install_joined_identity(tmp_path):
    ca = create_cluster(tmp_path / "ca", "ca-node")
    joined = _join(tmp_path / "w", ca, "worker")
    assert joined.ca_key is None and not (tmp_path / "w" / "identity" / "ca.key").exists()
    assert _mode(tmp_path / "w" / "identity" / "node.key") == 0o600
    loaded = load_identity(tmp_path / "w")
    assert loaded.name == "worker" and loaded.cluster_id == ca.cluster_id and not loaded.is_ca
    # mismatched key / foreign CA are refused
    key = new_key()
    cert = sign_csr(ca.ca_key, ca.ca_cert, make_csr(key, "x"))
    with pytest.raises(IdentityError, match="does not match"):
        install_joined_identity(tmp_path / "x", new_key(), cert, ca.ca_cert)
    other = create_cluster(tmp_path / "o", "o")
    with pytest.raises(IdentityError, match="not issued"):
        install_joined_identity(tmp_path / "y", key, cert, other.ca_cert)
    with pytest.raises(IdentityError, match="already exists"):
        install_joined_identity(tmp_path / "w", key, cert, ca.ca_cert)


# ----------------------------------------------------------------------------- pinning


def test_verify_pinned_server_ok_and_mismatch(tmp_path):
    ca = create_cluster(tmp_path / "a", "a")
    other = create_cluster(tmp_path / "b", "b")
    leaf = ca.cert.public_bytes(serialization.Encoding.DER)
    ca_pem = cert_pem(ca.ca_cert)
    got = verify_pinned_server(ca_pin(ca.ca_cert), ca_pem, leaf)
    assert cluster_id_of(got) == ca.cluster_id
    # server presents another CA than the token pins
    with pytest.raises(IdentityError, match="CA pin mismatch"):
        verify_pinned_server(
            ca_pin(ca.ca_cert), cert_pem(other.ca_cert), other.cert.public_bytes(serialization.Encoding.DER)
        )
    # right CA but a leaf from another CA
    with pytest.raises(IdentityError, match="CA pin mismatch"):
        verify_pinned_server(ca_pin(ca.ca_cert), ca_pem, other.cert.public_bytes(serialization.Encoding.DER))
    with pytest.raises(IdentityError, match="CA pin mismatch"):
        verify_pinned_server(ca_pin(ca.ca_cert), b"garbage", leaf)


# ----------------------------------------------------------------------------- real TLS


def _self_signed_ident(tmp_path):
    """An identity whose node cert is self-signed (not issued by any cluster CA)."""
    key = new_key()
    cert = self_signed_node_cert(key)
    return NodeIdentity(tmp_path, key, cert, cert, None)


async def _server(ident):
    seen: list[object] = []

    async def handle(reader, writer):
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True)
        seen.append(node_id_of(der) if der else sslobj.getpeercert())
        try:
            line = await asyncio.wait_for(reader.readline(), T)
            writer.write(b"echo:" + line)
            await writer.drain()
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ssl_context(ident))
    port = srv.sockets[0].getsockname()[1]
    return srv, port, seen


async def _talk(port, ctx) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), T)
    try:
        writer.write(b"ping\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), T)
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), T)
        except (TimeoutError, OSError, ssl.SSLError):
            pass


async def _refused(port, ctx) -> bool:
    """True if the connection fails (TLS 1.3: the client may only see it on its first read)."""
    try:
        data = await _talk(port, ctx)
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return data == b""


async def test_tls_membership(tmp_path, caplog):
    caplog.set_level(logging.CRITICAL, logger="asyncio")  # handshake failures are expected noise
    ca = create_cluster(tmp_path / "ca", "ca-node")
    member = _join(tmp_path / "m", ca, "member")
    outsider = create_cluster(tmp_path / "other", "outsider")
    selfsigned = _self_signed_ident(tmp_path / "ss")

    srv, port, seen = await _server(ca)
    async with srv:
        # a member cert from the CA connects and is identified by node id
        assert await _talk(port, client_ssl_context(member)) == b"echo:ping\n"
        assert seen == [member.node_id]

        # a cert from ANOTHER CA is refused at handshake (handler never runs)
        with pytest.raises(ssl.SSLError):  # client side: the server cert is not from its CA
            await _talk(port, client_ssl_context(outsider))
        other_ca_client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts anything, presents other cert
        other_ca_client.check_hostname = False
        other_ca_client.verify_mode = ssl.CERT_NONE
        tls._load_chain(other_ca_client, outsider)
        assert await _refused(port, other_ca_client)

        # a self-signed cert is refused
        ss_client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ss_client.check_hostname = False
        ss_client.verify_mode = ssl.CERT_NONE
        tls._load_chain(ss_client, selfsigned)
        assert await _refused(port, ss_client)
        assert seen == [member.node_id]

        # a certless client passes the handshake (CERT_OPTIONAL); the server sees no peer cert
        assert await _talk(port, join_client_ssl_context()) == b"echo:ping\n"
        assert len(seen) == 2 and not seen[1]

        # the server keeps serving members after the refusals
        assert await _talk(port, client_ssl_context(member)) == b"echo:ping\n"
        assert seen[2] == member.node_id


async def test_join_client_sees_pinnable_server_cert(tmp_path, caplog):
    ca = create_cluster(tmp_path / "ca", "ca-node")
    srv, port, _ = await _server(ca)
    async with srv:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=join_client_ssl_context()), T
        )
        try:
            sslobj = writer.get_extra_info("ssl_object")
            assert sslobj.version() == "TLSv1.3"
            leaf = sslobj.getpeercert(binary_form=True)
            got = verify_pinned_server(ca_pin(ca.ca_cert), cert_pem(ca.ca_cert), leaf)
            assert cluster_id_of(got) == ca.cluster_id
            other = create_cluster(tmp_path / "o", "o")
            with pytest.raises(IdentityError, match="CA pin mismatch"):
                verify_pinned_server(ca_pin(other.ca_cert), cert_pem(ca.ca_cert), leaf)
        finally:
            writer.close()
