"""Cluster PKI: keys, the cluster CA, CSRs, signing, ids and pins (kubeadm/k3s style trust).

In-memory crypto only: no files (see :mod:`collab_tui.net.identity`), no sockets or TLS contexts
(see :mod:`collab_tui.net.tls`).

Trust model
-----------
* ``collab init`` makes the cluster CA (ECDSA P-256, :func:`make_ca`) and this node's key +
  certificate signed by it.  **The CA private key stays on the node that ran ``init``**; it is only
  used to sign join CSRs (:func:`sign_csr`) and deny-lists.
* ``collab join TOKEN`` generates a key locally (:func:`new_key`, :func:`make_csr`) and checks the CA
  pin (:func:`verify_pinned_server`) *before* sending the token secret.
* Node id = lowercase hex SHA-256 of the SubjectPublicKeyInfo DER (:func:`node_id_of`).  The
  cluster id is the same hash of the CA public key (:func:`cluster_id_of`).

Certificate naming
------------------
Node certificates carry ``CN = <node id>`` (always computed by the CA from the CSR public key;
a client-supplied id is never trusted) and ``O = <human node name>``.  The CA certificate carries
``CN = "collab CA"`` and ``O = <cluster name>``.

``verify_pinned_server`` lives here rather than in ``tls``: it checks certificate bytes against a pin
and needs no ``ssl`` object (the join driver passes it ``getpeercert(binary_form=True)``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "IdentityError",
    "CA_COMMON_NAME",
    "MAX_NAME_LEN",
    "node_id_of",
    "cluster_id_of",
    "ca_pin",
    "validate_name",
    "subject_attr",
    "new_key",
    "key_pem",
    "cert_pem",
    "load_key_pem",
    "load_cert_pem",
    "check_key_pair",
    "make_csr",
    "sign_csr",
    "make_ca",
    "signed_by",
    "verify_issued_by",
    "verify_pinned_server",
    "SIGNER_O",
    "EXPIRED_HELP",
    "make_signer_cert",
    "verify_signer_cert",
    "signer_node_of",
    "verify_chain",
    "renewal_due",
    "lifetime",
]

CA_COMMON_NAME = "collab CA"
EXPIRED_HELP = (
    "this node's certificate has expired (it renews itself from the root or an admin while a third of its "
    "lifetime is left, and none was reachable): get a token on an admin (`collab invite`) and run "
    "`collab join --force TOKEN` on this node"
)
SIGNER_O = "collab signer"  # O of an admin's signing certificate; its CN is the admin's node id
MAX_NAME_LEN = 64
_CLOCK_SKEW = _dt.timedelta(minutes=5)

PublicKeyLike = x509.Certificate | x509.CertificateSigningRequest | ec.EllipticCurvePublicKey | bytes


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
        return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    except AttributeError:
        raise IdentityError(f"cannot get a public key from {type(obj).__name__}") from None


def node_id_of(obj: PublicKeyLike) -> str:
    """Lowercase hex SHA-256 of the SPKI DER of a cert, CSR, public key, or DER-encoded cert."""
    return hashlib.sha256(_spki_der(obj)).hexdigest()


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


def subject_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    """The first value of ``oid`` in a certificate name (e.g. ``NameOID.ORGANIZATION_NAME``), or None."""
    vals = name.get_attributes_for_oid(oid)
    return str(vals[0].value) if vals else None


# --------------------------------------------------------------------------- keys and PEM


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _check_p256(pub: object, what: str) -> None:
    if not (isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256R1)):
        raise IdentityError(f"{what} must be an ECDSA P-256 key")


def load_key_pem(data: bytes, what: str = "private key") -> ec.EllipticCurvePrivateKey:
    """Parse an unencrypted PEM private key; IdentityError unless it is ECDSA P-256."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise IdentityError(f"bad private key in {what}: {e}") from None
    _check_p256(key.public_key(), what)
    return key  # type: ignore[return-value]


