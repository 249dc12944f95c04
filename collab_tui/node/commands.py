"""The node's own control commands (status, nodes, trust, logs, stop, the event stream)."""

from __future__ import annotations

import asyncio

from .. import api
from ..logs import RingHandler
from ..net.pki import ca_pin
from ..textfmt import short_id
from .cluster_logs import level_no, matches
from .control import command, stream


def resolve_node(node, ref: str) -> str:
    """Full id, short id (dashes optional), id prefix, or name -> full node id."""
    ref = ref.strip()
    key = ref.replace("-", "").lower()
    members = {m["node_id"]: m for m in node._known.get("members", [])}
    members.update({m["node_id"]: m for m in node.member_list()})
    hits = [nid for nid, m in members.items() if (len(key) >= 4 and nid.startswith(key)) or m.get("name") == ref]
    if len(hits) == 1:
        return hits[0]
    if len(key) == 64 and all(c in "0123456789abcdef" for c in key):
        return key  # a node we have never seen can still be revoked
    raise LookupError(f"no single node matches {ref!r}" + (f" ({len(hits)} match)" if hits else ""))


class NodeCommands:
    def __init__(self, node, ring: RingHandler) -> None:
        self.node = node
        self.ring = ring

    @command(api.Status)
    async def status(self, req: api.Status) -> dict:
        return self.node.status()

    @command(api.Nodes)
    async def nodes(self, req: api.Nodes) -> list[dict]:
        return self.node.nodes()

    @command(api.Invite)
    async def invite(self, req: api.Invite) -> dict:
        node = self.node
        node.signing_key()  # PermissionError, saying where to go, unless this node is the root or an admin
        token = node.tokens.issue(ca_pin(node.ident.ca_cert), ttl_s=req.ttl, uses=req.uses)
        return {"token": token, "addr": node.addr, "addrs": node.addrs}

    @command(api.InviteList)
    async def invite_list(self, req: api.InviteList) -> list[dict]:
        return [vars(t) for t in self.node.tokens.list()]

    @command(api.InviteRevoke)
    async def invite_revoke(self, req: api.InviteRevoke) -> dict:
        tid = req.token_id.strip().lower()
        if "." in tid:  # the whole token text: its id is the third part
            parts = tid.split(".")
            tid = parts[2] if len(parts) == 4 else tid
        if not self.node.tokens.delete(tid):
            raise LookupError(f"no token {tid!r} on this node (`collab invite list` shows them)")
        return {"revoked": tid}

    @command(api.TrustLogGet)
    async def trust_log(self, req: api.TrustLogGet) -> list[dict]:
        return self.node.trust_log()

    @command(api.TrustStatus)
    async def trust_status(self, req: api.TrustStatus) -> dict:
        return self.node.trust_status()

    @command(api.AdminAdd)
    async def admin_add(self, req: api.AdminAdd) -> dict:
        return await self.node.admin_add(resolve_node(self.node, req.node))

    @command(api.AdminRemove)
    async def admin_remove(self, req: api.AdminRemove) -> dict:
        return await self.node.admin_remove(resolve_node(self.node, req.node))

    @command(api.TrustList)
    async def trust_list(self, req: api.TrustList) -> dict:
        node = self.node
        revoked = node.trust.revoked
        rows = []
        for m in node._known.get("members", []) or node.member_list():
            row = {**m, "short_id": short_id(m["node_id"]), "revoked": m["node_id"] in revoked}
            row["admin"] = node.trust.is_admin(m["node_id"])
            rows.append({**row, "priority": node.priority_of(m["node_id"])})
        known = {r["node_id"] for r in rows}
        for nid in revoked:
            if nid not in known:
                rows.append(
                    {
                        "node_id": nid,
                        "short_id": short_id(nid),
                        "name": "",
                        "addr": "",
                        "revoked": True,
                        "admin": False,
                        "priority": 0,
                    }
                )
        return {"members": rows, "denylist_version": node.trust.version}

    @command(api.Revoke)
    async def revoke(self, req: api.Revoke) -> dict:
        return await self.node.revoke(resolve_node(self.node, req.node), req.reason)

    @command(api.SetPriority)
    async def set_priority(self, req: api.SetPriority) -> dict:
        return await self.node.set_priority(resolve_node(self.node, req.node), req.priority)

    @command(api.Logs)
    async def logs(self, req: api.Logs) -> list[dict]:
        cluster = self.node.cluster_logs
        cluster.bind_ring(self.ring)
        if req.cluster or req.node:
            return await cluster.query(req.n, req.level, req.node)
        floor = level_no(req.level)
        records = [r for r in self.ring.records if matches(r, floor)] if floor else list(self.ring.records)
        return records[-req.n :] if req.n > 0 else []

    @command(api.Stop)
    async def stop(self, req: api.Stop) -> dict:
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.node.stop(graceful=True)))
        return {"stopping": True}

    @stream(api.Subscribe)
    async def subscribe(self, req: api.Subscribe):
        sub = self.node.events.subscribe(set(req.kinds) if req.kinds else None)
        try:
            while True:
                yield await sub.get()
        finally:
            sub.close()

    @stream(api.LogsFollow)
    async def logs_follow(self, req: api.LogsFollow):
        cluster = self.node.cluster_logs
        cluster.bind_ring(self.ring)
        if req.cluster or req.node:
            async for item in cluster.follow(req.n, req.level, req.node):
                yield item
            return
        floor = level_no(req.level)
        queue: asyncio.Queue = asyncio.Queue(5000)

        def push(item):
            if not queue.full() and (not floor or matches(item, floor)):
                queue.put_nowait(item)

        backlog = [r for r in self.ring.records if matches(r, floor)] if floor else list(self.ring.records)
        for item in backlog[-req.n :] if req.n > 0 else []:
            yield item
        self.ring.listeners.append(push)
        try:
            while True:
                yield await queue.get()
        finally:
            self.ring.listeners.remove(push)

    @command(api.Doctor)
    async def doctor(self, req: api.Doctor) -> dict:
        from .doctor import run_checks

        return await run_checks(self.node, ml=req.ml, ml_timeout=req.ml_timeout)
