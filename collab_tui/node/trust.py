"""The node's part of the trust log (net/trust_log.py): revocations, priorities, admins, issued certificates.

The root (the node that ran `collab init`, holding ``ca.key``) and the admins it grants
(`collab trust admin add`) author entries; every node keeps the set of verified entries, gossips it
(``trust_log`` pushes, ``trust_get`` pulls after a heartbeat shows another set), cuts off the members it
revokes or whose certificate it refuses, and takes every member's priority from it, never from what a
member says of itself. `TrustRecords` is mixed into `Node` (node/runtime.py), whose parts it uses:
``ident``, ``trust_store``, ``peers``, ``membership``, ``election``, ``events`` and ``cfg``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cryptography import x509

from ..net import pki
from ..net.handshake import peer_certificate
from ..net.trust_log import Entry, TrustLogError, TrustState, describe, sign_entry
from ..textfmt import short_id

log = logging.getLogger("collab.node")

ESSENTIAL = {"admin_add", "admin_remove", "revoke"}
TRUST_BATCH = 500  # entries per `trust_log` message (a frame holds about 8 times as many)
JOINER_ENTRIES = 2000

NOT_ADMIN = (
    "this node cannot sign: it is neither the root (the node that ran `collab init`) nor an admin; "
    "run it on an admin (`collab trust status` lists them), or make this node one on the root: "
    "collab trust admin add {me}"
)


class TrustRecords:
    ident: Any
    trust_store: Any
    peers: Any
    membership: Any
    election: Any
    events: Any
    node_id: str
    cfg: Any

    @property
    def trust(self) -> TrustState:
        return self.trust_store.current

    def is_revoked(self, node_id: str) -> bool:
        return self.trust.is_revoked(node_id)

    def refuses_cert(self, cert: x509.Certificate) -> str | None:
        """Why a member's certificate is refused after TLS (revoked, or issued by a removed admin), or None."""
        return self.trust.refuses(cert, self.ident.ca_cert.subject)

    def priority_of(self, node_id: str) -> int:
        """A member's election priority: what the trust log says (0 when it names none)."""
        return self.trust.priority_of(node_id)

    # ----------------------------------------------------------------- who may sign
    def can_sign(self) -> bool:
        return self.ident.ca_key is not None or self.trust.is_admin(self.node_id)

    def signing_key(self) -> tuple[Any, x509.Certificate, str]:
        """(key, certificate it signs with, author id) of this node, or PermissionError when it may not sign."""
        if self.ident.ca_key is not None:
            return self.ident.ca_key, self.ident.ca_cert, self.ident.cluster_id
        cert = self.trust.signer_cert(self.node_id)
        if cert is None:
            raise PermissionError(NOT_ADMIN.format(me=self.ident.short_id))
        return self.ident.key, cert, self.node_id

    def issue(self, csr: x509.CertificateSigningRequest, kind: str, **fields) -> tuple[x509.Certificate, Entry]:
        """Sign a node certificate (``cert_days`` long) and the trust-log entry that records it."""
        key, signer, author = self.signing_key()
        cert = pki.sign_csr(key, signer, csr, days=self.cfg.cert_days)
        entry = sign_entry(
            key,
            author,
            kind,
            time.time(),
            node=pki.node_id_of(cert),
            serial=format(cert.serial_number, "x"),
            not_after=cert.not_valid_after_utc.timestamp(),
            **fields,
        )
        return cert, entry

    def issuer_pem(self) -> str:
        """The signing certificate a node issued here must present with its own ("" for the root)."""
        _, signer, author = self.signing_key()
        return "" if author == self.ident.cluster_id else pki.cert_pem(signer).decode()

    # ----------------------------------------------------------------- the log
    def accept_trust_entries(self, raw_entries, source: str = "") -> bool:
        """Merge entries from a peer (or a join); True if the set grew (then it is applied)."""
        try:
            grew, errors = self.trust_store.merge(raw_entries)
        except TrustLogError as exc:
            log.warning("refused trust-log entries from %s: %s", short_id(source) if source else "?", exc)
            return False
        if errors:
            log.warning(
                "dropped %d trust-log entries from %s (first: %s)",
                len(errors),
                short_id(source) if source else "a join",
                errors[0],
            )
        if grew:
            self._apply_trust()
        return grew

    async def append(self, kind: str, **fields) -> Entry:
        """Author an entry here, keep it and push it to every peer (the master among them)."""
        key, _, author = self.signing_key()
        try:
            entry = sign_entry(key, author, kind, time.time(), **fields)
        except TrustLogError as exc:
            raise ValueError(str(exc)) from None
        await self.publish_entries([entry])
        return entry

    async def publish_entries(self, entries: list[Entry]) -> None:
        self.accept_trust_entries(entries)
        await self.peers.broadcast({"t": "trust_log", "entries": [e.wire() for e in entries]})

    def hello_grant(self) -> dict | None:
        """The root's grant of the admin that issued this node's certificate (None when the root did): sent in
        the HELLO, so a peer that missed that grant can still check the certificate."""
        admin = pki.signer_node_of(self.ident.cert.issuer)
        if admin is None:
            return None
        for e in self.trust.stored:
            if e.kind == "admin_add" and e.node == admin and e.by == self.ident.cluster_id:
                return e.wire()
        return None

    def learn_grant(self, raw: object) -> None:
        """A peer's HELLO ``grant``: only a root-signed admin_add counts (checked like any entry)."""
        if not (isinstance(raw, dict) and isinstance(raw.get("body"), dict) and raw["body"].get("kind") == "admin_add"):
            return
        if raw["body"].get("node") in self.trust.admins:
            return  # known already
        self.accept_trust_entries([raw], "a HELLO")

    def _essential_first(self) -> tuple[list[Entry], list[Entry]]:
        """The stored entries split: grants, removals and revocations (what checking certificates needs),
        and the rest, each in log order."""
        stored = self.trust.stored
        return [e for e in stored if e.kind in ESSENTIAL], [e for e in stored if e.kind not in ESSENTIAL]

    def trust_batches(self, size: int = TRUST_BATCH) -> list[list[dict]]:
        """The whole log for a peer that asked, in messages of ``size`` entries: grants, removals and
        revocations first (what checking certificates needs), then the rest."""
        first, rest = self._essential_first()
        wire = [e.wire() for e in first + rest]
        return [wire[i : i + size] for i in range(0, len(wire), size)] or [[]]

    def trust_for_joiner(self, limit: int = JOINER_ENTRIES) -> list[dict]:
        """What a joiner gets with its certificate: grants, removals and revocations, then the newest other
        entries up to ``limit`` in all (the rest reaches it by gossip once it runs)."""
        first, rest = self._essential_first()
        room = max(0, limit - len(first))
        return [e.wire() for e in first + (rest[-room:] if room else [])]

    def trust_log(self) -> list[dict]:
        cluster = self.ident.cluster_id
        return [describe(e, cluster) for e in self.trust.entries]

    # ----------------------------------------------------------------- commands
    async def revoke(self, node_id: str, reason: str = "") -> dict:
        if node_id == self.node_id:
            raise ValueError("a node cannot revoke itself")
        self.signing_key()
        keep = self.trust.authored_by(node_id)  # what it signed while it could still count
        await self.append("revoke", node=node_id, reason=str(reason)[:200], keep=keep)
        return {"version": self.trust.version, "revoked": node_id}

    async def set_priority(self, node_id: str, priority: int) -> dict:
        if self.priority_of(node_id) != priority:
            await self.append("priority", node=node_id, priority=priority)
        return {"version": self.trust.version, "node_id": node_id, "priority": self.priority_of(node_id)}

    async def admin_add(self, node_id: str) -> dict:
        """Root only: grant a connected member a signing certificate for its own key."""
        if self.ident.ca_key is None:
            raise PermissionError(
                "only the root (the node that ran `collab init`, holding the CA key) grants admins; "
                "an admin can sign joins, renewals and revocations but not make other admins"
            )
        if self.trust.is_admin(node_id):
            return {"node_id": node_id, "admin": True, "version": self.trust.version}
        if self.is_revoked(node_id):
            raise ValueError(f"{short_id(node_id)} is revoked")
        if node_id == self.node_id:
            node_cert = self.ident.cert
        else:
            conn = self.peers.conns.get(node_id)
            node_cert = peer_certificate(conn) if conn is not None else None
            if node_cert is None:
                raise LookupError(f"{short_id(node_id)} is not connected to this node: start it, then try again")
        try:
            cert = pki.make_signer_cert(self.ident.ca_key, self.ident.ca_cert, node_cert)
        except pki.IdentityError as exc:
            raise ValueError(str(exc)) from None
        await self.append("admin_add", node=node_id, cert=pki.cert_pem(cert).decode())
        return {"node_id": node_id, "admin": True, "version": self.trust.version}

    async def admin_remove(self, node_id: str) -> dict:
        if not self.trust.is_admin(node_id):
            raise ValueError(f"{short_id(node_id)} is not an admin")
        self.signing_key()
        await self.append("admin_remove", node=node_id, keep=self.trust.authored_by(node_id))
        return {"node_id": node_id, "admin": False, "version": self.trust.version}

    def trust_status(self) -> dict:
        """Per member: admin or not, who issued its certificate and when it expires (from the trust log)."""
        st, now = self.trust, time.time()
        known = {m["node_id"]: m for m in self._known.get("members", [])}  # type: ignore[attr-defined]
        known.update({m["node_id"]: m for m in self.member_list()})  # type: ignore[attr-defined]
        ids = set(known) | set(st.certs) | set(st.admins)
        rows = []
        for nid in sorted(ids):
            cert = st.certs.get(nid)
            not_after = cert["not_after"] if cert else None
            if nid == self.node_id:
                not_after = self.ident.cert.not_valid_after_utc.timestamp()
            by = cert["by"] if cert else ""
            rows.append(
                {
                    "node_id": nid,
                    "short_id": short_id(nid),
                    "name": known.get(nid, {}).get("name", "") or (cert or {}).get("name", ""),
                    "admin": st.is_admin(nid),
                    "revoked": st.is_revoked(nid),
                    "issued_by": "root" if by == self.ident.cluster_id else short_id(by) if by else "",
                    "expires": not_after,
                    "expires_in": round(not_after - now) if not_after else None,
                }
            )
        return {
            "members": rows,
            "root_here": self.ident.ca_key is not None,
            "can_sign": self.can_sign(),
            "cert_days": self.cfg.cert_days,
            "version": st.version,
            "ignored": st.ignored,
        }

    # ----------------------------------------------------------------- applying
    def _apply_priorities(self) -> None:
        now = time.monotonic()
        self.election.set_priority(self.node_id, self.priority_of(self.node_id), now)
        for p in self.membership.peers():
            p.priority = self.priority_of(p.node_id)
            self.election.set_priority(p.node_id, p.priority, now)

    def _apply_trust(self) -> None:
        """New priorities; every connected peer the log now refuses is cut off."""
        self._apply_priorities()
        for peer_id in list(self.trust.revoked):
            self.peers.forget_node(peer_id)  # never dialed again
        for peer_id, conn in list(self.peers.conns.items()):
            cert = peer_certificate(conn)
            why = self.refuses_cert(cert) if cert is not None else None
            if why:
                log.warning("peer %s: %s: disconnecting", short_id(peer_id), why)
                self.peers.drop(peer_id, why[:60])
                self.membership.on_leave(peer_id, time.monotonic())
                self._pump_membership()  # type: ignore[attr-defined]
        self.events.publish("denylist", version=self.trust.version)

    async def _sign_own_priority(self) -> None:
        """The ``priority`` setting: a node that can sign writes it into the trust log (when it is not 0 and
        the log says otherwise); elsewhere it cannot count (a node's rank is never what it says of itself)."""
        want, have = self.cfg.priority, self.priority_of(self.node_id)
        if not want or want == have:
            return
        if self.can_sign():
            await self.set_priority(self.node_id, want)
        else:
            log.warning(
                "priority setting %s ignored: the cluster's trust log gives this node %s; "
                "set it on the root or an admin: collab trust priority %s %s",
                want,
                have,
                self.ident.short_id,
                want,
            )

    def migrate_denylist(self, path) -> None:
        """A deny-list file from before the trust log: the root turns it into entries (once)."""
        if self.ident.ca_key is None or self.trust.version or not path.exists():
            return
        from ..net.revocation import RevocationError, verify_denylist

        try:
            old = verify_denylist(self.ident.ca_cert, path.read_bytes())
        except (RevocationError, OSError) as exc:
            log.warning("old deny-list %s not carried over: %s", path, exc)
            return
        key, cluster, entries = self.ident.ca_key, self.ident.cluster_id, []
        for nid, e in old.entries.items():
            entries.append(sign_entry(key, cluster, "revoke", e["at"], node=nid, reason=e["reason"], keep=[]))
        for nid, p in old.priorities.items():
            entries.append(sign_entry(key, cluster, "priority", time.time(), node=nid, priority=p))
        self.accept_trust_entries(entries)
        log.info("carried %d entries of the old deny-list into the trust log", len(entries))
        path.rename(path.with_suffix(".json.migrated"))

    async def record_own_certificate(self) -> None:
        """The root's own certificate (made by `collab init`, not by a join) enters the log once, so that
        every node's `collab trust status` shows when it expires."""
        if self.ident.ca_key is None or self.node_id in self.trust.certs:
            return
        cert = self.ident.cert
        await self.append(
            "join",
            node=self.node_id,
            name=self.ident.name[:64],
            token="",
            serial=format(cert.serial_number, "x"),
            not_after=cert.not_valid_after_utc.timestamp(),
        )

    def own_cert_state(self) -> dict:
        """This node's certificate: when it expires, and what to do when it has."""
        cert, now = self.ident.cert, time.time()
        until = cert.not_valid_after_utc.timestamp()
        row = {"expires": until, "expires_in": round(until - now), "issued_by": "root"}
        if cert.issuer != self.ident.ca_cert.subject:
            row["issued_by"] = short_id(pki.signer_node_of(cert.issuer) or "")
        error = self.own_cert_error()  # type: ignore[attr-defined]
        if error:
            row["error"] = error
        return row
