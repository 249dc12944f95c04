"""The trust log: the cluster's append-only, signed record of who may do what (sans-IO).

Every change to trust is one **entry**, signed by its author: the cluster CA key ("root", held by the
node that ran `collab init`) or an **admin** (a member the root granted a signing certificate,
`collab trust admin add`). Kinds and who may author them:

    admin_add     root only     {node, cert}         grant: ``cert`` is the admin's signing certificate
    admin_remove  root, admin   {node, keep}         take an admin's power to sign away
    revoke        root, admin   {node, reason, keep} cut a member off (an admin loses its power too)
    join          root, admin   {node, name, token, serial, not_after}   a certificate issued at a join
    renew         root, admin   {node, serial, not_after}                a certificate renewed
    priority      root, admin   {node, priority}     a member's election priority (the latest wins)

An entry's id is the SHA-256 of its canonical body; nodes keep the **set** of every valid entry they have
seen and gossip it (the union only grows), and show it in one order, (``at``, id), so that every node
shows the same events in the same order once they have the same set. Nothing here trusts the order for
safety:

* Revocations and removals always count (failing safe): cut off is cut off, whoever learns it first.
* An admin's other entries (joins, renewals, priorities) count only if **every** removal of that admin
  lists them in its ``keep``: the ids of that admin's entries the remover had seen. What a removed admin
  signs afterwards, back-dated or not, counts for nothing, and a certificate it issues is refused
  (:meth:`TrustState.refuses`), while the members it admitted before keep their certificates.

Entry on the wire and on disk (JSON): ``{"body": {...,"kind","at","by"}, "sig": "<b64 DER ECDSA>"}``
where ``by`` is the cluster id for the root, else the admin's node id (an admin signs with its node key,
whose public key its root-signed ``admin_add`` certificate carries).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from .pki import IdentityError, cluster_id_of, node_id_of, signer_node_of, verify_signer_cert

__all__ = ["TrustLogError", "Entry", "TrustState", "sign_entry", "parse_entry", "build_state", "KINDS"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TOKEN = re.compile(r"^[0-9a-f]{8}$")
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n?")
MAX_REASON_LEN = 200
MAX_NAME_LEN = 64
MAX_PRIORITY = 1_000_000
MAX_KEEP = 100_000
MAX_CERT_PEM = 4096
MAX_ENTRIES = 50_000  # a log past this is refused whole (see messages.MAX_TRUST_LOG)
ROOT_ONLY = {"admin_add"}
KINDS = {"admin_add", "admin_remove", "revoke", "join", "renew", "priority"}


class TrustLogError(Exception):
    """An entry that is malformed, badly signed, or signed by someone who may not author it."""


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


@dataclass(frozen=True)
class Entry:
    id: str
    body: dict
    sig: str

    @property
    def kind(self) -> str:
        return self.body["kind"]

    @property
    def at(self) -> float:
        return self.body["at"]

    @property
    def by(self) -> str:
        return self.body["by"]

    @property
    def node(self) -> str:
        return self.body["node"]

    def wire(self) -> dict:
        return {"body": self.body, "sig": self.sig}


def _node_id(v, what: str = "node") -> str:
    if not isinstance(v, str) or not _HEX64.match(v):
        raise TrustLogError(f"{what} is not a node id")
    return v


def _number(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise TrustLogError(f"{what} must be a finite non-negative number")
    return float(v)


def _text(v, what: str, limit: int) -> str:
    if not isinstance(v, str) or len(v) > limit or not (v.isprintable() or v == ""):
        raise TrustLogError(f"{what} must be printable text of at most {limit} characters")
    return v


def _keep(v) -> list[str]:
    if not isinstance(v, list) or len(v) > MAX_KEEP:
        raise TrustLogError(f"keep must be a list of at most {MAX_KEEP} entry ids")
    for i in v:
        if not isinstance(i, str) or not _HEX64.match(i):
            raise TrustLogError("keep holds something that is not an entry id")
    return sorted(set(v))


def check_body(body) -> dict:
    """The body with its fields checked against the kind's schema (bounds included); TrustLogError if not."""
    if not isinstance(body, dict):
        raise TrustLogError("entry body must be an object")
    kind = body.get("kind")
    if kind not in KINDS:
        raise TrustLogError(f"unknown entry kind {str(kind)[:20]!r}")
    out = {"kind": kind, "at": _number(body.get("at"), "at"), "by": _node_id(body.get("by"), "by")}
    out["node"] = _node_id(body.get("node"))
    fields = {"kind", "at", "by", "node"}
    if kind == "admin_add":
        cert = body.get("cert")
        if not isinstance(cert, str) or len(cert) > MAX_CERT_PEM or not _PEM.fullmatch(cert):
            raise TrustLogError(f"cert must be one PEM certificate of at most {MAX_CERT_PEM} characters")
        out["cert"] = cert
        fields |= {"cert"}
    elif kind in ("admin_remove", "revoke"):
        out["keep"] = _keep(body.get("keep"))
        fields |= {"keep"}
        if kind == "revoke":
            out["reason"] = _text(body.get("reason"), "reason", MAX_REASON_LEN)
            fields |= {"reason"}
    elif kind in ("join", "renew"):
        serial = body.get("serial")
        if not isinstance(serial, str) or not re.fullmatch(r"[0-9a-f]{1,40}", serial):
            raise TrustLogError("serial must be 1-40 hex characters")
        out["serial"] = serial
        out["not_after"] = _number(body.get("not_after"), "not_after")
        fields |= {"serial", "not_after"}
        if kind == "join":
            out["name"] = _text(body.get("name"), "name", MAX_NAME_LEN)
            token = body.get("token")
            if not isinstance(token, str) or not (token == "" or _TOKEN.match(token)):
                raise TrustLogError("token must be a token id (8 hex characters) or empty")
            out["token"] = token
            fields |= {"name", "token"}
    elif kind == "priority":
        p = body.get("priority")
        if isinstance(p, bool) or not isinstance(p, int) or abs(p) > MAX_PRIORITY:
            raise TrustLogError(f"priority must be an int within +-{MAX_PRIORITY}")
        out["priority"] = p
        fields |= {"priority"}
    extra = set(body) - fields
    if extra:
        raise TrustLogError(f"unexpected fields in a {kind} entry: {sorted(extra)[:4]}")
    return out


