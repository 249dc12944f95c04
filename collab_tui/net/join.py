"""Joining a cluster with a token (kubeadm/k3s style).

Joiner (no certificate yet) -> inviter, over TLS without a client certificate:

    join_hello                       ->
                                     <-  join_ca {ca_pem}
    (joiner checks hash(CA key) == pin from the token, and that the TLS leaf is signed by that CA,
     BEFORE it sends the secret)
    join {token_id, secret, csr_pem, name} ->
                                     <-  join_ok {cert_pem, members, denylist} | join_err {error}

The inviter must hold the cluster CA key (the node that ran `collab init`). A certless connection can
do nothing but this exchange.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import identity as ident_mod
from .tokens import TokenError, TokenStore, parse_token
from .transport import Connection

log = logging.getLogger("collab.join")


class JoinError(RuntimeError):
    """Joining failed; nothing was changed on disk."""


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def serve_join(
    conn: Connection,
    first: dict,
    ident: ident_mod.NodeIdentity,
    tokens: TokenStore,
    members: Callable[[], list[dict]],
    denylist_blob: Callable[[], bytes | None],
    timeout: float = 5.0,
) -> str | None:
    """Inviter side for a certless connection. Returns the new node id, or None when refused."""
    if first.get("t") != "join_hello":
        await conn.send({"t": "join_err", "error": "a client certificate is required"})
        return None
    await conn.send({"t": "join_ca", "ca_pem": _pem(ident.ca_cert), "cluster": ident.cluster_id})
    req = await conn.read_message(timeout)
    try:
        if req.get("t") != "join":
            raise JoinError("expected a join request")
        if ident.ca_key is None:
            raise JoinError("this node does not hold the cluster CA key; invite from the node that ran `collab init`")
        try:
            csr = x509.load_pem_x509_csr(str(req.get("csr_pem", "")).encode())
        except ValueError:
            raise JoinError("malformed CSR") from None
        name = str(req.get("name", ""))[:64]
        # Check the CSR before consuming a use of the token.
        tokens.check(str(req.get("token_id", "")), str(req.get("secret", "")))
        cert = ident_mod.sign_csr(ident.ca_key, ident.ca_cert, csr)
        tokens.redeem(str(req.get("token_id", "")), str(req.get("secret", "")))
    except (JoinError, TokenError, ident_mod.IdentityError, ValueError) as exc:
        log.warning("join refused: %s", exc)
        await conn.send({"t": "join_err", "error": str(exc)})
        return None
    node_id = ident_mod.node_id_of(cert)
    blob = denylist_blob()
    await conn.send(
        {
            "t": "join_ok",
            "cert_pem": _pem(cert),
            "members": members(),
            "denylist": base64.b64encode(blob).decode() if blob else None,
        }
    )
    log.info("node %s (%s) joined with a token", ident_mod.short_id(node_id), name)
    return node_id


async def _join_one(token, host: str, port: int, key, csr, name: str, timeout: float) -> tuple:
    ctx = ident_mod.join_client_ssl_context()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout)
    conn = Connection(reader, writer)
    try:
        await conn.send({"t": "join_hello"})
        hello = await conn.read_message(timeout)
        if hello.get("t") != "join_ca":
            raise JoinError(f"unexpected answer from {host}:{port}: {hello.get('error') or hello.get('t')}")
        sslobj = writer.get_extra_info("ssl_object")
        leaf_der = sslobj.getpeercert(binary_form=True) if sslobj else None
        if not leaf_der:
            raise JoinError("inviter presented no certificate")
        try:
            ca_cert = ident_mod.verify_pinned_server(token.pin, str(hello.get("ca_pem", "")).encode(), leaf_der)
        except ident_mod.IdentityError as exc:
            raise JoinError(f"{exc} (the secret was not sent)") from None
        csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        await conn.send(
            {"t": "join", "token_id": token.token_id, "secret": token.secret, "csr_pem": csr_pem, "name": name}
        )
        reply = await conn.read_message(timeout)
        if reply.get("t") != "join_ok":
            raise JoinError(f"join refused: {reply.get('error', reply.get('t'))}")
        cert = x509.load_pem_x509_certificate(str(reply["cert_pem"]).encode())
        blob = base64.b64decode(reply["denylist"]) if reply.get("denylist") else None
        return ca_cert, cert, reply.get("members") or [], blob
    finally:
        await conn.close()


async def join_cluster(
    home: Path, token_text: str, addrs: list[tuple[str, int]], name: str, timeout: float = 5.0
) -> tuple[ident_mod.NodeIdentity, list[dict], bytes | None]:
    """Try each address in turn; install the identity on the first success."""
    try:
        token = parse_token(token_text)
    except TokenError as exc:
        raise JoinError(str(exc)) from None
    if not addrs:
        raise JoinError("no inviter found: pass --peer HOST:PORT or enable mDNS on this network")
    key = ident_mod.new_key()
    csr = ident_mod.make_csr(key, name)
    errors = []
    for host, port in addrs:
        try:
            ca_cert, cert, members, blob = await _join_one(token, host, port, key, csr, name, timeout)
        except JoinError as exc:
            if "pin" in str(exc) or "refused" in str(exc):
                raise
            errors.append(f"{host}:{port}: {exc}")
            continue
        except (OSError, asyncio.TimeoutError, ssl.SSLError, ConnectionError) as exc:
            errors.append(f"{host}:{port}: {type(exc).__name__} {exc}")
            continue
        ident = ident_mod.install_joined_identity(home, key, cert, ca_cert)
        return ident, members, blob
    raise JoinError("could not reach an inviter: " + "; ".join(errors))
