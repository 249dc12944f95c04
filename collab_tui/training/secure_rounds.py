"""The asyncio drivers of secure aggregation (the protocol is secagg.py, its messages secure_messages.py).

`SecureClient` runs on every node: it keeps the `ClientRound` of the last few rounds it took part in (their
secrets live only in this process's memory, never on disk) and answers the master's keys, shares and
unmask steps; `TrainingClient` calls `mask` on its update before it leaves the node.

`SecureMaster` runs a round's steps from the master: keys and shares before the clients train (milliseconds),
unmask after the updates arrived; the master's own client, when it trains, is called in-process. A client
that fails or refuses a step is left out of the round with its reason, as a straggler is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..ml.updates import ClientUpdate, from_bytes, to_bytes
from .rounds import cut
from .secagg import MIN_CLIENTS, ClientRound, MasterRound, SecAggError, survivors_needed, threshold
from .secure_messages import check_advert, check_shares, check_unmask

log = logging.getLogger("collab.training.secure")

MAX_SESSIONS = 4  # rounds whose secrets a client keeps (a retried round makes new ones)
STEP_TIMEOUT = 30.0  # seconds a client has for keys, shares or unmask (milliseconds of work)


class SecureClient:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.sessions: OrderedDict[tuple[str, int], ClientRound] = OrderedDict()

    def _session(self, run_id: str, round_no: int) -> ClientRound:
        s = self.sessions.get((run_id, round_no))
        if s is None:
            raise SecAggError(f"no secure-aggregation keys for run {run_id[:8]} round {round_no} on this node")
        return s

    def keys(self, run_id: str, round_no: int) -> dict:
        spki, sign = self.ctx.node_signer()
        s = ClientRound(run_id, round_no, self.ctx.node_id, spki, sign)
        self.sessions.pop((run_id, round_no), None)  # a retried round: new keys, the old ones are forgotten
        self.sessions[(run_id, round_no)] = s
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return s.advert.to_wire()

    def shares(self, run_id: str, round_no: int, adverts: list[dict]) -> dict:
        members = {p.node_id for p in self.ctx.peers()}
        return {"shares": self._session(run_id, round_no).share_keys(adverts, members)}

    def mask(self, run_id: str, round_no: int, reference: bytes, trained: bytes, n: int, u2: list[str]) -> bytes:
        words = self._session(run_id, round_no).mask(from_bytes(reference), from_bytes(trained), n, u2)
        return to_bytes([words])

    def unmask(self, run_id: str, round_no: int, survivors: list[str], dropped: list[str], sealed: list[dict]) -> dict:
        s = self._session(run_id, round_no)
        out = s.unmask(survivors, dropped, sealed)
        self.sessions.pop((run_id, round_no), None)  # done: its secrets are of no further use
        return {"shares": out}


@dataclass
class SecureSetup:
    """A round's secure-aggregation state on the master, once its keys and shares are made."""

    core: MasterRound
    left_out: dict[str, str] = field(default_factory=dict)  # node -> why it is not a participant
    seconds: float = 0.0  # the protocol's own time: keys, shares, unmask, unmasking
    recovered: list[str] = field(default_factory=list)  # dropped after their shares: masks taken off

    @property
    def participants(self) -> list[str]:
        return self.core.u2()

    def needed(self) -> int:
        return survivors_needed(len(self.core.u1()))

    def record(self) -> dict:
        """The round entry's ``secure`` (messages.SecureRound)."""
        return {
            "participants": len(self.participants),
            "threshold": threshold(len(self.core.u1())),
            "recovered": self.recovered,
            "seconds": round(self.seconds, 4),
        }


