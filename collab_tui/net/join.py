"""Joining a cluster with a token (kubeadm/k3s style).

Joiner (no certificate yet) -> inviter, over TLS without a client certificate:

    join_hello                       ->
                                     <-  join_ca {ca_pem, can_sign, signers}
    (joiner checks hash(CA key) == pin from the token, and that the TLS leaf is signed by that CA,
     BEFORE it sends the secret or follows ``signers``)
    join {token_id, secret, csr_pem, name} ->
                                     <-  join_ok {cert_pem, members, denylist} | join_err {error}

Only a node that holds the cluster CA key can sign (the node that ran `collab init`). Any other
member answers ``can_sign: false`` with the addresses of the signers it knows, and the joiner goes
there: it never sends its secret to a node that cannot sign. The joiner tries every address that
mDNS (nodes that can sign first: their TXT record says ``ca=1``) or ``--peer`` offers, as they come,
until one signs or the search time is up; the error then names each address and why it failed. A
certless connection can do nothing but this exchange.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..textfmt import short_id
from . import identity as ident_mod
from . import pki
from .tls import join_client_ssl_context
from .tokens import TokenError, TokenStore, parse_token
from .transport import Connection

log = logging.getLogger("collab.join")


class JoinError(RuntimeError):
    """Joining failed; nothing was changed on disk."""


class JoinRefused(JoinError):
    """A node that can sign refused the token: final, trying elsewhere cannot help."""


class NotASigner(JoinError):
    """A verified member that cannot sign; ``signers`` are the addresses it knows that can."""

    def __init__(self, signers: list[tuple[str, int]]) -> None:
        super().__init__("this member cannot sign joins" + ("" if signers else " and knows no node that can"))
        self.signers = signers


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
    signers: Callable[[], list[str]] = list,
) -> tuple[str | None, str | None]:
    """Inviter side for a certless connection: ``(new node id, None)`` or ``(None, why it was refused)``.
    ``signers()``: "host:port" of the members that can sign (asked only when this node cannot)."""
    if first.get("t") != "join_hello":
        await conn.send({"t": "join_err", "error": "a client certificate is required"})
        return None, f"certless connection sent {str(first.get('t'))[:32]!r}"
    can_sign = ident.ca_key is not None
    await conn.send(
        {
            "t": "join_ca",
            "ca_pem": _pem(ident.ca_cert),
            "cluster": ident.cluster_id,
            "can_sign": can_sign,
            "signers": [] if can_sign else signers()[:16],
        }
    )
    if not can_sign:
        return None, None  # the joiner goes to a signer; nothing was refused
    req = await conn.read_message(timeout)
    try:
        if req.get("t") != "join":
            raise JoinError("expected a join request")
        try:
            csr = x509.load_pem_x509_csr(str(req.get("csr_pem", "")).encode())
        except ValueError:
            raise JoinError("malformed CSR") from None
        name = str(req.get("name", ""))[:64]
        # Check the CSR before consuming a use of the token.
        tokens.check(str(req.get("token_id", "")), str(req.get("secret", "")))
        cert = pki.sign_csr(ident.ca_key, ident.ca_cert, csr)
        tokens.redeem(str(req.get("token_id", "")), str(req.get("secret", "")))
    except (JoinError, TokenError, pki.IdentityError, ValueError) as exc:
        await conn.send({"t": "join_err", "error": str(exc)})
        return None, f"join refused: {exc}"
    node_id = pki.node_id_of(cert)
    blob = denylist_blob()
    await conn.send(
        {
            "t": "join_ok",
            "cert_pem": _pem(cert),
            "members": members(),
            "denylist": base64.b64encode(blob).decode() if blob else None,
        }
    )
    log.info("node %s (%s) joined with a token", short_id(node_id), name)
    return node_id, None


def _signer_addrs(raw) -> list[tuple[str, int]]:
    from .addresses import split_hostport

    out = []
    for item in (raw if isinstance(raw, list) else [])[:16]:
        parts = split_hostport(item) if isinstance(item, str) else None
        if parts:
            out.append(parts)
    return out


def _members(raw) -> list[dict]:
    """The member list a signer hands out, kept only as far as it is well formed (it is saved to disk)."""
    out = []
    for m in (raw if isinstance(raw, list) else [])[:256]:
        if isinstance(m, dict) and all(isinstance(m.get(k), str) and len(m[k]) <= 300 for k in ("node_id", "addr")):
            out.append({"node_id": m["node_id"], "name": str(m.get("name", ""))[:64], "addr": m["addr"]})
    return out


async def _join_one(token, host: str, port: int, key, csr, name: str, timeout: float) -> tuple:
    ctx = join_client_ssl_context()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout)
    conn = Connection(reader, writer)
    try:
        await conn.send({"t": "join_hello"})
        hello = await conn.read_message(timeout)
        if hello.get("t") != "join_ca":
            raise JoinError(f"unexpected answer: {hello.get('error') or hello.get('t')}")
        sslobj = writer.get_extra_info("ssl_object")
        leaf_der = sslobj.getpeercert(binary_form=True) if sslobj else None
        if not leaf_der:
            raise JoinError("inviter presented no certificate")
        try:
            ca_cert = pki.verify_pinned_server(token.pin, str(hello.get("ca_pem", "")).encode(), leaf_der)
        except pki.IdentityError as exc:
            raise JoinError(f"{exc} (the secret was not sent)") from None
        if hello.get("can_sign") is not True:  # a verified member: its hints are worth following
            raise NotASigner(_signer_addrs(hello.get("signers")))
        csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        await conn.send(
            {"t": "join", "token_id": token.token_id, "secret": token.secret, "csr_pem": csr_pem, "name": name}
        )
        reply = await conn.read_message(timeout)
        if reply.get("t") != "join_ok":
            raise JoinRefused(f"join refused: {reply.get('error', reply.get('t'))}")
        try:
            cert = x509.load_pem_x509_certificate(str(reply.get("cert_pem", "")).encode())
            blob = base64.b64decode(str(reply["denylist"]), validate=True) if reply.get("denylist") else None
        except ValueError as exc:
            raise JoinError(f"the inviter's answer is malformed: {exc}") from None
        return ca_cert, cert, _members(reply.get("members")), blob
    finally:
        await conn.close()


class Discovery(Protocol):
    """What `join_cluster` needs of an mDNS browser (see `discovery.browser`)."""

    async def start(self, advertise: bool = True) -> None: ...
    async def stop(self) -> None: ...


class Candidates:
    """Addresses to try, in order: signers (by hint) first, then the rest, each address once."""

    def __init__(self) -> None:
        self._signers: list[tuple[str, int]] = []
        self._others: list[tuple[str, int]] = []
        self._seen: set[tuple[str, int]] = set()
        self.changed = asyncio.Event()

    def add(self, host: str, port: int, signer: bool = False) -> None:
        addr = (host, int(port))
        if addr in self._seen:
            return
        self._seen.add(addr)
        (self._signers if signer else self._others).append(addr)
        self.changed.set()

    def pop(self) -> tuple[str, int] | None:
        for queue in (self._signers, self._others):
            if queue:
                return queue.pop(0)
        return None

    async def next(self, deadline: float) -> tuple[str, int] | None:
        """The next address to try, waiting for discovery until ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        while True:
            addr = self.pop()
            if addr is not None:
                return addr
            self.changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return None


