"""Control commands of the jobs service: submit, list, show, cancel, watch (and two for benchmarks)."""

from __future__ import annotations

import time

from .. import api
from ..node.control import command, stream


class JobCommands:
    def __init__(self, service) -> None:
        self.svc = service
        self.sub = service.submitter

    @command(api.Submit)
    async def submit(self, req: api.Submit) -> dict:
        opts = dict(req.options)
        if req.model:
            opts["model"] = req.model
        return await self.sub.create(list(req.paths), req.task, opts, req.out)

    @command(api.Jobs)
    async def jobs(self, req: api.Jobs) -> list[dict]:
        return self.sub.store.jobs()

    @command(api.JobShow)
    async def job_show(self, req: api.JobShow) -> dict:
        return self.sub.show(req.job_id)

    @command(api.JobTypes)
    async def job_types(self, req: api.JobTypes) -> list[dict]:
        from .types import job_type_names, registry

        reg = registry()
        out = []
        for name in job_type_names():
            jt = reg.get(name)
            what = "classification by every node's model, combined" if name == "ensemble" else ""
            out.append({"name": name, "description": (jt.description if jt is not None else "") or what})
        return out

    @command(api.JobCancel)
    async def job_cancel(self, req: api.JobCancel) -> dict:
        n = self.sub.cancel(req.job_id)
        master = self.svc.ctx.master_id
        if master:
            await self.svc.send_to(master, {"t": "job.cancel", "job_id": req.job_id})
        return {"job_id": req.job_id, "cancelled_items": n}

    @stream(api.JobWatch)
    async def job_watch(self, req: api.JobWatch):
        async for ev in self.sub.watch(req.job_id):
            yield ev


class JobDiagnostics:
    """Benchmark and test aids, mounted only when the daemon runs with ``COLLAB_DIAGNOSTICS=1`` in its
    environment (bench/ and a few tests set it); a production node does not answer them."""

    ENV = "COLLAB_DIAGNOSTICS"

    def __init__(self, service) -> None:
        self.svc = service
        self.sub = service.submitter

    @command(api.SchedStats)
    async def sched_stats(self, req: api.SchedStats) -> dict | None:
        return self.svc.master.stats() if self.svc.master else None

    @command(api.JobProbe)
    async def job_probe(self, req: api.JobProbe) -> dict:
        """Run ``n`` one-item jobs one after the other, each created exactly as `submit` creates it, and time
        each from the call to the moment its result is recorded here (the job's final "job" event). Returns
        the seconds; probe jobs are deleted unless ``keep``."""
        n = max(1, min(req.n, 100_000))
        events = self.svc.ctx.subscribe({"job"}, maxsize=100_000)
        samples: list[float] = []
        try:
            for _ in range(n):
                t0 = time.time()
                job_id = (await self.sub.create(list(req.paths), req.task, dict(req.options), None))["job_id"]
                while True:
                    ev = await events.get(timeout=req.timeout)
                    if ev.get("job_id") == job_id and ev.get("state") in ("done", "cancelled"):
                        samples.append(ev["ts"] - t0)
                        break
                if not req.keep:
                    self.sub.forget(job_id)
        finally:
            events.close()
        return {"samples": samples}
