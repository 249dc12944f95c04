"""A background loop of the node that dies is restarted, logged once per interval, and shows where the
operator looks (`status`, `nodes`, the heartbeat other nodes show), never only in the log."""

from __future__ import annotations

import logging

from collab_tui.config import NodeConfig
from collab_tui.net.identity import create_cluster
from collab_tui.node.runtime import Node


async def test_a_loop_that_dies_is_restarted_and_shows_in_status_nodes_and_heartbeats(tmp_path, caplog):
    create_cluster(tmp_path, "n0")
    node = Node(tmp_path, NodeConfig(name="n0", mdns=False))
    runs = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) <= 3:
            raise RuntimeError(f"boom {len(runs)} " + "x" * 1000)

    with caplog.at_level(logging.ERROR, "collab.node"):
        await node._supervised("ticker", flaky)
    assert len(runs) == 4  # died three times, restarted each time, then ended cleanly
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1  # one per interval, not one per death
    fault = node.status()["faults"]["ticker"]
    assert fault.startswith("RuntimeError: boom 3") and "(restarted 3x)" in fault and len(fault) < 300
    assert node.nodes()[0]["faults"] == {"ticker": fault}
    assert node._heartbeat()["faults"] == {"ticker": fault}
