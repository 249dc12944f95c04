"""Gaps of the control API that the TUI used to poll around (issue 14, part 2): job_item events name the
item's file and carry the stored result, job_show lists the items still to do, job_types says which tasks
this node takes, node rows carry capabilities, run_show leaves the strategy's own state out by default."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import three_node_cluster, wait_job
from fake_context import FakeContext

from collab_tui.jobs.submitter_side import JobSubmitter


async def test_job_item_events_name_the_file_and_job_show_lists_what_is_still_to_do(tmp_path):
    ctx = FakeContext(home=tmp_path / "home")
    sub = JobSubmitter(SimpleNamespace(ctx=ctx))
    events = ctx.subscribe({"job_item"})
    try:
        d = tmp_path / "texts"
        d.mkdir()
        for k in range(3):
            (d / f"t{k}.txt").write_text(f"alpha beta {k}\n")
        jid = (await sub.create([str(d)], "wordcount", {}, str(tmp_path / "out")))["job_id"]
        shown = sub.show(jid)
        assert shown["items"] == [] and [p["path"] for p in shown["pending"]] == [
            str(d / f"t{k}.txt") for k in range(3)
        ]
        res = {"job_id": jid, "worker": "w1", "worker_name": "w1", "error": None, "result": {"words": 3}}
        sub.on_results([{**res, "item_id": "000001"}], [None])
        ev = await events.get(timeout=2.0)
        assert ev["item_id"] == "000001" and ev["path"] == str(d / "t1.txt")
        assert ev["result"]["words"] == 3 and ev["result"]["worker"] == "w1"  # as stored, not as sent
        shown = sub.show(jid)
        assert [it["item_id"] for it in shown["items"]] == ["000001"]
        assert [p["item_id"] for p in shown["pending"]] == ["000000", "000002"]
    finally:
        events.close()
        sub.store.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_job_types_capabilities_and_a_job_over_a_real_cluster(tmp_path):
    for c in three_node_cluster(agreed=True):
        types = {t["name"]: t["description"] for t in c.call(0, "job_types")}
        assert {"faces", "people", "classify", "ensemble", "wordcount"} <= set(types)
        assert types["faces"]
        rows = c.call(0, "nodes")
        assert all("faces" in r["capabilities"] for r in rows), rows
        d = tmp_path / "texts"
        d.mkdir()
        (d / "a.txt").write_text("one two")
        jid = c.call(1, "submit", paths=[str(d)], task="wordcount")["job_id"]
        job = wait_job(c, 1, jid)
        assert job["pending"] == [] and job["items"][0]["path"] == str(d / "a.txt")


async def test_run_show_leaves_the_strategy_state_out_unless_asked():
    from collab_tui import api
    from collab_tui.training.commands import RunCommands
    from collab_tui.training.rounds import RunState

    st = RunState(run_id="ab" * 8, config={"rounds": 3}, strategy_state={"m": [0.1] * 1000, "v": [0.2] * 1000})
    cmds = RunCommands(SimpleNamespace(runs=SimpleNamespace(get=lambda run_id: st)))
    short = await cmds.run_show(api.RunShow(run_id=st.run_id))
    assert short["strategy_state"] == {"keys": ["m", "v"]} and short["config"] == {"rounds": 3}
    full = await cmds.run_show(api.RunShow(run_id=st.run_id, full=True))
    assert full["strategy_state"] == st.strategy_state
