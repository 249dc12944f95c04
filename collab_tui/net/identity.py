"""Cluster identity: CA, node keys and certificates, TLS contexts (kubeadm/k3s style trust).

Trust model
-----------
* ``collab init`` runs :func:`create_cluster`: it makes the cluster CA (ECDSA P-256) and this
  node's key + certificate signed by it.  **The CA private key (``ca.key``) stays on the node that
  ran ``init``**; it never leaves that machine and is only used to sign join CSRs and deny-lists.
* ``collab join TOKEN`` generates a key locally (:func:`new_key`, :func:`make_csr`), checks the CA
  pin (:func:`verify_pinned_server`) *before* sending the token secret, then installs the signed
  certificate with :func:`install_joined_identity`.
* Node id = lowercase hex SHA-256 of the SubjectPublicKeyInfo DER (:func:`node_id_of`).  The
  cluster id is the same hash of the CA public key (:func:`cluster_id_of`).

Certificate naming
------------------
Node certificates carry ``CN = <node id>`` (always computed by the CA from the CSR public key;
a client-supplied id is never trusted) and ``O = <human node name>``.  The CA certificate carries
``CN = "collab CA"`` and ``O = <cluster name>``.

On-disk layout under ``<home>/identity/`` (directory mode 0700)::

    node.key  0600  this node's private key (PEM, PKCS#8, unencrypted)
    node.crt  0644  this node's certificate
    ca.crt    0644  the cluster CA certificate (the only trust anchor)
    ca.key    0600  the CA private key -- only on the CA holder (the node that ran ``init``)
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..fsutil import atomic_write

__all__ = [
    "NotInitialized", "IdentityError", "NodeIdentity",
    "node_id_of", "short_id", "ca_pin", "cluster_id_of", "validate_name",
    "write_private", "write_public", "identity_dir", "identity_exists",
    "new_key", "make_csr", "sign_csr", "create_cluster", "load_identity",
    "install_joined_identity", "verify_issued_by", "verify_pinned_server",
    "server_ssl_context", "client_ssl_context", "join_client_ssl_context",
    "cert_pem", "key_pem",
]

CA_COMMON_NAME = "collab CA"
MAX_NAME_LEN = 64
_CLOCK_SKEW = _dt.timedelta(minutes=5)

PublicKeyLike = Union[x509.Certificate, x509.CertificateSigningRequest, ec.EllipticCurvePublicKey, bytes]


class NotInitialized(Exception):
    """No identity exists yet under the given home."""


class IdentityError(Exception):
    """Invalid, inconsistent or untrusted identity material."""


# --------------------------------------------------------------------------- ids and pins

def _spki_der(obj: PublicKeyLike) -> bytes:
    if isinstance(obj, (bytes, bytearray)):
        try:
            obj = x509.load_der_x509_certificate(bytes(obj))
        except ValueError as e:
            raise IdentityError(f"not a DER certificate: {e}") from None
    if isinstance(obj, (x509.Certificate, x509.CertificateSigningRequest)):
        pub = obj.public_key()
    else:
        pub = obj
    try:
        return pub.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
    except AttributeError:
        raise IdentityError(f"cannot get a public key from {type(obj).__name__}") from None


def node_id_of(obj: PublicKeyLike) -> str:
    """Lowercase hex SHA-256 of the SPKI DER of a cert, CSR, public key, or DER-encoded cert."""
    return hashlib.sha256(_spki_der(obj)).hexdigest()


def short_id(node_id: str) -> str:
    """``'3f2a9c1b77d0...'`` -> ``'3F2A-9C1B-77D0'`` (first 12 hex chars, upper, groups of 4)."""
    head = node_id[:12].upper()
    return "-".join(head[i:i + 4] for i in range(0, len(head), 4))


def cluster_id_of(ca_cert: x509.Certificate) -> str:
    """Cluster id: hex SHA-256 of the CA public key SPKI."""
    return node_id_of(ca_cert)


def ca_pin(ca_cert: x509.Certificate) -> str:
    """Pin carried by join tokens: ``'sha256:' + cluster_id_of(ca_cert)``."""
    return "sha256:" + cluster_id_of(ca_cert)


def validate_name(name: str, what: str = "name") -> str:
    """Check a node/cluster name: 1..64 printable characters, no surrounding blanks."""
    if not isinstance(name, str) or not name:
        raise IdentityError(f"{what} must be a non-empty string")
    if len(name) > MAX_NAME_LEN:
        raise IdentityError(f"{what} too long ({len(name)} > {MAX_NAME_LEN} characters)")
    if not name.isprintable() or name != name.strip():
        raise IdentityError(f"{what} must be printable without leading/trailing blanks: {name!r}")
    return name


# --------------------------------------------------------------------------- atomic files

def _atomic_write(path: Path | str, data: bytes, mode: int) -> None:
    atomic_write(path, data, mode)


def write_private(path: Path | str, data: bytes) -> None:
    """Atomically write ``data`` with mode 0600 from creation (temp file, fsync, os.replace)."""
    _atomic_write(path, data, 0o600)


def write_public(path: Path | str, data: bytes) -> None:
    """Atomically write ``data`` with mode 0644."""
    _atomic_write(path, data, 0o644)


# --------------------------------------------------------------------------- keys, CSRs, certs

def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _check_p256(pub: object, what: str) -> None:
    if not (isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256R1)):
        raise IdentityError(f"{what} must be an ECDSA P-256 key")


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    vals = name.get_attributes_for_oid(oid)
    return str(vals[0].value) if vals else None


def make_csr(key: ec.EllipticCurvePrivateKey, node_name: str) -> x509.CertificateSigningRequest:
    """CSR carrying the human node name as O (the CA ignores any client-supplied CN)."""
    validate_name(node_name, "node name")
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, node_id_of(key.public_key())),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, node_name),
    ])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def sign_csr(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
             csr: x509.CertificateSigningRequest, days: int = 365,
             node_name: str | None = None) -> x509.Certificate:
    """Issue a node certificate (serverAuth + clientAuth) for ``csr``; runs on the CA holder.

    CN is the node id computed here from the CSR public key; O is ``node_name`` or the CSR's O.
    """
    if not csr.is_signature_valid:
        raise IdentityError("CSR signature is invalid")
    pub = csr.public_key()
    _check_p256(pub, "node key")
    if node_id_of(pub) == cluster_id_of(ca_cert):
        raise IdentityError("refusing to issue a node certificate for the CA key")
    if node_name is None:
        node_name = _attr(csr.subject, NameOID.ORGANIZATION_NAME) or ""
    validate_name(node_name, "node name")
    now = _utcnow()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, node_id_of(pub)),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, node_name),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert


def _make_ca(ca_key: ec.EllipticCurvePrivateKey, cluster_name: str, days: int) -> x509.Certificate:
    pub = ca_key.public_key()
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_name),
    ])
    now = _utcnow()
    ski = x509.SubjectKeyIdentifier.from_public_key(pub)
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def verify_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate,
                     now: _dt.datetime | None = None) -> None:
    """Raise IdentityError unless ``cert`` is an end-entity cert signed by ``ca_cert``, valid now."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise IdentityError(f"certificate not issued by the cluster CA: {e or type(e).__name__}") from None
    now = now or _utcnow()
    for c, what in ((cert, "certificate"), (ca_cert, "CA certificate")):
        if now < c.not_valid_before_utc:
            raise IdentityError(f"{what} not valid before {c.not_valid_before_utc.isoformat()}")
        if now > c.not_valid_after_utc:
            raise IdentityError(f"{what} expired on {c.not_valid_after_utc.isoformat()}")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is not None and bc.ca:
        raise IdentityError("expected a node (end-entity) certificate, got a CA certificate")


