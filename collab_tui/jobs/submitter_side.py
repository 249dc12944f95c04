"""The submitter's part: it owns each job durably (SQLite, WAL) until every item has a result.

It serves the item bytes to workers (`job.fetch`, a whole batch per request, checked against the
SHA-256 taken at submission), records results exactly once per item (`job.results`: a worker's results
arrive together and are recorded in one transaction), writes annotated copies to the job's out dir,
and resubmits whatever is unfinished whenever the master changes or the node restarts.

Each job has a secret (``job_key``, in the store), sent to the master with every submission: it makes
each item's ticket for the worker it assigns the item to, and a fetch is served and a result recorded only
with a valid ticket (`ticket_valid`; the service checks, see messages.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from pathlib import Path

from ..node.state import atomic_write
from .inputs import INLINE_READ_BYTES, collect_paths, few_small_files, prepare
from .messages import MAX_ITEM_BYTES, MAX_ITEMS, check_options, ticket_ok
from .store import JobStore, UnknownJobError
from .types import get_type

__all__ = ["INLINE_READ_BYTES", "MAX_ITEM_BYTES", "JobSubmitter", "collect_paths"]

log = logging.getLogger("collab.jobs.submitter")


def _attempts(msg: dict) -> int:
    """A result's count of failed attempts before it (a peer's is validated already; 0 if it makes no sense)."""
    n = msg.get("attempts")
    return n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1_000_000 else 0


def _results_line(job_id: str, item_id: str, src: Path, result: dict) -> str:
    return json.dumps({"job_id": job_id, "item_id": item_id, "path": str(src), **result}, default=str)


class JobSubmitter:
    def __init__(self, service) -> None:
        self.svc = service
        self.ctx = service.ctx
        self.store = JobStore(self.ctx.home / "state" / "jobs.db")
        self._sent_to: dict[str, tuple[str, int]] = {}  # job_id -> (master, term) it was last submitted to
        self.items_cache: dict[tuple[str, str], dict] = {}
        self._out_dirs: dict[str, str | None] = {}
        self._keys: dict[str, str] = {}  # job_id -> its secret, for the jobs held here (cache of the store)

    # ----------------------------------------------------------------- creating jobs
    async def create(self, paths: list[str], kind: str, options: dict, out_dir: str | None) -> dict:
        jtype = get_type(kind)  # unknown kinds fail here, before anything is stored
        options = check_options(options)  # and options no master would take
        jtype.check(options)  # or this type would not
        if few_small_files(paths, kind):
            files = prepare(paths, kind)
        else:
            files = await asyncio.to_thread(prepare, paths, kind)
        if not files:
            raise ValueError("no input files found")
        items = [(f"{i:06d}", path, size, digest) for i, (path, size, digest, _) in enumerate(files)]
        inline = {f"{i:06d}": data for i, (_, _, _, data) in enumerate(files) if data is not None}
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
        job_id = self.store.create_job(
            kind,
            items,
            options,
            model=options.get("model"),
            submitter=self.ctx.node_id,
            out_dir=str(Path(out_dir).resolve()) if out_dir else None,
        )
        self._out_dirs[job_id] = str(Path(out_dir).resolve()) if out_dir else None
        self.ctx.publish("job", job_id=job_id, state="submitted", total=len(items), done=0, errors=0)
        sent = [{"item_id": iid, "size": size} for iid, _, size, _ in items]
        for item in sent:
            if item["item_id"] in inline:
                item["data"] = base64.b64encode(inline[item["item_id"]]).decode("ascii")
        await self._submit(job_id, kind, options, sent, wait=False)
        return self.store.job(job_id)

    async def resubmit(self, job_id: str) -> bool:
        """Send the unfinished items to the current master (idempotent on its side)."""
        if not self.ctx.master_id:
            return False
        job = self.store.job(job_id)
        if job["status"] in ("done", "cancelled"):
            return True
        pending = self.store.unfinished(job_id)
        if not pending:
            return True
        return await self._submit(
            job_id,
            job["task"],
            job.get("options") or {},
            [{"item_id": it["item_id"], "size": it["size"]} for it in pending],
        )

    async def _submit(self, job_id: str, kind: str, options: dict, items: list[dict], wait: bool = True) -> bool:
        """`job.submit` to the current master, in messages of at most MAX_ITEMS items, each with the job's
        secret. A new job's first submission does not wait for the answer (``wait=False``): the master
        starts assigning before it would answer, and an answer crossing the first results only delays
        them. A submission that gets lost or refused is sent again like any other: at the next master
        change or within 5 s (`resubmit_all`)."""
        master = self.ctx.master_id
        if not master:
            return False
        key = self.store.job_key(job_id)
        for k in range(0, len(items), MAX_ITEMS):
            msg = {
                "t": "job.submit",
                "job_id": job_id,
                "job_key": key,
                "kind": kind,
                "options": options,
                "items": items[k : k + MAX_ITEMS],
            }
            ok = bool(await self.svc.request(master, msg)) if wait else await self.svc.send_to(master, msg)
            if not ok:
                return False
        self._sent_to[job_id] = (master, self.ctx.term)
        return True

    async def resubmit_all(self, force: bool = False) -> None:
        master = self.ctx.master_id
        for job_id in self.store.unfinished_jobs():
            if force or self._sent_to.get(job_id) != (master, self.ctx.term):  # a new reign of the same master too
                try:
                    await self.resubmit(job_id)
                except Exception as exc:
                    log.warning("resubmitting %s failed: %s", job_id, exc)

    # ----------------------------------------------------------------- serving workers
    def _item(self, job_id: str, item_id: str) -> dict:
        key = (job_id, item_id)
        if key not in self.items_cache:
            for it in self.store.items(job_id):
                self.items_cache[(job_id, it["item_id"])] = it
        if key not in self.items_cache:
            raise LookupError(f"unknown item {job_id}:{item_id}")
        return self.items_cache[key]

    def holds(self, job_id: str) -> bool:
        """Is this job ours (in the store)?"""
        return self._job_key(job_id) is not None

    def _job_key(self, job_id: str) -> str | None:
        if job_id not in self._keys:
            try:
                self._keys[job_id] = self.store.job_key(job_id)
            except UnknownJobError:
                return None  # not cached: a peer's made-up job ids take no memory
        return self._keys[job_id]

    def ticket_valid(self, job_id: str, item_id: str, worker: str, given: str) -> bool:
        """Was ``item_id`` of our job ``job_id`` assigned to ``worker``? (``given``: the ticket it sent.)"""
        key = self._job_key(job_id)
        return key is not None and ticket_ok(key, job_id, item_id, worker, given)

    def forget(self, job_id: str) -> None:
        """Delete a job and everything about it from this node (benchmark probes)."""
        self.store.delete_job(job_id)
        self._sent_to.pop(job_id, None)
        self._out_dirs.pop(job_id, None)
        self._keys.pop(job_id, None)
        for key in [k for k in self.items_cache if k[0] == job_id]:
            del self.items_cache[key]

    def cancel(self, job_id: str) -> int:
        """Cancel the pending items of a job; workers can no longer fetch them."""
        n = self.store.cancel(job_id)
        for key in [k for k in self.items_cache if k[0] == job_id]:
            del self.items_cache[key]  # cached rows still say "pending"
        return n

    def read_item(self, job_id: str, item_id: str) -> bytes:
        it = self._item(job_id, item_id)
        if it["status"] == "cancelled":
            raise LookupError("job cancelled")
        if it["size"] > MAX_ITEM_BYTES:
            raise ValueError(f"item too large ({it['size']} bytes)")
        with open(it["path"], "rb") as fh:
            data = fh.read(it["size"] + 1)  # a file that grew since is not read whole
        if len(data) != it["size"] or hashlib.sha256(data).hexdigest() != it["sha256"]:
            raise ValueError(f"{it['path']} changed since it was submitted")
        return data

    def read_items(self, job_id: str, item_ids: list[str]) -> tuple[dict[str, bytes], dict[str, str]]:
        """The bytes of several items (one worker's batch): ``({item_id: bytes}, {item_id: error})``."""
        datas: dict[str, bytes] = {}
        errors: dict[str, str] = {}
        for item_id in item_ids:
            try:
                datas[item_id] = self.read_item(job_id, item_id)
            except (LookupError, ValueError, OSError) as exc:
                errors[item_id] = str(exc) or type(exc).__name__
        return datas, errors

    def batch_bytes(self, job_id: str, item_ids: list[str]) -> int:
        """What reading these items would cost (unknown items count as nothing)."""
        total = 0
        for item_id in item_ids:
            try:
                total += int(self._item(job_id, item_id)["size"])
            except LookupError:
                pass
        return total

    def on_results(self, msgs: list[dict], attachments: list[bytes | None]) -> list[bool]:
        """Record results (one worker's message) exactly once per item, one transaction per job; write
        the outputs of the new ones, then publish a ``job_item`` event per new result and one ``job``
        progress event per job. Returns, per result, whether it was new. The results are trusted here:
        this node's own, or a peer's whose tickets the service checked."""
        by_job: dict[str, list[int]] = {}
        for k, msg in enumerate(msgs):
            by_job.setdefault(msg["job_id"], []).append(k)
        fresh = [False] * len(msgs)
        for job_id, idxs in by_job.items():
            try:
                out = self._out_dir(job_id)
            except UnknownJobError:
                continue  # forgotten (or never ours): nothing to record
            outcomes, kept = [], []
            for k in idxs:
                msg, attachment = msgs[k], attachments[k]
                item_id, worker = msg["item_id"], msg.get("worker", "")
                attempts = _attempts(msg)
                if msg.get("error"):
                    outcomes.append((item_id, "error", None, msg["error"], worker, attempts))
                    kept.append((k, item_id, None, None, None))
                    continue
                result = dict(msg.get("result") or {})
                result["worker"] = worker
                result["worker_name"] = msg.get("worker_name", "")
                own = result.get("timings")  # the job type's own timings, if any (what is in a result is its)
                result["timings"] = {**(own if isinstance(own, dict) else {}), **(msg.get("timings") or {})}
                result["attempts"] = attempts  # failed tries elsewhere (or here) before this one
                dest = self._annotated_path(job_id, item_id, out) if attachment else None
                if dest is not None:
                    result["annotated"] = str(dest)  # stored too: `job show` points at the file
                try:
                    payload = json.dumps(result)
                except (TypeError, ValueError, RecursionError) as exc:
                    outcomes.append(
                        (item_id, "error", None, f"result is not JSON-serialisable: {exc}", worker, attempts)
                    )
                    kept.append((k, item_id, None, None, None))
                    continue
                outcomes.append((item_id, "done", payload, None, worker, attempts))
                kept.append((k, item_id, result, attachment, dest))
            flags, job = self.store.record_outcomes(job_id, outcomes)
            new = [entry for entry, ok in zip(kept, flags) if ok]
            if out:
                self._write_outputs(job_id, out, [e[1:] for e in new if e[2] is not None])
            for k, item_id, result, _, _ in new:
                fresh[k] = True
                path = self._path_of(job_id, item_id)  # (read before the item leaves the cache)
                self.items_cache.pop((job_id, item_id), None)
                msg = msgs[k]
                self.ctx.publish(
                    "job_item",
                    job_id=job_id,
                    item_id=item_id,
                    path=path,
                    worker=msg.get("worker", ""),
                    error=msg.get("error"),
                    result=result if result is not None else msg.get("result"),  # as stored: annotated path too
                )
            if new and job is not None:
                self.ctx.publish(
                    "job",
                    job_id=job_id,
                    state=job["status"],
                    total=job["total"],
                    done=job["counts"].get("done", 0),
                    errors=job["counts"].get("error", 0),
                )
        return fresh

    def _out_dir(self, job_id: str) -> str | None:
        """The job's out dir (fixed at creation, so cached); UnknownJobError for a job we do not hold."""
        if job_id not in self._out_dirs:
            self._out_dirs[job_id] = self.store.job(job_id).get("out_dir")
        return self._out_dirs[job_id]

    def _path_of(self, job_id: str, item_id: str) -> str:
        try:
            return str(self._item(job_id, item_id)["path"])
        except LookupError:
            return ""

    def _annotated_path(self, job_id: str, item_id: str, out: str | None) -> Path | None:
        if not out:
            return None
        return Path(out) / f"{Path(self._item(job_id, item_id)['path']).stem}.{item_id}.annotated.png"

    def _write_outputs(self, job_id: str, out: str, done: list[tuple[str, dict, bytes | None, Path | None]]) -> None:
        """Annotated copies, then one results line per new result (one append for the lot)."""
        if not done:
            return
        lines = []
        for item_id, result, attachment, dest in done:
            if attachment and dest is not None:
                atomic_write(dest, attachment)
            lines.append(_results_line(job_id, item_id, Path(self._item(job_id, item_id)["path"]), result) + "\n")
        with open(Path(out) / f"{job_id}.results.jsonl", "a") as fh:
            fh.write("".join(lines))

    def repair_results_files(self) -> int:
        """Rewrite from the store (the truth) every results file that does not hold exactly one line per
        done item: a crash between recording a result and appending its line leaves it short or torn.
        Returns how many files were rewritten."""
        fixed = 0
        for job in self.store.jobs():
            out = job.get("out_dir")
            if not out or not Path(out).is_dir():
                continue
            path = Path(out) / f"{job['job_id']}.results.jsonl"
            raw = path.read_bytes() if path.exists() else b""
            if raw.count(b"\n") == job["done"] and (not raw or raw.endswith(b"\n")):
                continue
            lines = [
                _results_line(job["job_id"], it["item_id"], Path(it["path"]), it["result"] or {})
                for it in self.store.results(job["job_id"])
                if it["status"] == "done"
            ]
            atomic_write(path, "".join(line + "\n" for line in lines).encode())
            log.info("rewrote %s (%d results)", path, len(lines))
            fixed += 1
        return fixed

    # ----------------------------------------------------------------- views
    def show(self, job_id: str) -> dict:
        job = self.store.job(job_id)
        results = self.store.results(job_id)
        ok = [r["result"] for r in results if r["status"] == "done" and r.get("result")]
        job["summary"] = get_type(job["task"]).merge(ok)
        retried = self.store.retried(job_id)  # attempts that failed on some node and were run again
        job.update(retried)
        if isinstance(job["summary"], dict):
            job["summary"].setdefault("retried_attempts", retried["retried_attempts"])
        job["items"] = results
        job["pending"] = [
            {"item_id": it["item_id"], "path": it["path"], "size": it["size"], "attempts": it.get("attempts", 0)}
            for it in self.store.unfinished(job_id)
        ]
        return job

    async def watch(self, job_id: str):
        """Progress events of one job until it is finished.

        Every finished item is reported exactly once as a ``job_item`` event, including the items that
        finished before the watcher subscribed (they are replayed from the store) and the ones whose
        outcome was recorded without an event (an item the master gave up on)."""
        sub = self.ctx.subscribe({"job", "job_item"})
        seen: set[str] = set()

        def backlog():
            for it in self.store.results(job_id):
                if it["item_id"] not in seen:
                    seen.add(it["item_id"])
                    yield {
                        "kind": "job_item",
                        "job_id": job_id,
                        "item_id": it["item_id"],
                        "path": it["path"],
                        "worker": it["worker"],
                        "error": it["error"],
                        "result": it["result"],
                        "ts": time.time(),
                    }

        try:
            job = self.store.job(job_id)
            yield {
                "kind": "job",
                "job_id": job_id,
                "state": job["status"],
                "total": job["total"],
                "done": job["counts"].get("done", 0),
                "errors": job["counts"].get("error", 0),
                "ts": time.time(),
            }
            for ev in backlog():
                yield ev
            while job["status"] not in ("done", "cancelled"):
                try:
                    ev = await sub.get(timeout=1.0)
                except TimeoutError:
                    job = self.store.job(job_id)
                    continue
                if ev.get("job_id") != job_id:
                    continue
                if ev["kind"] == "job_item":
                    if str(ev.get("item_id")) in seen:
                        continue
                    seen.add(str(ev.get("item_id")))
                yield ev
                if ev["kind"] == "job":
                    job = self.store.job(job_id)
            for ev in backlog():
                yield ev
            yield {"kind": "job_finished", **self.show(job_id)}
        finally:
            sub.close()
