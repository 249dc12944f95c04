"""The narrow interface between the node and its services (`node/context.py`), and the composition root
(`compose.py`): handler tables, the one fencing decorator (refusal + rate-limited log line, over a real
connection too), heartbeat contributions instead of node attributes, and a composed node whose services
reach it only through their contexts."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from fake_context import FakeContext

from collab_tui.config import NodeConfig
from collab_tui.net.schema import MASTER as MASTER_ONLY
from collab_tui.net.schema import PeerMessage, Term
from collab_tui.net.transport import Connection, RemoteError
from collab_tui.node import context as context_mod
from collab_tui.node.context import (
    Contributions,
    NodeContext,
    PeerView,
    fenced,
    handler,
    handler_table,
    register_handlers,
)

MASTER = "m" * 64
MEMBER = "e" * 64


class XPlain(PeerMessage, tag="x.plain"):
    n: int = 0


class XCommit(PeerMessage, tag="x.commit"):
    SENDER = MASTER_ONLY
    term: Term


class XState(PeerMessage, tag="x.state"):
    SENDER = MASTER_ONLY
    term: Term


class _Service:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.seen: list[tuple[str, str]] = []
        register_handlers(ctx, self)

    @handler(XPlain)
    async def _plain(self, sender: str, msg: dict):
        self.seen.append((msg["t"], sender))
        return {"echo": msg.get("n")}

    @handler(XCommit, XState)
    @fenced
    async def _fenced(self, sender: str, msg: dict):
        self.seen.append((msg["t"], sender))
        return {"done": True}


# ----------------------------------------------------------------------------- tables
def test_handler_table_collects_the_marked_methods_and_refuses_duplicates():
    ctx = FakeContext()
    svc = _Service(ctx)
    assert set(ctx.handlers) == {"x.plain", "x.commit", "x.state"}
    assert handler_table(svc)["x.plain"] == svc._plain
    with pytest.raises(ValueError, match="already has a handler"):
        register_handlers(ctx, svc)

    class Twice:
        @handler(XPlain)
        async def a(self, sender, msg): ...

        @handler(XPlain)
        async def b(self, sender, msg): ...

    with pytest.raises(ValueError, match="two handlers for 'x.plain'"):
        handler_table(Twice())
    with pytest.raises(TypeError, match="PeerMessage types"):
        handler("x.plain")


async def test_messages_are_admitted_against_their_schema_and_sender_rule():
    ctx = FakeContext(term=5, master_id=MASTER)
    svc = _Service(ctx)
    assert await ctx.deliver(MEMBER, {"t": "x.plain", "n": 3, "extra": "x" * 1000}) == {"echo": 3}
    reply = await ctx.deliver(MEMBER, {"t": "x.plain", "n": "3"})
    assert reply["ok"] is False and "field 'n'" in reply["error"]
    reply = await ctx.deliver(MEMBER, {"t": "x.commit", "term": 5})  # a member is not the master
    assert reply["ok"] is False and "not this node's master" in reply["error"]
    reply = await ctx.deliver(MASTER, {"t": "x.commit", "term": 4})  # the master, in another term
    assert reply["ok"] is False and "term 4 is not this node's term 5" in reply["error"]
    assert await ctx.deliver(MASTER, {"t": "x.commit", "term": 5}) == {"done": True}
    assert svc.seen == [("x.plain", MEMBER), ("x.commit", MASTER)]


# ----------------------------------------------------------------------------- fencing
async def test_fenced_refuses_stale_terms_with_one_line_per_interval(caplog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(context_mod.time, "monotonic", lambda: now[0])
    ctx = FakeContext(term=5, master_id=MASTER)
    svc = _Service(ctx)
    local = handler_table(svc)  # a service's delivery to itself: not admitted by the node, fenced all the same
    assert await local["x.commit"](MASTER, {"t": "x.commit", "term": 5}) == {"done": True}
    assert await local["x.commit"](MASTER, {"t": "x.commit", "term": 9}) == {"done": True}  # a newer term: fine
    reply = await local["x.commit"](MEMBER, {"t": "x.commit", "term": 5})
    assert reply["ok"] is False and "not this node's master" in reply["error"]
    with caplog.at_level(logging.WARNING, logger="collab.fencing"):
        caplog.clear()
        now[0] += context_mod.FENCE_LOG_EVERY
        for term in (4, None, "5", True, 3):
            reply = await local["x.state"](MASTER, {"t": "x.state", "term": term})
            assert reply["ok"] is False and reply["error"] == f"stale term {term!r} (ours is 5)"
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "refused x.state from mmmmmmmmmmmm: stale term 4 (ours is 5)" in lines[0]
        now[0] += context_mod.FENCE_LOG_EVERY
        await local["x.state"](MASTER, {"t": "x.state", "term": 1})
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2 and "4 more refused since the last line" in lines[1]
    assert all("Traceback" not in (r.exc_text or "") and r.exc_info is None for r in caplog.records)
    assert svc.seen == [("x.commit", MASTER), ("x.commit", MASTER)]  # no refused message got through


async def test_a_stale_request_gets_an_error_reply_over_a_real_connection(caplog):
    """The refusal is a reply, not an exception: the requester raises RemoteError, the transport logs
    nothing, and the connection goes on."""
    ctx = FakeContext(term=5, master_id=MASTER)
    _Service(ctx)
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_connect(reader, writer):
        conn = Connection(reader, writer)
        conn.peer_id, conn.handler = MASTER, lambda c, msg: ctx.deliver(c.peer_id, msg)
        accepted.set_result(conn)
        await conn.run()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    client = Connection(reader, writer)
    client.peer_id = ctx.node_id
    task = asyncio.create_task(client.run())
    try:
        with caplog.at_level(logging.INFO):
            with pytest.raises(RemoteError, match=r"term 4 is not this node's term 5"):
                await client.request({"t": "x.commit", "term": 4}, timeout=5)
            assert (await client.request({"t": "x.commit", "term": 5}, timeout=5))["done"] is True
        assert not [r for r in caplog.records if r.name == "collab.transport"]
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)
        (await accepted).abort()
        server.close()


# ----------------------------------------------------------------------------- heartbeat contributions
def test_contributions_are_providers_with_defaults_and_a_capability_union():
    c = Contributions(["faces", "train"])
    assert (c.value("queue"), c.value("model_version"), c.value("unhealthy")) == (0, None, {})
    depth = [3]
    c.provide("queue", lambda: depth[0])
    depth[0] = 4
    assert c.value("queue") == 4  # read at each heartbeat, not copied once
    with pytest.raises(ValueError, match="already has a provider"):
        c.provide("queue", lambda: 0)
    with pytest.raises(ValueError, match="unknown heartbeat field"):
        c.provide("cpus", lambda: 1)
    data = {"data:a"}
    c.add_capabilities(["jobs"])
    c.provide_capabilities(lambda: data)
    assert c.capabilities() == ["data:a", "faces", "jobs", "train"]
    data.discard("data:a")
    assert c.capabilities() == ["faces", "jobs", "train"]


def test_peer_view_is_a_snapshot_of_a_membership_entry():
    from collab_tui.net.membership import Membership

    m = Membership("self" + "0" * 60)
    peer = "p" * 64
    m.on_hello(peer, "node-p", "10.0.0.2:7373", 1, 0.0)
    m.on_heartbeat(
        peer, {"t": "hb", "cpus": 8, "load": 0.5, "capabilities": ["jobs"], "unhealthy": {"faces": "x"}}, 0.0
    )
    view = PeerView.of(m.get(peer))
    assert (view.name, view.addr, view.cpus, view.capabilities, view.unhealthy, view.alive) == (
        "node-p",
        "10.0.0.2:7373",
        8,
        ("jobs",),
        {"faces": "x"},
        True,
    )
    with pytest.raises(AttributeError):
        view.cpus = 1  # read-only


# ----------------------------------------------------------------------------- the composition root
async def test_composed_node_services_contribute_through_their_contexts(tmp_path):
    from collab_tui.compose import compose
    from collab_tui.jobs.service import JobService
    from collab_tui.net.identity import create_cluster
    from collab_tui.people.service import PeopleService
    from collab_tui.training.service import TrainingService

    home = tmp_path / "home"
    create_cluster(home, "n1")
    composed = compose(home, NodeConfig(port=0, mdns=False))
    node = composed.node
    try:
        jobs, training, people = composed.services
        assert isinstance(jobs, JobService) and isinstance(training, TrainingService)
        assert isinstance(people, PeopleService) and isinstance(people.ctx, NodeContext)
        assert node.services == [jobs, training, people]
        assert isinstance(jobs.ctx, NodeContext) and isinstance(training.ctx, NodeContext)
        assert not hasattr(jobs, "node") and not hasattr(training, "node")
        assert not hasattr(node, "jobs") and not hasattr(node, "training")
        job_msgs = {
            "job.submit",
            "job.assign",
            "job.done",
            "job.fetch",
            "job.results",
            "job.item_failed",
            "job.cancel",
            "job.predict",
        }
        fl_msgs = {
            "fl.start",
            "fl.stop",
            "fl.resume",
            "fl.train",
            "fl.eval",
            "fl.commit",
            "fl.state",
            "fl.phase",
            "fl.data",
        }
        people_msgs = {"people.add", "people.remove", "people.commit", "people.fetch"}
        assert job_msgs | fl_msgs | people_msgs <= set(node.handlers)
        assert {"submit", "jobs", "train", "data_add", "status"} <= composed.control.names
        hb = node._heartbeat()
        assert hb["queue"] == 0 and hb["model_version"] is None and hb["unhealthy"] == {}
        assert hb["capabilities"] == ["classify", "faces", "identify", "jobs", "people", "train"]
        training.datasets.add("digits", {"kind": "digits"})
        training.refresh_capabilities()
        assert "data:digits" in node._heartbeat()["capabilities"]
        assert node.status()["health"] == "ok"
        # a service's handler gets the sender's id, not the connection
        conn = SimpleNamespace(peer_id=MASTER)  # a member, not this node's master
        reply = await node.dispatch(conn, {"t": "job.assign", "term": -1, "items": []})
        assert reply["ok"] is False and "not this node's master" in reply["error"]
    finally:
        for svc in composed.services:
            await svc.stop()
