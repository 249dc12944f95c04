"""Joining a cluster with a token (kubeadm/k3s style).

Joiner (no certificate yet) -> inviter, over TLS without a client certificate:

    join_hello                       ->
                                     <-  join_ca {ca_pem, issuer_pem, can_sign, signers}
    (joiner checks hash(CA key) == pin from the token, and that the TLS leaf is signed by that CA,
     directly or through the admin signing certificate issuer_pem, BEFORE it sends the secret or
     follows ``signers``)
    join {token_id, secret, csr_pem, name} ->
                                     <-  join_ok {cert_pem, issuer_pem, members, trust_log} | join_err {error}

Only the root (the node that ran `collab init`) and the admins it granted can sign; the signer records
the join in the trust log (inviter and token id) before it answers. Any other member answers
``can_sign: false`` with the addresses of the signers it knows, and the joiner goes there: it never
sends its secret to a node that cannot sign. Join requests are limited per source address
(net/join_limit.py). The joiner tries every address that
mDNS (nodes that can sign first: their TXT record says ``ca=1``) or ``--peer`` offers, as they come,
until one signs or the search time is up; the error then names each address and why it failed. A
certless connection can do nothing but this exchange.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ..textfmt import short_id
from . import identity as ident_mod
from . import pki
from .join_limit import JoinLimiter
from .tls import join_client_ssl_context
from .tokens import TokenError, TokenStore, parse_token
from .transport import Connection
from .trust_log import Entry, TrustLogError

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


class JoinHost(Protocol):
    """What the inviter side needs of the node (node/runtime.py and node/trust.py provide it)."""

    ident: ident_mod.NodeIdentity
    tokens: TokenStore
    join_limiter: JoinLimiter

    def can_sign(self) -> bool: ...
    def trust_for_joiner(self) -> list[dict]: ...
    def signer_addrs(self) -> list[str]: ...
    def issuer_pem(self) -> str: ...
    def issue(self, csr: x509.CertificateSigningRequest, kind: str, **fields) -> tuple[x509.Certificate, Entry]: ...
    async def publish_entries(self, entries: list[Entry]) -> None: ...


async def serve_join(
    conn: Connection,
    first: dict,
    host: JoinHost,
    members: Callable[[], list[dict]],
    timeout: float = 5.0,
    source: str = "?",
) -> tuple[str | None, str | None]:
    """Inviter side for a certless connection: ``(new node id, None)`` or ``(None, why it was refused)``."""
    if first.get("t") != "join_hello":
        await conn.send({"t": "join_err", "error": "a client certificate is required"})
        return None, f"certless connection sent {str(first.get('t'))[:32]!r}"
    ident = host.ident
    can_sign = host.can_sign()
    await conn.send(
        {
            "t": "join_ca",
            "ca_pem": _pem(ident.ca_cert),
            "issuer_pem": _pem(ident.issuer) if ident.issuer is not None else "",
            "cluster": ident.cluster_id,
            "can_sign": can_sign,
            "signers": [] if can_sign else host.signer_addrs()[:16],
        }
    )
    if not can_sign:
        return None, None  # the joiner goes to a signer; nothing was refused
    req = await conn.read_message(timeout)
    wait = host.join_limiter.wait(source, time.monotonic())
    if wait:
        await conn.send({"t": "join_err", "error": f"too many join attempts from {source}: try again in {wait:.0f} s"})
        return None, "join attempts rate-limited"
    try:
        if req.get("t") != "join":
            raise JoinError("expected a join request")
        try:
            csr = x509.load_pem_x509_csr(str(req.get("csr_pem", "")).encode())
        except ValueError:
            raise JoinError("malformed CSR") from None
        token_id, secret = str(req.get("token_id", ""))[:16], str(req.get("secret", ""))[:64]
        # Check the CSR before consuming a use of the token.
        host.tokens.check(token_id, secret)
        name = pki.subject_attr(csr.subject, NameOID.ORGANIZATION_NAME) or ""
        cert, entry = host.issue(csr, "join", name=name[:64], token=token_id)
        host.tokens.redeem(token_id, secret)
        issuer = host.issuer_pem()
    except (JoinError, TokenError, pki.IdentityError, TrustLogError, ValueError, PermissionError) as exc:
        host.join_limiter.failed(source, time.monotonic())
        await conn.send({"t": "join_err", "error": str(exc)})
        return None, f"join refused: {exc}"
    await host.publish_entries([entry])  # the log records who admitted it before it can dial anyone
    node_id = pki.node_id_of(cert)
    await conn.send(
        {
            "t": "join_ok",
            "cert_pem": _pem(cert),
            "issuer_pem": issuer,
            "members": members(),
            "trust_log": host.trust_for_joiner(),
        }
    )
    log.info("node %s (%s) joined with token %s", short_id(node_id), name, token_id)
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
            ca_cert = pki.verify_pinned_server(
                token.pin, str(hello.get("ca_pem", "")).encode(), leaf_der, str(hello.get("issuer_pem", "")).encode()
            )
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
            issuer_pem = str(reply.get("issuer_pem") or "")
            issuer = x509.load_pem_x509_certificate(issuer_pem.encode()) if issuer_pem else None
        except ValueError as exc:
            raise JoinError(f"the inviter's answer is malformed: {exc}") from None
        entries = reply.get("trust_log")
        return ca_cert, (cert, issuer), _members(reply.get("members")), entries if isinstance(entries, list) else []
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
    force: bool = False,
) -> tuple[ident_mod.NodeIdentity, list[dict], list]:
    """Try every address (``addrs``, and what ``discovery(propose)`` finds within ``search`` seconds)
    until a node that can sign admits us; install the identity then (replacing one with ``force``).
    Returns the identity, the members and the signer's trust-log entries. ``timeout`` is per attempt."""
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
                ca_cert, (cert, issuer), members, entries = await _join_one(token, host, port, key, csr, name, timeout)
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
                ident = ident_mod.install_joined_identity(home, key, cert, ca_cert, force=force, issuer=issuer)
            except pki.IdentityError as exc:
                raise JoinError(f"{host}:{port} sent a certificate that cannot be used: {exc}") from None
            return ident, members, entries
    finally:
        if browser is not None:
            await browser.stop()
    if not errors:
        raise JoinError(
            f"no inviter found by mDNS within {search:g} s: pass --peer HOST:PORT "
            "(multicast may be blocked on this network)"
        )
    raise JoinError("could not reach an inviter: " + "; ".join(errors))
