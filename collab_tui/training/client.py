"""A training client: trains the global model on this node's own images, which never leave it.

Privacy by structure: the only thing sent back is an update (weights or a float16 delta) plus counts
and metrics. The data is loaded and the model trained inside the node's ML process (`ml/mlproc.py`),
which has no network code; this module only passes weights in and the update out.
"""

from __future__ import annotations

import asyncio
import logging

from ..ml import mltasks
from ..ml.mlproc import for_node
from .rounds import RunConfig

log = logging.getLogger("collab.training.client")


class TrainingClient:
    def __init__(self, svc) -> None:
        self.svc = svc
        self.ctx = svc.ctx
        self.ml = for_node(self.ctx.home, self.ctx.config.ml_threads)

    def client_index(self) -> int:
        """Stable index of this node among the members it knows (the protocol's per-client seed offset)."""
        ids = sorted({self.ctx.node_id, *(p.node_id for p in self.ctx.peers())})
        return ids.index(self.ctx.node_id)

    async def forget_data(self) -> None:
        if self.ml.started:
            await self.ml.call(mltasks.forget_data)

    def warm_up(self) -> None:
        """Start the ML process and import TensorFlow there in the background."""

        async def go():
            try:
                secs = await self.ml.call(mltasks.warm_up)
                log.info("ML process ready (TensorFlow imported in %.1fs)", secs)
            except Exception as exc:  # pragma: no cover
                log.warning("ML process warm-up failed: %s", exc)

        asyncio.get_running_loop().create_task(go())

    async def train(self, msg: dict) -> tuple[dict, bytes]:
        """Handle `fl.train` (as its schema admitted it, training/messages.py): returns (fields, update bytes)."""
        cfg = RunConfig.from_dict(msg["config"])  # refuse a bad config before any work
        participants = msg.get("participants") or []
        if cfg.secure and not participants:
            raise ValueError("a secure run's round must name its participants: this node sends no unmasked update")
        self.svc.phase(msg, "train")
        fields, payload = await self.ml.call(
            mltasks.train, msg["config"], msg["round"], msg["data"], msg.get("version", ""), self.client_index()
        )
        if cfg.secure:  # the update leaves this node only masked (training/secagg.py)
            mask = self.svc.secure_client.mask
            args = (msg["run_id"], msg["round"], msg["data"], payload, fields["num_examples"], participants)
            payload = await asyncio.to_thread(mask, *args)
            fields["masked"] = True
        self.svc.phase(msg, "upload")
        return fields, payload

    async def evaluate(self, msg: dict) -> dict:
        return {"eval": await self.ml.call(mltasks.evaluate_holdout, msg["config"], msg["data"])}