async def join_cluster(
    home: Path,
    token_text: str,
    addrs: list[tuple[str, int]],
    name: str,
    timeout: float = 5.0,
    discovery: Callable[[Callable[[str, int, str, dict], None]], Discovery] | None = None,
    search: float = 10.0,
) -> tuple[ident_mod.NodeIdentity, list[dict], bytes | None]:
    """Try every address (``addrs``, and what ``discovery(propose)`` finds within ``search`` seconds)
    until a node that can sign admits us; install the identity then. ``timeout`` is per attempt."""
    try:
        token = parse_token(token_text)
    except TokenError as exc:
        raise JoinError(str(exc)) from None
    found = Candidates()
    for host, port in addrs:
        found.add(host, port)
    browser = None
    if discovery is not None:
        browser = discovery(lambda host, port, node_id, txt: found.add(host, port, txt.get("ca") == "1"))
        await browser.start(advertise=False)
    elif not addrs:
        raise JoinError("no inviter found: pass --peer HOST:PORT or enable mDNS on this network")
    key = pki.new_key()
    csr = pki.make_csr(key, name)
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (search if browser is not None else 0.0)
    try:
        while (addr := await found.next(deadline)) is not None:
            if browser is not None and loop.time() > deadline + timeout:
                errors.append(f"search time ({search:g} s) is up; addresses not tried are left out")
                break
            host, port = addr
            try:
                ca_cert, cert, members, blob = await _join_one(token, host, port, key, csr, name, timeout)
            except JoinRefused:
                raise
            except NotASigner as exc:
                errors.append(f"{host}:{port}: {exc}")
                for h, p in exc.signers:
                    found.add(h, p, signer=True)
                continue
            except JoinError as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
                errors.append(f"{host}:{port}: {type(exc).__name__} {exc}".rstrip())
                continue
            try:
                ident = ident_mod.install_joined_identity(home, key, cert, ca_cert)
            except pki.IdentityError as exc:
                raise JoinError(f"{host}:{port} sent a certificate that cannot be used: {exc}") from None
            return ident, members, blob
    finally:
        if browser is not None:
            await browser.stop()
    if not errors:
        raise JoinError(
            f"no inviter found by mDNS within {search:g} s: pass --peer HOST:PORT "
            "(multicast may be blocked on this network)"
        )
    raise JoinError("could not reach an inviter: " + "; ".join(errors))
