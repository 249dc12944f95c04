"""The submitter's part: it owns each job durably (SQLite, WAL) until every item has a result.

It serves the item bytes to workers (`job.fetch`, checked against the SHA-256 taken at submission),
records results exactly once per item (`job.result`), writes annotated copies to the job's out dir,
and resubmits whatever is unfinished whenever the master changes or the node restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path

from ..node.state import atomic_write
from .store import JobStore
from .types import get_type

log = logging.getLogger("collab.jobs.submitter")

MAX_ITEM_BYTES = 64 * 1024 * 1024


def collect_paths(paths: list[str], kind: str) -> list[Path]:
    """Files, folders (recursive) and globs; folders keep only what the job type accepts."""
    if kind in ("faces", "people", "classify", "ensemble", "ocr"):
        from ..ml.images import collect_images

        return collect_images(paths)
    import glob

    jtype = get_type(kind)
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and jtype.accepts(f))
        else:
            hits = sorted(glob.glob(raw, recursive=True))
            if not hits:
                raise FileNotFoundError(f"no such file, folder or pattern: {raw}")
            for h in map(Path, hits):  # a folder matched by a pattern is walked like a named folder
                if h.is_dir():
                    out += sorted(f for f in h.rglob("*") if f.is_file() and jtype.accepts(f))
                elif h.is_file() and jtype.accepts(h):
                    out.append(h)
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _results_line(job_id: str, item_id: str, src: Path, result: dict) -> str:
    return json.dumps({"job_id": job_id, "item_id": item_id, "path": str(src), **result}, default=str)


class JobSubmitter:
    def __init__(self, service) -> None:
        self.svc = service
        self.node = service.node
        self.store = JobStore(self.node.home / "state" / "jobs.db")
        self._sent_to: dict[str, str] = {}  # job_id -> master it was last submitted to
        self.items_cache: dict[tuple[str, str], dict] = {}

    # ----------------------------------------------------------------- creating jobs
    async def create(self, paths: list[str], kind: str, options: dict, out_dir: str | None) -> dict:
        get_type(kind)  # unknown kinds fail here, before anything is stored
        files = await asyncio.to_thread(collect_paths, paths, kind)
        if not files:
            raise ValueError("no input files found")
        items = []
        for i, f in enumerate(files):
            size, digest = await asyncio.to_thread(_hash_file, f)
            items.append((f"{i:06d}", str(f.resolve()), size, digest))
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
        job_id = self.store.create_job(kind, items, options, model=options.get("model"),
                                       submitter=self.node.node_id,
                                       out_dir=str(Path(out_dir).resolve()) if out_dir else None)
        self.node.events.publish("job", job_id=job_id, state="submitted", total=len(items), done=0, errors=0)
        await self.resubmit(job_id)
        return self.store.job(job_id)

    async def resubmit(self, job_id: str) -> bool:
        """Send the unfinished items to the current master (idempotent on its side)."""
        master = self.node.election.master_id
        if not master:
            return False
        job = self.store.job(job_id)
        if job["status"] in ("done", "cancelled"):
            return True
        pending = self.store.unfinished(job_id)
        if not pending:
            return True
        msg = {"t": "job.submit", "job_id": job_id, "kind": job["task"], "options": job.get("options") or {},
               "items": [{"item_id": it["item_id"], "size": it["size"]} for it in pending]}
        ok = await self.svc.request(master, msg)
        if ok:
            self._sent_to[job_id] = master
        return ok

    async def resubmit_all(self, force: bool = False) -> None:
        master = self.node.election.master_id
        for job_id in self.store.unfinished_jobs():
            if force or self._sent_to.get(job_id) != master:
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
        data = Path(it["path"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != it["sha256"]:
            raise ValueError(f"{it['path']} changed since it was submitted")
        return data

    def on_result(self, msg: dict, attachment: bytes | None) -> bool:
        job_id, item_id, worker = str(msg["job_id"]), str(msg["item_id"]), str(msg.get("worker", ""))
        if msg.get("error"):
            fresh = self.store.record_error(job_id, item_id, str(msg["error"]), worker)
        else:
            result = dict(msg.get("result") or {})
            result["worker"] = worker
            result["worker_name"] = msg.get("worker_name", "")
            result["timings"] = {**result.get("timings", {}), **(msg.get("timings") or {})}
            dest = self._annotated_path(job_id, item_id) if attachment else None
            if dest is not None:
                result["annotated"] = str(dest)  # stored too: `job show` points at the file
            if fresh := self.store.record_result(job_id, item_id, result, worker):
                self._write_outputs(job_id, item_id, result, attachment, dest)
        if fresh:
            self.items_cache.pop((job_id, item_id), None)
            job = self.store.job(job_id)
            self.node.events.publish("job_item", job_id=job_id, item_id=item_id, worker=worker,
                                     error=msg.get("error"), result=msg.get("result"))
            self.node.events.publish("job", job_id=job_id, state=job["status"], total=job["total"],
                                     done=job["counts"].get("done", 0), errors=job["counts"].get("error", 0))
        return fresh

    def _annotated_path(self, job_id: str, item_id: str) -> Path | None:
        out = self.store.job(job_id).get("out_dir")
        if not out:
            return None
        return Path(out) / f"{Path(self._item(job_id, item_id)['path']).stem}.{item_id}.annotated.png"

    def _write_outputs(self, job_id: str, item_id: str, result: dict, attachment: bytes | None,
                       dest: Path | None) -> None:
        out = self.store.job(job_id).get("out_dir")
        if not out:
            return
        src = Path(self._item(job_id, item_id)["path"])
        if attachment and dest is not None:
            atomic_write(dest, attachment)
        with open(Path(out) / f"{job_id}.results.jsonl", "a") as fh:
            fh.write(_results_line(job_id, item_id, src, result) + "\n")

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
            lines = [_results_line(job["job_id"], it["item_id"], Path(it["path"]), it["result"] or {})
                     for it in self.store.results(job["job_id"]) if it["status"] == "done"]
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
        job["items"] = results
        return job

    async def watch(self, job_id: str):
        """Progress events of one job until it is finished.

        Every finished item is reported exactly once as a ``job_item`` event, including the items that
        finished before the watcher subscribed (they are replayed from the store) and the ones whose
        outcome was recorded without an event (an item the master gave up on)."""
        sub = self.node.events.subscribe({"job", "job_item"})
        seen: set[str] = set()

        def backlog():
            for it in self.store.results(job_id):
                if it["item_id"] not in seen:
                    seen.add(it["item_id"])
                    yield {"kind": "job_item", "job_id": job_id, "item_id": it["item_id"], "worker": it["worker"],
                           "error": it["error"], "result": it["result"], "ts": time.time()}

        try:
            job = self.store.job(job_id)
            yield {"kind": "job", "job_id": job_id, "state": job["status"], "total": job["total"],
                   "done": job["counts"].get("done", 0), "errors": job["counts"].get("error", 0), "ts": time.time()}
            for ev in backlog():
                yield ev
            while job["status"] not in ("done", "cancelled"):
                try:
                    ev = await sub.get(timeout=1.0)
                except asyncio.TimeoutError:
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
