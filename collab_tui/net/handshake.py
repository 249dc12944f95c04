"""The application HELLO/ACK that turns a mutual-TLS session into an authenticated peer.

TLS has already checked that the certificate chains to the cluster CA. Here both sides also check that
the node id claimed in the HELLO is the hash of the certificate's public key, that protocol version and
cluster id match, and that the peer is not on the signed deny-list. With TLS 1.3 a client learns of a
rejection late, so nobody counts as authenticated until the ACK has arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cryptography import x509

from .. import PROTOCOL_VERSION
from .messages import Hello
from .pki import node_id_of
from .schema import Refused, validate
from .transport import Connection


class HandshakeError(ConnectionError):
    """The peer could not be authenticated; the message says why."""


def peer_certificate(conn: Connection) -> x509.Certificate | None:
    sslobj = conn.writer.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    der = sslobj.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def make_hello(t: str, node_id: str, name: str, cluster: str, addr: str, **extra) -> dict:
    """A HELLO (or its ACK). It carries no priority: a node's rank comes from the cluster's signed member
    records, never from what it says of itself."""
    return {
        "t": t,
        "node_id": node_id,
        "name": name,
        "proto": PROTOCOL_VERSION,
        "cluster": cluster,
        "addr": addr,
        **extra,
    }


def check_hello(msg: dict, cert: x509.Certificate | None, cluster: str, is_revoked: Callable[[str], bool]) -> str:
    """Validate a HELLO/ACK against the TLS certificate. Returns the peer's node id."""
    if cert is None:
        raise HandshakeError("peer presented no certificate")
    real_id = node_id_of(cert)
    try:
        validate(Hello, {**msg, "t": "hello"})
    except Refused as exc:
        raise HandshakeError(f"malformed HELLO: {exc}") from None
    if msg.get("node_id") != real_id:
        raise HandshakeError("node id in HELLO does not match the certificate key")
    if msg.get("proto") != PROTOCOL_VERSION:
        raise HandshakeError(f"protocol version {msg.get('proto')!r} not supported (want {PROTOCOL_VERSION})")
    if msg.get("cluster") != cluster:
        raise HandshakeError("peer belongs to another cluster")
    if is_revoked(real_id):
        raise HandshakeError("node is revoked")
    return real_id


async def client_hello(
    conn: Connection, hello: dict, cluster: str, is_revoked: Callable[[str], bool], timeout: float
) -> dict:
    """Dialer side: send HELLO, wait for ACK (or NAK), verify the server."""
    await conn.send(hello)
    reply = await conn.read_message(timeout)
    if reply.get("t") == "hello_nak":
        raise HandshakeError(f"refused by peer: {reply.get('error', 'no reason given')}")
    if reply.get("t") != "hello_ack":
        raise HandshakeError(f"expected hello_ack, got {reply.get('t')!r}")
    conn.peer_id = check_hello(reply, peer_certificate(conn), cluster, is_revoked)
    conn.hello = reply
    conn.outbound = True
    return reply


async def server_hello(
    conn: Connection, first: dict, ack: dict, cluster: str, is_revoked: Callable[[str], bool]
) -> dict:
    """Listener side: ``first`` is the HELLO already read. Sends ACK, or NAK and raises."""
    try:
        if first.get("t") != "hello":
            raise HandshakeError(f"expected hello, got {first.get('t')!r}")
        conn.peer_id = check_hello(first, peer_certificate(conn), cluster, is_revoked)
    except HandshakeError as exc:
        try:
            await asyncio.wait_for(conn.send({"t": "hello_nak", "error": str(exc)}), 1.0)
        except Exception:
            pass
        raise
    conn.hello = first
    await conn.send(ack)
    return first
