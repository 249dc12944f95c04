"""The redial policy of `PeerTable` (no sockets: dials are recorded, not made)."""

from __future__ import annotations

from types import SimpleNamespace

from collab_tui.node import peers as peers_mod
from collab_tui.node.peers import MAX_ADDRS, MAX_BACKOFF, REDIAL_EVERY, PeerTable


def _table() -> tuple[PeerTable, list[str]]:
    table = PeerTable(SimpleNamespace(addrs=["10.0.0.1:7373"], node_id="me"))
    dialed: list[str] = []
    table._dial_once = lambda addr: addr  # the coroutine a real tick would spawn
    table.spawn = dialed.append
    return table, dialed


def _run(table: PeerTable, dialed: list[str], seconds: float, step: float = 0.01) -> list[float]:
    """Tick for ``seconds``; every dial fails at once (nothing answers). Returns the dial times."""
    times, t = [], 0.0
    while t < seconds:
        before = len(dialed)
        table.dial_due(t)
        times += [t] * (len(dialed) - before)
        table._dialing.clear()  # each recorded dial has ended
        t += step
    return times


def test_a_proven_address_is_redialed_on_a_short_fixed_interval_however_long_it_is_away():
    table, dialed = _table()
    table.propose("10.0.0.2:7373", "peer", proven=True)
    times = _run(table, dialed, 120.0)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) <= REDIAL_EVERY * 1.4 + 0.02  # still every ~0.25 s after two minutes
    assert len(times) > 120 / (REDIAL_EVERY * 1.4) - 2


def test_an_unproven_address_backs_off_and_an_announcement_cannot_make_it_fast():
    table, dialed = _table()
    table.propose("10.0.0.66:7373", "claimed-by-mdns")  # anyone on the LAN can announce this
    times = _run(table, dialed, 60.0)
    assert len(times) < 20 and max(b - a for a, b in zip(times, times[1:])) >= MAX_BACKOFF - 0.02
    now = peers_mod.time.monotonic()
    table._backoff["10.0.0.66:7373"] = (now + MAX_BACKOFF, MAX_BACKOFF)  # a dial just failed
    table.dial_now("claimed-by-mdns")  # an announcement brings the next dial closer, not to now
    next_try, delay = table._backoff["10.0.0.66:7373"]
    assert now < next_try <= peers_mod.time.monotonic() + peers_mod.ANNOUNCED_WITHIN and delay == MAX_BACKOFF


def test_a_hint_does_not_change_who_lives_at_a_proven_address_and_the_table_is_bounded():
    table, _ = _table()
    table.propose("10.0.0.2:7373", "peer", proven=True)
    table.propose("10.0.0.2:7373", "forged")
    assert table.addrs["10.0.0.2:7373"] == "peer"
    table.propose("10.0.0.1:7373", "x")  # our own address
    assert "10.0.0.1:7373" not in table.addrs
    for k in range(MAX_ADDRS + 50):
        table.propose(f"10.9.{k // 250}.{k % 250}:7373", f"n{k}")
    assert len(table.addrs) == MAX_ADDRS
    table.forget_node("peer")  # revoked
    assert "10.0.0.2:7373" not in table.addrs
