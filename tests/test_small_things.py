"""Issue 14, part 8: a clear version-mismatch message on both sides of a handshake, `collab submit`'s
closing sentence, and `collab demo`'s node tables showing each live node's current term."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from conftest import self_signed_node_cert
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from collab_tui import PROTOCOL_VERSION, __version__
from collab_tui.cli.jobs import _print_items, job_sentence
from collab_tui.cli.output import Out
from collab_tui.net import handshake as hs
from collab_tui.net.pki import node_id_of

CLUSTER = "c" * 64


# --------------------------------------------------------------------------- version mismatch
def _member():
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed_node_cert(key)
    return node_id_of(cert), cert


def test_hello_carries_the_collab_version():
    hello = hs.make_hello("hello", "a" * 64, "n", CLUSTER, "127.0.0.1:1")
    assert hello["version"] == __version__ and hello["proto"] == PROTOCOL_VERSION


def test_check_hello_names_both_versions_and_what_to_do():
    nid, cert = _member()
    old = {**hs.make_hello("hello", nid, "node-a", CLUSTER, "h:1"), "proto": PROTOCOL_VERSION - 1, "version": "0.0.9"}
    with pytest.raises(hs.VersionMismatch) as exc:
        hs.check_hello(old, cert, CLUSTER, lambda _id: False)
    assert str(exc.value) == (
        f"node node-a runs collab 0.0.9 (protocol {PROTOCOL_VERSION - 1}), "
        f"this node {__version__} (protocol {PROTOCOL_VERSION}): upgrade that node"
    )
    new = {**old, "proto": PROTOCOL_VERSION + 1, "version": "9.9.9"}
    with pytest.raises(hs.VersionMismatch, match=r"runs collab 9\.9\.9 .*: upgrade this node$"):
        hs.check_hello(new, cert, CLUSTER, lambda _id: False)
    # a node from before the HELLO carried a version; a hostile version string is not echoed
    legacy = {k: v for k, v in old.items() if k != "version"}
    with pytest.raises(hs.VersionMismatch, match="node node-a runs an older collab"):
        hs.check_hello(legacy, cert, CLUSTER, lambda _id: False)
    with pytest.raises(hs.VersionMismatch) as exc:
        hs.check_hello({**new, "version": "1\n\x1b[31mred"}, cert, CLUSTER, lambda _id: False)
    assert "\n" not in str(exc.value) and "\x1b" not in str(exc.value)
    for proto in (0, PROTOCOL_VERSION + 1):  # "outbound handshake: " + it fits the refusal log's 120 characters
        assert len(hs.version_mismatch_text("x" * 64, "1.22.333", proto)) <= 100
    # the same protocol still passes
    assert hs.check_hello(hs.make_hello("hello", nid, "node-a", CLUSTER, "h:1"), cert, CLUSTER, lambda _: False) == nid


class _Writer:
    def __init__(self, cert=None) -> None:
        self.cert = cert

    def get_extra_info(self, name):
        if name != "ssl_object" or self.cert is None:
            return None
        der = self.cert.public_bytes(serialization.Encoding.DER)
        return type("Ssl", (), {"getpeercert": lambda self, binary_form=True: der})()


class _Conn:
    """Enough of a Connection for the handshake: what was sent, and one reply to read."""

    def __init__(self, reply: dict | None = None, cert=None) -> None:
        self.sent: list[dict] = []
        self.reply = reply
        self.writer = _Writer(cert)

    async def send(self, msg: dict) -> None:
        self.sent.append(msg)

    async def read_message(self, timeout: float) -> dict:
        return self.reply


def test_both_sides_of_a_mismatched_handshake_say_it_from_their_side():
    nid, cert = _member()
    old = {**hs.make_hello("hello", nid, "old-node", CLUSTER, "h:1"), "proto": PROTOCOL_VERSION - 1, "version": "0.0.1"}
    ack = hs.make_hello("hello_ack", "b" * 64, "new-node", CLUSTER, "h:2")
    server = _Conn(cert=cert)
    with pytest.raises(hs.VersionMismatch) as exc:  # the listener (new) refuses the old dialer
        asyncio.run(hs.server_hello(server, old, ack, CLUSTER, lambda _id: False))
    assert "node old-node runs collab 0.0.1" in str(exc.value) and str(exc.value).endswith("upgrade that node")
    [nak] = server.sent
    assert nak["t"] == "hello_nak" and nak["error"] == str(exc.value)
    assert (nak["proto"], nak["version"], nak["name"]) == (PROTOCOL_VERSION, __version__, "new-node")

    # the dialer, on the other protocol, words the NAK from its side (here: pretend the NAK came from newer)
    newer_nak = {**nak, "proto": PROTOCOL_VERSION + 1, "version": "0.9.0"}
    dialer = _Conn(reply=newer_nak)
    with pytest.raises(hs.VersionMismatch) as exc:
        asyncio.run(hs.client_hello(dialer, old, CLUSTER, lambda _id: False, 1.0))
    assert str(exc.value) == (
        f"node new-node runs collab 0.9.0 (protocol {PROTOCOL_VERSION + 1}), "
        f"this node {__version__} (protocol {PROTOCOL_VERSION}): upgrade this node"
    )
    # any other NAK (or one from a node without the fields) keeps its reason
    dialer = _Conn(reply={"t": "hello_nak", "error": "node is revoked"})
    with pytest.raises(hs.HandshakeError, match="^refused by peer: node is revoked$"):
        asyncio.run(hs.client_hello(dialer, old, CLUSTER, lambda _id: False, 1.0))


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_real_node_refuses_another_protocol_with_the_versions_in_its_log_and_its_nak(tmp_path):
    from conftest import wait_for
    from rogue import member_identity
    from test_security import _addr

    from collab_tui.localcluster import LocalCluster
    from collab_tui.net import tls
    from collab_tui.net.codec import FrameDecoder, Message, encode_message

    with LocalCluster(1, heartbeat=0.2) as c:
        c.provision()
        c.start_all()
        t0 = time.time()
        ident = member_identity(c, tmp_path / "newer", "newer-node")
        hello = hs.make_hello("hello", ident.node_id, "newer-node", ident.cluster_id, "127.0.0.1:1")
        hello.update(proto=PROTOCOL_VERSION + 1, version="9.9.9")  # a node on a newer protocol dials in
        with tls.client_ssl_context(ident).wrap_socket(socket.create_connection(_addr(c, 0), 5)) as s:
            s.settimeout(5)
            s.sendall(encode_message(hello))
            dec, reply = FrameDecoder(), None
            while reply is None:
                chunk = s.recv(65536)
                assert chunk, "closed without a NAK"
                reply = next((f.payload for f in dec.feed(chunk) if isinstance(f, Message)), None)
        assert reply["t"] == "hello_nak" and (reply["proto"], reply["version"]) == (PROTOCOL_VERSION, __version__)
        want = (
            f"node newer-node runs collab 9.9.9 (protocol {PROTOCOL_VERSION + 1}), "
            f"this node {__version__} (protocol {PROTOCOL_VERSION}): upgrade this node"
        )
        assert reply["error"] == want

        def logged():
            return [r["msg"] for r in c.call(0, "logs", n=200) if r["ts"] >= t0 and want in r["msg"]]

        assert len(wait_for(logged, 5.0, "the refusal line")) == 1


# --------------------------------------------------------------------------- submit's sentence
def _job(task: str, summary: dict, total: int = 4, errors: int = 0, workers=("w1", "w2")) -> dict:
    items = [
        {
            "item_id": f"{k:06d}",
            "path": f"/in/f{k}.png",
            "status": "error" if k < errors else "done",
            "result": None if k < errors else {"worker_name": workers[k % len(workers)]},
            "error": "bad image" if k < errors else None,
            "worker": workers[k % len(workers)],
            "finished_at": 1000.0 + k,
        }
        for k in range(total)
    ]
    return {
        "job_id": "j1",
        "task": task,
        "total": total,
        "status": "done",
        "created_at": 999.9,
        "counts": {"done": total - errors, "error": errors, "cancelled": 0, "pending": 0},
        "summary": summary,
        "items": items,
    }


@pytest.mark.parametrize(
    ("task", "summary", "errors", "want"),
    [
        (
            "faces",
            {"items": 4, "detections": 1, "items_with_detections": 1},
            0,
            "4 images, 1 face in 1 of them, 0 errors, 3.1 s on 2 nodes",
        ),
        (
            "people",
            {"items": 3, "detections": 5, "items_with_detections": 2},
            1,
            "4 images, 5 people in 2 of them, 1 error, 3.1 s on 2 nodes",
        ),
        ("classify", {"items": 4, "labels": {"cat": 3, "dog": 1}}, 0, "4 images, labelled 3 cat, 1 dog, 0 errors"),
        ("wordcount", {"items": 4, "words": 120, "distinct": 40}, 0, "4 files, 120 words (40 distinct), 0 errors"),
        (
            "ocr",
            {"items": 4, "items_with_text": 3, "chars": 57, "lines": 4, "words": 9},
            0,
            "4 images, text in 3 of them (57 characters, 4 lines), 0 errors",
        ),
        ("noop", {"items": 4}, 0, "4 items, 0 errors, 3.1 s on 2 nodes"),
    ],
)
def test_job_sentence_per_task(task, summary, errors, want):
    assert job_sentence(_job(task, summary, errors=errors)).startswith(want)


def test_job_sentence_on_one_node_and_unfinished():
    job = _job("faces", {"items": 2, "detections": 0, "items_with_detections": 0}, total=2, workers=("w1",))
    assert job_sentence(job) == "2 images, 0 faces in 0 of them, 0 errors, 1.1 s on 1 node"
    job["counts"].update(pending=3)
    assert ", 3 pending, " in job_sentence(job)


def test_submit_human_output_ends_with_the_sentence_and_json_is_unchanged(capsys):
    job = _job("faces", {"items": 4, "detections": 2, "items_with_detections": 1})
    _print_items(Out(False), job)
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "4 images, 2 faces in 1 of them, 0 errors, 3.1 s on 2 nodes"
    assert "summary:" not in out and "{" not in out
    _print_items(Out(True), job)
    assert json.loads(capsys.readouterr().out) == job


# --------------------------------------------------------------------------- demo's node tables
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_tables_show_one_term_for_every_live_node_after_the_failover(capsys, monkeypatch):
    """The demo up to the failover on loopback (its recognition and training parts left out)."""
    from test_demo import assert_failover_table_agrees

    from collab_tui import demo

    monkeypatch.setattr(demo, "_extensions", lambda: [])
    code = demo.run_demo(3, lan=False)
    out = capsys.readouterr().out
    assert code == 0, out
    assert_failover_table_agrees(out)
    assert "-- done: all nodes stopped" in out, out
