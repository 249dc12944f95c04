"""This node's identity on disk: ``NodeIdentity``, create / install / load, paths and file modes.

The crypto (keys, CA, CSRs, signing, pins) is in :mod:`collab_tui.net.pki`; the TLS contexts built
from an identity are in :mod:`collab_tui.net.tls`.

* ``collab init`` runs :func:`create_cluster`: a new cluster CA and this node's key + certificate.
  **The CA private key (``ca.key``) stays on the node that ran ``init``**; it never leaves that machine.
* ``collab join TOKEN`` ends with :func:`install_joined_identity` (no CA key: a joined node is never
  the CA holder).

On-disk layout under ``<home>/identity/`` (directory mode 0700)::

    node.key  0600  this node's private key (PEM, PKCS#8, unencrypted)
    node.crt  0644  this node's certificate, followed by the signing certificate of the admin that issued
                    it when an admin (not the root) did: the chain it presents in TLS
    ca.crt    0644  the cluster CA certificate (the only trust anchor)
    ca.key    0600  the CA private key -- only on the CA holder (the node that ran ``init``)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..fsutil import atomic_write
from ..textfmt import short_id
from .pki import (
    IdentityError,
    ca_pin,
    cert_pem,
    check_key_pair,
    cluster_id_of,
    key_pem,
    load_key_pem,
    make_ca,
    make_csr,
    new_key,
    node_id_of,
    sign_csr,
    signed_by,
    subject_attr,
    validate_name,
    verify_chain,
)

__all__ = [
    "NotInitialized",
    "NodeIdentity",
    "write_private",
    "write_public",
    "identity_dir",
    "identity_exists",
    "create_cluster",
    "install_joined_identity",
    "load_identity",
    "replace_certificate",
]


class NotInitialized(Exception):
    """No identity exists yet under the given home."""


# --------------------------------------------------------------------------- atomic files


def write_private(path: Path | str, data: bytes) -> None:
    """Atomically write ``data`` with mode 0600 from creation (temp file, fsync, os.replace)."""
    atomic_write(path, data, 0o600)


def write_public(path: Path | str, data: bytes) -> None:
    """Atomically write ``data`` with mode 0644."""
    atomic_write(path, data, 0o644)


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
    issuer: x509.Certificate | None = None  # the admin signing certificate that issued ``cert`` (None: the root)

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
        return subject_attr(self.cert.subject, NameOID.ORGANIZATION_NAME) or self.short_id

    @property
    def cluster_name(self) -> str:
        return subject_attr(self.ca_cert.subject, NameOID.ORGANIZATION_NAME) or "collab"

    @property
    def is_ca(self) -> bool:
        return self.ca_key is not None

    def chain_pem(self) -> bytes:
        """The node certificate and, when an admin issued it, that admin's signing certificate."""
        return cert_pem(self.cert) + (cert_pem(self.issuer) if self.issuer is not None else b"")


def _save(ident: NodeIdentity) -> None:
    d = ident.dir
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    write_private(d / "node.key", key_pem(ident.key))
    write_public(d / "node.crt", ident.chain_pem())
    write_public(d / "ca.crt", cert_pem(ident.ca_cert))
    if ident.ca_key is not None:
        write_private(d / "ca.key", key_pem(ident.ca_key))
    else:
        try:
            (d / "ca.key").unlink()
        except FileNotFoundError:
            pass


def create_cluster(
    home: Path | str,
    node_name: str,
    cluster_name: str = "collab",
    days: int = 3650,
    force: bool = False,
    cert_days: float = 30,
) -> NodeIdentity:
    """``collab init``: new CA + this node's cert. The CA key stays on this node (``ca.key``)."""
    validate_name(node_name, "node name")
    validate_name(cluster_name, "cluster name")
    if identity_exists(home) and not force:
        raise IdentityError(f"an identity already exists in {identity_dir(home)} (use force to replace it)")
    ca_key = new_key()
    ca_cert = make_ca(ca_key, cluster_name, days)
    key = new_key()
    cert = sign_csr(ca_key, ca_cert, make_csr(key, node_name), days=cert_days)
    ident = NodeIdentity(Path(home), key, cert, ca_cert, ca_key)
    _save(ident)
    return ident


def install_joined_identity(
    home: Path | str,
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    force: bool = False,
    issuer: x509.Certificate | None = None,
) -> NodeIdentity:
    """Store the result of a successful join (no CA key: a joined node is never the CA holder)."""
    if identity_exists(home) and not force:
        raise IdentityError(f"an identity already exists in {identity_dir(home)} (use force to replace it)")
    verify_chain(cert, ca_cert, issuer)
    check_key_pair(key, cert, "node")
    ident = NodeIdentity(Path(home), key, cert, ca_cert, None, issuer if cert.issuer != ca_cert.subject else None)
    _save(ident)
    return ident


def replace_certificate(ident: NodeIdentity, cert: x509.Certificate, issuer: x509.Certificate | None) -> None:
    """A renewed certificate for the same key: checked, then written in one atomic step (``node.crt``
    holds the chain); ``ident`` is updated in place."""
    verify_chain(cert, ident.ca_cert, issuer)
    check_key_pair(ident.key, cert, "renewed")
    ident.cert = cert
    ident.issuer = issuer if cert.issuer != ident.ca_cert.subject else None
    write_public(ident.dir / "node.crt", ident.chain_pem())


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise IdentityError(f"cannot read {path}: {e.strerror}") from None


def load_identity(home: Path | str) -> NodeIdentity:
    """Load and cross-check the identity under ``home``; NotInitialized if there is none."""
    d = identity_dir(home)
    if not (d / "node.key").exists():
        raise NotInitialized(
            f"no node identity in {d}: run `collab init` to create a cluster or `collab join TOKEN` to join one"
        )
    for n in ("node.crt", "ca.crt"):
        if not (d / n).exists():
            raise IdentityError(f"incomplete identity in {d}: {n} is missing")
    key = load_key_pem(_read(d / "node.key"), str(d / "node.key"))
    chain = _load_certs(_read(d / "node.crt"), str(d / "node.crt"))
    cert, issuer = chain[0], (chain[1] if len(chain) > 1 else None)
    ca_cert = _load_certs(_read(d / "ca.crt"), str(d / "ca.crt"))[0]
    ca_key = load_key_pem(_read(d / "ca.key"), str(d / "ca.key")) if (d / "ca.key").exists() else None
    check_key_pair(key, cert, "node")
    if ca_key is not None:
        check_key_pair(ca_key, ca_cert, "CA")
    if not (
        signed_by(cert, ca_cert) or (issuer is not None and signed_by(issuer, ca_cert) and signed_by(cert, issuer))
    ):
        raise IdentityError(f"{d / 'node.crt'} is not issued by {d / 'ca.crt'} (nor by an admin it made)")
    return NodeIdentity(Path(home), key, cert, ca_cert, ca_key, issuer if cert.issuer != ca_cert.subject else None)


def _load_certs(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise IdentityError(f"bad certificate in {what}: {e}") from None
    return certs
