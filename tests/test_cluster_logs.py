"""Cluster-wide logs (issue 14, part 3): the sans-IO parts (bounds, merge order, rate limit, leases, the
reorder buffer, the forwarding path that never blocks), and one 3-node loopback cluster: `logs --cluster`
on a follower returns every node's lines merged by time, `--node` filters, a follow stream gets a line
logged on another node within seconds."""

from __future__ import annotations

import os
import signal
import threading
import time

import msgspec
import pytest

from collab_tui.net.log_flow import (
    NODE_QUEUE,
    Forwarder,
    Leases,
    Limiters,
    Reorder,
    TokenBucket,
    fit,
    level_name,
    level_no,
    marker,
    matches,
    merge,
    wire_line,
)
from collab_tui.net.log_messages import MAX_BATCH, MAX_MSG, LogBatch, LogLines, LogQuery, LogWant
from collab_tui.net.schema import MASTER, Refused, admit, validate
from collab_tui.node.cluster_logs import LEASE

M = "a" * 64


def rec(ts: float, node: str = "n0", seq: int = 1, level: str = "INFO", msg: str = "x") -> dict:
    return {"ts": ts, "node": node, "seq": seq, "level": level, "logger": "t", "msg": msg}


# ------------------------------------------------------------------------------------------- bounds
def test_wire_line_cuts_every_field_to_its_bound_and_passes_the_schema():
    line = wire_line({"ts": 1.5, "level": "INFO" * 10, "logger": "l" * 500, "msg": "m" * 10_000, "seq": -3}, "n1")
    assert len(line["msg"]) == MAX_MSG and line["msg"].endswith("…")
    assert len(line["logger"]) == 100 and len(line["level"]) == 16 and line["seq"] == 0 and line["node"] == "n1"
    validate(LogBatch, {"t": "log.batch", "lines": [line]})


def test_messages_refuse_what_is_over_their_bounds():
    with pytest.raises(Refused):
        validate(LogBatch, {"t": "log.batch", "lines": [rec(1.0)] * (MAX_BATCH + 1)})
    with pytest.raises(Refused):
        validate(LogBatch, {"t": "log.batch", "lines": [rec(1.0, msg="m" * (MAX_MSG + 1))]})
    with pytest.raises(Refused):
        validate(LogQuery, {"t": "log.query", "n": 1001})
    with pytest.raises(Refused):
        validate(LogQuery, {"t": "log.query", "level": "LOUD"})
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"records": [rec(1.0)] * 1001}, LogLines)
    # a want is the master's, in the receiver's term
    assert LogWant.SENDER == MASTER
    with pytest.raises(Refused):
        admit(LogWant, "b" * 64, {"t": "log.want", "term": 3}, M, 3)
    with pytest.raises(Refused):
        admit(LogWant, M, {"t": "log.want", "term": 2}, M, 3)
    assert admit(LogWant, M, {"t": "log.want", "term": 3}, M, 3)["lease"] == 5.0


def test_fit_keeps_the_newest_lines_within_the_byte_budget():
    records = [rec(float(i), seq=i, msg="m" * 100) for i in range(100)]
    kept = fit(records, budget=2000)
    assert kept and kept == records[-len(kept) :] and len(kept) < 20
    assert fit(records) == records


def test_levels():
    assert level_no(None) == 0 and level_no("warning") == 30 and level_name("warn") == "WARNING"
    assert level_name("Level 25") == "INFO"
    with pytest.raises(ValueError):
        level_no("LOUD")
    assert matches(rec(1, level="ERROR"), 30) and not matches(rec(1, level="INFO"), 30)
    assert matches(rec(1, node="n1"), 0, "n1") and not matches(rec(1, node="n1"), 0, "n2")


# ------------------------------------------------------------------------------------------- merge
def test_merge_orders_by_time_then_node_then_sequence():
    a = [rec(1.0, "a", 1), rec(3.0, "a", 2), rec(5.0, "a", 3)]
    b = [rec(2.0, "b", 7), rec(3.0, "b", 8)]
    c = [rec(0.5, "c", 1)]
    out = merge([a, b, c])
    assert [(r["ts"], r["node"]) for r in out] == [
        (0.5, "c"),
        (1.0, "a"),
        (2.0, "b"),
        (3.0, "a"),
        (3.0, "b"),
        (5.0, "a"),
    ]


