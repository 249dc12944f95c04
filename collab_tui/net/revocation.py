"""The deny-list format from before the trust log: read once, by the root, to carry its revocations and
priorities into the trust log (`node/trust.py`, ``migrate_denylist``). Nothing writes it any more but the
tests of that step; the trust log (net/trust_log.py) replaced it.

Member records: a deny-list of node ids and the members' election priorities, signed by the cluster CA key.

Only the CA holder (the node that ran ``collab init``, the only one with ``ca.key``) can sign a
deny-list.  The master spreads the latest blob; every node keeps the highest version it has
verified (:class:`DenyListStore`) and checks the peer's node id after every TLS handshake.

A node's election priority is not what it says of itself: it is the priority these records give it
(0 when they name none), set by the CA holder (`collab trust priority`) and spread like the deny-list.

Blob format (UTF-8 JSON)::

    {"format": "collab-denylist-1", "version": 3, "cluster": "<cluster id>",
     "entries": {"<node id>": {"at": 1700000000.0, "reason": "lost laptop"}},
     "priorities": {"<node id>": 5},
     "sig": "<base64 DER ECDSA-SHA256 signature>"}

The signature covers the canonical JSON (sorted keys, no blanks, ASCII) of
``{"cluster", "entries", "version"}`` plus ``"priorities"`` when there are any (so that lists signed
before priorities existed still verify); the cluster id binds the list to one CA.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from collab_tui.net.identity import write_private
from collab_tui.net.pki import cluster_id_of, node_id_of

__all__ = ["RevocationError", "DenyList", "DenyListStore", "sign_denylist", "verify_denylist", "FORMAT"]

FORMAT = "collab-denylist-1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_REASON_LEN = 200
MAX_PRIORITY = 1_000_000  # priorities are small ints; |p| above this is refused


class RevocationError(Exception):
    """Bad deny-list: unreadable, malformed, wrong cluster or bad signature."""


@dataclass(frozen=True)
class DenyList:
    version: int = 0
    entries: dict[str, dict] = field(default_factory=dict)
    priorities: dict[str, int] = field(default_factory=dict)

    def is_revoked(self, node_id: str) -> bool:
        return isinstance(node_id, str) and node_id.lower() in self.entries

    def priority_of(self, node_id: str) -> int:
        """The election priority the records give ``node_id`` (0 when they name none)."""
        return self.priorities.get(node_id, 0) if isinstance(node_id, str) else 0


def _canonical(version: int, entries: dict, cluster: str, priorities: dict | None = None) -> bytes:
    payload: dict = {"version": version, "entries": entries, "cluster": cluster}
    if priorities:
        payload["priorities"] = priorities
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
        "ascii"
    )


def _check_entries(entries: object) -> dict[str, dict]:
    if not isinstance(entries, dict):
        raise RevocationError("deny-list entries must be an object")
    out: dict[str, dict] = {}
    for nid, e in entries.items():
        if not isinstance(nid, str) or not _HEX64.match(nid):
            raise RevocationError(f"deny-list entry key is not a node id: {nid!r}")
        if not isinstance(e, dict) or set(e) != {"at", "reason"}:
            raise RevocationError(f"deny-list entry for {nid[:12]} must be {{'at', 'reason'}}")
        at, reason = e["at"], e["reason"]
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
            raise RevocationError(f"deny-list entry for {nid[:12]}: 'at' must be a number")
        if not isinstance(reason, str) or len(reason) > MAX_REASON_LEN:
            raise RevocationError(f"deny-list entry for {nid[:12]}: bad 'reason'")
        out[nid] = {"at": float(at), "reason": reason}
    return out


def _check_priorities(priorities: object) -> dict[str, int]:
    if priorities is None:
        return {}
    if not isinstance(priorities, dict):
        raise RevocationError("member priorities must be an object")
    out: dict[str, int] = {}
    for nid, p in priorities.items():
        if not isinstance(nid, str) or not _HEX64.match(nid):
            raise RevocationError(f"priority key is not a node id: {str(nid)[:16]!r}")
        if isinstance(p, bool) or not isinstance(p, int) or abs(p) > MAX_PRIORITY:
            raise RevocationError(f"priority of {nid[:12]} must be an int within +-{MAX_PRIORITY}")
        if p:
            out[nid] = p
    return out


def _check_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise RevocationError("deny-list version must be a non-negative integer")
    return version


def sign_denylist(
    ca_key: ec.EllipticCurvePrivateKey, version: int, entries: dict[str, dict], priorities: dict | None = None
) -> bytes:
    """Sign member records with the CA key (CA holder only); returns the JSON blob."""
    version = _check_version(version)
    entries = _check_entries(entries)
    prios = _check_priorities(priorities)
    cluster = node_id_of(ca_key.public_key())
    sig = ca_key.sign(_canonical(version, entries, cluster, prios), ec.ECDSA(hashes.SHA256()))
    blob = {
        "format": FORMAT,
        "version": version,
        "cluster": cluster,
        "entries": entries,
        "sig": base64.b64encode(sig).decode("ascii"),
    }
    if prios:
        blob["priorities"] = prios
    return json.dumps(blob, sort_keys=True, separators=(",", ":")).encode("utf-8")


def verify_denylist(ca_cert: x509.Certificate, blob: bytes) -> DenyList:
    """Parse and verify a deny-list blob against the cluster CA; RevocationError if anything is off."""
    try:
        obj = json.loads(blob)
    except (ValueError, TypeError) as e:
        raise RevocationError(f"deny-list is not valid JSON: {e}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise RevocationError(f"not a deny-list (expected format {FORMAT!r})")
    version = _check_version(obj.get("version"))
    entries = _check_entries(obj.get("entries"))
    prios = _check_priorities(obj.get("priorities"))
    cluster = obj.get("cluster")
    if cluster != cluster_id_of(ca_cert):
        raise RevocationError("deny-list belongs to another cluster")
    try:
        sig = base64.b64decode(str(obj.get("sig", "")), validate=True)
    except (binascii.Error, ValueError):
        raise RevocationError("deny-list signature is not valid base64") from None
    try:
        ca_cert.public_key().verify(sig, _canonical(version, entries, cluster, prios), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        raise RevocationError("deny-list signature does not verify against the cluster CA") from None
    return DenyList(version, entries, prios)


class DenyListStore:
    """The latest verified deny-list blob, kept in one file (0600, atomic writes)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def blob(self) -> bytes | None:
        """The stored blob as received (to spread it further), or None."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def load(self, ca_cert: x509.Certificate) -> DenyList:
        """The stored list, verified; an empty version-0 list if there is none."""
        b = self.blob()
        return DenyList() if b is None else verify_denylist(ca_cert, b)

    def save(self, blob: bytes) -> None:
        write_private(self.path, blob)

    def accept(self, blob: bytes, ca_cert: x509.Certificate) -> bool:
        """Verify ``blob`` and keep it if newer than the stored one; True if it replaced it."""
        new = verify_denylist(ca_cert, blob)
        try:
            cur = self.load(ca_cert).version
        except RevocationError:
            cur = -1  # unreadable local copy: any valid list replaces it
        if new.version <= cur:
            return False
        self.save(blob)
        return True

    def revoke(
        self,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        node_id: str,
        reason: str = "",
        now: float | None = None,
    ) -> bytes:
        """CA holder only: add ``node_id``, bump the version, sign, save; returns the new blob."""
        node_id = node_id.strip().lower() if isinstance(node_id, str) else ""
        if not _HEX64.match(node_id):
            raise RevocationError("node id must be 64 hex characters")
        if node_id == cluster_id_of(ca_cert):
            raise RevocationError("cannot revoke the CA key itself")
        if node_id_of(ca_key.public_key()) != cluster_id_of(ca_cert):
            raise RevocationError("CA key does not match the CA certificate")
        cur = self.load(ca_cert)  # a corrupt local copy raises rather than restarting at v1
        entries = dict(cur.entries)
        entries[node_id] = {"at": float(time.time() if now is None else now), "reason": str(reason)[:MAX_REASON_LEN]}
        blob = sign_denylist(ca_key, cur.version + 1, entries, cur.priorities)
        self.save(blob)
        return blob

    def set_priority(
        self, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, node_id: str, priority: int
    ) -> bytes | None:
        """CA holder only: give ``node_id`` an election priority; signs and saves a new version and returns
        it, or None when the records already say so."""
        node_id = node_id.strip().lower() if isinstance(node_id, str) else ""
        if not _HEX64.match(node_id):
            raise RevocationError("node id must be 64 hex characters")
        if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
            raise RevocationError(f"priority must be an int within +-{MAX_PRIORITY}")
        if node_id_of(ca_key.public_key()) != cluster_id_of(ca_cert):
            raise RevocationError("CA key does not match the CA certificate")
        cur = self.load(ca_cert)
        if cur.priority_of(node_id) == priority:
            return None
        prios = {**cur.priorities, node_id: priority}
        blob = sign_denylist(ca_key, cur.version + 1, cur.entries, prios)
        self.save(blob)
        return blob
