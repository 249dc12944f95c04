"""A federated run's committed rounds are never lost nor committed twice (training/run_sync.py): the order of
copies of a run's state, the majority a commit needs, and a new master that adopts the newest copy a
majority holds, model version included. The rules on their own, then the real `TrainingService` of two
or three nodes wired through `FakeContext`s (no sockets, no TensorFlow); the simulator checks the same
rules under faults (tests/test_sim.py)."""

from __future__ import annotations

import numpy as np
import pytest
from fake_context import FakeContext

from collab_tui.ml.registry import ModelRegistry
from collab_tui.net.transport import BlobReply, RemoteError
from collab_tui.node.context import PeerView
from collab_tui.training.rounds import RunConfig, RunState
from collab_tui.training.run_sync import CommitTally, SyncTally, digest_of, replaces
from collab_tui.training.service import TrainingService

M, A, B = "e" * 64, "a" * 64, "b" * 64  # the new master, two followers
ARCH = {"name": "small-cnn", "input_shape": [8, 8, 1], "num_classes": 10}
RUN_ID = "0123456789abcdef"


def _state(round_no: int, term: int, status: str = "running", version: str = "") -> dict:
    return {"run_id": RUN_ID, "term": term, "round": round_no, "status": status, "version": version, "history": []}


# ----------------------------------------------------------------------------- the rules
def test_a_newer_term_wins_over_a_higher_round_and_equal_copies_change_nothing():
    assert replaces(None, _state(1, 1))
    assert replaces(_state(5, 2), _state(3, 3))  # rounds 4 and 5 of term 2 were on too few nodes
    assert not replaces(_state(3, 3), _state(5, 2))
    assert replaces(_state(3, 3), _state(4, 3))
    assert not replaces(_state(3, 3), _state(3, 3))
    assert replaces(_state(3, 3), _state(3, 3, "done"))  # the master's next write of the same round


def test_a_commit_needs_a_strict_majority_the_master_included():
    tally = CommitTally(quorum_size=4)
    assert (tally.held, tally.needed, tally.committed) == (1, 3, False)
    tally.ack(A)
    tally.ack(A)  # a repeated confirmation counts once
    assert not tally.committed
    tally.ack(B)
    assert tally.committed and tally.held == 3
    assert CommitTally(quorum_size=1).committed


def test_a_new_master_adopts_the_newest_copy_and_is_synced_only_with_a_majority():
    mine = {RUN_ID: digest_of(_state(1, 2))}
    tally = SyncTally(quorum_size=5, mine=mine)
    tally.reply(A, [digest_of(_state(2, 2))])
    assert not tally.synced  # 2 of 5
    tally.reply(B, [digest_of(_state(3, 1)), {**digest_of(_state(1, 1)), "run_id": "ffffffffffffffff"}])
    assert tally.synced
    assert tally.to_fetch() == [(RUN_ID, A), ("ffffffffffffffff", B)]  # term 2 round 2 beats term 1 round 3


# ----------------------------------------------------------------------------- the service
def _run(version: str, round_no: int, term: int) -> RunState:
    return RunState(
        run_id=RUN_ID,
        config=RunConfig(model="digits", arch=dict(ARCH), rounds=5).validate().__dict__.copy(),
        round=round_no,
        version=version,
        term=term,
        history=[{"round": r, "version": version, "clients": [A], "samples": 10} for r in range(1, round_no + 1)],
    )


def _weights(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 3, 1, 4)).astype(np.float32), np.zeros(4, np.float32)]


