"""The master's driver of one federated run (a thin asyncio loop around `rounds.py`).

Sync mode, per round: select clients, send each the global weights (`fl.train`), collect updates
until the quorum-plus-deadline rule closes the round, screen and aggregate, store the new version
(content-addressed, with lineage), write the run state, and replicate version + state to every peer
beside the next round's fits: the round is committed (and reported) once a majority holds it, and the next
round is not stored before that (run_sync.py, rule 2). Only a master that sees a majority may commit
(partition guard); a master that loses its role stops, and the next master adopts the newest copy a
majority holds (rule 3).

Async (buffered) mode: every client trains continuously; whenever K updates have arrived they are
aggregated with a staleness discount (by how many versions each is behind) into a new version.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import numpy as np

from ..ml.updates import ClientUpdate, UpdateRejected, from_bytes, to_bytes, validate_update
from .messages import MAX_ERROR, check_entry, check_eval
from .rounds import RoundTracker, RunConfig, RunState, aggregate, cut, select_clients
from .rounds_events import RoundFailed, RoundReady, RoundWaiting
from .secagg import SecAggError

AGGREGATE = "(secure sum)"  # the name a secure round's aggregate is checked under

log = logging.getLogger("collab.training")


REPLICATE_WAIT = 10.0  # seconds the end of a run has to reach a majority


class RunStopped(Exception):
    pass


class RunCoordinator:
    def __init__(self, svc, state: RunState) -> None:
        self.svc = svc
        self.ctx = svc.ctx
        self.state = state
        self.term = self.ctx.term  # the master's term this coordinator works in (`_reigns`)
        self.cfg = RunConfig.from_dict(state.config)
        self.strategy = self.cfg.make_strategy()
        if state.strategy_state and hasattr(self.strategy, "load_state_dict"):
            self.strategy.load_state_dict(_decode_state(state.strategy_state))
        self.stop_requested = False
        self.rng = random.Random(self.cfg.seed + state.round)
        self.version_index: dict[str, int] = {}
        self.clients: set[str] = set()  # every node this run has asked to train (its fl.phase is taken)
        self._evals: dict[str, tuple[dict, float]] = {}  # evaluations started: key -> (round entry, when)
        self._eval_warned = False
        self._replicating: asyncio.Task | None = None  # the last round's replication, until a majority holds it

    # ----------------------------------------------------------------- helpers
    def _reigns(self) -> bool:
        """Still the master, in the term this coordinator started in: a master whose term changed (it
        re-asserted, or won a tie) first adopts the newest copies again (run_sync.py, rule 3), then the run
        resumes under a new coordinator."""
        return self.ctx.is_master and self.ctx.term == self.term

    def _check_role(self) -> None:
        if not self._reigns():
            raise RunStopped("this node is no longer the master in the term this run resumed in")
        if self.stop_requested:
            raise RunStopped("stopped by the operator")

    def _check_master(self) -> None:
        """The check between tries to replicate a round: an operator's stop does not abandon a stored round."""
        if not self._reigns():
            raise RunStopped("this node is no longer the master in the term this run resumed in")

    async def _settle(self) -> None:
        """Wait until the last stored round is on a majority (RunStopped if this node stops being master)."""
        task, self._replicating = self._replicating, None
        if task is not None:
            await task

    async def _replicate(self, snapshot: RunState, version: str, entry: dict) -> None:
        t0 = time.monotonic()
        tally = await self.svc.commit_replicated(snapshot, version, check=self._check_master)
        entry["timing"] = {**entry.get("timing", {}), "replicate": round(time.monotonic() - t0, 4)}
        entry["replicas"] = tally.held
        self.svc.publish(self.state, "round", **entry)

    async def _wait_quorum(self) -> None:
        while not self.ctx.can_commit():
            self._check_role()
            self.svc.publish(self.state, "waiting", reason="no majority of the cluster is visible")
            await asyncio.sleep(0.5)

    async def _privacy(self, entry: dict, clients: int, params: int) -> None:
        """With differential privacy: the epsilon spent by the end of this round on the entry, and the swamp
        warning (once per run) when this round's clients are too few for the noise."""
        from .privacy import DEFAULT_DELTA, spent, swamp_warning

        cfg, st = self.cfg, self.state
        eps = await asyncio.to_thread(spent, cfg.dp_noise, entry["round"], DEFAULT_DELTA)
        entry["privacy"] = {"epsilon": round(eps, 4), "delta": DEFAULT_DELTA, "rounds": entry["round"]}
        warning = swamp_warning(cfg.dp_noise, cfg.dp_clip, clients, params)
        if warning and st.warn(warning):
            log.warning("run %s, round %d: %s", st.run_id[:8], entry["round"], warning)
            self.svc.publish(st, "warning", text=warning)

    async def _commit(self, weights, contributors: list[str], entry: dict) -> None:
        await self._settle()  # the previous round is on a majority before this one is stored
        await self._wait_quorum()
        st = self.state
        if self.cfg.dp_noise > 0:
            await self._privacy(entry, len(contributors), int(sum(w.size for w in weights)))
        await self._attach_evals()  # the previous versions' evaluations go into this commit
        t_store = time.monotonic()
        entry = check_entry(entry)  # what every replica checks: refused here, before anything is stored
        version = self.svc.registry.put(
            self.cfg.model,
            weights,
            self.cfg.arch,
            parent=st.version or None,
            run=st.run_id,
            round=entry["round"],
            contributors=contributors,
            metrics=entry.get("metrics", {}),
            extra={
                "dp": {"clip": self.cfg.dp_clip, "noise": self.cfg.dp_noise, **entry.get("privacy", {})}
                if self.cfg.dp_noise
                else None,
                "strategy": self.cfg.strategy,
                "mode": self.cfg.mode,
                **({"secure": True} if self.cfg.secure else {}),
                **({"labels": list(self.cfg.labels)} if self.cfg.labels else {}),
            },
        )
        self.version_index[version] = entry["round"]
        entry["version"] = version
        st.round, st.version, st.term = entry["round"], version, self.term
        st.history.append(entry)
        entry = st.history[-1]
        if hasattr(self.strategy, "state_dict"):
            st.strategy_state = _encode_state(self.strategy.state_dict())
        self.svc.runs.commit(st)
        entry["timing"] = {**entry.get("timing", {}), "store": round(time.monotonic() - t_store, 4)}
        if self.cfg.eval_dataset:  # in the ML process's own thread, beside the next round's fits
            await self._start_eval(entry, weights)
        snapshot = RunState.from_dict(st.to_dict())  # a deep copy: the next round goes on with `st`
        self._replicating = asyncio.get_running_loop().create_task(self._replicate(snapshot, version, entry))

    async def _start_eval(self, entry: dict, weights) -> None:
        key = f"{self.state.run_id}:{entry['round']}"
        try:
            await self.svc.start_evaluation(key, self.cfg, weights, self.cfg.eval_dataset)
            self._evals[key] = (entry, time.monotonic())
        except Exception as exc:  # noqa: BLE001 - told once; never fails the run
            self._eval_failed(exc)

    def _eval_failed(self, exc: Exception) -> None:
        """Told the operator once per coordinator (the first failure says why); the rounds go on."""
        if self._eval_warned:
            log.debug("run %s: server evaluation failed again: %s", self.state.run_id[:8], exc)
            return
        self._eval_warned = True
        text = cut(f"server evaluation on {self.cfg.eval_dataset!r} failed: {type(exc).__name__}: {exc}", 300)
        if self.state.warn(text):
            log.warning("run %s: %s", self.state.run_id[:8], text)
            self.svc.publish(self.state, "warning", text=text)

    async def _attach_evals(self) -> None:
        """Collect the server evaluations started at earlier commits (done during this round's fits) onto
        their round entries, before the state is committed; each is published for the UIs as it lands."""
        pending, self._evals = self._evals, {}
        for key, (entry, t0) in pending.items():
            try:
                got = await self.svc.evaluation_result(key)
                ev = check_eval({"eval": got})
            except Exception as exc:  # noqa: BLE001 - the ML process restarted, the dataset went away, ...
                self._eval_failed(exc)
                continue
            entry["server_eval"] = ev
            own = float(got.get("seconds", time.monotonic() - t0))  # its own time, beside the fits
            entry["timing"] = {**entry.get("timing", {}), "server_eval": round(own, 4)}
            self.svc.publish(self.state, "server_eval", round=entry["round"], version=entry["version"], server_eval=ev)

    # ----------------------------------------------------------------- sync rounds
    async def run(self) -> None:
        st = self.state
        try:
            if self.cfg.mode == "async":
                await self._run_async()
            else:
                while st.round < self.cfg.rounds:
                    self._check_role()
                    await self._one_round(st.round + 1)
            await self._settle()
            await self._attach_evals()
            await self._final_eval()
            st.status = "done"
        except RunStopped as exc:
            if self.stop_requested:
                st.status = "stopped"
            log.info("run %s paused at round %d: %s", st.run_id[:8], st.round, exc)
            if not self._reigns():
                if self._replicating is not None:
                    self._replicating.cancel()
                return  # the new master resumes from the last committed round
        except Exception as exc:
            log.exception("run %s failed", st.run_id[:8])
            st.status, st.error = "failed", cut(exc, MAX_ERROR)
        try:  # the last round is on a majority before the run's end is written (its replicas name its version)
            await self._settle()
        except RunStopped:
            return
        st.term = max(st.term, self.term)
        self.svc.runs.commit(st)
        try:
            tally = await self.svc.commit_replicated(st, None, check=self._check_master, wait=REPLICATE_WAIT)
        except RunStopped:
            return  # no longer the master: the next one goes on from the copy a majority holds
        if not tally.committed:  # a next master would go on from the copy a majority holds (running)
            log.warning(
                "run %s: its end (%s) is held by %d of %d nodes",
                st.run_id[:8],
                st.status,
                tally.held,
                tally.quorum_size,
            )
        self.svc.publish(st, st.status)

    async def _one_round(self, r: int) -> None:
        cfg, st = self.cfg, self.state
        failures = 0
        while True:
            candidates = self.svc.train_candidates(cfg.dataset)
            if len(candidates) < cfg.min_clients:
                self.svc.publish(st, "waiting", reason=f"{len(candidates)} client(s) available, need {cfg.min_clients}")
                await asyncio.sleep(0.5)
                self._check_role()
                continue
            selected = select_clients(candidates, cfg.fraction, cfg.min_clients, self.rng)
            self.clients.update(selected)
            t0 = time.monotonic()
            secure, need = None, cfg.min_clients
            if cfg.secure:
                try:
                    secure = await self.svc.secure_master.setup(st.run_id, r, selected)
                except SecAggError as exc:
                    failures += 1
                    log.warning("round %d: secure aggregation could not start (%s); retrying", r, exc)
                    self.svc.publish(st, "round_failed", round=r, reason=cut(exc))
                    if failures >= 3:
                        raise RuntimeError(f"round {r}: secure aggregation could not start 3 times: {exc}") from None
                    await asyncio.sleep(0.5)
                    self._check_role()
                    continue
                selected, need = secure.participants, max(need, secure.needed())
            left_out = secure.left_out if secure else {}  # no keys or shares: recorded as a dropped client is
            tracker = RoundTracker(r, selected + sorted(left_out), t0, cfg.round_timeout, need)
            for node, why in left_out.items():
                tracker.drop(node, why)
            _, weights = self.svc.registry.get(cfg.model, st.version)
            payload = to_bytes(weights)
            self.svc.publish(st, "round_started", round=r, clients=selected)
            parts = secure.participants if secure else None
            tasks = {asyncio.ensure_future(self.svc.client_train(n, st, cfg, r, payload, parts)): n for n in selected}
            bytes_moved = 0
            evals = []
            while isinstance(verdict := tracker.decide(time.monotonic()), RoundWaiting):
                done, _ = await asyncio.wait(
                    list(tasks),
                    timeout=max(0.01, tracker.deadline - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in done:
                    node = tasks.pop(task)
                    try:
                        upd, nbytes, ev = task.result()
                        tracker.add(upd)
                        bytes_moved += nbytes
                        if ev:
                            evals.append(ev)
                    except Exception as exc:
                        tracker.drop(node, f"{type(exc).__name__}: {exc}")
                self._check_role()
            for task in tasks:
                task.cancel()
            match verdict:
                case RoundFailed(valid=valid, needed=needed, stragglers=stragglers):
                    failures += 1
                    log.warning("round %d failed (%d/%d valid updates); retrying", r, valid, needed)
                    self.svc.publish(st, "round_failed", round=r, stragglers=stragglers)
                    if failures >= 3:
                        raise RuntimeError(f"round {r} failed 3 times: {stragglers}")
                    continue
                case RoundReady(stragglers=stragglers):
                    pass  # aggregated below
            updates = list(tracker.updates.values())
            t_agg = time.monotonic()
            if secure:
                new, kept, rejected = await self._secure_aggregate(secure, weights, updates)
            else:
                new, kept, rejected = aggregate(self.strategy, weights, updates, cfg)
            for u in updates:
                st.credit(u.node_id, u.node_id not in rejected, u.num_examples)
            if new is None:
                failures += 1
                self.svc.publish(st, "round_failed", round=r, rejected=rejected)
                if failures >= 3:
                    raise RuntimeError(f"round {r}: every update was rejected: {rejected}")
                continue
            fit_max = max((u.metrics.get("fit_seconds", 0.0) for u in kept), default=0.0)
            entry = {
                "round": r,
                "clients": [u.node_id for u in kept],
                "stragglers": stragglers,
                "rejected": rejected,
                "samples": sum(u.num_examples for u in kept),
                "bytes": bytes_moved,
                "wall_seconds": round(time.monotonic() - t0, 3),
                "fit_seconds_max": round(fit_max, 3),
                "metrics": _weighted_fit_metrics(kept),
                "timing": {"aggregate": round(time.monotonic() - t_agg, 4)},
            }
            if secure:
                entry["secure"] = secure.record()
            if st.history and (ev := _weighted_eval(evals)):
                st.history[-1]["client_eval"] = ev
            await self._commit(new, [u.node_id for u in kept], entry)
            return

    async def _secure_aggregate(self, secure, weights, updates: list[ClientUpdate]):
        """Unmask the sum of a secure round's updates and apply the strategy to it as one update: the master
        never holds a client's own update, so the checks that need one (norm outliers) cannot run; the sum is
        checked as an update is (finite, its delta norm within bounds)."""
        from .secagg import unflatten

        size = int(sum(w.size for w in weights))
        try:
            delta, n = await self.svc.secure_master.aggregate(secure, updates, size)
        except SecAggError as exc:
            log.warning("round of run %s: secure aggregation failed: %s", self.state.run_id[:8], exc)
            return None, [], {u.node_id: cut(f"secure sum: {exc}") for u in updates}
        mean = [
            np.asarray(w, np.float64) + d
            for w, d in zip(weights, unflatten(delta, [np.asarray(w, np.float64) for w in weights]))
        ]
        total = ClientUpdate(AGGREGATE, [m.astype(w.dtype) for m, w in zip(mean, weights)], n, self.state.version)
        try:
            validate_update(total, weights, max_norm_ratio=self.cfg.max_norm_ratio)
        except UpdateRejected as exc:
            return None, [], {u.node_id: cut(f"secure sum: {exc.reason}") for u in updates}
        return self.strategy.aggregate(weights, [total]), updates, {}

    async def _final_eval(self) -> None:
        st = self.state
        if not st.history:
            return
        if ev := _weighted_eval(await self.svc.collect_evals(st, self.cfg)):
            st.history[-1]["client_eval"] = ev

    # ----------------------------------------------------------------- async buffered mode
    async def _run_async(self) -> None:
        cfg, st = self.cfg, self.state
        buffer: list[ClientUpdate] = []
        inflight: dict[asyncio.Future, str] = {}
        bytes_moved, t0 = 0, time.monotonic()
        if st.version:
            self.version_index.setdefault(st.version, st.round)
        while st.round < cfg.rounds:
            self._check_role()
            busy = set(inflight.values())
            _, weights = self.svc.registry.get(cfg.model, st.version)
            payload = None
            for n in self.svc.train_candidates(cfg.dataset):
                if n not in busy:
                    self.clients.add(n)
                    payload = payload or to_bytes(weights)
                    inflight[asyncio.ensure_future(self.svc.client_train(n, st, cfg, st.round + 1, payload))] = n
            if not inflight:
                await asyncio.sleep(0.5)
                continue
            done, _ = await asyncio.wait(list(inflight), timeout=cfg.round_timeout, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                node = inflight.pop(task)
                try:
                    upd, nbytes, _ = task.result()
                    buffer.append(upd)
                    bytes_moved += nbytes
                except Exception as exc:
                    log.info("async update from %s failed: %s", node[:12], exc)
            if len(buffer) >= cfg.buffer_k:
                new, kept, rejected = aggregate(self.strategy, weights, buffer, cfg, self.version_index, st.round)
                for u in buffer:
                    st.credit(u.node_id, u.node_id not in rejected, u.num_examples)
                buffer = []
                if new is not None:
                    entry = {
                        "round": st.round + 1,
                        "clients": [u.node_id for u in kept],
                        "rejected": rejected,
                        "lags": {u.node_id: u.lag for u in kept},
                        "samples": sum(u.num_examples for u in kept),
                        "bytes": bytes_moved,
                        "wall_seconds": round(time.monotonic() - t0, 3),
                        "metrics": _weighted_fit_metrics(kept),
                        "stragglers": {},
                    }
                    await self._commit(new, [u.node_id for u in kept], entry)
                    bytes_moved, t0 = 0, time.monotonic()
        for task in inflight:
            task.cancel()


def _weighted_fit_metrics(updates: list[ClientUpdate]) -> dict:
    n = sum(u.num_examples for u in updates) or 1
    out = {}
    for key in ("loss", "accuracy"):
        vals = [(u.metrics.get(key), u.num_examples) for u in updates if u.metrics.get(key) is not None]
        if vals:
            out[f"train_{key}"] = round(sum(v * w for v, w in vals) / n, 5)
    return out


def _weighted_eval(evals: list[dict]) -> dict | None:
    """The examples-weighted mean of checked evaluations (messages.Evaluation); None if there is none."""
    n = sum(e["n"] for e in evals)
    if not n:
        return None
    return {
        "accuracy": round(sum(e["accuracy"] * e["n"] for e in evals) / n, 5),
        "loss": round(sum(e["loss"] * e["n"] for e in evals) / n, 5),
        "n": n,
    }


def _encode_state(state: dict) -> dict:
    import base64

    import numpy as np

    out = {}
    for k, v in state.items():
        if isinstance(v, list) and v and isinstance(v[0], np.ndarray):
            out[k] = {"__weights__": base64.b64encode(to_bytes(v)).decode()}
        elif isinstance(v, np.ndarray):
            out[k] = {"__weights__": base64.b64encode(to_bytes([v])).decode(), "single": True}
        else:
            out[k] = v
    return out


def _decode_state(state: dict) -> dict:
    import base64

    out = {}
    for k, v in state.items():
        if isinstance(v, dict) and "__weights__" in v:
            arrays = from_bytes(base64.b64decode(v["__weights__"]))
            out[k] = arrays[0] if v.get("single") else arrays
        else:
            out[k] = v
    return out
