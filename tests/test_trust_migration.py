"""A root home with a deny-list from before the trust log: its revocations and priorities are carried into
the trust log once, signed by the root, and the old file is moved aside."""

from __future__ import annotations

from collab_tui.config import NodeConfig
from collab_tui.net.identity import create_cluster
from collab_tui.net.revocation import DenyListStore
from collab_tui.node.runtime import Node

LOST, FAST = "1" * 64, "2" * 64


def test_an_old_deny_list_becomes_root_entries(tmp_path):
    ident = create_cluster(tmp_path, "root")
    old = tmp_path / "state" / "denylist.json"
    old.parent.mkdir(parents=True, exist_ok=True)
    store = DenyListStore(old)
    store.revoke(ident.ca_key, ident.ca_cert, LOST, "lost laptop")
    store.set_priority(ident.ca_key, ident.ca_cert, FAST, 4)
    node = Node(tmp_path, NodeConfig(mdns=False))
    node.migrate_denylist(old)
    assert node.is_revoked(LOST) and node.trust.revoked[LOST]["reason"] == "lost laptop"
    assert node.priority_of(FAST) == 4
    assert all(e.by == ident.cluster_id for e in node.trust.entries)
    assert not old.exists() and old.with_suffix(".json.migrated").exists()
    again = Node(tmp_path, NodeConfig(mdns=False))  # read back from the trust log file
    assert again.is_revoked(LOST) and again.priority_of(FAST) == 4


def test_the_log_goes_out_in_batches_with_what_checks_certificates_first(tmp_path):
    import time

    from collab_tui.net.trust_log import sign_entry

    ident = create_cluster(tmp_path, "root")
    node = Node(tmp_path, NodeConfig(mdns=False))
    root, now = ident.cluster_id, time.time()
    entries = [sign_entry(ident.ca_key, root, "priority", now + i, node=FAST, priority=i + 1) for i in range(7)]
    entries.append(sign_entry(ident.ca_key, root, "revoke", now + 8, node=LOST, reason="", keep=[]))
    node.accept_trust_entries(entries)
    batches = node.trust_batches(size=3)
    assert [len(b) for b in batches] == [3, 3, 2]
    assert batches[0][0]["body"]["kind"] == "revoke"  # before the priorities it comes after in time
    assert sorted(e["sig"] for b in batches for e in b) == sorted(e.sig for e in entries)
    joiner = node.trust_for_joiner(limit=3)
    assert [e["body"]["kind"] for e in joiner] == ["revoke", "priority", "priority"]
    assert [e["body"]["priority"] for e in joiner[1:]] == [6, 7]  # the newest others
