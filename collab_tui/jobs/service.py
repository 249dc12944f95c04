"""The jobs service: plugs the submitter, worker and master parts into a node.

Every node is a submitter (for the jobs started on it) and a worker; the elected master also runs the
scheduler. Messages to ourselves are delivered in-process (the master works too, without sockets).
"""

from __future__ import annotations

import asyncio
import logging

from ..net.codec import FrameError
from ..net.transport import BlobReply, Connection, ConnectionClosed, RemoteError
from .master_side import JobMaster
from .submitter_side import INLINE_READ_BYTES, JobSubmitter
from .worker_side import JobWorker

log = logging.getLogger("collab.jobs")

def _split_results(msg: dict) -> tuple[list[dict], list[bytes | None]]:
    """A `job.results` message: result fields plus, when some have attachments, a blob of them all
    (concatenated in order, ``sizes`` giving each one's length)."""
    results, data = list(msg["results"]), msg.get("data") or b""
    sizes = list(msg["sizes"]) if "sizes" in msg else [0] * len(results)
    if len(sizes) != len(results) or sum(sizes) != len(data) or any(n < 0 for n in sizes):
        raise ValueError("malformed job.results message")
    attachments: list[bytes | None] = []
    pos = 0
    for n in sizes:
        attachments.append(data[pos:pos + n] if n else None)
        pos += n
    return results, attachments


