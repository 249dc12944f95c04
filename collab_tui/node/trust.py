"""The node's part of the cluster's signed member records: revocation (the deny-list) and election priorities.

Only the CA holder (the node that ran `collab init`) signs them (net/revocation.py); every node keeps the
latest verified version, cuts off the members it revokes and takes every member's priority from it, never
from what a member says of itself. `MemberRecords` is mixed into `Node` (node/runtime.py), whose parts it
uses: ``ident``, ``deny``, ``denylist_store``, ``peers``, ``membership``, ``election`` and ``events``.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

from ..net.revocation import RevocationError
from ..textfmt import short_id

log = logging.getLogger("collab.node")


class MemberRecords:
    ident: Any
    deny: Any
    denylist_store: Any
    peers: Any
    membership: Any
    election: Any
    events: Any
    node_id: str
    cfg: Any

    def is_revoked(self, node_id: str) -> bool:
        return self.deny.is_revoked(node_id)

    def denylist_version(self) -> int:
        return self.deny.version

    def accept_denylist(self, blob: bytes) -> bool:
        try:
            replaced = self.denylist_store.accept(blob, self.ident.ca_cert)
        except RevocationError as exc:
            log.warning("refused a deny-list: %s", exc)
            return False
        if replaced:
            self._apply_denylist()
        return replaced

    def priority_of(self, node_id: str) -> int:
        """A member's election priority: what the signed member records say (0 when they name none)."""
        return self.deny.priority_of(node_id)

    async def set_priority(self, node_id: str, priority: int) -> dict:
        """CA holder only: sign a member's election priority into the member records and spread them."""
        if self.ident.ca_key is None:
            raise PermissionError(
                "this node does not hold the cluster CA key; set priorities on the node that ran `collab init`"
            )
        try:
            blob = self.denylist_store.set_priority(self.ident.ca_key, self.ident.ca_cert, node_id, priority)
        except RevocationError as exc:
            raise ValueError(str(exc)) from None
        if blob is not None:
            self._apply_denylist()
            await self.peers.broadcast({"t": "deny", "blob": base64.b64encode(blob).decode()})
        return {"version": self.deny.version, "node_id": node_id, "priority": self.priority_of(node_id)}

    async def _sign_own_priority(self) -> None:
        """The ``priority`` setting: the CA holder signs it into the member records (when it is not 0 and
        they say otherwise); elsewhere it cannot count (a node's rank is never what it says of itself)."""
        want, have = self.cfg.priority, self.priority_of(self.node_id)
        if not want or want == have:
            return
        if self.ident.ca_key is not None:
            await self.set_priority(self.node_id, want)
        else:
            log.warning(
                "priority setting %s ignored: the cluster's signed member records give this node %s; "
                "set it on the node that ran `collab init`: collab trust priority %s %s",
                want,
                have,
                self.ident.short_id,
                want,
            )

    def _apply_priorities(self) -> None:
        now = time.monotonic()
        self.election.set_priority(self.node_id, self.priority_of(self.node_id), now)
        for p in self.membership.peers():
            p.priority = self.priority_of(p.node_id)
            self.election.set_priority(p.node_id, p.priority, now)

    def _apply_denylist(self) -> None:
        """Reload the member records: new priorities; every connected peer they revoke is cut off."""
        self.deny = self.denylist_store.load(self.ident.ca_cert)
        self._apply_priorities()
        for peer_id in list(self.deny.entries):
            self.peers.forget_node(peer_id)  # never dialed again
        for peer_id in list(self.peers.conns):
            if self.is_revoked(peer_id):
                log.warning("peer %s is revoked: disconnecting", short_id(peer_id))
                self.peers.drop(peer_id, "revoked")
                self.membership.on_leave(peer_id, time.monotonic())
                self._pump_membership()
        self.events.publish("denylist", version=self.deny.version)

    async def revoke(self, node_id: str, reason: str = "") -> dict:
        if self.ident.ca_key is None:
            raise PermissionError(
                "this node does not hold the cluster CA key; revoke from the node that ran `collab init`"
            )
        if node_id == self.node_id:
            raise ValueError("a node cannot revoke itself")
        blob = self.denylist_store.revoke(self.ident.ca_key, self.ident.ca_cert, node_id, reason)
        self._apply_denylist()
        msg = {"t": "deny", "blob": base64.b64encode(blob).decode()}
        master = self.election.master_id
        if master and master != self.node_id:
            await self.peers.send(master, msg)  # the master spreads it
        await self.peers.broadcast(msg)
        return {"version": self.deny.version, "revoked": node_id}
