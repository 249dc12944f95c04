"""Hostile clients against a real node (127.0.0.1 only), and revocation across three real daemons.

Every hostile connection must be refused or closed without a HELLO ACK, and the node must keep
serving: its control socket answers and a legitimate member still completes the handshake.
"""

from __future__ import annotations

import signal
import socket
import ssl
import struct
import time
from pathlib import Path

import pytest
from conftest import self_signed_node_cert, three_node_cluster, wait_for
from rogue import member_identity

from collab_tui.localcluster import LocalCluster
from collab_tui.net import identity as idm
from collab_tui.net import pki, tls
from collab_tui.net.codec import FrameDecoder, FrameError, Message, encode_message
from collab_tui.net.handshake import make_hello

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REVOKED = 2  # node2 has the highest priority: it is the master when it gets revoked


@pytest.fixture(scope="module")
def cluster():
    yield from three_node_cluster(agreed=True)


# ----------------------------------------------------------------------------- helpers
def _addr(c: LocalCluster, i: int) -> tuple[str, int]:
    host, port = c.info[i]["addr"].rsplit(":", 1)
    assert host == "127.0.0.1"
    return host, int(port)


def _tls_ctx(cert_key_pem: bytes | None, tmp: Path) -> ssl.SSLContext:
    """A client context that does not check the server and presents ``cert_key_pem`` (if any)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert_key_pem is not None:
        path = tmp / f"client-{time.monotonic_ns()}.pem"
        path.write_bytes(cert_key_pem)
        ctx.load_cert_chain(str(path))
    return ctx


def _self_signed_pem() -> bytes:
    key = pki.new_key()
    cert = self_signed_node_cert(key)
    return pki.key_pem(key) + pki.cert_pem(cert)


def _connect(addr: tuple[str, int], ctx: ssl.SSLContext | None, timeout: float = 5.0) -> socket.socket:
    raw = socket.create_connection(addr, timeout=timeout)
    return ctx.wrap_socket(raw) if ctx is not None else raw


def _talk(sock: socket.socket, data: bytes, timeout: float = 6.0) -> tuple[list[dict], str]:
    """Send ``data``, read until the server closes. Returns (messages received, how it ended).

    Fails the test if the server keeps the connection open past ``timeout``.
    """
    msgs: list[dict] = []
    dec = FrameDecoder()
    sock.settimeout(timeout)
    ended = ""
    try:
        if data:
            sock.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                ended = "eof"
                break
            try:
                msgs += [f.payload for f in dec.feed(chunk) if isinstance(f, Message)]
            except FrameError as exc:
                ended = f"garbage from server: {exc}"
                break
    except TimeoutError:
        ended = "timeout"
    except ssl.SSLError as exc:
        ended = f"tls alert: {exc.reason or exc}"
    except (ConnectionResetError, BrokenPipeError) as exc:
        ended = f"reset: {exc}"
    finally:
        sock.close()
    assert ended and ended != "timeout", f"server kept a hostile connection open (got {msgs})"
    return msgs, ended


def _hello_bytes(ident: idm.NodeIdentity, name: str = "probe") -> bytes:
    return encode_message(make_hello("hello", ident.node_id, name, ident.cluster_id, "127.0.0.1:1"))


def _handshake(addr: tuple[str, int], ident: idm.NodeIdentity, timeout: float = 5.0) -> dict:
    """A member's HELLO; returns the server's first answer (hello_ack or hello_nak)."""
    ctx = tls.client_ssl_context(ident)
    with _connect(addr, ctx, timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(_hello_bytes(ident))
        dec = FrameDecoder()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return {"t": "closed"}
            for frame in dec.feed(chunk):
                if isinstance(frame, Message):
                    return frame.payload
    raise AssertionError("no answer to HELLO")


def _still_serving(c: LocalCluster, tmp: Path) -> None:
    st = c.call(0, "status", timeout=3.0)
    assert st["node_id"] == c.node_id(0)
    alive = {r["node_id"] for r in c.call(0, "nodes", timeout=3.0) if r["state"] == "alive"}
    assert {c.node_id(1), c.node_id(2)} <= alive
    member = member_identity(c, tmp / f"legit-{time.monotonic_ns()}", "legit")
    reply = _handshake(_addr(c, 0), member)
    assert reply["t"] == "hello_ack", reply
    assert reply["node_id"] == c.node_id(0)


# ----------------------------------------------------------------------------- hostile clients
def test_client_cert_from_another_ca_is_refused(cluster, tmp_path):
    evil = idm.create_cluster(tmp_path / "evil", "evil")
    # it even claims the real cluster id in its HELLO
    pem = pki.key_pem(evil.key) + pki.cert_pem(evil.cert)
    hello = encode_message(
        make_hello("hello", evil.node_id, "evil", idm.load_identity(cluster.homes[0]).cluster_id, "127.0.0.1:1")
    )
    msgs, ended = _talk(_connect(_addr(cluster, 0), _tls_ctx(pem, tmp_path)), hello)
    assert not any(m.get("t") == "hello_ack" for m in msgs), msgs
    assert "tls alert" in ended or ended in ("eof",) or ended.startswith("reset"), ended
    # the regular client context of another cluster does not even accept our server
    with pytest.raises(ssl.SSLError):
        _connect(_addr(cluster, 0), tls.client_ssl_context(evil)).close()
    _still_serving(cluster, tmp_path)


def test_self_signed_client_cert_is_refused(cluster, tmp_path):
    msgs, ended = _talk(
        _connect(_addr(cluster, 0), _tls_ctx(_self_signed_pem(), tmp_path)), encode_message({"t": "hello"})
    )
    assert not any(m.get("t") == "hello_ack" for m in msgs), msgs
    _still_serving(cluster, tmp_path)


def test_plaintext_garbage_is_closed(cluster, tmp_path):
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 8, encode_message({"t": "hello"})):
        msgs, ended = _talk(_connect(_addr(cluster, 0), None), junk)
        assert msgs == []
    _still_serving(cluster, tmp_path)


def test_oversized_frame_header_is_closed(cluster, tmp_path):
    huge = struct.pack(">IB", 0xFFFFFFF0, 1) + b"{"
    # certless TLS client
    msgs, ended = _talk(_connect(_addr(cluster, 0), _tls_ctx(None, tmp_path)), huge, timeout=4.0)
    assert msgs == []
    # an authenticated member that misbehaves after the handshake is cut off too
    member = member_identity(cluster, tmp_path / "big", "big")
    sock = _connect(_addr(cluster, 0), tls.client_ssl_context(member))
    sock.settimeout(5.0)
    sock.sendall(_hello_bytes(member, "big"))
    dec, first = FrameDecoder(), []
    while not first:
        chunk = sock.recv(65536)
        assert chunk, "closed before the ACK"
        first = [f.payload for f in dec.feed(chunk) if isinstance(f, Message)]
    assert first[0]["t"] == "hello_ack"
    _talk(sock, huge, timeout=4.0)  # asserts that the node closes it
    _still_serving(cluster, tmp_path)


def test_a_certless_client_may_send_only_small_frames(cluster, tmp_path):
    """A connection without a certificate can only join: a frame past 64 KiB (well under the members' 4 MiB)
    closes it before anything is answered."""
    big = encode_message({"t": "join_hello", "pad": "A" * 200_000})
    msgs, ended = _talk(_connect(_addr(cluster, 0), _tls_ctx(None, tmp_path)), big, timeout=4.0)
    assert msgs == [], msgs
    small = encode_message({"t": "join_hello"})
    msgs, ended = _talk(_connect(_addr(cluster, 0), _tls_ctx(None, tmp_path)), small)
    assert [m["t"] for m in msgs][:1] == ["join_ca"], msgs
    _still_serving(cluster, tmp_path)


def test_certless_client_sending_hello_is_refused(cluster, tmp_path):
    ident = idm.load_identity(cluster.homes[1])  # even with a real member's node id
    msgs, ended = _talk(_connect(_addr(cluster, 0), _tls_ctx(None, tmp_path)), _hello_bytes(ident))
    assert [m["t"] for m in msgs] == ["join_err"], msgs
    assert "certificate is required" in msgs[0]["error"]
    _still_serving(cluster, tmp_path)
    # node1's real connection was not disturbed
    assert {r["node_id"]: r["state"] for r in cluster.call(0, "nodes")}[cluster.node_id(1)] == "alive"


def test_member_claiming_another_node_id_is_refused(cluster, tmp_path):
    member = member_identity(cluster, tmp_path / "liar", "liar")
    fake = make_hello("hello", cluster.node_id(1), "liar", member.cluster_id, "127.0.0.1:1")
    msgs, ended = _talk(_connect(_addr(cluster, 0), tls.client_ssl_context(member)), encode_message(fake))
    assert [m["t"] for m in msgs] == ["hello_nak"], msgs
    assert "does not match the certificate" in msgs[0]["error"]
    _still_serving(cluster, tmp_path)


# ----------------------------------------------------------------------------- revocation
def test_revoked_node_is_cut_off_and_cannot_reconnect(cluster, cli, cli_json, tmp_path):
    c = cluster
    victim = c.node_id(REVOKED)
    assert c.wait_agreement(timeout=15) == victim  # revoking the master itself
    res = cli_json("trust", "revoke", "node2", "--reason", "lost laptop", "--home", c.homes[0])
    assert res["revoked"] == victim and res["version"] >= 1
    t0 = time.monotonic()

    def gone_everywhere():
        for i in (0, 1):
            states = {r["node_id"]: r["state"] for r in c.call(i, "nodes", timeout=3.0)}
            if states.get(victim) == "alive":
                return False
        return True

    wait_for(gone_everywhere, 5.0, "node2 to be cut off by node0 and node1")
    took = time.monotonic() - t0
    # the survivors agree on a new master without it
    master = c.wait_agreement([0, 1], timeout=10, exclude=victim)
    assert master == c.node_id(1)
    # node2 keeps dialing (it does not know); it must never be accepted again
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        for i in (0, 1):
            states = {r["node_id"]: r["state"] for r in c.call(i, "nodes", timeout=3.0)}
            assert states.get(victim) != "alive", f"node{i} accepted the revoked node again"
        time.sleep(0.2)
    wait_for(lambda: c.call(REVOKED, "status")["peers_alive"] == 0, 5.0, "node2 to lose every peer")
    # its handshake is refused by both
    victim_ident = idm.load_identity(c.homes[REVOKED])
    for i in (0, 1):
        reply = _handshake(_addr(c, i), victim_ident)
        assert reply["t"] in ("hello_nak", "closed"), reply
        if reply["t"] == "hello_nak":
            assert "revoked" in reply["error"]
    listed = cli_json("trust", "list", "--home", c.homes[0])
    assert {m["node_id"]: m["revoked"] for m in listed["members"]}[victim] is True
    assert listed["denylist_version"] == res["version"]
    # node1 got the signed list too
    assert c.call(1, "trust_list")["denylist_version"] == res["version"]
    assert took < 5
    assert REVOKED in c.running()  # it was cut off, not killed
    c.kill(REVOKED, signal.SIGTERM)


def test_a_connection_flood_is_logged_as_one_line_per_reason_then_a_summary(cluster, tmp_path):
    """Hundreds of refused connections give a few lines, not hundreds; the count is in `status`."""
    target = 1
    before = cluster.call(target, "status")["refused_connections"]
    t0 = time.time()
    ctx = _tls_ctx(_self_signed_pem(), tmp_path)
    for k in range(200):
        sock = _connect(_addr(cluster, target), ctx if k % 2 else None)
        try:
            sock.settimeout(3.0)
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            sock.recv(100)
        except (OSError, ssl.SSLError):
            pass
        finally:
            sock.close()
    wait_for(
        lambda: cluster.call(target, "status")["refused_connections"] >= before + 200,
        10.0,
        "every refusal to be counted",
    )

    def refusal_lines():
        return [r["msg"] for r in cluster.call(target, "logs", n=1000) if "refused" in r["msg"] and r["ts"] >= t0]

    assert 1 <= len(refusal_lines()) <= 4, refusal_lines()  # one per (source, reason) seen

    def summarised():
        return sum(int(m.split()[1]) for m in refusal_lines() if " more connection" in m)

    wait_for(
        lambda: summarised() + len(refusal_lines()) >= 200 or None, 15.0, "the summary lines at the end of the interval"
    )
    assert len(refusal_lines()) <= 8, refusal_lines()
    member = member_identity(cluster, tmp_path / "after-flood", "legit")
    assert _handshake(_addr(cluster, target), member)["t"] == "hello_ack"  # still serving