def test_reorder_releases_lines_of_several_batches_in_time_order_after_the_delay():
    ro = Reorder(delay=0.5, capacity=100)
    ro.add([rec(10.2, "a"), rec(10.4, "a")], now=0.0)
    ro.add([rec(10.1, "b"), rec(10.3, "b")], now=0.2)
    assert ro.take(0.3) == []
    # at 0.5 a's lines are due, but b's earlier line (arrived at 0.2) holds them until it is due too
    assert ro.take(0.5) == []
    out = ro.take(0.7)
    assert [r["ts"] for r in out] == [10.1, 10.2, 10.3, 10.4] and len(ro) == 0


def test_reorder_is_bounded():
    ro = Reorder(delay=0.0, capacity=10)
    ro.add([rec(float(i), seq=i) for i in range(25)], now=0.0)
    assert len(ro) == 10 and ro.dropped == 15
    assert [r["ts"] for r in ro.take(1.0)] == [float(i) for i in range(15, 25)]


# ------------------------------------------------------------------------------------------- rate limits
def test_token_bucket():
    b = TokenBucket(rate=10.0, burst=5.0, now=0.0)
    assert b.take(0.0, 100) == 5 and b.take(0.0, 1) == 0
    assert b.take(0.25, 100) == 2  # 2.5 tokens: whole ones only
    assert not b.allow(0.25) and b.allow(0.35)


def test_limiters_are_per_peer_and_bounded():
    lim = Limiters(rate=1.0, burst=2.0, max_keys=3)
    assert lim.allow("p", 0.0) and lim.allow("p", 0.0) and not lim.allow("p", 0.0)
    assert lim.allow("q", 0.0)
    for i in range(100):
        lim.allow(f"x{i}", 0.0)
    assert len(lim.buckets) <= 4


def test_forwarder_sends_at_most_its_rate_and_drops_the_oldest_with_a_count():
    fw = Forwarder(rate=50.0, burst=50.0, capacity=100, now=0.0)
    for i in range(1000):  # a flood, all at once
        fw.push(rec(float(i), seq=i))
    assert len(fw.queue) == 100 and fw.dropped == 900
    lines, dropped = fw.take(0.0)
    assert len(lines) == 50 and dropped == 900
    assert [r["seq"] for r in lines] == list(range(900, 950))  # the newest survive, oldest first
    lines, dropped = fw.take(0.25)  # 12.5 lines' worth of tokens
    assert len(lines) == 12 and dropped == 0
    sent = 62
    for k in range(2, 41):  # ten seconds: never over the rate (burst + 50 / s)
        lines, _ = fw.take(k * 0.25)
        sent += len(lines)
    assert sent == 100  # the queue emptied, nothing more
    assert marker("n1", 900)["msg"] == "900 lines dropped (over the rate limit)"


def test_forwarder_level_floor_and_batch_bound():
    fw = Forwarder(rate=1e6, burst=1e6, capacity=NODE_QUEUE)
    fw.floor = 30
    fw.push(rec(1.0, level="INFO"))
    fw.push(rec(2.0, level="ERROR"))
    assert [r["level"] for r in fw.queue] == ["ERROR"]
    for i in range(NODE_QUEUE):
        fw.push(rec(float(i), level="ERROR"))
    lines, _ = fw.take(1.0)
    assert len(lines) == MAX_BATCH


def test_the_log_listener_never_blocks_even_from_many_threads():
    fw = Forwarder(capacity=NODE_QUEUE)
    started = time.monotonic()

    def flood():
        for i in range(20_000):
            fw.push(rec(float(i), seq=i))

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert time.monotonic() - started < 20
    assert len(fw.queue) == NODE_QUEUE and fw.dropped == 80_000 - NODE_QUEUE


# ------------------------------------------------------------------------------------------- leases
def test_leases_lapse_on_their_own_and_are_bounded():
    ls = Leases(max_keys=2)
    assert ls.grant("a", 1, now=0.0, lease=5.0) and ls.grant("b", 2, now=0.0, lease=1.0)
    assert not ls.grant("c", 3, now=0.5, lease=5.0)  # full
    assert ls.live(0.9) == {"a": 1, "b": 2}
    assert ls.live(1.0) == {"a": 1}  # b lapsed
    assert ls.grant("a", 9, now=4.0, lease=5.0)  # renewed
    assert ls.live(8.9) == {"a": 9} and ls.live(9.0) == {} and not ls


