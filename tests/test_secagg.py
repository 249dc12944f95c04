"""Secure aggregation's sans-IO core (training/secagg.py, secagg_math.py): the sum is FedAvg's, a lone masked
update tells nothing, dropouts are recovered from shares, and every step refuses what the protocol forbids."""

from __future__ import annotations

import numpy as np
import pytest

from collab_tui.ml.strategies import FedAvg
from collab_tui.ml.updates import ClientUpdate
from collab_tui.net import pki
from collab_tui.training import secagg_math as sm
from collab_tui.training.secagg import (
    MIN_CLIENTS,
    ClientRound,
    MasterRound,
    SecAggError,
    sign_with,
    threshold,
    unflatten,
)

RUN, ROUND = "0123456789abcdef", 3
SHAPES = [(40, 30), (30,), (30, 10), (10,)]


def _weights(rng, scale=1.0):
    return [rng.normal(0, scale, s).astype(np.float32) for s in SHAPES]


def _clients(n: int):
    out = []
    for _ in range(n):
        key = pki.new_key()
        spki, sign = sign_with(key)
        out.append(ClientRound(RUN, ROUND, pki.node_id_of(key.public_key()), spki, sign))
    return sorted(out, key=lambda c: c.node)


def _setup(clients):
    master = MasterRound(RUN, ROUND)
    for c in clients:
        master.add_advert(c.advert.to_wire())
    adverts = [master.adverts[n].to_wire() for n in master.u1()]
    members = {c.node for c in clients}
    for c in clients:
        master.add_shares(c.node, c.share_keys(adverts, members - {c.node}))
    return master


def _run(n=4, drop_before_update=(), drop_at_unmask=(), rng=None):
    rng = rng or np.random.default_rng(0)
    clients = _clients(n)
    master = _setup(clients)
    ref = _weights(rng)
    trained = {c.node: [w + d for w, d in zip(ref, _weights(rng, 0.01))] for c in clients}
    counts = {c.node: int(rng.integers(50, 500)) for c in clients}
    size = sum(int(np.prod(s)) for s in SHAPES)
    u2 = master.u2()
    for c in clients:
        if c.node in drop_before_update:
            continue
        master.add_masked(c.node, c.mask(ref, trained[c.node], counts[c.node], u2), counts[c.node], size)
    for c in clients:
        if c.node in master.masked and c.node not in drop_at_unmask:
            req = master.unmask_request(c.node)
            master.add_answer(c.node, c.unmask(req["survivors"], req["dropped"], req["sealed"]))
    delta, total, dropped = master.finish()
    return clients, master, ref, trained, counts, delta, total, dropped


def test_shamir_threshold():
    secret = bytes(range(32))
    shares = sm.split(secret, 5, 3)
    assert sm.combine({1: shares[0], 3: shares[2], 5: shares[4]}) == secret
    assert sm.combine({2: shares[1], 4: shares[3], 5: shares[4]}) == secret
    try:  # two shares of a 3-threshold secret give some other field element, or none that fits 32 bytes
        assert sm.combine({1: shares[0], 2: shares[1]}) != secret
    except SecAggError:
        pass


def test_sum_is_fedavg_within_float_tolerance():
    clients, _m, ref, trained, counts, delta, total, dropped = _run(4)
    assert dropped == [] and total == sum(counts.values())
    got = [r.astype(np.float64) + d for r, d in zip(ref, unflatten(delta, [r.astype(np.float64) for r in ref]))]
    updates = [ClientUpdate(c.node, trained[c.node], counts[c.node], "") for c in clients]
    want = FedAvg().aggregate([r.astype(np.float64) for r in ref], updates)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-6)


def test_a_masked_update_is_uncorrelated_with_the_true_one():
    rng = np.random.default_rng(1)
    clients = _clients(3)
    master = _setup(clients)
    ref = _weights(rng)
    c = clients[0]
    trained = [w + d for w, d in zip(ref, _weights(rng, 0.05))]
    words = c.mask(ref, trained, 100, master.u2())
    true = np.concatenate([(t - r).ravel() for t, r in zip(trained, ref)]).astype(np.float64)
    seen = words.view(np.int64).astype(np.float64)  # what the master holds, read as the client's numbers
    assert abs(np.corrcoef(true, seen)[0, 1]) < 0.06
    assert abs(np.corrcoef(true, sm.decode(words, 100))[0, 1]) < 0.06


@pytest.mark.parametrize("n,drop", [(4, 1), (5, 2), (3, 1), (4, 2)])
def test_clients_that_drop_after_their_shares_are_recovered(n, drop):
    rng = np.random.default_rng(n)
    clients = _clients(n)
    master = _setup(clients)
    ref = _weights(rng)
    trained = {c.node: [w + d for w, d in zip(ref, _weights(rng, 0.01))] for c in clients}
    size = sum(int(np.prod(s)) for s in SHAPES)
    gone = {c.node for c in clients[-drop:]}
    live = [c for c in clients if c.node not in gone]
    for c in live:
        master.add_masked(c.node, c.mask(ref, trained[c.node], 10, master.u2()), 10, size)
    if len(live) < MIN_CLIENTS:  # fewer than 3 updates: the clients reveal nothing
        req = master.unmask_request(live[0].node)
        with pytest.raises(SecAggError, match="threshold"):
            live[0].unmask(req["survivors"], req["dropped"], req["sealed"])
        with pytest.raises(SecAggError, match="needs 3"):
            master.finish()
        return
    for c in live:
        req = master.unmask_request(c.node)
        master.add_answer(c.node, c.unmask(req["survivors"], req["dropped"], req["sealed"]))
    delta, total, dropped = master.finish()
    assert sorted(dropped) == sorted(gone) and total == 10 * len(live)
    want = np.mean([np.concatenate([(t - r).ravel() for t, r in zip(trained[c.node], ref)]) for c in live], axis=0)
    np.testing.assert_allclose(delta, want, atol=1e-6)