def load_cert_pem(data: bytes, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise IdentityError(f"bad certificate in {what}: {e}") from None


def check_key_pair(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, what: str) -> None:
    """IdentityError unless ``key`` is the private half of ``cert``'s public key."""
    if node_id_of(key.public_key()) != node_id_of(cert):
        raise IdentityError(f"{what} key does not match its certificate")


# --------------------------------------------------------------------------- CSRs and certificates


def make_csr(key: ec.EllipticCurvePrivateKey, node_name: str) -> x509.CertificateSigningRequest:
    """CSR carrying the human node name as O (the CA ignores any client-supplied CN)."""
    validate_name(node_name, "node name")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, node_id_of(key.public_key())),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, node_name),
        ]
    )
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """Signatures only (TLS with ECDSA); a CA also signs certificates and revocation lists."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def sign_csr(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    csr: x509.CertificateSigningRequest,
    days: float = 365,
    node_name: str | None = None,
) -> x509.Certificate:
    """Issue a node certificate (serverAuth + clientAuth) for ``csr``, valid ``days`` (fractions too) from
    now and back-dated by the clock skew we tolerate; runs on the root holder or an admin, whose signing
    certificate is then ``ca_cert``.

    CN is the node id computed here from the CSR public key; O is ``node_name`` or the CSR's O.
    """
    if not csr.is_signature_valid:
        raise IdentityError("CSR signature is invalid")
    pub = csr.public_key()
    _check_p256(pub, "node key")
    if node_id_of(pub) == cluster_id_of(ca_cert) and ca_cert.subject == ca_cert.issuer:
        # (an admin's signing certificate is for the admin's own node key: it may renew its own certificate)
        raise IdentityError("refusing to issue a node certificate for the CA key")
    if not days > 0:
        raise IdentityError("a certificate lifetime must be positive")
    if node_name is None:
        node_name = subject_attr(csr.subject, NameOID.ORGANIZATION_NAME) or ""
    validate_name(node_name, "node name")
    now = _utcnow()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, node_id_of(pub)),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, node_name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(signs_certificates=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert


def make_ca(ca_key: ec.EllipticCurvePrivateKey, cluster_name: str, days: int) -> x509.Certificate:
    """The self-signed cluster CA certificate (``CN = "collab CA"``, ``O = cluster_name``)."""
    validate_name(cluster_name, "cluster name")
    pub = ca_key.public_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_name),
        ]
    )
    now = _utcnow()
    ski = x509.SubjectKeyIdentifier.from_public_key(pub)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)  # root > admin > node
        .add_extension(
            _key_usage(signs_certificates=True),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def make_signer_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, node_cert: x509.Certificate, days: float = 3650
) -> x509.Certificate:
    """An admin's signing certificate (root only): a CA certificate (path length 0) for the admin's own node
    key, ``CN = <node id>``, ``O = "collab signer"``. Node certificates it issues chain node > admin > root."""
    pub = node_cert.public_key()
    _check_p256(pub, "admin key")
    ca_until = ca_cert.not_valid_after_utc
    if (bc := _basic_constraints(ca_cert)) is None or not bc.ca or bc.path_length == 0:
        raise IdentityError(
            "this cluster's CA was made before admins existed (path length 0): it cannot grant signing "
            "certificates; make a new cluster with `collab init` to use admins"
        )
    now = _utcnow()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, node_id_of(pub)),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIGNER_O),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(min(ca_until, now + _dt.timedelta(days=days)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def signer_node_of(name: x509.Name) -> str | None:
    """The admin node id named by an issuer name (an admin's signing certificate subject), or None."""
    if subject_attr(name, NameOID.ORGANIZATION_NAME) != SIGNER_O:
        return None
    cn = subject_attr(name, NameOID.COMMON_NAME) or ""
    return cn if len(cn) == 64 and all(c in "0123456789abcdef" for c in cn) else None


def verify_signer_cert(cert: x509.Certificate, ca_cert: x509.Certificate, node_id: str) -> None:
    """IdentityError unless ``cert`` is a signing certificate the root issued for ``node_id``'s key."""
    if not signed_by(cert, ca_cert):
        raise IdentityError("signing certificate not issued by the cluster CA")
    bc = _basic_constraints(cert)
    if bc is None or not bc.ca or bc.path_length != 0:
        raise IdentityError("not a signing certificate (CA, path length 0)")
    if node_id_of(cert) != node_id or signer_node_of(cert.subject) != node_id:
        raise IdentityError("signing certificate is not for that node's key")


def verify_chain(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    issuer: x509.Certificate | None = None,
    now: _dt.datetime | None = None,
) -> None:
    """:func:`verify_issued_by` for a node certificate issued by the root or by an admin (``issuer``)."""
    if issuer is None or cert.issuer == ca_cert.subject:
        verify_issued_by(cert, ca_cert, now)
        return
    node = signer_node_of(issuer.subject)
    if node is None:
        raise IdentityError("the issuer is not an admin's signing certificate")
    verify_signer_cert(issuer, ca_cert, node)
    verify_issued_by(cert, issuer, now)


def lifetime(cert: x509.Certificate) -> _dt.timedelta:
    """How long a certificate was issued for (the back-dating for clock skew aside)."""
    return cert.not_valid_after_utc - (cert.not_valid_before_utc + _CLOCK_SKEW)


def renewal_due(cert: x509.Certificate, now: _dt.datetime | None = None) -> bool:
    """True once less than a third of the certificate's lifetime remains."""
    return cert.not_valid_after_utc - (now or _utcnow()) < lifetime(cert) / 3


# --------------------------------------------------------------------------- verification


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if ``issuer``'s key signed ``cert`` (signature and issuer name only; no dates)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def verify_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate, now: _dt.datetime | None = None) -> None:
    """Raise IdentityError unless ``cert`` is an end-entity cert signed by ``ca_cert``, valid now."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise IdentityError(f"certificate not issued by the cluster CA: {e or type(e).__name__}") from None
    now = now or _utcnow()
    for c, what in ((cert, "certificate"), (ca_cert, "issuer certificate")):
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


def verify_pinned_server(pin: str, ca_pem: bytes, leaf_der: bytes, issuer_pem: bytes = b"") -> x509.Certificate:
    """Joiner side: trust the CA sent by the server only if it matches the token pin.

    Returns the CA cert when ``ca_pin(CA) == pin`` (constant-time), the CA is self-signed, and
    ``leaf_der`` (the server's TLS cert) is issued by it (or by the admin signing certificate
    ``issuer_pem`` that the CA issued) and currently valid.
    """
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except (ValueError, TypeError) as e:
        raise IdentityError(f"CA pin mismatch: server sent an unreadable CA certificate ({e})") from None
    got = ca_pin(ca)
    if not hmac.compare_digest(got.encode(), pin.strip().lower().encode()):
        raise IdentityError(f"CA pin mismatch: expected {pin}, server presented {got}")
    if not signed_by(ca, ca):
        raise IdentityError("CA pin mismatch: CA certificate is not properly self-signed")
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
    except (ValueError, TypeError) as e:
        raise IdentityError(f"CA pin mismatch: unreadable server certificate ({e})") from None
    try:
        issuer = x509.load_pem_x509_certificate(issuer_pem) if issuer_pem else None
        verify_chain(leaf, ca, issuer)
    except (IdentityError, ValueError) as e:
        raise IdentityError(f"CA pin mismatch: server certificate rejected: {e}") from None
    return ca


def sign_with(key: ec.EllipticCurvePrivateKey) -> tuple[bytes, Callable[[bytes], bytes]]:
    """(the key's public half as SubjectPublicKeyInfo DER, a function that signs bytes with it, ECDSA-SHA256):
    a node id is the SHA-256 of that DER, so anyone can check who signed (secure aggregation's keys)."""
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return spki, lambda data: key.sign(data, ec.ECDSA(hashes.SHA256()))
