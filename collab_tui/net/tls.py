"""TLS contexts for a node identity: TLS 1.3, the cluster CA as the only trust anchor.

Python's ``ssl`` has no per-connection verify callback, so trust is the cluster CA's signature (see
:mod:`collab_tui.net.pki`); who a peer is (node id) and whether it is revoked is checked by the
transport right after the handshake.
"""

from __future__ import annotations

import os
import ssl
import tempfile

from .identity import NodeIdentity
from .pki import cert_pem, key_pem

__all__ = ["server_ssl_context", "client_ssl_context", "join_client_ssl_context"]


def _load_chain(ctx: ssl.SSLContext, ident: NodeIdentity) -> None:
    """Load the in-memory key+cert through a short-lived 0600 file in the private identity dir."""
    d = ident.dir
    d.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tls-", suffix=".pem", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem(ident.key) + ident.chain_pem())
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
    """Joiner: TLS 1.3 with CERT_NONE; the pin is checked by :func:`collab_tui.net.pki.verify_pinned_server`
    (against ``getpeercert(binary_form=True)``) before the token secret is sent."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