def verify_pinned_server(pin: str, ca_pem: bytes, leaf_der: bytes) -> x509.Certificate:
    """Joiner side: trust the CA sent by the server only if it matches the token pin.

    Returns the CA cert when ``ca_pin(CA) == pin`` (constant-time), the CA is self-signed, and
    ``leaf_der`` (the server's TLS cert) is directly issued by it and currently valid.
    """
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except (ValueError, TypeError) as e:
        raise IdentityError(f"CA pin mismatch: server sent an unreadable CA certificate ({e})") from None
    got = ca_pin(ca)
    if not hmac.compare_digest(got.encode(), pin.strip().lower().encode()):
        raise IdentityError(f"CA pin mismatch: expected {pin}, server presented {got}")
    try:
        ca.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise IdentityError("CA pin mismatch: CA certificate is not properly self-signed") from None
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
    except (ValueError, TypeError) as e:
        raise IdentityError(f"CA pin mismatch: unreadable server certificate ({e})") from None
    try:
        verify_issued_by(leaf, ca)
    except IdentityError as e:
        raise IdentityError(f"CA pin mismatch: server certificate rejected: {e}") from None
    return ca


# --------------------------------------------------------------------------- on-disk identity

def identity_dir(home: Path | str) -> Path:
    return Path(home) / "identity"


def identity_exists(home: Path | str) -> bool:
    d = identity_dir(home)
    return any((d / n).exists() for n in ("node.key", "node.crt", "ca.crt"))


@dataclass
class NodeIdentity:
    """This node's key material; ``ca_key`` is set only on the CA holder (the ``init`` node)."""

    home: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey | None = None

    @property
    def dir(self) -> Path:
        return identity_dir(self.home)

    @property
    def node_id(self) -> str:
        return node_id_of(self.cert)

    @property
    def short_id(self) -> str:
        return short_id(self.node_id)

    @property
    def cluster_id(self) -> str:
        return cluster_id_of(self.ca_cert)

    @property
    def pin(self) -> str:
        return ca_pin(self.ca_cert)

    @property
    def name(self) -> str:
        """Human node name (stored as O in the node certificate subject)."""
        return _attr(self.cert.subject, NameOID.ORGANIZATION_NAME) or self.short_id

    @property
    def cluster_name(self) -> str:
        return _attr(self.ca_cert.subject, NameOID.ORGANIZATION_NAME) or "collab"

    @property
    def is_ca(self) -> bool:
        return self.ca_key is not None