class JobService:
    def __init__(self, node) -> None:
        self.node = node
        self.submitter = JobSubmitter(self)
        threads = int(getattr(getattr(node, "cfg", None), "job_threads", 0) or 0)
        self.worker = JobWorker(self, threads=threads if threads > 0 else None, enabled=threads >= 0)
        self.master: JobMaster | None = None
        self._task: asyncio.Task | None = None
        self._sub = None
        self._wake = asyncio.Event()
        node.queue_depth = self.worker.depth
        node.unhealthy = self.worker.unhealthy  # {kind: reason}: in heartbeats, `status` and `nodes`
        if self.worker.enabled:  # the master gives tasks only to nodes that advertise "jobs"
            node.capabilities = sorted(set(node.capabilities) | {"jobs"})
        for t in ("job.submit", "job.assign", "job.done", "job.fetch", "job.results",
                  "job.item_failed", "job.cancel", "job.predict"):
            node.register(t, self._on_message)

    # ----------------------------------------------------------------- life cycle
    async def start(self) -> None:
        try:  # on the loop thread on purpose: no result may be appended while a file is rewritten
            self.submitter.repair_results_files()
        except Exception:  # a broken out dir must not stop the node
            log.exception("repairing results files failed")
        await self.worker.start()
        self._sub = self.node.events.subscribe({"master", "peer"})
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
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
                self.worker.tick()
                self._sync_role()
                events = self._drain_events()
                for ev in events:
                    if ev["kind"] == "peer" and ev["change"] in ("dead", "leave") and self.master:
                        self.master.peer_dead(ev["node_id"])
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
        if self.node.is_master and self.master is None:
            self.master = JobMaster(self)
            log.info("this node now schedules jobs")
        elif not self.node.is_master and self.master is not None:
            self.master = None

    # ----------------------------------------------------------------- messaging
    async def send_to(self, node_id: str, msg: dict) -> bool:
        if node_id == self.node.node_id:
            await self._local(msg)
            return True
        return await self.node.peers.send(node_id, msg)

    async def request(self, node_id: str, msg: dict, timeout: float = 10.0) -> dict | None:
        if node_id == self.node.node_id:
            return await self._local(msg) or {}
        conn = self.node.peers.conns.get(node_id)
        if conn is None:
            return None
        try:
            return await conn.request(msg, timeout)
        except (ConnectionClosed, RemoteError, asyncio.TimeoutError) as exc:
            log.info("%s to %s failed: %s", msg["t"], node_id[:12], exc)
            return None

    async def _read_items(self, job_id: str, item_ids: list[str]) -> tuple[dict[str, bytes], dict[str, str]]:
        """Small batches are read on the loop (a thread hop costs more), big ones in a thread."""
        if self.submitter.batch_bytes(job_id, item_ids) <= INLINE_READ_BYTES:
            return self.submitter.read_items(job_id, item_ids)
        return await asyncio.to_thread(self.submitter.read_items, job_id, item_ids)

    async def fetch_many(self, submitter: str, job_id: str,
                         item_ids: list[str]) -> tuple[dict[str, bytes], dict[str, str]]:
        """The bytes of a batch from its submitter, in one request: ``({item_id: bytes}, {item_id: error})``.
        Raises if the submitter cannot be asked at all."""
        if submitter == self.node.node_id:
            return await self._read_items(job_id, item_ids)
        conn = self.node.peers.conns.get(submitter)
        if conn is None:
            raise ConnectionError("submitter is not connected")
        reply = await conn.request({"t": "job.fetch", "job_id": job_id, "item_ids": item_ids}, 60.0)
        data, sizes, errors = reply["data"], reply.get("sizes") or [], dict(reply.get("errors") or {})
        ok = [i for i in item_ids if i not in errors]
        if len(sizes) != len(ok) or sum(sizes) != len(data):
            raise ValueError("malformed job.data reply")
        if len(ok) == 1:  # the usual batch of one big item: no copy
            return {ok[0]: data}, errors
        datas, pos = {}, 0
        view = memoryview(data)
        for item_id, size in zip(ok, sizes):
            datas[item_id] = bytes(view[pos:pos + size])
            pos += size
        return datas, errors

    async def deliver_results(self, submitter: str, payloads: list[dict], attachments: list[bytes | None]) -> bool:
        """Send results to their submitter in one message; False if they could not be sent (the items must
        not count as done)."""
        if submitter == self.node.node_id:
            self.submitter.on_results(payloads, attachments)
            return True
        conn = self.node.peers.conns.get(submitter)
        if conn is None:
            log.info("submitter %s gone; it will resubmit", submitter[:12])
            return False
        try:
            try:
                await self._send_results(conn, payloads, attachments)
            except FrameError:  # together they make too big a header: one message each
                if len(payloads) == 1:
                    raise
                for payload, attachment in zip(payloads, attachments):
                    await self._send_results(conn, [payload], [attachment])
        except (ConnectionClosed, FrameError) as exc:  # FrameError: one result alone is too big to send
            log.info("results to %s not sent: %s", submitter[:12], exc)
            return False
        return True

    @staticmethod
    async def _send_results(conn: Connection, payloads: list[dict], attachments: list[bytes | None]) -> None:
        sizes = [len(a) if a else 0 for a in attachments]
        if any(sizes):
            await conn.send_blob({"kind": "job.results", "results": payloads, "sizes": sizes},
                                 b"".join(a for a in attachments if a))
        else:  # nothing attached (no-op, word count, faces without annotation): a plain message
            await conn.send({"t": "job.results", "results": payloads})

    async def ensemble(self, data: bytes, options: dict) -> dict:
        """Every node predicts with its own model; answers are combined by vote or mean probability."""
        import numpy as np

        from ..ml.classify import ensemble_combine

        local = await self._predict(data, options)
        probs, voters = [np.asarray(local["probs"])], [self.node.name]
        labels = local["labels"]
        peers = [c for pid, c in self.node.peers.conns.items() if pid in self.node.membership.alive_ids()]

        replies = await asyncio.gather(*(self._ask_predict(c, data, options) for c in peers))
        for conn, rep in zip(peers, replies):
            if rep and rep.get("labels") == labels:
                probs.append(np.asarray(rep["probs"]))
                voters.append(conn.hello.get("name", conn.peer_id[:8]))
        combined = ensemble_combine(probs, method=options.get("method", "mean"), labels=labels)
        combined = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in combined.items()}
        return {"labels": [combined["label"]], "ensemble": combined, "voters": voters}

    async def _ask_predict(self, conn: Connection, data: bytes, options: dict) -> dict | None:
        try:
            return await conn.request_blob({"kind": "job.predict", "options": options}, data, 60.0)
        except (ConnectionClosed, RemoteError, asyncio.TimeoutError):
            return None

    async def _predict(self, data: bytes, options: dict) -> dict:
        from ..ml import mltasks
        from ..ml.mlproc import for_node

        return await for_node(self.node.home).call(mltasks.predict, data, options)

    # ----------------------------------------------------------------- handlers
    async def _on_message(self, conn: Connection, msg: dict):
        return await self._handle(conn.peer_id, msg)

    async def _local(self, msg: dict):
        return await self._handle(self.node.node_id, msg)

    async def _handle(self, sender: str, msg: dict):
        t = msg["t"]
        if t == "job.submit":
            self._sync_role()  # just elected: schedule now rather than refuse until the loop notices
            if self.master is None:
                raise PermissionError("not the master")
            accepted = self.master.on_submit(sender, msg)
            await self._pump_now()
            return {"accepted": accepted, "term": self.node.election.term}
        if t == "job.assign":
            if sender != self.node.election.master_id and sender != self.node.node_id:
                if not self.node.election.accepts(int(msg.get("term", -1))):
                    raise PermissionError("stale master")
            self.worker.on_assign(sender, msg)
            return None
        if t == "job.done":
            if self.master is not None:
                self.master.on_done(sender, msg)
                await self._pump_now()
            return None
        if t == "job.fetch":
            job_id = str(msg["job_id"])
            item_ids = [str(i) for i in msg["item_ids"]]
            datas, errors = await self._read_items(job_id, item_ids)
            sizes = [len(datas[i]) for i in item_ids if i in datas]
            return BlobReply({"kind": "job.data", "sizes": sizes, "errors": errors},
                             b"".join(datas[i] for i in item_ids if i in datas))
        if t == "job.results":
            self.submitter.on_results(*_split_results(msg))
            return None
        if t == "job.item_failed":
            if self.node.election.accepts(int(msg.get("term", -1))):
                attempts = msg.get("attempts")
                attempts = attempts if isinstance(attempts, int) and not isinstance(attempts, bool) and attempts >= 0 else 0
                self.submitter.store.record_error(str(msg["job_id"]), str(msg["item_id"]), str(msg["error"]), "",
                                                  attempts=attempts)
            return None
        if t == "job.cancel":
            if self.master is not None:
                self.master.on_cancel(str(msg["job_id"]))
            return None
        if t == "job.predict":
            return await self._predict(msg["data"], dict(msg.get("options") or {}))
        raise ValueError(f"unknown job message {t!r}")

    # ----------------------------------------------------------------- control API
    def command_sets(self) -> list:
        from .commands import JobCommands

        return [JobCommands(self)]