# ------------------------------------------------------------------------------------------- 3 nodes
@pytest.fixture(scope="module")
def cluster():
    from conftest import three_node_cluster

    yield from three_node_cluster(agreed=True)


def wait_for(pred, timeout: float, what: str, poll: float = 0.2):
    from conftest import wait_for as wait

    return wait(pred, timeout, what, poll)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cluster_logs_across_three_nodes(cluster):
    from collab_tui.node.control import ControlClient

    c = cluster
    names = set(c.names)

    def every_node():
        lines = c.call(0, "logs", n=300, cluster=True, timeout=15)
        return lines if {r["node"] for r in lines} >= names else None

    lines = wait_for(every_node, 30, "lines of all 3 nodes")
    ts = [r["ts"] for r in lines]
    assert ts == sorted(ts), "merged by time"
    assert not any("no log lines" in r["msg"] for r in lines)

    only = c.call(0, "logs", n=50, node="node1", timeout=15)
    assert only and {r["node"] for r in only} == {"node1"}
    warn = c.call(0, "logs", n=50, cluster=True, level="WARNING", timeout=15)
    assert all(r["level"] in ("WARNING", "ERROR", "CRITICAL") for r in warn)

    # follow on node0 (a follower); a line logged on another node comes through the master within seconds
    got: list[dict] = []
    errors: list[BaseException] = []
    client = ControlClient(c.homes[0], timeout=30)

    def read():
        try:
            for item in client.stream("logs_follow", n=0, cluster=True):
                got.append(item)
        except BaseException as exc:  # noqa: BLE001 - the stream ends when the test closes it
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(i.get("keepalive") for i in got), 10, "the stream to run (a keepalive)")
        time.sleep(2.5)  # the relay and want leases are in place
        pid = c.procs[1].pid
        os.kill(pid, signal.SIGSTOP)  # node1 goes quiet: the others log it as suspect, then alive again
        try:
            time.sleep(0.9)
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(
            lambda: any(i.get("node") in ("node1", "node2") and "msg" in i for i in got),
            10,
            "a line of another node on node0's follow stream",
        )
    finally:
        client.close()
        reader.join(timeout=10)
    lines = [i for i in got if "msg" in i]
    assert [r["ts"] for r in lines] == sorted(r["ts"] for r in lines), "merged by time"
    wait_for(lambda: c.call(0, "status")["peers_alive"] == 2, 10, "node1 alive again")


# ------------------------------------------------------------------------------------------- the driver, in process
class _Net:
    """Two or more `ClusterLogs` wired together: every send is admitted against its schema, as the node does."""

    def __init__(self) -> None:
        self.nodes: dict[str, object] = {}
        self.sent: list[tuple[str, str, dict]] = []


class _Peers:
    def __init__(self, net: _Net, me: str) -> None:
        self.net, self.me, self.conns = net, me, {}

    async def send(self, peer_id: str, msg: dict) -> bool:
        from collab_tui.net.log_messages import LOG_MESSAGES

        self.net.sent.append((self.me, peer_id, msg))
        target = self.net.nodes[peer_id]
        schema, handler = {s.type_name(): (s, h) for s, h in target.cluster_logs.handlers()}[msg["t"]]
        clean = admit(schema, self.me, msg, target.election.master_id, target.election.term)
        assert schema in LOG_MESSAGES
        await handler(type("Conn", (), {"peer_id": self.me})(), clean)
        return True


class _FakeNode:
    def __init__(self, net: _Net, node_id: str, name: str, master: str) -> None:
        import asyncio
        from types import SimpleNamespace

        from collab_tui.logs import RingHandler
        from collab_tui.node.cluster_logs import ClusterLogs

        self.node_id, self.name = node_id, name
        self.election = SimpleNamespace(master_id=master, term=4)
        self.is_master = master == node_id
        self.peers = _Peers(net, node_id)
        self._stop = asyncio.Event()
        self.ring = RingHandler(node=name)
        self.cluster_logs = ClusterLogs(self, self.ring)
        self.cluster_logs._ensure_task = lambda: None  # no background loop: the test steps the driver itself
        net.nodes[node_id] = self

    @property
    def membership(self):
        from types import SimpleNamespace

        net = self.peers.net
        others = {i for i in net.nodes if i != self.node_id}
        return SimpleNamespace(
            alive_ids=lambda: others, get=lambda i: SimpleNamespace(name=net.nodes[i].name) if i in net.nodes else None
        )