def _save(ident: NodeIdentity) -> None:
    d = ident.dir
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    write_private(d / "node.key", key_pem(ident.key))
    write_public(d / "node.crt", cert_pem(ident.cert))
    write_public(d / "ca.crt", cert_pem(ident.ca_cert))
    if ident.ca_key is not None:
        write_private(d / "ca.key", key_pem(ident.ca_key))
    else:
        try:
            (d / "ca.key").unlink()
        except FileNotFoundError:
            pass


def _check_pair(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, what: str) -> None:
    if node_id_of(key.public_key()) != node_id_of(cert):
        raise IdentityError(f"{what} key does not match its certificate")


def create_cluster(home: Path | str, node_name: str, cluster_name: str = "collab",
                   days: int = 3650, force: bool = False) -> NodeIdentity:
    """``collab init``: new CA + this node's cert. The CA key stays on this node (``ca.key``)."""
    validate_name(node_name, "node name")
    validate_name(cluster_name, "cluster name")
    if identity_exists(home) and not force:
        raise IdentityError(f"an identity already exists in {identity_dir(home)} (use force to replace it)")
    ca_key = new_key()
    ca_cert = _make_ca(ca_key, cluster_name, days)
    key = new_key()
    cert = sign_csr(ca_key, ca_cert, make_csr(key, node_name), days=days)
    ident = NodeIdentity(Path(home), key, cert, ca_cert, ca_key)
    _save(ident)
    return ident


def install_joined_identity(home: Path | str, key: ec.EllipticCurvePrivateKey,
                            cert: x509.Certificate, ca_cert: x509.Certificate,
                            force: bool = False) -> NodeIdentity:
    """Store the result of a successful join (no CA key: a joined node is never the CA holder)."""
    if identity_exists(home) and not force:
        raise IdentityError(f"an identity already exists in {identity_dir(home)} (use force to replace it)")
    verify_issued_by(cert, ca_cert)
    _check_pair(key, cert, "node")
    ident = NodeIdentity(Path(home), key, cert, ca_cert, None)
    _save(ident)
    return ident


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise IdentityError(f"cannot read {path}: {e.strerror}") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as e:
        raise IdentityError(f"bad private key in {path}: {e}") from None
    _check_p256(key.public_key(), str(path))
    return key  # type: ignore[return-value]


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError as e:
        raise IdentityError(f"bad certificate in {path}: {e}") from None


def load_identity(home: Path | str) -> NodeIdentity:
    """Load and cross-check the identity under ``home``; NotInitialized if there is none."""
    d = identity_dir(home)
    if not (d / "node.key").exists():
        raise NotInitialized(
            f"no node identity in {d}: run `collab init` to create a cluster "
            f"or `collab join TOKEN` to join one")
    for n in ("node.crt", "ca.crt"):
        if not (d / n).exists():
            raise IdentityError(f"incomplete identity in {d}: {n} is missing")
    key = _load_key(d / "node.key")
    cert = _load_cert(d / "node.crt")
    ca_cert = _load_cert(d / "ca.crt")
    ca_key = _load_key(d / "ca.key") if (d / "ca.key").exists() else None
    _check_pair(key, cert, "node")
    if ca_key is not None:
        _check_pair(ca_key, ca_cert, "CA")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise IdentityError(f"{d / 'node.crt'} is not issued by {d / 'ca.crt'}") from None
    return NodeIdentity(Path(home), key, cert, ca_cert, ca_key)


# --------------------------------------------------------------------------- TLS contexts

def _load_chain(ctx: ssl.SSLContext, ident: NodeIdentity) -> None:
    """Load the in-memory key+cert through a short-lived 0600 file in the private identity dir."""
    d = ident.dir
    d.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tls-", suffix=".pem", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem(ident.key) + cert_pem(ident.cert))
        ctx.load_cert_chain(tmp)
    finally:
        os.unlink(tmp)


def _base(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def server_ssl_context(ident: NodeIdentity) -> ssl.SSLContext:
    """Server side: TLS 1.3, cluster CA is the only trust anchor, ``CERT_OPTIONAL``.

    CERT_OPTIONAL because a certless client (a joiner) may only run the join exchange; any
    certificate that *is* presented must chain to the cluster CA or the handshake fails.  The
    transport enforces "no cert => join only" (and checks the deny-list after the handshake).
    """
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load_chain(ctx, ident)
    ctx.load_verify_locations(cadata=cert_pem(ident.ca_cert).decode())
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_ssl_context(ident: NodeIdentity) -> ssl.SSLContext:
    """Member client: TLS 1.3, presents its node cert, requires a server cert from the cluster CA.

    Hostnames are not checked (peers are identified by node id, not DNS names).
    """
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = False
    _load_chain(ctx, ident)
    ctx.load_verify_locations(cadata=cert_pem(ident.ca_cert).decode())
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def join_client_ssl_context() -> ssl.SSLContext:
    """Joiner: TLS 1.3 with CERT_NONE; the pin is checked by :func:`verify_pinned_server`
    (against ``getpeercert(binary_form=True)``) before the token secret is sent."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