def _wire(services: dict[str, TrainingService], down: set[str] = frozenset()) -> None:
    """Each context's requests go to the named node's handlers, as the transport would hand them over."""

    def hook(sender: str):
        async def request(peer: str, msg: dict, timeout: float) -> dict:
            if peer in down:
                raise ConnectionError(f"node {peer[:12]} is not connected")
            reply = await services[peer].ctx.deliver(sender, msg)
            if isinstance(reply, BlobReply):
                return {**reply.fields, "t": "blob", "data": reply.data}
            if reply is not None and reply.get("ok") is False:
                raise RemoteError(reply["error"])
            return reply or {}

        async def request_blob(peer: str, fields: dict, data: bytes, timeout: float) -> dict:
            return await request(peer, {**fields, "t": fields["kind"], "data": data}, timeout)

        return request, request_blob

    for nid, svc in services.items():
        svc.ctx.on_request, svc.ctx.on_request_blob = hook(nid)


@pytest.fixture
def nodes(tmp_path):
    """A new master M (term 4) that holds round 1 of a run, and followers A (round 2, term 3, with that
    round's version) and B (round 1)."""
    services = {}
    for nid in (M, A, B):
        peers = [PeerView(p) for p in (M, A, B) if p != nid]
        ctx = FakeContext(nid, home=tmp_path / nid[0], term=4, master_id=M, is_master=nid == M, peers=peers)
        services[nid] = TrainingService(ctx)
    v1 = ModelRegistry(tmp_path / "old-master").put("digits", _weights(1), ARCH, run=RUN_ID, round=1)
    v2 = ModelRegistry(tmp_path / "old-master").put("digits", _weights(2), ARCH, parent=v1, run=RUN_ID, round=2)
    meta1, raw1 = ModelRegistry(tmp_path / "old-master").get_bytes("digits", v1)
    meta2, raw2 = ModelRegistry(tmp_path / "old-master").get_bytes("digits", v2)
    for nid, (meta, raw, state) in {
        M: (meta1, raw1, _run(v1, 1, 3)),
        A: (meta2, raw2, _run(v2, 2, 3)),
        B: (meta1, raw1, _run(v1, 1, 3)),
    }.items():
        services[nid].registry.put_raw(meta, raw)
        services[nid].runs.commit(state)
    yield services, v2
    for svc in services.values():
        assert svc.client.ml._pool is None


async def test_a_new_master_adopts_the_round_only_a_follower_holds_with_its_version(nodes):
    services, v2 = nodes
    _wire(services)
    master = services[M]
    assert await master.sync()
    got = master.runs.get(RUN_ID)
    assert (got.round, got.version, got.term) == (2, v2, 3)
    assert master.registry.has(v2)  # fetched from A (fl.pull), checked by the registry
    assert master._synced_term == 4


async def test_a_new_master_that_hears_no_majority_resumes_nothing(nodes):
    services, _ = nodes
    _wire(services, down={A, B})
    master = services[M]
    assert not await master.sync()
    assert master.runs.get(RUN_ID).round == 1
    await master._step(None)  # the training loop's step: sync first, then resume
    assert master.coordinators == {}


async def test_a_write_is_committed_only_once_a_majority_confirms_it(nodes):
    services, v2 = nodes
    master = services[M]
    _wire(services, down={A, B})
    st = master.runs.get(RUN_ID)
    st.status, st.term = "stopped", 4  # the master stamps its own writes with its term
    tally = await master.commit_replicated(st, None, wait=0.2)
    assert not tally.committed and tally.held == 1
    _wire(services, down={B})
    tally = await master.commit_replicated(st, None, wait=0.2)
    assert tally.committed and tally.held_by == {A}
    assert services[A].runs.get(RUN_ID).status == "stopped"  # A's copy of term 3 round 2 lost to term 4 round 1
    assert services[A].runs.get(RUN_ID).round == 1  # (here without a sync first: the order alone)


async def test_a_replica_refuses_to_count_a_state_from_an_old_term(nodes):
    services, _ = nodes
    _wire(services)
    services[A].ctx.term = 5  # A moved on to a newer term: M's writes are fenced
    st = services[M].runs.get(RUN_ID)
    assert services[M]._held(st.to_dict()) == {"held": True}
    tally = await services[M].commit_replicated(st, None, wait=0.1)
    assert tally.held_by == {B}