def entry_id(body: dict) -> str:
    return hashlib.sha256(canonical(body)).hexdigest()


def sign_entry(key: ec.EllipticCurvePrivateKey, author: str, kind: str, at: float, **fields) -> Entry:
    """A new entry authored by ``author`` (the cluster id for the root, else the admin's node id)."""
    body = check_body({"kind": kind, "at": at, "by": author, **fields})
    sig = key.sign(canonical(body), ec.ECDSA(hashes.SHA256()))
    return Entry(entry_id(body), body, base64.b64encode(sig).decode("ascii"))


def parse_entry(raw) -> Entry:
    """An entry from the wire or the disk, its schema checked (its signature is checked by `build_state`)."""
    if not isinstance(raw, dict) or set(raw) != {"body", "sig"}:
        raise TrustLogError("an entry is {body, sig}")
    body = check_body(raw["body"])
    sig = raw["sig"]
    if not isinstance(sig, str) or len(sig) > 200:
        raise TrustLogError("entry signature must be base64 text")
    return Entry(entry_id(body), body, sig)


def _verify(entry: Entry, pub: ec.EllipticCurvePublicKey) -> bool:
    try:
        sig = base64.b64decode(entry.sig, validate=True)
        pub.verify(sig, canonical(entry.body), ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature, TypeError):
        return False
    return True


@dataclass
class Admin:
    node_id: str
    cert: x509.Certificate
    granted_at: float
    removed: bool = False


@dataclass
class TrustState:
    """What the valid entries say: the deny-list, priorities, admins and issued certificates."""

    cluster: str = ""
    entries: list[Entry] = field(default_factory=list)  # those that count, in display order (at, id)
    stored: list[Entry] = field(default_factory=list)  # every verified entry (the set that is gossiped)
    revoked: dict[str, dict] = field(default_factory=dict)  # node id -> {at, reason, by}
    priorities: dict[str, int] = field(default_factory=dict)
    admins: dict[str, Admin] = field(default_factory=dict)  # every admin ever granted
    certs: dict[str, dict] = field(default_factory=dict)  # node id -> its latest join/renew body
    ignored: int = 0  # entries of removed admins that count for nothing
    issued: dict[str, set[str]] = field(default_factory=dict)  # admin -> serials it issued that count
    removed_admins: set[str] = field(default_factory=set)

    # ---- the DenyList interface the node uses
    @property
    def version(self) -> int:
        """How many entries this node holds: a peer that shows more has some we lack."""
        return len(self.stored)

    @cached_property
    def digest(self) -> str:
        """Short digest of the set of entry ids: two nodes with the same set have the same digest. Sent in
        every heartbeat: computed once per state (a merge builds a new one)."""
        return hashlib.sha256("".join(sorted(e.id for e in self.stored)).encode()).hexdigest()[:16]

    def authored_by(self, node_id: str) -> list[str]:
        """Ids of the stored entries ``node_id`` authored (what a removal of that admin keeps)."""
        return [e.id for e in self.stored if e.by == node_id]

    def is_revoked(self, node_id: str) -> bool:
        return isinstance(node_id, str) and node_id.lower() in self.revoked

    def priority_of(self, node_id: str) -> int:
        return self.priorities.get(node_id, 0) if isinstance(node_id, str) else 0

    def is_admin(self, node_id: str) -> bool:
        a = self.admins.get(node_id)
        return a is not None and not a.removed and node_id not in self.revoked

    def signer_cert(self, node_id: str) -> x509.Certificate | None:
        """The signing certificate of a current admin, or None."""
        return self.admins[node_id].cert if self.is_admin(node_id) else None

    def refuses(self, cert: x509.Certificate, root_subject: x509.Name) -> str | None:
        """Why a member's TLS certificate (already verified to chain to the root by TLS) is refused, or None."""
        nid = node_id_of(cert)
        if self.is_revoked(nid):
            return "node is revoked"
        if cert.issuer == root_subject:
            return None
        admin = signer_node_of(cert.issuer)
        if admin is None or admin not in self.admins:
            return "certificate issued by a signer the trust log does not know (yet)"
        if admin in self.removed_admins:
            serial = format(cert.serial_number, "x")
            if serial not in self.issued.get(admin, set()):
                return (
                    f"certificate issued by {admin[:12]} after it lost its power to sign: "
                    "ask an admin for a new token (`collab invite`) and re-join with `collab join --force TOKEN`"
                )
        return None


