"""The federated-training service of a node: client on every node, run coordinator on the master.
It sees the node only through its `ServiceContext`.

Messages (every master-issued, side-effecting one carries the master's term; stale terms are refused):
  fl.start / fl.stop / fl.resume   any node -> master (requests)
  fl.train   master -> client: blob of global weights; answer: blob of the update
  fl.eval    master -> client: blob of weights; answer: held-out metrics
  fl.describe master -> client: a dataset's image shape and class names (a new model is made for them)
  fl.commit  master -> all: blob of a new version + the run state; answer: held (a round is committed once
             a majority holds it, run_sync.py)
  fl.state   master -> all: run state only (status changes); answer: held
  fl.sync    new master -> all: a digest of every run the node holds (the new master adopts the newest)
  fl.pull    new master -> one: a run the node holds newer than the master, with its model version (blob)
  fl.phase   client -> master: download / train / upload (for the UIs)
  fl.data    node -> node: a dataset part, only by `collab data split` (explicit, for users who don't
             need privacy); training itself never moves images.

Each is declared in messages.py (fields, bounds, who may send it); the node admits a message against
its schema before a handler here sees it, and the master checks its clients' replies the same way.
Nothing from the wire is written before it is checked: the registry checks a version's metadata and
weights, the run store a run state, the dataset registry a dataset part's name and archive.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from ..ml.updates import ClientUpdate, decompress_delta, from_bytes
from ..net.transport import BlobReply, RemoteError
from ..node.context import ServiceContext, fenced, handler, may_commit_soon, refusal, register_handlers
from ..node.events import each_event
from .client import TrainingClient
from .coordinator import RunCoordinator
from .messages import (
    MAX_ERROR,
    MAX_SYNC_RUNS,
    FlCommit,
    FlData,
    FlDescribe,
    FlEval,
    FlPhase,
    FlPull,
    FlResume,
    FlStart,
    FlState,
    FlStop,
    FlSync,
    FlTrain,
    check_config,
    check_eval,
    check_pulled,
    check_shape,
    check_sync,
    check_update,
)
from .rounds import RunConfig, RunState, cut
from .run_sync import CommitTally, SyncTally, digest_of
from .runstore import RunStore
from .secagg import SecAggError
from .secure_messages import FlSaKeys, FlSaShares, FlSaUnmask
from .secure_rounds import SecureClient, SecureMaster

log = logging.getLogger("collab.training")

REPLICATE_TIMEOUT = 10.0  # seconds a peer has to acknowledge a run's state (and a small model version)
BLOB_RATE = 5e6  # bytes/s a replica is given at least to take a model version (a big model gets longer)
RETRY_EVERY = 0.5  # seconds between two tries to get a run's state onto a majority

BUILTIN_MODELS = {
    "digits": {"name": "small-cnn", "input_shape": [8, 8, 1], "num_classes": 10},
    "mnist": {"name": "small-cnn", "input_shape": [28, 28, 1], "num_classes": 10},
}


class TrainingService:
    def __init__(self, ctx: ServiceContext) -> None:
        from ..ml.datasets import DatasetRegistry
        from ..ml.registry import ModelRegistry

        self.ctx = ctx
        self.registry = ModelRegistry(ctx.home)
        self.datasets = DatasetRegistry(ctx.home)
        self.runs = RunStore(ctx.home)
        self.client = TrainingClient(self)
        self.secure_client = SecureClient(ctx)
        self.secure_master = SecureMaster(self)
        self.coordinators: dict[str, tuple[RunCoordinator, asyncio.Task]] = {}
        self._task: asyncio.Task | None = None
        self._sub = None
        self._data_capabilities: frozenset[str] = frozenset()  # "data:NAME" per local dataset
        self._sync_lock = asyncio.Lock()
        self._synced_term = -1  # the term in which this node, as master, adopted the newest runs (sync)
        self.refresh_capabilities()
        ctx.add_capabilities("train")
        ctx.provide_capabilities(lambda: self._data_capabilities)
        ctx.provide_heartbeat("model_version", self.current_version)
        register_handlers(ctx, self)

    # ----------------------------------------------------------------- life cycle
    async def start(self) -> None:
        self._sub = self.ctx.subscribe({"master", "peer", "role"})
        self._task = asyncio.get_running_loop().create_task(each_event(self._sub, self._step, "training loop"))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._sub:
            self._sub.close()
        for _coord, task in self.coordinators.values():
            task.cancel()
        self.client.ml.shutdown()

    async def _step(self, ev: dict | None) -> None:
        if self.ctx.is_master and await self.sync():
            await self._resume_runs()
            if ev and ev["kind"] == "peer" and ev["change"] in ("join", "alive", "restart"):
                await self._catch_up(ev["node_id"])

    async def _resume_runs(self) -> None:
        for st in self.runs.running():
            entry = self.coordinators.get(st.run_id)
            if entry is None or entry[1].done():
                log.info("resuming run %s at round %d", st.run_id[:8], st.round + 1)
                try:
                    self._launch(st)
                except Exception as exc:  # a state its coordinator cannot take: fail it once, not every second
                    log.warning("run %s cannot be resumed (%s): marked failed", st.run_id[:8], cut(exc, 200))
                    st.status, st.error = "failed", cut(f"cannot be resumed: {exc}", MAX_ERROR)
                    self.runs.commit(st)
                    await self.replicate(st, None)

    def _launch(self, st: RunState) -> None:
        coord = RunCoordinator(self, st)
        self.coordinators[st.run_id] = (coord, asyncio.get_running_loop().create_task(coord.run()))

    async def _catch_up(self, peer: str) -> None:
        """A node that joins mid-run gets the current model and run state."""
        for st in self.runs.list():
            if st.version:
                await self._replicate_to(peer, st.to_dict(), st.config["model"], st.version)

    # ----------------------------------------------------------------- views used by the coordinator
    def refresh_capabilities(self) -> None:
        """Re-read the local datasets (their "data:NAME" capabilities go into the heartbeats)."""
        self._data_capabilities = frozenset(f"data:{d['name']}" for d in self.datasets.list())

    def current_version(self) -> str | None:
        runs = self.runs.list()
        return runs[-1].version if runs else None

    def train_candidates(self, dataset: str | None = None) -> list[str]:
        want = {"train"} | ({f"data:{dataset}"} if dataset else set())
        out = [self.ctx.node_id] if want <= set(self.ctx.capabilities()) else []
        for p in self.ctx.alive_peers():
            if want <= set(p.capabilities):
                out.append(p.node_id)
        return out

    def publish(self, st: RunState, what: str, **data) -> None:
        event = {
            "run_id": st.run_id,
            "what": what,
            "status": st.status,
            "round": st.round,
            "rounds": st.config.get("rounds"),
            **data,
        }
        self.ctx.publish("fl", **event)

    def _evaluated(self, run_id: str) -> set[int]:
        """Rounds of a run (as this node holds it) whose version the master has evaluated."""
        try:
            return {h["round"] for h in self.runs.get(run_id).history if h.get("server_eval")}
        except (LookupError, ValueError):
            return set()

    def _publish_replica(self, data: dict, what: str | None, evaluated: set[int] = frozenset()) -> None:
        """Followers publish what the master published, so UIs attached to any node see the run: its new
        round or status, and the master's evaluations that came with it (of earlier versions)."""
        st = RunState.from_dict(data)
        for h in st.history:
            if h.get("server_eval") and h["round"] not in evaluated:
                self.publish(
                    st, "server_eval", round=h["round"], version=h.get("version", ""), server_eval=h["server_eval"]
                )
        if what == "round" and st.history:
            self.publish(st, "round", **st.history[-1])
        elif st.status != "running":
            self.publish(st, st.status)

    def phase(self, msg: dict, phase: str) -> None:
        info = {"t": "fl.phase", "run_id": msg.get("run_id"), "round": msg.get("round"), "phase": phase}
        master = self.ctx.master_id
        if master and master != self.ctx.node_id:
            asyncio.get_running_loop().create_task(self.ctx.send(master, info))
        self.ctx.publish("fl_phase", node_id=self.ctx.node_id, **{k: v for k, v in info.items() if k != "t"})

    # ----------------------------------------------------------------- talking to clients
    async def client_train(
        self, node: str, st: RunState, cfg: RunConfig, r: int, payload: bytes, participants: list[str] | None = None
    ):
        fields = {
            "kind": "fl.train",
            "run_id": st.run_id,
            "round": r,
            "version": st.version,
            "config": st.config,
            "term": self.ctx.term,
            "participants": participants or [],
        }
        if node == self.ctx.node_id:
            reply, data = await self.client.train({**fields, "data": payload})
        else:  # ConnectionError "node ... is not connected" when it is not
            reply = await self.ctx.request_blob(node, fields, payload, timeout=cfg.round_timeout)
            data = reply.get("data", b"")
        reply = check_update(reply)  # ValueError: the round records the client as left out, with why
        if reply["masked"] != bool(cfg.secure):
            raise ValueError("a secure round's update must be masked, and only a secure round's")
        weights = from_bytes(data)
        if reply["compressed"] and not reply["masked"]:
            weights = decompress_delta(weights, from_bytes(payload))
        upd = ClientUpdate(node, weights, reply["num_examples"], reply["base_version"], reply["metrics"])
        return upd, len(payload) + len(data), reply["eval"]

    async def collect_evals(self, st: RunState, cfg: RunConfig) -> list[dict]:
        from ..ml.updates import to_bytes

        _, weights = self.registry.get(cfg.model, st.version)
        payload = to_bytes(weights)
        fields = {"kind": "fl.eval", "run_id": st.run_id, "config": st.config, "term": self.ctx.term}

        async def one(node):
            try:
                if node == self.ctx.node_id:
                    return check_eval(await self.client.evaluate({**fields, "data": payload}))
                return check_eval(await self.ctx.request_blob(node, fields, payload, timeout=cfg.round_timeout))
            except Exception as exc:
                log.info("final evaluation on %s failed: %s", node[:12], exc)
                return None

        results = await asyncio.gather(*(one(n) for n in self.train_candidates(cfg.dataset)))
        return [r for r in results if r]

    async def start_evaluation(self, key: str, cfg: RunConfig, weights, dataset: str) -> None:
        """Start the evaluation of ``weights`` on ``dataset`` in the ML process's evaluation thread: it runs
        beside the next round's fit on this node (`evaluation_result` collects it)."""
        from ..ml import mltasks
        from ..ml.updates import to_bytes

        args = (key, cfg.arch, to_bytes(weights), dataset, tuple(cfg.labels))
        await self.client.ml.call(mltasks.evaluate_dataset_start, *args)

    async def evaluation_result(self, key: str) -> dict:
        from ..ml import mltasks

        return await self.client.ml.call(mltasks.evaluate_dataset_result, key)

    # ----------------------------------------------------------------- replication
    async def replicate(self, st: RunState, version: str | None) -> CommitTally:
        """Send ``st`` (and the model version it names, if ``version``) to every peer with an open connection,
        a suspect one included (a node that is only slow now would otherwise miss it until it reconnects);
        who confirmed it (run_sync.py, rule 2). ``st`` may change once this returns: it is read first."""
        record, model = st.to_dict(), st.config["model"]
        tally = CommitTally(self.ctx.quorum_size())
        targets = [p.node_id for p in self.ctx.peers() if self.ctx.connected(p.node_id)]
        held = await asyncio.gather(*(self._replicate_to(p, record, model, version) for p in targets))
        for peer, ok in zip(targets, held):
            if ok:
                tally.ack(peer)
        return tally

    async def commit_replicated(
        self, st: RunState, version: str | None, check=None, wait: float | None = None
    ) -> CommitTally:
        """Rule 2 of run_sync.py: replicate ``st`` until a majority of the cluster holds it, sending again every
        `RETRY_EVERY` s to the peers that have not confirmed. ``check()`` is called between tries and may
        raise to give up (the coordinator's role check); ``wait`` bounds the time (None: no bound). The
        tally says whether it is committed."""
        record, model = st.to_dict(), st.config["model"]
        tally = CommitTally(self.ctx.quorum_size())
        t0 = time.monotonic()
        while True:
            targets = [
                p.node_id for p in self.ctx.peers() if self.ctx.connected(p.node_id) and p.node_id not in tally.held_by
            ]
            held = await asyncio.gather(*(self._replicate_to(p, record, model, version) for p in targets))
            for peer, ok in zip(targets, held):
                if ok:
                    tally.ack(peer)
            tally.quorum_size = self.ctx.quorum_size()
            if tally.committed or (wait is not None and time.monotonic() - t0 >= wait):
                return tally
            if check is not None:
                check()
            await asyncio.sleep(RETRY_EVERY)

    async def _replicate_to(self, peer: str, record: dict, model: str, version: str | None) -> bool:
        """Whether ``peer`` confirmed it holds ``record`` (and ``version``)."""
        if not self.ctx.connected(peer):
            return False
        fields = {"run": record, "term": self.ctx.term}
        try:
            if version:
                meta, raw = self.registry.get_bytes(model, version)
                timeout = max(REPLICATE_TIMEOUT, len(raw) / BLOB_RATE)
                rep = await self.ctx.request_blob(peer, {**fields, "kind": "fl.commit", "meta": meta}, raw, timeout)
            else:
                rep = await self.ctx.request(peer, {**fields, "t": "fl.state"}, REPLICATE_TIMEOUT)
        except (OSError, TimeoutError, RemoteError, LookupError) as exc:  # ConnectionClosed (a ConnectionError) too
            log.info("replication to %s failed: %s", peer[:12], exc)
            return False
        return rep.get("held") is True

    # ----------------------------------------------------------------- a new master adopts the newest runs
    async def sync(self) -> bool:
        """Rule 3 of run_sync.py: as a new master, adopt the newest copy of every run the live nodes hold;
        True once a majority answered in this term (until then nothing is resumed or started)."""
        async with self._sync_lock:
            term = self.ctx.term
            if self._synced_term == term:
                return True
            mine = {st.run_id: digest_of(st.to_dict()) for st in self.runs.list()}
            tally = SyncTally(self.ctx.quorum_size(), mine)
            peers = [p for p in self.ctx.alive_ids() if self.ctx.connected(p)]
            replies = await asyncio.gather(*(self._digests(p) for p in peers))
            for peer, digests in zip(peers, replies):
                if digests is not None:
                    tally.reply(peer, digests)
            for run_id, peer in tally.to_fetch():
                await self._pull(peer, run_id)
            if tally.synced and self.ctx.term == term and self.ctx.is_master:
                self._synced_term = term
                return True
            return False

    async def _digests(self, peer: str) -> list[dict] | None:
        try:
            return check_sync(await self.ctx.request(peer, {"t": "fl.sync", "term": self.ctx.term}, REPLICATE_TIMEOUT))
        except (OSError, TimeoutError, RemoteError, ValueError) as exc:
            log.info("run sync: no answer from %s (%s)", peer[:12], exc)
            return None

    async def _pull(self, peer: str, run_id: str) -> None:
        """Fetch one run (and its model version) that ``peer`` holds newer than this node does."""
        try:
            rep = await self.ctx.request(peer, {"t": "fl.pull", "term": self.ctx.term, "run_id": run_id}, 60.0)
            got = check_pulled(rep)
            if got["meta"] is not None:
                await asyncio.to_thread(self.registry.put_raw, got["meta"], rep.get("data", b""))
            if self.runs.accept_replica(got["run"]):
                log.info(
                    "run %s: adopted round %d (term %d) from %s",
                    run_id[:8],
                    got["run"]["round"],
                    got["run"]["term"],
                    peer[:12],
                )
        except (OSError, TimeoutError, RemoteError, ValueError) as exc:  # the registry's checks raise ValueErrors
            log.warning("run %s: could not fetch its newer state from %s: %s", run_id[:8], peer[:12], exc)

    # ----------------------------------------------------------------- runs (master)
    async def start_run(self, args: dict) -> dict:
        if not self.ctx.is_master:
            reply = await self._forward("fl.start", args)
            await self._replica_of(str(reply.get("run_id", "")))
            return reply
        if not await may_commit_soon(self.ctx):
            raise PermissionError("no majority of the cluster is visible: cannot start a run")
        if not await self.sync():
            raise PermissionError("this new master has not yet heard the runs of a majority: try again in a moment")
        cfg = RunConfig.from_dict({k: v for k, v in args.items() if v is not None})
        check_config(cfg.__dict__)  # the bounds every replica checks, before anything is made
        if not self.train_candidates(cfg.dataset):
            raise LookupError(f"no live node holds a dataset named {cfg.dataset!r} (collab data add on the clients)")
        latest = self.registry.latest(cfg.model)
        if latest is None and not cfg.arch and cfg.model not in BUILTIN_MODELS:
            cfg.arch, cfg.labels = await self._arch_for(cfg.dataset)  # a new model, made for the dataset
        elif latest is not None and not cfg.labels:
            cfg.labels = list((latest.get("extra") or {}).get("labels") or [])
        cfg.validate()
        cfg.arch, version = await self._initial_version(cfg.model, cfg.arch, cfg.seed, cfg.labels)
        st = RunState(run_id=secrets.token_hex(8), config=cfg.__dict__.copy(), version=version, term=self.ctx.term)
        reply: dict = {"run_id": st.run_id, "version": version, "master": self.ctx.node_id}
        if cfg.dp_noise > 0:
            reply["privacy"] = await self._privacy_plan(cfg, version)
            if reply["privacy"].get("warning"):
                st.warn(reply["privacy"]["warning"])
                log.warning("run %s: %s", st.run_id[:8], reply["privacy"]["warning"])
        self.runs.commit(st)
        tally = await self.commit_replicated(st, version, wait=REPLICATE_TIMEOUT)
        if not tally.committed:
            st.status, st.error = (
                "failed",
                f"could not be stored on a majority ({tally.held} of {tally.quorum_size} nodes)",
            )
            self.runs.commit(st)
            await self.replicate(st, None)
            raise RuntimeError(f"run {st.run_id}: {st.error}; nothing was trained")
        self._launch(st)
        self.publish(st, "started")
        return reply

    async def _privacy_plan(self, cfg: RunConfig, version: str) -> dict:
        """Before a run with differential privacy: the epsilon it will spend, and whether the noise swamps the
        updates with the clients a round will have (training/privacy.py)."""
        from .privacy import plan

        _, weights = self.registry.get(cfg.model, version)
        params = int(sum(w.size for w in weights))
        live = len(self.train_candidates(cfg.dataset))
        clients = max(cfg.min_clients, min(live, max(1, round(cfg.fraction * live))))
        return await asyncio.to_thread(plan, cfg.dp_noise, cfg.dp_clip, cfg.rounds, clients, params)

    async def _replica_of(self, run_id: str, timeout: float = 5.0) -> None:
        """Wait (a little) until the master's replica of a run it just started is here: it is checked off the
        event loop, so it may land just after the master's answer, and `run show` right after `train` on
        this node must know the run."""
        deadline = time.monotonic() + timeout
        while run_id and time.monotonic() < deadline:
            try:
                self.runs.get(run_id)
                return
            except LookupError:
                await asyncio.sleep(0.05)

    async def _arch_for(self, dataset: str) -> tuple[dict, list[str]]:
        """A colour (or gray) CNN for `dataset`: the input shape its holders agree on, one output per class
        any of them has (sorted by name). Asked of the clients (`fl.describe`); no image moves."""
        from ..ml.architectures import make_spec

        async def one(node: str) -> dict | None:
            try:
                if node == self.ctx.node_id:
                    return check_shape(await asyncio.to_thread(self.datasets.describe, dataset))
                msg = {"t": "fl.describe", "term": self.ctx.term, "dataset": dataset}
                return check_shape(await self.ctx.request(node, msg, 30.0))
            except (OSError, TimeoutError, RemoteError, ValueError, KeyError) as exc:
                log.info("dataset %s: no description from %s (%s)", dataset, node[:12], cut(exc, 200))
                return None

        got = [d for d in await asyncio.gather(*(one(n) for n in self.train_candidates(dataset))) if d]
        if not got:
            raise LookupError(f"no live node could describe its dataset {dataset!r}")
        shapes = {tuple(d["input_shape"]) for d in got}
        if len(shapes) > 1:
            raise ValueError(f"the nodes' datasets {dataset!r} differ in image size: {sorted(shapes)}")
        labels = sorted({lab for d in got for lab in d["labels"]})
        if len(labels) < 2:
            raise ValueError(f"dataset {dataset!r} has {len(labels)} class(es): a classifier needs at least 2")
        return make_spec("small-cnn", list(shapes.pop()), len(labels)), labels

    async def _initial_version(
        self, model: str, arch: dict, seed: int = 0, labels: list[str] | None = None
    ) -> tuple[dict, str]:
        if self.registry.latest(model):
            meta, _ = self.registry.get(model)
            return meta["arch"], meta["version"]
        arch = arch or BUILTIN_MODELS.get(model)
        if not arch:
            raise LookupError(
                f"unknown model {model!r}: import one (collab models import) or use {', '.join(BUILTIN_MODELS)}"
            )

        from ..ml import mltasks
        from ..ml.updates import from_bytes

        weights = from_bytes(await self.client.ml.call(mltasks.initial_weights, arch, seed))
        version = self.registry.put(
            model,
            weights,
            arch,
            parent=None,
            run=None,
            round=0,
            contributors=[],
            metrics={},
            extra={"initial": True, **({"labels": list(labels)} if labels else {})},
        )
        return arch, version

    async def stop_run(self, run_id: str) -> dict:
        if not self.ctx.is_master:
            return await self._forward("fl.stop", {"run_id": run_id})
        st = self.runs.get(run_id)
        entry = self.coordinators.get(st.run_id)
        if entry:
            entry[0].stop_requested = True
        else:
            st.status, st.term = "stopped", max(st.term, self.ctx.term)
            self.runs.commit(st)
            await self.commit_replicated(st, None, wait=REPLICATE_TIMEOUT)
        return {"run_id": st.run_id, "stopping": True}

    async def resume_run(self, run_id: str | None) -> dict:
        if not self.ctx.is_master:
            return await self._forward("fl.resume", {"run_id": run_id})
        if not await self.sync():  # first: the newest copy of the run may be on another node
            raise PermissionError("this new master has not yet heard the runs of a majority: try again in a moment")
        runs = [self.runs.get(run_id)] if run_id else [s for s in self.runs.list() if s.status in ("stopped", "failed")]
        if not runs:
            raise LookupError("no stopped or failed run to resume")
        st = runs[-1]
        if st.status == "done":
            raise ValueError(f"run {st.run_id} is already done")
        st.status, st.error, st.term = "running", "", max(st.term, self.ctx.term)
        self.runs.commit(st)
        if not (await self.commit_replicated(st, None, wait=REPLICATE_TIMEOUT)).committed:
            raise RuntimeError("the resumed run could not be stored on a majority of the cluster: try again")
        self._launch(st)
        return {"run_id": st.run_id, "round": st.round}

    async def _forward(self, t: str, args: dict) -> dict:
        master = self.ctx.master_id
        if not master:
            raise RuntimeError("no master elected yet")
        try:
            reply = await self.ctx.request(master, {"t": t, **args}, timeout=60.0)
        except RemoteError as exc:
            raise RuntimeError(str(exc)) from None
        return {k: v for k, v in reply.items() if k not in ("t", "re", "ok")}

    # ----------------------------------------------------------------- handlers (peer messages)
    # Each gets the message as its schema (messages.py) admitted it: declared fields only, typed, bounded.
    @handler(FlStart)
    async def _on_start(self, sender: str, msg: dict) -> dict:
        if not self.ctx.is_master:
            return refusal("this node is not the master")  # never forwarded on: no request goes round in circles
        return await self.start_run({k: v for k, v in msg.items() if k != "t"})

    @handler(FlStop)
    async def _on_stop(self, sender: str, msg: dict) -> dict:
        if not self.ctx.is_master:
            return refusal("this node is not the master")
        return await self.stop_run(msg["run_id"])

    @handler(FlResume)
    async def _on_resume(self, sender: str, msg: dict) -> dict:
        if not self.ctx.is_master:
            return refusal("this node is not the master")
        return await self.resume_run(msg["run_id"])

    @handler(FlTrain)
    @fenced
    async def _on_train(self, sender: str, msg: dict) -> BlobReply:
        fields, data = await self.client.train(msg)
        return BlobReply(fields, data)

    @handler(FlEval)
    @fenced
    async def _on_eval(self, sender: str, msg: dict) -> dict:
        return await self.client.evaluate(msg)

    @handler(FlDescribe)
    @fenced
    async def _on_describe(self, sender: str, msg: dict) -> dict:
        try:
            return await asyncio.to_thread(self.datasets.describe, msg["dataset"])
        except (KeyError, ValueError) as exc:  # no such dataset here; a folder that is gone (DatasetError)
            return refusal(cut(exc, 300))

    @handler(FlCommit)
    @fenced
    async def _on_commit(self, sender: str, msg: dict) -> dict:
        # the weights are checked and hashed off the event loop (a model can be large)
        await asyncio.to_thread(self.registry.put_raw, msg["meta"], msg["data"])
        if sender != self.ctx.master_id or not self.ctx.accepts(msg["term"]):
            # a new master came meanwhile and may have asked for our runs: this round must not count now
            return refusal("the master or its term changed while the version was stored")
        evaluated = self._evaluated(msg["run"]["run_id"])
        if self.runs.accept_replica(msg["run"]):
            self._publish_replica(msg["run"], "round", evaluated)
        return self._held(msg["run"])

    @handler(FlState)
    @fenced
    async def _on_state(self, sender: str, msg: dict) -> None:
        evaluated = self._evaluated(msg["run"]["run_id"])
        if self.runs.accept_replica(msg["run"]):
            self._publish_replica(msg["run"], None, evaluated)
        return self._held(msg["run"])

    def _held(self, run: dict) -> dict:
        """A replica's answer (run_sync.py, rule 2): whether it now holds this state."""
        try:
            mine = self.runs.get(run["run_id"])
        except LookupError:
            return {"held": False}
        return {"held": digest_of(mine.to_dict()) == digest_of(run)}

    @handler(FlSync)
    @fenced
    async def _on_sync(self, sender: str, msg: dict) -> dict:
        return {"runs": [digest_of(st.to_dict()) for st in self.runs.list()][-MAX_SYNC_RUNS:]}

    @handler(FlPull)
    @fenced
    async def _on_pull(self, sender: str, msg: dict) -> BlobReply | dict:
        st = self.runs.get(msg["run_id"])
        if not st.version:
            return {"run": st.to_dict(), "meta": None}
        meta, raw = self.registry.get_bytes(st.config["model"], st.version)
        return BlobReply({"run": st.to_dict(), "meta": meta}, raw)

    # secure aggregation's steps (secure_rounds.py): from the master, in its term; a refused step says why
    @handler(FlSaKeys)
    @fenced
    async def _on_sa_keys(self, sender: str, msg: dict) -> dict:
        return await self._secure_step(self.secure_client.keys, msg["run_id"], msg["round"])

    @handler(FlSaShares)
    @fenced
    async def _on_sa_shares(self, sender: str, msg: dict) -> dict:
        return await self._secure_step(self.secure_client.shares, msg["run_id"], msg["round"], msg["adverts"])

    @handler(FlSaUnmask)
    @fenced
    async def _on_sa_unmask(self, sender: str, msg: dict) -> dict:
        step = self.secure_client.unmask
        return await self._secure_step(
            step, msg["run_id"], msg["round"], msg["survivors"], msg["dropped"], msg["sealed"]
        )

    async def _secure_step(self, fn, *args) -> dict:
        try:
            return await asyncio.to_thread(fn, *args)
        except SecAggError as exc:
            log.info("secure aggregation: refused a step of run %s round %s: %s", args[0][:8], args[1], exc)
            return refusal(cut(exc, 300))

    @handler(FlPhase)
    async def _on_phase(self, sender: str, msg: dict) -> dict | None:
        """Published only for a run this node coordinates, from a node it asked to train: anybody else's
        phase is nothing the UIs should show."""
        entry = self.coordinators.get(msg["run_id"])
        if not self.ctx.is_master or entry is None or entry[1].done() or sender not in entry[0].clients:
            return refusal("no run of this master has asked that node to train")
        self.ctx.publish("fl_phase", node_id=sender, run_id=msg["run_id"], round=msg["round"], phase=msg["phase"])
        return None

    @handler(FlData)
    async def _on_data(self, sender: str, msg: dict) -> dict:
        return await self.receive_data_part(msg["name"], msg["data"], msg["labels"])

    async def receive_data_part(self, name: str, data: bytes, labels: list[str]) -> dict:
        """Keep a dataset part (checked, then written, off the event loop: it may be hundreds of MB)."""
        count = await asyncio.to_thread(self.datasets.receive_part, name, data, labels)
        self.refresh_capabilities()
        return {"name": name, "count": count}

    def command_sets(self) -> list:
        from .commands import DataCommands, ModelCommands, RunCommands

        return [RunCommands(self), ModelCommands(self), DataCommands(self)]