class SecureMaster:
    def __init__(self, svc) -> None:
        self.svc = svc
        self.ctx = svc.ctx

    async def _call(self, node: str, kind: str, fields: dict):
        """One step on one client: in-process for this node, a request for any other."""
        sc = self.svc.secure_client
        if node == self.ctx.node_id:
            local = {
                "fl.sa.keys": lambda: sc.keys(fields["run_id"], fields["round"]),
                "fl.sa.shares": lambda: sc.shares(fields["run_id"], fields["round"], fields["adverts"]),
                "fl.sa.unmask": lambda: sc.unmask(
                    fields["run_id"], fields["round"], fields["survivors"], fields["dropped"], fields["sealed"]
                ),
            }[kind]
            return await asyncio.to_thread(local)
        return await self.ctx.request(node, {"t": kind, "term": self.ctx.term, **fields}, STEP_TIMEOUT)

    async def _each(self, nodes: list[str], kind: str, fields_of, accept) -> dict[str, Exception]:
        """One step on every node at once, each reply handed to ``accept(node, reply)``; the nodes whose call
        or reply failed, with why."""
        replies = await asyncio.gather(*(self._call(n, kind, fields_of(n)) for n in nodes), return_exceptions=True)
        failed: dict[str, Exception] = {}
        for node, reply in zip(nodes, replies):
            try:
                if isinstance(reply, BaseException):
                    raise reply
                accept(node, reply)
            except Exception as exc:  # a refusal, a timeout, a reply that does not check: that node is out
                failed[node] = exc
        return failed

    async def setup(self, run_id: str, round_no: int, selected: list[str]) -> SecureSetup:
        """Keys and shares of the selected clients; SecAggError when too few take part."""
        t0 = time.monotonic()
        out = SecureSetup(MasterRound(run_id, round_no))
        base = {"run_id": run_id, "round": round_no}

        def keys(node: str, reply: object) -> None:
            advert = check_advert(reply)
            if advert["node"] != node:
                raise SecAggError("it answered with another node's keys")
            out.core.add_advert(advert)

        def why(step: str, failed: dict[str, Exception]) -> None:
            out.left_out.update({n: cut(f"secure {step}: {type(e).__name__}: {e}") for n, e in failed.items()})

        why("keys", await self._each(selected, "fl.sa.keys", lambda n: base, keys))
        u1 = out.core.u1()
        if len(u1) < MIN_CLIENTS:
            raise SecAggError(f"{len(u1)} client(s) made keys, a secure round needs {MIN_CLIENTS}: {out.left_out}")
        adverts = [out.core.adverts[n].to_wire() for n in u1]

        def shares(node: str, reply: object) -> None:
            out.core.add_shares(node, check_shares(reply))

        why("shares", await self._each(u1, "fl.sa.shares", lambda n: {**base, "adverts": adverts}, shares))
        if len(out.participants) < out.needed():
            raise SecAggError(
                f"{len(out.participants)} of {len(u1)} clients sent shares, {out.needed()} are needed: {out.left_out}"
            )
        out.seconds = time.monotonic() - t0
        return out

    async def aggregate(self, setup: SecureSetup, updates: list[ClientUpdate], size: int) -> tuple[np.ndarray, int]:
        """The weighted mean delta of the updates (masked words) that arrived and their summed examples (the
        dropped clients whose masks came off go to ``setup.recovered``); SecAggError when it cannot be unmasked."""
        t0 = time.monotonic()
        core = setup.core
        for u in updates:
            if len(u.weights) != 1:
                raise SecAggError(f"the update of {u.node_id[:12]} is not one array of masked words")
            core.add_masked(u.node_id, u.weights[0], u.num_examples, size)
        base = {"run_id": core.run_id, "round": core.round}

        def answer(node: str, reply: object) -> None:
            core.add_answer(node, check_unmask(reply))

        failed = await self._each(
            sorted(core.masked), "fl.sa.unmask", lambda n: {**base, **core.unmask_request(n)}, answer
        )
        for node, exc in failed.items():
            log.info("secure round %d: no unmask shares from %s (%s)", core.round, node[:12], cut(exc, 200))
        delta, n, setup.recovered = await asyncio.to_thread(core.finish)
        setup.seconds += time.monotonic() - t0
        return delta, n
