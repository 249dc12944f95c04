"""The application HELLO/ACK that turns a mutual-TLS session into an authenticated peer.

TLS has already checked that the certificate chains to the cluster CA. Here both sides also check that
the node id claimed in the HELLO is the hash of the certificate's public key, that protocol version and
cluster id match, and that the trust log does not refuse the certificate (revoked, or issued by an admin
after it lost its power to sign). With TLS 1.3 a client learns of a
rejection late, so nobody counts as authenticated until the ACK has arrived.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from cryptography import x509

from .. import PROTOCOL_VERSION, __version__
from .messages import Hello
from .pki import node_id_of
from .schema import Refused, validate
from .transport import Connection


class HandshakeError(ConnectionError):
    """The peer could not be authenticated; the message says why."""


class VersionMismatch(HandshakeError):
    """The peer speaks another protocol version. The message names both collab versions and protocols
    and which node to upgrade; the refusing side also sends its own in the NAK (``proto``, ``version``,
    ``name``) so that the dialer can say the same from its side."""


MISMATCH_CHARS = 100
_VERSION = re.compile(r"[0-9A-Za-z.+_-]{1,32}")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


def _clean(value, pattern: re.Pattern, keep: int = 32) -> str | None:
    """A peer-supplied string fit for a log line (cut to ``keep``), or None (absent, not a string, odd)."""
    return value[:keep] if isinstance(value, str) and pattern.fullmatch(value) else None


def version_mismatch_text(peer_name, peer_version, peer_proto) -> str:
    """What this node says of a peer with another protocol, e.g. ``node B runs collab 0.1.0 (protocol 1),
    this node 0.2.0 (protocol 2): upgrade that node``. At most ``MISMATCH_CHARS`` (a long name is cut):
    the refusal log keeps 120 characters of a reason, "outbound handshake: " included."""
    name = _clean(peer_name, _NAME, 24)
    version = _clean(peer_version, _VERSION, 16)
    older = isinstance(peer_proto, int) and peer_proto < PROTOCOL_VERSION
    if version:
        theirs = f"runs collab {version}"
    else:  # nodes from before the HELLO carried a version
        theirs = "runs an older collab" if older else "runs another collab"
    proto = peer_proto if isinstance(peer_proto, int) and not isinstance(peer_proto, bool) else "?"
    rest = (
        f" {theirs} (protocol {proto}), this node {__version__} (protocol {PROTOCOL_VERSION}): "
        f"upgrade {'that node' if older else 'this node'}"
    )
    if name and len("node ") + len(name) + len(rest) > MISMATCH_CHARS:
        name = name[: max(4, MISMATCH_CHARS - len("node ") - len(rest) - 1)] + "…"
    return f"node {name}{rest}" if name else f"the peer{rest}"


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
        "version": __version__,
        "cluster": cluster,
        "addr": addr,
        **extra,
    }


Refuses = Callable[[x509.Certificate], "str | None | bool"]  # why a certificate is refused (falsy: it is not)
Learn = Callable[[object], None]  # takes the HELLO's ``grant`` (the root-signed grant of its issuer) first


def check_hello(
    msg: dict, cert: x509.Certificate | None, cluster: str, refuses: Refuses, learn: Learn | None = None
) -> str:
    """Validate a HELLO/ACK against the TLS certificate. Returns the peer's node id. A HELLO may carry
    ``grant``: the trust-log entry in which the root made the peer's certificate issuer an admin, so that a
    node that missed it (offline at the time) can still check the certificate; ``learn`` verifies it
    against the root like any entry before ``refuses`` looks at the certificate."""
    if cert is None:
        raise HandshakeError("peer presented no certificate")
    real_id = node_id_of(cert)
    proto = msg.get("proto")
    if isinstance(proto, int) and not isinstance(proto, bool) and proto != PROTOCOL_VERSION:
        # before the schema: another protocol may shape its HELLO differently (TLS already checked the CA)
        raise VersionMismatch(version_mismatch_text(msg.get("name"), msg.get("version"), proto))
    try:
        validate(Hello, {**msg, "t": "hello"})
    except Refused as exc:
        raise HandshakeError(f"malformed HELLO: {exc}") from None
    if msg.get("node_id") != real_id:
        raise HandshakeError("node id in HELLO does not match the certificate key")
    if msg.get("cluster") != cluster:
        raise HandshakeError("peer belongs to another cluster")
    if learn is not None and msg.get("grant") is not None:
        learn(msg["grant"])
    why = refuses(cert)
    if why:
        raise HandshakeError(why if isinstance(why, str) else "node is revoked")
    return real_id


async def client_hello(
    conn: Connection, hello: dict, cluster: str, refuses: Refuses, timeout: float, learn: Learn | None = None
) -> dict:
    """Dialer side: send HELLO, wait for ACK (or NAK), verify the server."""
    await conn.send(hello)
    reply = await conn.read_message(timeout)
    if reply.get("t") == "hello_nak":
        proto = reply.get("proto")
        if isinstance(proto, int) and not isinstance(proto, bool) and proto != PROTOCOL_VERSION:
            # worded from this side (the peer says "this node" of itself); peers.py logs it once per interval
            raise VersionMismatch(version_mismatch_text(reply.get("name"), reply.get("version"), proto))
        raise HandshakeError(f"refused by peer: {str(reply.get('error', 'no reason given'))[:200]}")
    if reply.get("t") != "hello_ack":
        raise HandshakeError(f"expected hello_ack, got {reply.get('t')!r}")
    conn.peer_id = check_hello(reply, peer_certificate(conn), cluster, refuses, learn)
    conn.hello = reply
    conn.outbound = True
    return reply


async def server_hello(
    conn: Connection, first: dict, ack: dict, cluster: str, refuses: Refuses, learn: Learn | None = None
) -> dict:
    """Listener side: ``first`` is the HELLO already read. Sends ACK, or NAK and raises."""
    try:
        if first.get("t") != "hello":
            raise HandshakeError(f"expected hello, got {first.get('t')!r}")
        conn.peer_id = check_hello(first, peer_certificate(conn), cluster, refuses, learn)
    except HandshakeError as exc:
        nak = {"t": "hello_nak", "error": str(exc)}
        if isinstance(exc, VersionMismatch):  # the dialer then words it from its side
            nak.update(proto=PROTOCOL_VERSION, version=__version__, name=ack.get("name", ""))
        try:
            await asyncio.wait_for(conn.send(nak), 1.0)
        except Exception:
            pass
        raise
    conn.hello = first
    await conn.send(ack)
    return first
