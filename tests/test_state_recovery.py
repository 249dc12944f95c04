"""Persisted node state that does not parse or validate is moved aside with a warning, never silently
rewritten (issue 15, "validate before you persist; recover from bad state")."""

from __future__ import annotations

import json
import logging

import pytest

from collab_tui.node.state import JsonState, MembersFile, NodeStateFile


@pytest.mark.parametrize(
    "text",
    [
        '{"term": "x"',
        '{"term": "x"}',
        '{"term": -1}',
        "[1, 2]",
        '{"term": 1e400}',
        "\xff\xfe",
        '{"term": 99999999999999999999}',
    ],
)
def test_a_bad_node_state_is_moved_aside_with_a_warning(tmp_path, caplog, text):
    path = tmp_path / "node.json"
    raw = text.encode()
    path.write_bytes(raw)
    with caplog.at_level(logging.WARNING, "collab.state"):
        state = JsonState(path, NodeStateFile, "the term is learnt again")
    assert state.get("term", 0) == 0
    bad = list(tmp_path.glob("node.json.bad-*"))
    assert len(bad) == 1 and bad[0].read_bytes() == raw  # kept as it was, for a post-mortem
    assert not path.exists()
    assert [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()] != []
    assert "the term is learnt again" in caplog.text
    state.set("term", 7)  # the node goes on and persists again
    assert json.loads(path.read_text()) == {"term": 7}


def test_a_good_state_loads_and_unknown_keys_are_dropped(tmp_path):
    path = tmp_path / "node.json"
    path.write_text('{"term": 12, "junk": "x"}')
    assert JsonState(path, NodeStateFile).data == {"term": 12}
    members = tmp_path / "members.json"
    members.write_text(json.dumps({"members": [{"node_id": "a" * 64, "name": "n", "addr": "10.0.0.1:7373"}]}))
    assert JsonState(members, MembersFile).get("members")[0]["node_id"] == "a" * 64


def test_a_member_list_with_a_bad_entry_is_moved_aside(tmp_path):
    members = tmp_path / "members.json"
    members.write_text(json.dumps({"members": [{"node_id": "../x", "addr": "1.2.3.4:1"}]}))
    assert JsonState(members, MembersFile).get("members", []) == []
    assert list(tmp_path.glob("members.json.bad-*"))
