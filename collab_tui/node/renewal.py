"""Certificate renewal: a node renews its own certificate while a third of its lifetime is left.

The root holder and admins issue their own; any other member asks a connected signer (``cert_renew``
with a CSR for its own key). The signer records the renewal in the trust log. The new certificate is
written atomically and used for every connection made after it; connections already open stay up (TLS
checked the certificate when they were made). A node whose certificate expired anyway says so in
`collab status` (``certificate.error``), with what to do. `CertRenewal` is mixed into `Node`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from cryptography import x509

from ..net import identity as ident_mod
from ..net import pki
from ..net.tls import server_ssl_context
from ..net.transport import RemoteError
from ..textfmt import short_id
from .context import refusal

log = logging.getLogger("collab.node")

RENEW_TIMEOUT = 10.0


class CertRenewal:
    ident: Any
    peers: Any
    trust: Any
    events: Any
    node_id: str
    _stop: asyncio.Event
    renewal_error: str = ""

    # ----------------------------------------------------------------- signer side
    async def serve_renewal(self, peer: str, csr_pem: str) -> dict:
        """Answer a member's ``cert_renew``: a certificate for the sender's own key, or an error."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError:
            return refusal("malformed CSR")
        if not csr.is_signature_valid or pki.node_id_of(csr) != peer:
            return refusal("a member renews only its own certificate (the CSR is for another key)")
        if self.is_revoked(peer):  # type: ignore[attr-defined]
            return refusal("revoked")
        try:
            cert, entry = self.issue(csr, "renew")  # type: ignore[attr-defined]
            issuer = self.issuer_pem()  # type: ignore[attr-defined]
        except (PermissionError, pki.IdentityError, ValueError) as exc:
            return refusal(str(exc))
        await self.publish_entries([entry])  # type: ignore[attr-defined]
        log.info("renewed the certificate of %s", short_id(peer))
        return {"cert_pem": pki.cert_pem(cert).decode(), "issuer_pem": issuer}

    # ----------------------------------------------------------------- member side
    def _check_every(self) -> float:
        return min(60.0, max(0.5, pki.lifetime(self.ident.cert).total_seconds() / 40))

    async def _renewals(self) -> None:
        while not self._stop.is_set():
            if pki.renewal_due(self.ident.cert):
                await self.renew_now()
            await asyncio.sleep(self._check_every())

    async def renew_now(self) -> bool:
        """Renew from this node itself (root or admin) or from a connected signer; True when renewed."""
        csr = pki.make_csr(self.ident.key, self.ident.name)
        try:
            if self.can_sign():  # type: ignore[attr-defined]
                cert, entry = self.issue(csr, "renew")  # type: ignore[attr-defined]
                issuer_pem = self.issuer_pem()  # type: ignore[attr-defined]
                await self.publish_entries([entry])  # type: ignore[attr-defined]
            else:
                cert, issuer_pem = await self._renew_remote(csr)
            issuer = x509.load_pem_x509_certificate(issuer_pem.encode()) if issuer_pem else None
            ident_mod.replace_certificate(self.ident, cert, issuer)
        except (LookupError, PermissionError, pki.IdentityError, ValueError) as exc:
            if str(exc) != self.renewal_error:
                log.warning("certificate renewal failed: %s (expires %s)", exc, self.ident.cert.not_valid_after_utc)
            self.renewal_error = str(exc)
            return False
        self.renewal_error = ""
        self.peers._server_ctx = server_ssl_context(self.ident)  # new connections present the new certificate
        self.peers._client_ctx = None
        until = cert.not_valid_after_utc
        log.info("certificate renewed until %s", until.isoformat(timespec="seconds"))
        self.events.publish("cert_renewed", node_id=self.node_id, expires=until.timestamp())
        return True

    async def _renew_remote(self, csr: x509.CertificateSigningRequest) -> tuple[x509.Certificate, str]:
        signers = [nid for nid in self.peers.conns if self.trust.is_admin(nid) or nid in self.signers]  # type: ignore[attr-defined]
        if not signers:
            raise LookupError("no signer (the root or an admin) is connected")
        csr_pem = csr.public_bytes(pki.serialization.Encoding.PEM).decode()
        errors = []
        for nid in signers:
            conn = self.peers.conns.get(nid)
            if conn is None:
                continue
            try:
                reply = await conn.request({"t": "cert_renew", "csr_pem": csr_pem}, RENEW_TIMEOUT)
            except RemoteError as exc:
                errors.append(f"{short_id(nid)}: {str(exc)[:120]}")
                continue
            except (TimeoutError, ConnectionError, OSError) as exc:
                errors.append(f"{short_id(nid)}: {type(exc).__name__}")
                continue
            if reply.get("cert_pem"):
                try:
                    cert = x509.load_pem_x509_certificate(str(reply["cert_pem"]).encode())
                except ValueError:
                    errors.append(f"{short_id(nid)}: sent an unreadable certificate")
                    continue
                return cert, str(reply.get("issuer_pem") or "")
            errors.append(f"{short_id(nid)}: answered without a certificate")
        raise LookupError("no signer renewed it: " + "; ".join(errors))

    def own_cert_error(self) -> str:
        if self.ident.cert.not_valid_after_utc.timestamp() <= time.time():
            return pki.EXPIRED_HELP
        return self.renewal_error