def _emit(node: _FakeNode, msg: str, level=20) -> None:
    import logging

    node.ring.emit(logging.LogRecord("collab.test", level, __file__, 1, msg, None, None))


async def test_follow_relays_a_follower_nodes_lines_through_the_master_in_time_order():
    import asyncio

    net = _Net()
    m = _FakeNode(net, "m" * 64, "master", "m" * 64)
    f = _FakeNode(net, "f" * 64, "follower", "m" * 64)
    stream = f.cluster_logs.follow(n=0)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)

    async def tick():
        for node in (f, m):
            node.cluster_logs.step(time.monotonic())
        for _ in range(3):
            await asyncio.sleep(0)

    await tick()  # f: log.follow to m
    await tick()  # m: log.want to f (and to itself)
    kinds = [msg["t"] for _, _, msg in net.sent]
    assert "log.follow" in kinds and "log.want" in kinds
    assert f.cluster_logs.want_until > time.monotonic() and m.cluster_logs.want_until > time.monotonic()
    _emit(f, "from the follower")
    _emit(m, "from the master")
    for _ in range(4):
        await tick()
        await asyncio.sleep(0.2)
    got = await asyncio.wait_for(first, 5)
    assert got["msg"] == "from the follower" and got["node"] == "follower"  # named by the master
    nxt = await asyncio.wait_for(stream.__anext__(), 5)
    assert nxt["msg"] == "from the master" and nxt["node"] == "master"
    batch = next(msg for _, _, msg in net.sent if msg["t"] == "log.batch")
    assert len(batch["lines"]) <= MAX_BATCH
    await stream.aclose()
    assert not f.cluster_logs.subs
    # the client went away: nothing renews the leases, they lapse, and every part stops (its listener too)
    later = time.monotonic() + LEASE + 0.1
    assert not m.cluster_logs.step(later) and not m.cluster_logs.relays
    assert not f.cluster_logs.step(later)
    f.cluster_logs._listen(False)  # (what the loop does when it stops)
    assert not f.ring.listeners and not m.cluster_logs.outboxes


async def test_a_query_merges_every_nodes_lines_by_time_and_names_them():
    net = _Net()
    m = _FakeNode(net, "m" * 64, "master", "m" * 64)
    _FakeNode(net, "f" * 64, "follower", "m" * 64)

    class Conn:
        def __init__(self, target):
            self.target = target

        async def request(self, msg, timeout):
            schema, handler = {s.type_name(): (s, h) for s, h in self.target.cluster_logs.handlers()}[msg["t"]]
            clean = admit(schema, m.node_id, msg, self.target.election.master_id, 4)
            return {"t": "re", "ok": True, **await handler(type("C", (), {"peer_id": m.node_id})(), clean)}

    f = net.nodes["f" * 64]
    m.peers.conns = {f.node_id: Conn(f)}
    for i in range(3):
        _emit(f, f"f{i}")
        _emit(m, f"m{i}", level=40)
    lines = await m.cluster_logs.query(n=100)
    assert [r["ts"] for r in lines] == sorted(r["ts"] for r in lines)
    assert {r["node"] for r in lines} == {"master", "follower"} and len(lines) == 6
    assert [r["msg"] for r in await m.cluster_logs.query(n=2, node="follower")] == ["f1", "f2"]
    assert {r["msg"] for r in await m.cluster_logs.query(n=10, level="ERROR")} == {"m0", "m1", "m2"}


async def test_the_logs_screen_toggles_cluster_wide_lines():
    from test_tui_snapshots import make_app, settle

    app = make_app()
    asked: list = []
    stream = app.client._stream
    app.client._stream = lambda request: (asked.append(request), stream(request))[1]
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, lambda: app.connected and app.live.nodes, "connected")
        await app.switch_mode("logs")
        await settle(pilot, lambda: len(app.screen.query_one("#log-view").lines) == 7, "local lines")
        await pilot.press("c")
        await settle(pilot, lambda: any(getattr(r, "cluster", False) for r in asked), "a cluster stream")
        await settle(pilot, lambda: len(app.screen.query_one("#log-view").lines) == 7, "cluster lines")
        assert app.screen.cluster and app.screen.sub_title == "cluster-wide"
        await pilot.press("c")
        assert not app.screen.cluster
