"""Secure aggregation through the master's round loop (`training/coordinator.py`, `secure_rounds.py`) with a
fake service: four clients with real keys and real `SecureClient`s, their steps carried as the wire carries
them (each message admitted by its schema, each reply checked by the master), no TensorFlow, no sockets.

The committed versions of a secure run equal those of the same run in the clear, to float tolerance; a
client that dies after its shares is recovered; a client that refuses its keys is left out with why; too
few clients fail the round with a clear reason; strategies that need single updates are refused."""

from __future__ import annotations

import asyncio

import msgspec
import numpy as np
import pytest
from fake_context import FakeContext

from collab_tui.ml.registry import ModelRegistry
from collab_tui.ml.updates import ClientUpdate, from_bytes, to_bytes
from collab_tui.net import pki
from collab_tui.net.transport import RemoteError
from collab_tui.node.context import PeerView
from collab_tui.training.coordinator import RunCoordinator
from collab_tui.training.rounds import RunConfig, RunState
from collab_tui.training.run_sync import CommitTally
from collab_tui.training.runstore import RunStore
from collab_tui.training.secagg import SecAggError
from collab_tui.training.secure_messages import FlSaKeys, FlSaShares, FlSaUnmask
from collab_tui.training.secure_rounds import SecureClient, SecureMaster
from collab_tui.training.service import TrainingService

REF = [np.linspace(-1, 1, 60, dtype=np.float32).reshape(6, 10), np.zeros(10, np.float32)]
RUN = "feedfacecafebeef"
DATA = ("train", "data:default")
STEPS = {0: 0.01, 1: -0.02, 2: 0.03, 3: 0.005}  # client i moves every weight by STEPS[i] * (1 + its index)
COUNTS = {0: 120, 1: 40, 2: 75, 3: 300}
SCHEMAS = {"fl.sa.keys": FlSaKeys, "fl.sa.shares": FlSaShares, "fl.sa.unmask": FlSaUnmask}


def _trained(i: int, ref: list[np.ndarray]) -> list[np.ndarray]:
    return [w + np.float32(STEPS[i]) * (1 + np.arange(w.size, dtype=np.float32).reshape(w.shape) / w.size) for w in ref]


class Node:
    def __init__(self, i: int) -> None:
        self.i, self.key = i, pki.new_key()
        self.id = pki.node_id_of(self.key.public_key())
        self.ctx = FakeContext(self.id)
        self.ctx._key = self.key  # node_signer signs with the key its id is the hash of
        self.secure = SecureClient(self.ctx)
        self.behaviour = "honest"  # or "dies in training", "refuses keys"


class SecureFakeService:
    """What `RunCoordinator` uses of `TrainingService`; node 0 is the master and a client too."""

    def __init__(self, home, n: int = 4) -> None:
        self.nodes = [Node(i) for i in range(n)]
        self.by_id = {nd.id: nd for nd in self.nodes}
        for nd in self.nodes:
            nd.ctx.peer_views = [PeerView(o.id, capabilities=DATA) for o in self.nodes if o is not nd]
        self.ctx = self.nodes[0].ctx
        self.ctx.is_master, self.ctx.term = True, 7
        self.ctx.contributions.add_capabilities(DATA)
        self.ctx.on_request = self._request
        self.secure_client, self.secure_master = self.nodes[0].secure, SecureMaster(self)
        self.registry, self.runs = ModelRegistry(home), RunStore(home)
        self.events: list[tuple[str, dict]] = []
        self.held: dict[int, np.ndarray] = {}  # client -> the last update the master received from it

    train_candidates = TrainingService.train_candidates

    async def _request(self, peer: str, msg: dict, timeout: float) -> dict:
        nd = self.by_id[peer]
        wire = msgspec.json.decode(msgspec.json.encode(msg))  # what crosses the wire: JSON
        m = msgspec.to_builtins(msgspec.convert(wire, SCHEMAS[wire["t"]]))
        if m["t"] == "fl.sa.keys" and nd.behaviour == "refuses keys":
            raise RemoteError("refused: this node is out of entropy")
        try:
            if m["t"] == "fl.sa.keys":
                reply = nd.secure.keys(m["run_id"], m["round"])
            elif m["t"] == "fl.sa.shares":
                reply = nd.secure.shares(m["run_id"], m["round"], m["adverts"])
            else:
                reply = nd.secure.unmask(m["run_id"], m["round"], m["survivors"], m["dropped"], m["sealed"])
        except SecAggError as exc:
            raise RemoteError(str(exc)) from None
        return msgspec.json.decode(msgspec.json.encode(reply))

    def publish(self, st, what, **data):
        self.events.append((what, data))

    async def commit_replicated(self, st, version, check=None, wait=None):
        return CommitTally(1)

    async def client_train(self, node, st, cfg, r, payload, participants=None):
        nd = self.by_id[node]
        if nd.behaviour == "dies in training":
            raise ConnectionError("node went away")
        ref = from_bytes(payload)
        trained, n = _trained(nd.i, ref), COUNTS[nd.i]
        weights = trained
        if cfg.secure:
            weights = from_bytes(nd.secure.mask(st.run_id, r, payload, to_bytes(trained), n, participants))
            self.held[nd.i] = weights[0]
        return ClientUpdate(node, weights, n, st.version, {"loss": 1.0, "accuracy": 0.5}), 100, None

    async def collect_evals(self, st, cfg):
        return []


