"""Control commands of the training service: runs, models, local datasets."""

from __future__ import annotations

import asyncio
import io

from .. import api
from ..node.control import command, stream


class RunCommands:
    """Federated runs: start, list, show, stop, resume, watch."""

    def __init__(self, svc) -> None:
        self.svc = svc

    @command(api.Train)
    async def train(self, req: api.Train) -> dict:
        return await self.svc.start_run({k: v for k, v in api.encode(req).items() if v is not None})

    @command(api.Runs)
    async def runs(self, req: api.Runs) -> list[dict]:
        return [_run_row(s) for s in self.svc.runs.list()]

    @command(api.RunShow)
    async def run_show(self, req: api.RunShow) -> dict:
        st = self.svc.runs.get(req.run_id).to_dict()
        if not req.full:  # the strategy's own state (moments, control variates): big, and for the master
            st["strategy_state"] = {"keys": sorted(st.get("strategy_state") or {})}
        return st

    @command(api.RunStop)
    async def run_stop(self, req: api.RunStop) -> dict:
        return await self.svc.stop_run(req.run_id)

    @command(api.TrainResume)
    async def train_resume(self, req: api.TrainResume) -> dict:
        return await self.svc.resume_run(req.run_id)

    @stream(api.RunWatch)
    async def run_watch(self, req: api.RunWatch):
        svc, run_id = self.svc, req.run_id
        sub = svc.ctx.subscribe({"fl", "fl_phase"})
        try:
            for _ in range(100):  # a run started through the master reaches us by replication
                try:
                    st = svc.runs.get(run_id)
                    break
                except LookupError:
                    await asyncio.sleep(0.1)
            st = svc.runs.get(run_id)
            yield {
                "kind": "fl",
                "what": "snapshot",
                "run_id": st.run_id,
                "status": st.status,
                "round": st.round,
                "history": st.history,
            }
            while True:
                try:
                    ev = await sub.get(timeout=1.0)
                except TimeoutError:
                    st = svc.runs.get(run_id)
                    if st.status != "running":
                        yield {
                            "kind": "fl",
                            "what": st.status,
                            "run_id": st.run_id,
                            "status": st.status,
                            "round": st.round,
                            "history": st.history,
                        }
                        return
                    continue
                if ev.get("run_id") not in (None, st.run_id):
                    continue
                yield ev
                if ev["kind"] == "fl" and ev.get("status") in ("done", "stopped", "failed") and ev["what"] != "round":
                    yield {**svc.runs.get(run_id).to_dict(), "kind": "fl", "what": "final"}
                    return
        finally:
            sub.close()


class ModelCommands:
    """The model registry."""

    def __init__(self, svc) -> None:
        self.svc = svc

    @command(api.ModelsList)
    async def models_list(self, req: api.ModelsList) -> list[dict]:
        return self.svc.registry.list()

    @command(api.ModelsShow)
    async def models_show(self, req: api.ModelsShow) -> dict:
        return self.svc.registry.show(req.ref)

    @command(api.ModelsImport)
    async def models_import(self, req: api.ModelsImport) -> dict:
        from ..ml import mltasks

        return await self.svc.client.ml.call(mltasks.import_keras, req.path, req.name)

    @command(api.ModelsExport)
    async def models_export(self, req: api.ModelsExport) -> dict:
        from ..ml import mltasks

        return await self.svc.client.ml.call(mltasks.export_keras, req.ref, req.path)


class DataCommands:
    """This node's local datasets (they never leave it, except through an explicit `data_split`)."""

    def __init__(self, svc) -> None:
        self.svc = svc

    @command(api.DataAdd)
    async def data_add(self, req: api.DataAdd) -> dict:
        svc = self.svc
        svc.datasets.add(req.name, dict(req.spec))
        await svc.client.forget_data()
        svc.refresh_capabilities()
        svc.client.warm_up()  # a node with data will train: load TensorFlow in its ML process now
        return await asyncio.to_thread(svc.datasets.stats, req.name)

    @command(api.DataList)
    async def data_list(self, req: api.DataList) -> list[dict]:
        return self.svc.datasets.list()

    @command(api.DataStats)
    async def data_stats(self, req: api.DataStats) -> dict:
        return await asyncio.to_thread(self.svc.datasets.stats, req.name)

    @command(api.DataSplit)
    async def data_split(self, req: api.DataSplit) -> dict:
        """Deal a dataset held here out to the alive nodes (sends images: only for users who opt in)."""
        import numpy as np

        from ..ml.datasets import partition_iid, partition_label_shards

        svc, ctx = self.svc, self.svc.ctx
        name, target = req.name, req.as_ or req.name
        x, y, labels = await asyncio.to_thread(svc.datasets.load, name)
        nodes = sorted(ctx.alive_ids() | {ctx.node_id})
        if req.scheme == "shards":
            parts = partition_label_shards(
                y, len(nodes), num_shards=2 * len(nodes), shard_size=len(y) // (2 * len(nodes))
            )
        else:
            parts = partition_iid(len(y), len(nodes), req.seed)
        dealt = {}
        for nid, idx in zip(nodes, parts):
            buf = io.BytesIO()
            np.savez(buf, x=x[idx], y=y[idx])
            msg = {"kind": "fl.data", "name": target, "labels": list(labels or [])}
            if nid == ctx.node_id:
                await svc.receive_data_part(target, buf.getvalue(), msg["labels"])
            else:
                await ctx.request_blob(nid, msg, buf.getvalue(), timeout=60)
            dealt[nid] = int(len(idx))
        return {"name": target, "parts": dealt}


def _run_row(st) -> dict:
    last = st.history[-1] if st.history else {}
    acc = (last.get("client_eval") or {}).get("accuracy") or (last.get("server_eval") or {}).get("accuracy")
    return {
        "run_id": st.run_id,
        "model": st.config.get("model"),
        "strategy": st.config.get("strategy"),
        "status": st.status,
        "round": st.round,
        "rounds": st.config.get("rounds"),
        "version": st.version,
        "accuracy": acc,
        "created": st.created,
    }