def test_survivors_silent_at_unmask_are_tolerated_down_to_the_threshold():
    rng = np.random.default_rng(4)
    clients = _clients(5)
    master = _setup(clients)
    ref = _weights(rng)
    size = sum(int(np.prod(s)) for s in SHAPES)
    for c in clients:
        master.add_masked(c.node, c.mask(ref, [w + 0.01 for w in ref], 7, master.u2()), 7, size)
    assert threshold(5) == 3
    for c in clients[:2]:  # two answers: every secret is one share short
        req = master.unmask_request(c.node)
        master.add_answer(c.node, c.unmask(req["survivors"], req["dropped"], req["sealed"]))
    with pytest.raises(SecAggError, match="3 are needed"):
        master.finish()
    req = master.unmask_request(clients[2].node)
    master.add_answer(clients[2].node, clients[2].unmask(req["survivors"], req["dropped"], req["sealed"]))
    delta, total, dropped = master.finish()
    assert dropped == [] and total == 35
    np.testing.assert_allclose(delta, 0.01, atol=1e-6)


def test_client_refuses_what_the_protocol_forbids():
    rng = np.random.default_rng(2)
    clients = _clients(4)
    master = _setup(clients)
    ref = _weights(rng)
    c = clients[0]
    u2 = master.u2()
    with pytest.raises(SecAggError, match="already made"):
        c.share_keys([master.adverts[n].to_wire() for n in master.u1()], set(u2))
    words = c.mask(ref, ref, 5, u2)
    assert words.dtype == np.uint64
    with pytest.raises(SecAggError, match="already masked"):  # two maskings would give the difference away
        c.mask(ref, ref, 5, u2)
    req = master.unmask_request(c.node)
    alive = req["survivors"] + [u for u in u2 if u != c.node][:2]  # the master pretends others survived
    with pytest.raises(SecAggError, match="split"):
        c.unmask(sorted(set(alive)), req["dropped"], req["sealed"])
    few = [c.node]
    with pytest.raises(SecAggError, match="fewer than the threshold"):
        c.unmask(few, [u for u in u2 if u != c.node], req["sealed"])
    with pytest.raises(SecAggError, match="listed as dropped"):
        c.unmask([u for u in u2 if u != c.node], [c.node], req["sealed"])
    out = c.unmask(u2, [], req["sealed"])
    assert {d["kind"] for d in out} == {"b"} and len(out) == 4
    with pytest.raises(SecAggError, match="already unmasked"):  # a second split would give both shares of one node
        c.unmask(u2[:3], u2[3:], req["sealed"])


def test_keys_are_checked():
    clients = _clients(3)
    master = MasterRound(RUN, ROUND)
    for c in clients:
        master.add_advert(c.advert.to_wire())
    adverts = [master.adverts[n].to_wire() for n in master.u1()]
    me, other = clients[0], clients[1]
    members = {c.node for c in clients}
    forged = [dict(a) for a in adverts]
    victim = next(a for a in forged if a["node"] == other.node)
    victim["s_pk"] = sm.public_bytes(sm.new_key()).hex()  # the master swaps a key in
    with pytest.raises(SecAggError, match="bad signature"):
        me.share_keys(forged, members)
    with pytest.raises(SecAggError, match="not a member"):
        me.share_keys(adverts, members - {other.node})
    stranger = _clients(1)[0]
    with pytest.raises(SecAggError, match="not signed by that node"):
        bad = stranger.advert.to_wire() | {"node": other.node}
        me.share_keys([a for a in adverts if a["node"] != other.node] + [bad], members)
    two = [a for a in adverts if a["node"] != other.node]
    with pytest.raises(SecAggError, match="at least 3"):
        me.share_keys(two, members)
    with pytest.raises(SecAggError):
        master.add_advert(victim)


def test_a_bad_share_is_caught_not_aggregated():
    rng = np.random.default_rng(3)
    clients = _clients(3)
    master = _setup(clients)
    ref = _weights(rng)
    size = sum(int(np.prod(s)) for s in SHAPES)
    for c in clients:
        master.add_masked(c.node, c.mask(ref, ref, 5, master.u2()), 5, size)
    for c in clients:
        req = master.unmask_request(c.node)
        answer = c.unmask(req["survivors"], req["dropped"], req["sealed"])
        if c is clients[0]:
            answer = [d | {"share": bytes(sm.SHARE_BYTES).hex()} for d in answer]
        master.add_answer(c.node, answer)
    with pytest.raises(SecAggError, match="bad share"):
        master.finish()


def test_fixed_point_refuses_overflow():
    with pytest.raises(SecAggError, match="fixed-point range"):
        sm.encode(np.array([1e9]), 10_000, 4)
    words = sm.encode(np.array([0.5, -0.25, 1e-3]), 8, 3)
    np.testing.assert_allclose(sm.decode(words, 8), [0.5, -0.25, 1e-3], atol=1e-7)