def _run(svc: SecureFakeService, **cfg) -> RunState:
    config = RunConfig(model="toy", arch={"toy": 1}, round_timeout=10, **cfg).validate()
    v0 = svc.registry.put("toy", REF, {"toy": 1}, round=0)
    st = RunState(run_id=RUN, config=config.__dict__.copy(), version=v0, term=7)
    svc.runs.commit(st)
    return st


async def _finish(svc: SecureFakeService, st: RunState) -> RunState:
    await asyncio.wait_for(RunCoordinator(svc, st).run(), 20)
    return svc.runs.get(RUN)


@pytest.mark.parametrize("strategy", ["fedavg", "fedavgm"])
async def test_a_secure_run_commits_what_the_same_run_in_the_clear_does(tmp_path, strategy):
    plain_svc = SecureFakeService(tmp_path / "plain")
    plain = await _finish(plain_svc, _run(plain_svc, rounds=2, strategy=strategy))
    sec_svc = SecureFakeService(tmp_path / "secure")
    sec = await _finish(sec_svc, _run(sec_svc, rounds=2, strategy=strategy, secure=True))
    assert plain.status == sec.status == "done", (plain.error, sec.error)
    _, want = plain_svc.registry.get("toy", plain.version)
    _, got = sec_svc.registry.get("toy", sec.version)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-6)
    assert np.abs(got[0] - REF[0]).max() > 0.01  # it did move
    for h in sec.history:
        assert h["secure"]["participants"] == 4 and h["secure"]["threshold"] == 3 and h["secure"]["recovered"] == []
        assert h["samples"] == sum(COUNTS.values()) and len(h["clients"]) == 4
    meta, _ = sec_svc.registry.get("toy", sec.version)
    assert meta["extra"]["secure"] is True and "secure" not in plain_svc.registry.get("toy", plain.version)[0]["extra"]
    # what the master held of each client looks nothing like the client's update (whose coordinates rise)
    _, before = sec_svc.registry.get("toy", sec.history[0]["version"])
    for i, words in sec_svc.held.items():
        true = np.concatenate([(t - r).ravel() for t, r in zip(_trained(i, before), before)]).astype(np.float64)
        assert abs(np.corrcoef(true, np.arange(true.size))[0, 1]) > 0.5
        assert abs(np.corrcoef(true, words.view(np.int64).astype(np.float64))[0, 1]) < 0.3


async def test_a_client_that_dies_after_its_shares_is_recovered(tmp_path):
    svc = SecureFakeService(tmp_path)
    svc.nodes[2].behaviour = "dies in training"
    st = await _finish(svc, _run(svc, rounds=1, secure=True))
    assert st.status == "done", st.error
    (h,) = st.history
    assert h["secure"]["recovered"] == [svc.nodes[2].id] and h["secure"]["participants"] == 4
    assert h["stragglers"] == {svc.nodes[2].id: "ConnectionError: node went away"}
    live = [0, 1, 3]
    n = sum(COUNTS[i] for i in live)
    want = [
        sum(COUNTS[i] * t for i, t in ((i, _trained(i, REF)[k].astype(np.float64)) for i in live)) / n for k in range(2)
    ]
    _, got = svc.registry.get("toy", st.version)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-6)


async def test_a_client_that_refuses_its_keys_is_left_out_with_why(tmp_path):
    svc = SecureFakeService(tmp_path)
    svc.nodes[3].behaviour = "refuses keys"
    st = await _finish(svc, _run(svc, rounds=1, secure=True))
    assert st.status == "done", st.error
    (h,) = st.history
    assert h["secure"]["participants"] == 3 and svc.nodes[3].id not in h["clients"]
    assert "out of entropy" in h["stragglers"][svc.nodes[3].id]


async def test_too_few_clients_fail_the_round_with_a_clear_reason(tmp_path):
    svc = SecureFakeService(tmp_path)
    svc.nodes[2].behaviour = svc.nodes[3].behaviour = "refuses keys"
    st = await _finish(svc, _run(svc, rounds=1, secure=True))
    assert st.status == "failed" and "secure aggregation could not start" in st.error
    assert "a secure round needs 3" in st.error


@pytest.mark.parametrize(
    "cfg,why",
    [
        ({"strategy": "fedmedian"}, "needs each client's own update"),
        ({"strategy": "krum"}, "needs each client's own update"),
        ({"strategy": "trimmed-mean"}, "needs each client's own update"),
        ({"mode": "async"}, "sync rounds"),
        ({"compress": True}, "--compress"),
    ],
)
def test_secure_refuses_what_needs_single_updates(cfg, why):
    with pytest.raises(ValueError, match=why):
        RunConfig(secure=True, **cfg).validate()
    assert RunConfig(secure=True).validate().min_clients == 3
