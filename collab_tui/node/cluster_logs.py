"""Cluster-wide logs through the master: `collab logs --cluster [-f] [--node NAME] [--level L]`.

Sans-IO parts first (tested on their own): `wire_line` (a record, bounded, as it travels), `merge` (by time),
`fit` (the newest lines that fit a byte budget), `TokenBucket`, `Leases` (they expire on their own),
`Forwarder` (a node's bounded, rate-limited outbox of new lines: the log handler's listener only appends
to a deque, never awaits anything) and `Reorder` (holds lines briefly so that batches of several nodes
come out merged by time). Then `ClusterLogs`, the thin driver the node creates: its handlers for the
messages of net/log_messages.py, the one-shot `query` and the `follow` stream of the control commands.

Follow: the follower node renews a relay lease with the master every `RENEW` s while a client streams
(`LEASE` s each); the master, while it holds relay leases, renews a want lease with each live node; each
node forwards its new lines every `TICK` s, at most `NODE_RATE` lines/s (the oldest dropped, and a
"N lines dropped" line sent, when over); the master merges and relays, at most `RELAY_RATE` lines/s per
follower. A send to a peer is never awaited twice at once (a slow peer's lines pile up in its bounded
queue, the oldest dropped). The driver's task runs only while there is something to do.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import msgspec

from ..logs import RingHandler
from ..net.log_flow import (
    Forwarder,
    Leases,
    Limiters,
    Reorder,
    fit,
    level_name,
    level_name_of,
    level_no,
    marker,
    matches,
    merge,
    wire_line,
)
from ..net.log_messages import (
    MAX_LINES,
    LogBatch,
    LogFetch,
    LogFollow,
    LogLines,
    LogQuery,
    LogRelay,
    LogWant,
)
from ..textfmt import short_id

log = logging.getLogger("collab.logs")

TICK = 0.25  # seconds between forwarded / relayed batches
LEASE = 5.0  # seconds a follow / want lease lasts
RENEW = 2.0  # seconds between renewals while it is wanted
RELAY_RATE, RELAY_BURST, RELAY_QUEUE = 200.0, 200.0, 1000  # lines/s relayed to one follower; its queue
FETCH_TIMEOUT, QUERY_TIMEOUT = 3.0, 6.0
ASK_RATE, ASK_BURST = 2.0, 6.0  # query / fetch requests per second per peer
BATCH_RATE, BATCH_BURST = 8.0, 16.0  # batches and follow renewals per second per peer
KEEPALIVE = 2.0  # seconds of silence after which a follow stream yields {"keepalive": true}
SUB_QUEUE = 2000  # lines buffered for one local follow stream


class _Sub:
    """One local follow stream: its filters and its bounded queue."""

    def __init__(self, floor: int, node: str | None) -> None:
        self.floor, self.node = floor, node
        self.queue: collections.deque[dict] = collections.deque(maxlen=SUB_QUEUE)
        self.event = asyncio.Event()

    def put(self, lines: Iterable[dict]) -> None:
        for rec in lines:
            if matches(rec, self.floor, self.node):
                self.queue.append(rec)
        if self.queue:
            self.event.set()


# ------------------------------------------------------------------------------------------- the driver
class ClusterLogs:
    """Created by the node (`Node.cluster_logs`); ``handlers()`` are registered with it."""

    LOCAL = "(local)"  # the relay lease of this node's own follow streams, when it is the master

    def __init__(self, node, ring: RingHandler | None = None) -> None:
        self.node = node
        self._ring = ring
        self.forwarder = Forwarder()
        self.want_until = 0.0  # this node forwards its new lines until then
        self.want_floor = 0
        self.relays = Leases()  # master: follower id (or LOCAL) -> (floor, node name or None)
        self.outboxes: dict[str, Forwarder] = {}  # master: lines waiting for each follower
        self.reorder = Reorder()
        self.subs: set[_Sub] = set()
        self.asks = Limiters(ASK_RATE, ASK_BURST)
        self.batches = Limiters(BATCH_RATE, BATCH_BURST)
        self._inflight: set[str] = set()
        self._sending: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._listening = False
        self._renewed = float("-inf")  # follower: last relay-lease renewal sent
        self._wanted = float("-inf")  # master: last want-lease renewal sent

    def handlers(self) -> list[tuple[type, Any]]:
        return [
            (LogQuery, self._on_query),
            (LogFetch, self._on_fetch),
            (LogFollow, self._on_follow),
            (LogWant, self._on_want),
            (LogBatch, self._on_batch),
            (LogRelay, self._on_relay),
        ]

    # ------------------------------------------------------------- helpers
    @property
    def ring(self) -> RingHandler | None:
        if self._ring is None:
            self._ring = next((h for h in logging.getLogger().handlers if isinstance(h, RingHandler)), None)
        return self._ring

    def bind_ring(self, ring: RingHandler) -> None:
        """The ring the control commands read (set once; the root logger's is found otherwise)."""
        if self._ring is None:
            self._ring = ring

    def name_of(self, peer_id: str) -> str:
        if peer_id == self.node.node_id:
            return self.node.name
        info = self.node.membership.get(peer_id)
        return (info.name if info is not None and info.name else "") or short_id(peer_id)

    def own_lines(self, n: int, floor: int) -> list[dict]:
        ring = self.ring
        records = list(ring.records) if ring is not None else []
        picked = [r for r in records if matches(r, floor)][-n:] if n > 0 else []
        return [wire_line(r, self.node.name) for r in picked]

    def _targets(self, node: str | None) -> list[str]:
        ids = [self.node.node_id, *sorted(self.node.membership.alive_ids())]
        return [i for i in ids if not node or self.name_of(i) == node]

    def _ensure_task(self) -> None:
        if self.node._stop.is_set() or not getattr(self.node, "_tasks", True):
            return  # a node that is not running (or no longer) has no loop to run
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cluster-logs")

    def _listen(self, on: bool) -> None:
        ring = self.ring
        if ring is None or on == self._listening:
            return
        if on:
            ring.listeners.append(self.forwarder.push)
        else:
            try:
                ring.listeners.remove(self.forwarder.push)
            except ValueError:
                pass
            self.forwarder.clear()
        self._listening = on

    def _send(self, peer_id: str, msg: dict) -> None:
        """Send without waiting, at most one send per peer at a time (else the caller keeps its lines)."""
        if peer_id in self._inflight:
            return
        self._inflight.add(peer_id)

        async def go() -> None:
            try:
                await self.node.peers.send(peer_id, msg)
            finally:
                self._inflight.discard(peer_id)

        task = asyncio.get_running_loop().create_task(go())
        self._sending.add(task)  # (a reference, until it is done)
        task.add_done_callback(self._sending.discard)

    @staticmethod
    def _lines(reply: dict) -> list[dict]:
        return msgspec.to_builtins(msgspec.convert(reply, LogLines)).get("records", [])

    # ------------------------------------------------------------- one-shot
    async def query(self, n: int = 100, level: str | None = None, node: str | None = None) -> list[dict]:
        """The cluster's last ``n`` lines (≤ `MAX_LINES`), merged by time, asked of the master when there is
        one (and it is not this node), else of every live node from here."""
        n, lv, node = max(0, min(n, MAX_LINES)), level_name(level), (node or "")[:64] or None
        master = self.node.election.master_id
        conn = self.node.peers.conns.get(master) if master and master != self.node.node_id else None
        if conn is not None:
            msg = {"t": "log.query", "n": n, "level": lv, "node": node}
            try:
                return self._lines(await conn.request(msg, timeout=QUERY_TIMEOUT))
            except Exception as exc:  # noqa: BLE001 - any failure: ask the nodes from here
                log.info("log query to the master failed (%s); asking the nodes directly", str(exc)[:100])
        return await self.gather(n, lv, node)

    async def gather(self, n: int, level: str, node: str | None) -> list[dict]:
        floor = level_no(level)

        async def one(peer_id: str) -> list[dict]:
            if peer_id == self.node.node_id:
                return self.own_lines(n, floor)
            name = self.name_of(peer_id)
            conn = self.node.peers.conns.get(peer_id)
            try:
                if conn is None:
                    raise ConnectionError("not connected")
                reply = await conn.request({"t": "log.fetch", "n": n, "level": level}, timeout=FETCH_TIMEOUT)
                return [{**r, "node": name} for r in self._lines(reply)[-n:] if matches(r, floor)]
            except Exception as exc:  # noqa: BLE001 - one silent node must not spoil the answer
                return [marker(name, 0, "") | {"msg": f"no log lines from this node: {str(exc)[:100] or 'timeout'}"}]

        groups = await asyncio.gather(*(one(i) for i in self._targets(node)))
        return fit(merge(groups)[-n:] if n > 0 else [])

    async def _on_query(self, conn, msg: dict) -> dict:
        if not self.asks.allow(conn.peer_id, time.monotonic()):
            raise PermissionError("too many log requests; try again in a second")
        return {"records": await self.gather(msg["n"], msg["level"], msg["node"])}

    async def _on_fetch(self, conn, msg: dict) -> dict:
        if not self.asks.allow(conn.peer_id, time.monotonic()):
            raise PermissionError("too many log requests; try again in a second")
        return {"records": fit(self.own_lines(msg["n"], level_no(msg["level"])))}

    # ------------------------------------------------------------- follow
    async def follow(self, n: int = 20, level: str | None = None, node: str | None = None) -> AsyncIterator[dict]:
        """The cluster's last ``n`` lines, then its new ones as they come (merged by time, through the master),
        with ``{"keepalive": true}`` after `KEEPALIVE` s of silence (so a stream whose client went away ends)."""
        sub = _Sub(level_no(level), node)
        self.subs.add(sub)
        self._ensure_task()
        try:
            seen = set()
            for rec in await self.query(n, level, node) if n > 0 else []:
                seen.add((rec.get("node"), rec.get("seq")))
                yield rec
            while True:
                try:
                    await asyncio.wait_for(sub.event.wait(), KEEPALIVE)
                except TimeoutError:
                    yield {"keepalive": True, "ts": time.time()}
                    continue
                sub.event.clear()
                while sub.queue:
                    rec = sub.queue.popleft()
                    if seen and (rec.get("node"), rec.get("seq")) in seen:
                        continue
                    yield rec
                seen.clear()
        finally:
            self.subs.discard(sub)

    def _deliver(self, lines: list[dict]) -> None:
        for sub in list(self.subs):
            sub.put(lines)

    async def _on_follow(self, conn, msg: dict) -> None:
        now = time.monotonic()
        if not self.node.is_master or not self.batches.allow(conn.peer_id, now):
            return None
        self.relays.grant(conn.peer_id, (level_no(msg["level"]), msg["node"]), now, msg["lease"])
        self._ensure_task()
        return None

    async def _on_want(self, conn, msg: dict) -> None:
        self.want_until = time.monotonic() + msg["lease"]
        self.want_floor = self.forwarder.floor = level_no(msg["level"])
        self._listen(True)  # from now on: the loop's next tick sends what came meanwhile
        self._ensure_task()
        return None

    async def _on_batch(self, conn, msg: dict) -> None:
        now = time.monotonic()
        if not self.node.is_master or not self.relays or not self.batches.allow(conn.peer_id, now):
            return None
        name = self.name_of(conn.peer_id)
        lines = [{**line, "node": name} for line in msg["lines"]]
        if msg["dropped"]:
            lines.append(marker(name, msg["dropped"]))
        self.reorder.add(lines, now)
        return None

    async def _on_relay(self, conn, msg: dict) -> None:
        lines = list(msg["lines"])
        if msg["dropped"]:
            lines.append(marker(self.name_of(conn.peer_id), msg["dropped"], "relay over its rate limit"))
        self._deliver(lines)
        return None

    # ------------------------------------------------------------- the loop
    async def _run(self) -> None:
        while not self.node._stop.is_set():
            try:
                busy = self.step(time.monotonic())
            except Exception:  # pragma: no cover - never let the log relay take anything down
                log.debug("cluster logs step failed", exc_info=True)
                busy = True
            if not busy:
                break
            await asyncio.sleep(TICK)
        self._listen(False)

    def step(self, now: float) -> bool:
        """One tick: renew leases, forward, relay. False when there is nothing left to do."""
        node, me = self.node, self.node.node_id
        master = node.election.master_id
        alone = not master  # no master: this node's own lines go straight to its streams
        # 1. a follower renews its relay lease with the master while a client streams
        if self.subs and not alone:
            floor = min(s.floor for s in self.subs)
            names = {s.node for s in self.subs}
            only = names.pop() if len(names) == 1 else None
            if master == me:
                self.relays.grant(self.LOCAL, (floor, only), now, LEASE)
            elif now - self._renewed >= RENEW:
                self._renewed = now
                self._send(master, {"t": "log.follow", "lease": LEASE, "level": level_name_of(floor), "node": only})
        # 2. the master, while it relays, renews want leases with the nodes concerned
        relays = self.relays.live(now) if node.is_master else {}
        if not node.is_master:
            self.relays = Leases()
            self.outboxes.clear()
        if relays and now - self._wanted >= RENEW:
            self._wanted = now
            floor = min(f for f, _ in relays.values())
            wanted = {n for _, n in relays.values()}
            targets = self._targets(None) if None in wanted else [i for n in wanted for i in self._targets(n)]
            for peer in set(targets):
                if peer == me:
                    self.want_until, self.want_floor = now + LEASE, floor
                else:
                    self._send(peer, {"t": "log.want", "term": node.election.term, "lease": LEASE,
                                      "level": level_name_of(floor)})  # fmt: skip
        # 3. forward this node's new lines
        forwarding = self.want_until > now or (alone and bool(self.subs))
        if alone and self.subs:
            self.forwarder.floor = min(s.floor for s in self.subs)
        elif forwarding:
            self.forwarder.floor = self.want_floor
        self._listen(forwarding)
        remote = not alone and master != me
        if forwarding and not (remote and master in self._inflight):  # (a slow master: lines wait, bounded)
            lines, dropped = self.forwarder.take(now)
            lines = [wire_line(r, node.name) for r in lines]
            if remote:
                if lines or dropped:
                    self._send(master, {"t": "log.batch", "lines": lines, "dropped": dropped})
            else:
                lines += [marker(node.name, dropped)] if dropped else []
                if alone:
                    self._deliver(lines)
                else:
                    self.reorder.add(lines, now)
        # 4. the master relays merged lines to each follower
        if relays:
            ready = self.reorder.take(now)
            if self.reorder.dropped:
                ready.append(marker(node.name, self.reorder.dropped, "relay buffer full"))
                self.reorder.dropped = 0
            for peer in list(self.outboxes):
                if peer not in relays:
                    del self.outboxes[peer]
            for peer, (floor, only) in relays.items():
                box = self.outboxes.get(peer)
                if box is None:
                    box = self.outboxes[peer] = Forwarder(RELAY_RATE, RELAY_BURST, RELAY_QUEUE, now)
                for rec in ready:
                    if matches(rec, floor, only):
                        box.push(rec)
                if peer == self.LOCAL:
                    lines, dropped = box.take(now)
                    self._deliver(
                        lines + ([marker(node.name, dropped, "relay over its rate limit")] if dropped else [])
                    )
                elif peer not in self._inflight:
                    lines, dropped = box.take(now)
                    if lines or dropped:
                        msg = {"t": "log.relay", "term": node.election.term, "lines": lines, "dropped": dropped}
                        self._send(peer, msg)
        else:
            self.reorder = Reorder()
            self.outboxes.clear()
        return bool(self.subs or relays or self.want_until > now or len(self.reorder))
