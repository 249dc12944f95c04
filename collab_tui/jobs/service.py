"""The jobs service: plugs the submitter, worker and master parts into a node (through its
`ServiceContext`: the service never sees the node itself).

Every node is a submitter (for the jobs started on it) and a worker; the elected master also runs the
scheduler. Messages to ourselves are delivered in-process, through the same handler table, validated
against the same schemas (the master works too, without sockets). Master-issued, side-effecting messages
(`job.assign`, `job.item_failed`) are fenced by term.

Who may send what is declared with the messages (messages.py). What a service's state decides (a result
or a fetch only with the item's ticket, a cancel only from the job's submitter) is checked here; a refusal
is one log line per message type and reason per interval, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from ..net.codec import FrameError
from ..net.schema import RefusalQuiet, clip, validate
from ..net.transport import BlobReply, ConnectionClosed, RemoteError
from ..node.context import ServiceContext, fenced, handler, refusal, register_handlers, schema_table
from .master_side import JobMaster
from .messages import (
    MAX_ITEM_BYTES,
    JobAssign,
    JobCancel,
    JobData,
    JobDone,
    JobFetch,
    JobItemFailed,
    JobPredict,
    JobResults,
    JobSubmit,
    PredictReply,
)
from .submitter_side import INLINE_READ_BYTES, JobSubmitter
from .worker_side import JobWorker

log = logging.getLogger("collab.jobs")

REFUSAL_LOG_EVERY = 10.0  # seconds: at most one "refused" line per message type and reason per interval
# What one fetch may make the submitter read: a batch is at most 256 KiB, or one item alone (scheduler.py)
MAX_FETCH_BYTES = MAX_ITEM_BYTES + INLINE_READ_BYTES


def _split_results(msg: dict) -> tuple[list[dict], list[bytes | None]]:
    """A `job.results` message: result fields plus, when some have attachments, a blob of them all
    (concatenated in order, ``sizes`` giving each one's length)."""
    results, data = list(msg["results"]), msg.get("data") or b""
    sizes = msg.get("sizes")
    sizes = [0] * len(results) if sizes is None else list(sizes)
    if len(sizes) != len(results) or sum(sizes) != len(data) or any(n < 0 for n in sizes):
        raise ValueError("malformed job.results message (sizes do not match the results and their data)")
    attachments: list[bytes | None] = []
    pos = 0
    for n in sizes:
        attachments.append(data[pos : pos + n] if n else None)
        pos += n
    return results, attachments


class JobService:
    def prepare(self) -> None:
        """Before the node connects (blocking, in a thread): build the face models a first task would build
        while holding the GIL (ml/dlib_faces.py), on nodes that run tasks."""
        if self.worker.enabled:
            from ..ml import dlib_faces

            dlib_faces.prepare()

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.submitter = JobSubmitter(self)
        threads = int(ctx.config.job_threads or 0)
        self.worker = JobWorker(self, threads=threads if threads > 0 else None, enabled=threads >= 0)
        self.master: JobMaster | None = None
        self._task: asyncio.Task | None = None
        self._sub = None
        self._wake = asyncio.Event()
        self._quiet = RefusalQuiet(REFUSAL_LOG_EVERY)
        ctx.provide_heartbeat("queue", self.worker.depth)
        ctx.provide_heartbeat("unhealthy", self.worker.unhealthy)  # {kind: reason}: heartbeats, `status`, `nodes`
        if self.worker.enabled:  # the master gives tasks only to nodes that advertise "jobs"
            ctx.add_capabilities("jobs")
        register_handlers(ctx, self)
        self._handlers = schema_table(self)  # for the messages to ourselves

    # ----------------------------------------------------------------- life cycle
    async def start(self) -> None:
        try:  # on the loop thread on purpose: no result may be appended while a file is rewritten
            self.submitter.repair_results_files()
        except Exception:  # a broken out dir must not stop the node
            log.exception("repairing results files failed")
        await self.worker.start()
        self._sub = self.ctx.subscribe({"master", "peer"})
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._sub:
            self._sub.close()
        await self.worker.stop()
        self.submitter.store.close()

    def kick(self) -> None:
        """Something changed (a submission, a finished task): schedule now, not at the next tick."""
        self._wake.set()

    def _drain_events(self) -> list[dict]:
        out = []
        while not self._sub.queue.empty():
            out.append(self._sub.queue.get_nowait())
        return out

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_resubmit = loop.time() + 5.0
        while True:
            try:
                try:
                    await asyncio.wait_for(self._wake.wait(), 0.1)
                except TimeoutError:
                    pass
                self._wake.clear()
                self.worker.tick()
                self._sync_role()
                events = self._drain_events()
                for ev in events:
                    # a restart too: a worker that came back before anyone found it dead lost its queue
                    if ev["kind"] == "peer" and ev["change"] in ("dead", "leave", "restart") and self.master:
                        self.master.peer_dead(ev["node_id"])
                    elif ev["kind"] == "peer" and ev.get("closed") and self.master:
                        self.master.connection_lost(ev["node_id"])
                if self.master:
                    await self.master.pump()
                master_changed = any(ev["kind"] == "master" for ev in events)
                if master_changed or loop.time() >= next_resubmit:
                    await self.submitter.resubmit_all(force=not master_changed)
                    next_resubmit = loop.time() + 5.0
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("jobs loop error")
                await asyncio.sleep(0.5)

    async def _pump_now(self) -> None:
        """Assign right away what a submission or a finished task made assignable (the loop would
        get to it a few turns later)."""
        self._sync_role()
        if self.master is not None:
            await self.master.pump()

    def _sync_role(self) -> None:
        """A `JobMaster` per reign: one made in an earlier term (this node lost the role and won it back
        between two turns of the loop) holds assignments the workers refused meanwhile (fenced), so a new
        term starts empty, refilled by the submitters' resubmissions as after any master change."""
        if self.ctx.is_master and (self.master is None or self.master.term != self.ctx.term):
            self.master = JobMaster(self)
            log.info("this node now schedules jobs (term %d)", self.ctx.term)
        elif not self.ctx.is_master and self.master is not None:
            self.master = None

    # ----------------------------------------------------------------- messaging
    async def send_to(self, node_id: str, msg: dict) -> bool:
        if node_id == self.ctx.node_id:
            await self._local(msg)
            return True
        return await self.ctx.send(node_id, msg)

    async def request(self, node_id: str, msg: dict, timeout: float = 10.0) -> dict | None:
        if node_id == self.ctx.node_id:
            return await self._local(msg) or {}
        if not self.ctx.connected(node_id):
            return None
        try:
            return await self.ctx.request(node_id, msg, timeout)
        except (TimeoutError, ConnectionClosed, RemoteError) as exc:
            log.info("%s to %s failed: %s", msg["t"], node_id[:12], exc)
            return None

    async def _read_items(self, job_id: str, item_ids: list[str]) -> tuple[dict[str, bytes], dict[str, str]]:
        """Small batches are read on the loop (a thread hop costs more), big ones in a thread."""
        if self.submitter.batch_bytes(job_id, item_ids) <= INLINE_READ_BYTES:
            return self.submitter.read_items(job_id, item_ids)
        return await asyncio.to_thread(self.submitter.read_items, job_id, item_ids)

    async def fetch_many(
        self, submitter: str, job_id: str, tickets: dict[str, str]
    ) -> tuple[dict[str, bytes], dict[str, str]]:
        """The bytes of a batch from its submitter, in one request: ``({item_id: bytes}, {item_id: error})``.
        ``tickets``: ``{item_id: ticket}`` (the submitter serves only the items assigned to this node).
        Raises if the submitter cannot be asked at all, or answers nonsense."""
        item_ids = list(tickets)
        if submitter == self.ctx.node_id:
            return await self._read_items(job_id, item_ids)
        if not self.ctx.connected(submitter):
            raise ConnectionError("submitter is not connected")
        items = [{"item_id": i, "ticket": t} for i, t in tickets.items()]
        reply = await self.ctx.request(submitter, {"t": "job.fetch", "job_id": job_id, "items": items}, 60.0)
        reply = validate(JobData, {**reply, "t": "job.data"})  # a Refused is a ValueError: a failed fetch
        data, sizes, errors = reply["data"], reply["sizes"], reply["errors"]
        ok = [i for i in item_ids if i not in errors]
        if len(sizes) != len(ok) or sum(sizes) != len(data):
            raise ValueError("malformed job.data reply")
        if len(ok) == 1:  # the usual batch of one big item: no copy
            return {ok[0]: data}, errors
        datas, pos = {}, 0
        view = memoryview(data)
        for item_id, size in zip(ok, sizes):
            datas[item_id] = bytes(view[pos : pos + size])
            pos += size
        return datas, errors

    async def deliver_results(self, submitter: str, payloads: list[dict], attachments: list[bytes | None]) -> bool:
        """Send results to their submitter in one message; False if they could not be sent (the items must
        not count as done)."""
        if submitter == self.ctx.node_id:
            self.submitter.on_results(payloads, attachments)
            return True
        if not self.ctx.connected(submitter):
            log.info("submitter %s gone; it will resubmit", submitter[:12])
            return False
        try:
            try:
                await self._send_results(submitter, payloads, attachments)
            except FrameError:  # together they make too big a header: one message each
                if len(payloads) == 1:
                    raise
                for payload, attachment in zip(payloads, attachments):
                    await self._send_results(submitter, [payload], [attachment])
        # FrameError: one result alone is too big to send; ConnectionError: gone meanwhile (ConnectionClosed...)
        except (ConnectionError, FrameError) as exc:
            log.info("results to %s not sent: %s", submitter[:12], exc)
            return False
        return True

    async def _send_results(self, submitter: str, payloads: list[dict], attachments: list[bytes | None]) -> None:
        sizes = [len(a) if a else 0 for a in attachments]
        if any(sizes):
            await self.ctx.send_blob(
                submitter,
                {"kind": "job.results", "results": payloads, "sizes": sizes},
                b"".join(a for a in attachments if a),
            )
        # nothing attached (no-op, word count, faces without annotation): a plain message
        elif not await self.ctx.send(submitter, {"t": "job.results", "results": payloads}):
            raise ConnectionClosed("connection closed")

    async def ensemble(self, data: bytes, options: dict) -> dict:
        """Every node predicts with its own model; answers are combined by vote or mean probability."""
        import numpy as np

        from ..ml.classify import ensemble_combine

        local = await self._predict(data, options)
        probs, voters = [np.asarray(local["probs"])], [self.ctx.name]
        labels = local["labels"]
        peers = [p for p in self.ctx.alive_peers() if self.ctx.connected(p.node_id)]

        replies = await asyncio.gather(*(self._ask_predict(p.node_id, data, options) for p in peers))
        for peer, rep in zip(peers, replies):
            if rep and rep.get("labels") == labels:
                probs.append(np.asarray(rep["probs"]))
                voters.append(peer.name or peer.node_id[:8])
        combined = ensemble_combine(probs, method=options.get("method", "mean"), labels=labels)
        combined = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in combined.items()}
        return {"labels": [combined["label"]], "ensemble": combined, "voters": voters}

    async def _ask_predict(self, peer: str, data: bytes, options: dict) -> dict | None:
        """A peer's prediction, or None (not there, or an answer that cannot take part in the vote)."""
        try:
            rep = await self.ctx.request_blob(peer, {"kind": "job.predict", "options": options}, data, 60.0)
            reply = msgspec.convert(rep, PredictReply)
        except (TimeoutError, ConnectionError, RemoteError, msgspec.ValidationError):  # ConnectionClosed too
            return None
        if len(reply.probs) != len(reply.labels):
            return None
        return {"labels": reply.labels, "probs": reply.probs}

    async def _predict(self, data: bytes, options: dict) -> dict:
        from ..ml import mltasks
        from ..ml.mlproc import for_node

        return await for_node(self.ctx.home).call(mltasks.predict, data, options)

    # ----------------------------------------------------------------- handlers (peer messages)
    async def _local(self, msg: dict):
        """A message to ourselves: validated and delivered to our own handler, fenced like any other."""
        entry = self._handlers.get(msg["t"])
        if entry is None:
            raise ValueError(f"unknown job message {msg['t']!r}")
        schema, fn = entry
        return await fn(self.ctx.node_id, validate(schema, msg))

    def refused(self, msg_type: str, kind: str, sender: str, detail: str) -> dict:
        """Refuse a peer's message (the reply, if it was a request): one log line per type and ``kind`` per
        `REFUSAL_LOG_EVERY` seconds, with the count held back since."""
        held = self._quiet.note(msg_type, kind, time.monotonic())
        if held is not None:
            more = f" ({held} more like it since the last line)" if held else ""
            log.warning("refused %s from %s: %s%s", msg_type, sender[:12], detail, more)
        return refusal(f"{msg_type}: {detail}")

    @handler(JobSubmit)
    async def _on_submit(self, sender: str, msg: dict) -> dict:
        self._sync_role()  # just elected: schedule now rather than refuse until the loop notices
        if self.master is None:
            return self.refused("job.submit", "master", sender, "this node is not the master")
        try:
            accepted = self.master.on_submit(sender, msg)
        except PermissionError as exc:
            return self.refused("job.submit", "owner", sender, str(exc))
        await self._pump_now()
        return {"accepted": accepted, "term": self.ctx.term}

    @handler(JobAssign)
    @fenced
    async def _on_assign(self, sender: str, msg: dict) -> None:
        self.worker.on_assign(sender, msg)

    @handler(JobDone)
    async def _on_done(self, sender: str, msg: dict) -> None:
        if self.master is not None:  # applied only to the tasks assigned to the sender (scheduler.py)
            self.master.on_done(sender, msg)
            await self._pump_now()

    @handler(JobFetch)
    async def _on_fetch(self, sender: str, msg: dict) -> BlobReply | dict:
        job_id = msg["job_id"]
        if not self.submitter.holds(job_id):  # forgotten, or never ours: an answer, no log line
            return refusal(f"job.fetch: no job {clip(job_id)} here")
        if not all(self.submitter.ticket_valid(job_id, it["item_id"], sender, it["ticket"]) for it in msg["items"]):
            return self.refused("job.fetch", "ticket", sender, f"items of job {job_id} not assigned to it")
        item_ids = list(dict.fromkeys(it["item_id"] for it in msg["items"]))
        if self.submitter.batch_bytes(job_id, item_ids) > MAX_FETCH_BYTES:
            return self.refused("job.fetch", "size", sender, f"a batch of more than {MAX_FETCH_BYTES} bytes")
        datas, errors = await self._read_items(job_id, item_ids)
        sizes = [len(datas[i]) for i in item_ids if i in datas]
        return BlobReply(
            {"kind": "job.data", "sizes": sizes, "errors": errors}, b"".join(datas[i] for i in item_ids if i in datas)
        )

    @handler(JobResults)
    async def _on_results(self, sender: str, msg: dict) -> dict | None:
        """Record the results whose ticket says the item was assigned to the sender (the worker is the
        sender, whatever the message says); the others are refused, not recorded."""
        try:
            results, attachments = _split_results(msg)
        except ValueError as exc:
            return self.refused("job.results", "sizes", sender, str(exc))
        # results for jobs we do not hold (forgotten, or never ours) are dropped as before: nothing to record
        ours = [(r, a) for r, a in zip(results, attachments) if self.submitter.holds(r["job_id"])]
        kept = [
            ({**r, "worker": sender}, a)
            for r, a in ours
            if self.submitter.ticket_valid(r["job_id"], r["item_id"], sender, r["ticket"])
        ]
        if kept:
            self.submitter.on_results([r for r, _ in kept], [a for _, a in kept])
        if len(kept) < len(ours):
            n = len(ours) - len(kept)
            return self.refused("job.results", "ticket", sender, f"{n} result(s) for items not assigned to it")
        return None

    @handler(JobItemFailed)
    @fenced
    async def _on_item_failed(self, sender: str, msg: dict) -> None:
        self.submitter.store.record_error(msg["job_id"], msg["item_id"], msg["error"], "", attempts=msg["attempts"])

    @handler(JobCancel)
    async def _on_cancel(self, sender: str, msg: dict) -> dict | None:
        if self.master is None:
            return None
        owner = self.master.submitter_of(msg["job_id"])
        if owner is None:
            return None  # not a job this master holds: nothing to cancel
        if owner != sender:
            return self.refused("job.cancel", "sender", sender, f"job {msg['job_id']} is not its job")
        self.master.on_cancel(msg["job_id"])
        return None

    @handler(JobPredict)
    async def _on_predict(self, sender: str, msg: dict) -> dict:
        return await self._predict(msg["data"], msg["options"])

    # ----------------------------------------------------------------- control API
    def command_sets(self) -> list:
        import os

        from .commands import JobCommands, JobDiagnostics

        sets: list = [JobCommands(self)]
        if os.environ.get(JobDiagnostics.ENV) == "1":
            sets.append(JobDiagnostics(self))
        return sets
