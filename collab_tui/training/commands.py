"""Control-socket commands of the training service: runs, models, local datasets."""

from __future__ import annotations

import asyncio
import io


def install_training_commands(svc, ctl) -> None:
    node = svc.node

    async def train(args):
        return await svc.start_run(dict(args))

    async def runs(args):
        return [_run_row(s) for s in svc.runs.list()]

    async def run_show(args):
        return svc.runs.get(str(args["run_id"])).to_dict()

    async def run_stop(args):
        return await svc.stop_run(str(args["run_id"]))

    async def train_resume(args):
        return await svc.resume_run(args.get("run_id"))

    async def run_watch(args):
        run_id = str(args["run_id"])
        sub = node.events.subscribe({"fl", "fl_phase"})
        try:
            for _ in range(100):  # a run started through the master reaches us by replication
                try:
                    st = svc.runs.get(run_id)
                    break
                except LookupError:
                    await asyncio.sleep(0.1)
            st = svc.runs.get(run_id)
            yield {"kind": "fl", "what": "snapshot", "run_id": st.run_id, "status": st.status, "round": st.round,
                   "history": st.history}
            while True:
                try:
                    ev = await sub.get(timeout=1.0)
                except asyncio.TimeoutError:
                    st = svc.runs.get(run_id)
                    if st.status != "running":
                        yield {"kind": "fl", "what": st.status, "run_id": st.run_id, "status": st.status,
                               "round": st.round, "history": st.history}
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

    async def models_list(args):
        return svc.registry.list()

    async def models_show(args):
        return svc.registry.show(str(args["ref"]))

    async def models_import(args):
        from ..ml import mltasks

        return await svc.client.ml.call(mltasks.import_keras, str(args["path"]), str(args["name"]))

    async def models_export(args):
        from ..ml import mltasks

        return await svc.client.ml.call(mltasks.export_keras, str(args["ref"]), str(args["path"]))

    async def data_add(args):
        spec = dict(args.get("spec") or {})
        svc.datasets.add(str(args["name"]), spec)
        await svc.client.forget_data()
        svc.refresh_capabilities()
        svc.client.warm_up()  # a node with data will train: load TensorFlow in its ML process now
        return await asyncio.to_thread(svc.datasets.stats, str(args["name"]))

    async def data_list(args):
        return svc.datasets.list()

    async def data_stats(args):
        return await asyncio.to_thread(svc.datasets.stats, str(args["name"]))

    async def data_split(args):
        """Deal a dataset held here out to the alive nodes (sends images: only for users who opt in)."""
        import numpy as np

        from ..ml.datasets import partition_iid, partition_label_shards

        name, target = str(args["name"]), str(args.get("as") or args["name"])
        x, y, labels = await asyncio.to_thread(svc.datasets.load, name)
        nodes = sorted(node.membership.alive_ids() | {node.node_id})
        if args.get("scheme", "iid") == "shards":
            parts = partition_label_shards(y, len(nodes), num_shards=2 * len(nodes), shard_size=len(y) // (2 * len(nodes)))
        else:
            parts = partition_iid(len(y), len(nodes), int(args.get("seed", 0)))
        dealt = {}
        for nid, idx in zip(nodes, parts):
            buf = io.BytesIO()
            np.savez(buf, x=x[idx], y=y[idx])
            msg = {"kind": "fl.data", "name": target, "labels": list(labels or [])}
            if nid == node.node_id:
                svc.receive_data_part({**msg, "data": buf.getvalue()})
            else:
                await node.peers.conns[nid].request_blob(msg, buf.getvalue(), timeout=60)
            dealt[nid] = int(len(idx))
        return {"name": target, "parts": dealt}

    for name, fn in [("train", train), ("runs", runs), ("run_show", run_show), ("run_stop", run_stop),
                     ("train_resume", train_resume), ("models_list", models_list), ("models_show", models_show),
                     ("models_import", models_import), ("models_export", models_export), ("data_add", data_add),
                     ("data_list", data_list), ("data_stats", data_stats), ("data_split", data_split)]:
        ctl.command(name, fn)
    ctl.stream("run_watch", run_watch)


def _run_row(st) -> dict:
    last = st.history[-1] if st.history else {}
    acc = (last.get("client_eval") or {}).get("accuracy") or (last.get("server_eval") or {}).get("accuracy")
    return {"run_id": st.run_id, "model": st.config.get("model"), "strategy": st.config.get("strategy"),
            "status": st.status, "round": st.round, "rounds": st.config.get("rounds"), "version": st.version,
            "accuracy": acc, "created": st.created}