def build_state(ca_cert: x509.Certificate, raw_entries) -> tuple[TrustState, list[str]]:
    """Verify every entry and derive the state; returns it with the reasons for the entries dropped
    (malformed, unverifiable, or authored by someone who may not)."""
    cluster = cluster_id_of(ca_cert)
    root_pub = ca_cert.public_key()
    errors: list[str] = []
    parsed: dict[str, Entry] = {}
    for raw in raw_entries:
        try:
            e = raw if isinstance(raw, Entry) else parse_entry(raw)
        except TrustLogError as exc:
            errors.append(str(exc))
            continue
        parsed[e.id] = e
    st = TrustState(cluster=cluster)
    # 1. grants: root-signed admin_add entries whose certificate the root issued for that node's key
    good: dict[str, Entry] = {}
    for e in parsed.values():
        if e.by != cluster:
            continue
        if not _verify(e, root_pub):  # type: ignore[arg-type]
            errors.append(f"{e.kind} entry {e.id[:12]}: bad root signature")
            continue
        good[e.id] = e
        if e.kind == "admin_add":
            try:
                cert = x509.load_pem_x509_certificate(e.body["cert"].encode())
                verify_signer_cert(cert, ca_cert, e.node)
            except (ValueError, IdentityError) as exc:
                errors.append(f"admin_add {e.id[:12]}: {exc}")
                del good[e.id]
                continue
            if e.node not in st.admins:
                st.admins[e.node] = Admin(e.node, cert, e.at)
    # 2. entries of admins: the signature against the admin's granted key
    for e in parsed.values():
        if e.by == cluster:
            continue
        admin = st.admins.get(e.by)
        if admin is None:
            errors.append(f"{e.kind} entry {e.id[:12]}: its author is not an admin")
            continue
        if e.kind in ROOT_ONLY:
            errors.append(f"{e.kind} entry {e.id[:12]}: only the root may author it")
            continue
        if not _verify(e, admin.cert.public_key()):  # type: ignore[arg-type]
            errors.append(f"{e.kind} entry {e.id[:12]}: bad signature of admin {e.by[:12]}")
            continue
        good[e.id] = e
    # 3. removals always count; they decide which entries of removed admins still do
    keeps: dict[str, list[set[str]]] = {}
    for e in good.values():
        if e.kind in ("revoke", "admin_remove") and e.node in st.admins:
            keeps.setdefault(e.node, []).append(set(e.body["keep"]))
    st.removed_admins = set(keeps)
    for nid in keeps:
        st.admins[nid].removed = True

    def counts(e: Entry) -> bool:
        if e.kind in ("revoke", "admin_remove") or e.by == cluster:
            return True
        return all(e.id in keep for keep in keeps.get(e.by, ()))

    ordered = sorted(good.values(), key=lambda e: (e.at, e.id))
    st.stored = ordered
    for e in ordered:
        if not counts(e):
            st.ignored += 1
            continue
        st.entries.append(e)
        body = e.body
        if e.kind == "revoke":
            st.revoked.setdefault(e.node, {"at": e.at, "reason": body["reason"], "by": e.by})
        elif e.kind == "priority":
            st.priorities[e.node] = body["priority"]
        elif e.kind in ("join", "renew"):
            cur = st.certs.get(e.node)
            if cur is None or body["not_after"] >= cur["not_after"]:
                st.certs[e.node] = {**body, "id": e.id}
            if e.by != cluster:
                st.issued.setdefault(e.by, set()).add(body["serial"])
    st.priorities = {k: v for k, v in st.priorities.items() if v}
    return st, errors


def describe(e: Entry, cluster: str) -> dict:
    """One entry as `collab trust log` shows it."""
    row = {"id": e.id, "at": e.at, "kind": e.kind, "by": "root" if e.by == cluster else e.by, "node": e.node}
    for k in ("name", "token", "serial", "not_after", "reason", "priority"):
        if k in e.body:
            row[k] = e.body[k]
    if "keep" in e.body:
        row["kept"] = len(e.body["keep"])
    return row
