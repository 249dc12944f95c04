"""The people gallery without a cluster: the record and its changes, the store, enrolment's per-photo
errors, the service's commit rules (majority, fencing) and the wire of `people add` (no photo bytes)."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import msgspec
import pytest
from fake_context import FakeContext
from skimage import data as skdata
from wire_audit import WireAudit

from collab_tui.ml.face_eval_set import FACES_DIR as FACES
from collab_tui.ml.images import decode_image
from collab_tui.net.codec import encode_message
from collab_tui.node.context import PeerView
from collab_tui.people import gallery as gal
from collab_tui.people.service import PeopleService, enrol_files

ME, MASTER, OTHER = "a" * 64, "b" * 64, "c" * 64


def _vec(x: float = 0.05) -> list[float]:
    return [x] * 128


def _emb(x: float = 0.05, node: str = ME) -> gal.Embedding:
    return gal.Embedding(vector=_vec(x), node=node, node_name="n", source="p.jpg", added=1.0)


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def gallery_dir() -> Path:
    if not (FACES / "gallery").is_dir():
        pytest.skip(f"{FACES} is not on this machine")
    return FACES / "gallery"


# ----------------------------------------------------------------------------- the record
def test_changes_make_the_next_version_under_the_given_term() -> None:
    g1 = gal.with_added(gal.Gallery(), "Ada", [_emb()], term=3)
    assert (g1.version, g1.term, [p.name for p in g1.people]) == (1, 3, ["Ada"])
    g2 = gal.with_added(g1, "ada", [_emb(0.1)], term=4)  # the same person, whatever the case
    assert (g2.version, g2.term, len(g2.people[0].embeddings)) == (2, 4, 2)
    g3 = gal.without(g2, "ADA", term=4)
    assert (g3.version, g3.people) == (3, [])
    assert g1.people[0].embeddings == [_emb()]  # versions are values: g1 is untouched
    with pytest.raises(gal.GalleryError, match="nobody called"):
        gal.without(g3, "Ada", term=4)
    assert gal.Gallery(term=5, version=1).key() > gal.Gallery(term=4, version=9).key()


@pytest.mark.parametrize(
    "bad, why",
    [
        ({"people": [{"name": "x", "embeddings": [{"vector": [0.1] * 127, "node": ME}]}]}, "length"),
        ({"people": [{"name": "x", "embeddings": [{"vector": [9.0] * 128, "node": ME}]}]}, "<= 2.0"),
        ({"people": [{"name": "../etc", "embeddings": [{"vector": [0.1] * 128, "node": ME}]}]}, "matching regex"),
        ({"people": [{"name": "x", "embeddings": []}]}, "length"),
        ({"version": -1}, ">= 0"),
        (
            {"people": [{"name": n, "embeddings": [{"vector": [0.1] * 128, "node": ME}]} for n in ("Bo", "bo")]},
            "twice",
        ),
    ],
)
def test_a_bad_gallery_is_refused(bad: dict, why: str) -> None:
    with pytest.raises(gal.GalleryError, match=why):
        gal.check(bad)


def test_bounds_of_a_person_and_of_names() -> None:
    g = gal.with_added(gal.Gallery(), "Ada", [_emb()] * gal.MAX_PER_PERSON, term=1)
    with pytest.raises(gal.GalleryError, match="more than"):
        gal.with_added(g, "Ada", [_emb()], term=1)
    for name in ("", " lead", "a/b", "x" * 65):
        with pytest.raises(gal.GalleryError, match="bad name"):
            gal.check_name(name)


def test_the_store_keeps_only_newer_galleries_and_sets_a_bad_file_aside(tmp_path: Path) -> None:
    store = gal.GalleryStore(tmp_path)
    g = gal.with_added(gal.Gallery(), "Ada", [_emb()], term=2)
    assert store.keep(g) and not store.keep(g)
    assert not store.keep(gal.with_added(gal.Gallery(), "Old", [_emb()], term=1))  # an older term's
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    assert gal.GalleryStore(tmp_path).current == g  # read back after a restart
    store.path.write_text('{"version": 1, "people": [{"name": "x"}]}')
    assert gal.GalleryStore(tmp_path).current == gal.Gallery()
    assert list(tmp_path.glob("state/people.json.bad*")) or list(tmp_path.glob("state/*bad*"))


# ----------------------------------------------------------------------------- enrolment photos
def test_bad_enrolment_photos_get_one_error_each(tmp_path: Path, gallery_dir: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "good.jpg").write_bytes((gallery_dir / "obama" / "obama.jpg").read_bytes())
    (folder / "empty.png").write_bytes(b"")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000))
    ok, cat = cv2.imencode(".png", cv2.cvtColor(skdata.chelsea(), cv2.COLOR_RGB2BGR))
    (folder / "cat.png").write_bytes(cat.tobytes())
    (folder / "huge.png").write_bytes(_png_declaring(60000, 60000))  # a decompression bomb's header
    astro = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    two = cv2.hconcat([astro, astro])
    (folder / "two.png").write_bytes(cv2.imencode(".png", two)[1].tobytes())
    small = cv2.resize(astro, (96, 96), interpolation=cv2.INTER_AREA)
    (folder / "small.png").write_bytes(cv2.imencode(".png", small)[1].tobytes())
    good, bad = enrol_files([str(folder)])
    assert [g["source"] for g in good] == ["good.jpg"] and len(good[0]["vector"]) == 128
    why = {b["source"]: b["error"] for b in bad}
    assert set(why) == {"empty.png", "corrupt.jpg", "cat.png", "huge.png", "two.png", "small.png"}
    assert "empty" in why["empty.png"] and "no face" in why["cat.png"] and "2 faces" in why["two.png"]
    assert "bomb" in why["huge.png"] or "too_large" in why["huge.png"]
    assert "too small" in why["small.png"] or "no face" in why["small.png"]


async def test_nothing_is_sent_or_written_when_no_photo_can_enrol(tmp_path: Path) -> None:
    ctx = FakeContext(ME, home=tmp_path, master_id=MASTER)
    asked = []

    async def on_request(peer, msg, timeout):
        asked.append(msg)
        return {"version": 1}

    ctx.on_request = on_request
    svc = PeopleService(ctx)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(ValueError, match="no photo could enrol Ada: bad.png"):
        await svc.enrol("Ada", [str(tmp_path / "bad.png")])
    assert asked == [] and not (tmp_path / "state" / "people.json").exists()


# ----------------------------------------------------------------------------- the wire of `people add`
async def test_people_add_sends_embeddings_and_never_the_photos(tmp_path: Path, gallery_dir: Path) -> None:
    """Everything the enrolling node sends its master, framed as the transport frames it, is searched for
    each photo's file bytes and decoded pixels (raw, hex, base64 at every alignment); the embeddings
    themselves must be there (the auditor sees the traffic)."""
    ctx = FakeContext(ME, home=tmp_path, master_id=MASTER)
    wire = bytearray()

    async def on_request(peer, msg, timeout):
        assert peer == MASTER
        wire.extend(encode_message({**msg, "id": 1}))
        return {"version": 1, "replicas": 2, "people": 1}

    ctx.on_request = on_request
    svc = PeopleService(ctx)
    photos = sorted((gallery_dir / "kit_harington").iterdir()) + sorted((gallery_dir / "obama").iterdir())
    rep = await svc.enrol("Several", [str(p) for p in photos])
    assert rep["added"] == len(photos) and rep["problems"] == [] and rep["version"] == 1
    audit = WireAudit(bytes(wire))
    [msg] = audit.messages
    assert msg["t"] == "people.add" and len(msg["embeddings"]) == len(photos)
    needles: dict[str, bytes] = {}
    for p in photos:
        raw = p.read_bytes()
        pixels = decode_image(raw).tobytes()
        for k, at in enumerate((len(raw) // 3, len(raw) // 2, 2 * len(raw) // 3)):
            needles[f"{p.name} bytes@{k}"] = raw[at : at + 48]
        for k, at in enumerate((len(pixels) // 3, len(pixels) // 2)):
            needles[f"{p.name} pixels@{k}"] = pixels[at : at + 48]
    assert audit.find(needles) == []
    first = json.dumps(msg["embeddings"][0]["vector"][:4], separators=(",", ":"))[1:-1].encode()
    assert audit.find({"embedding": first}) == ["embedding in raw stream as raw"]
    assert len(audit.raw) < 2000 * len(photos)  # room for numbers, not for a photo


# ----------------------------------------------------------------------------- the master's rules
def _peer(node_id: str) -> PeerView:
    return PeerView(node_id, name="n" + node_id[0])


def _add(name: str = "Ada", x: float = 0.05) -> dict:
    return {"t": "people.add", "name": name, "embeddings": [{"vector": _vec(x), "source": "a.jpg"}]}


async def test_the_master_commits_with_a_majority_and_replicas_take_it(tmp_path: Path) -> None:
    master = FakeContext(MASTER, home=tmp_path / "m", master_id=MASTER, is_master=True, term=4)
    master.peer_views = [_peer(ME), _peer(OTHER)]
    replicas = {ME: FakeContext(ME, home=tmp_path / "r1", master_id=MASTER, term=4)}
    svc_r = {ME: PeopleService(replicas[ME])}

    async def on_request(peer, msg, timeout):
        if peer not in replicas:
            raise ConnectionError("not connected")
        rep = await replicas[peer].deliver(MASTER, msg)
        if rep and rep.get("ok") is False:
            from collab_tui.net.transport import RemoteError

            raise RemoteError(rep["error"])
        return rep

    master.on_request = on_request
    svc = PeopleService(master)
    rep = await master.deliver(ME, _add())
    assert rep["version"] == 1 and rep["replicas"] == 2  # itself and ME of 3: a majority
    assert svc_r[ME].store.current.version == 1
    emb = svc.store.current.people[0].embeddings[0]
    assert emb.node == ME and emb.node_name == "na"  # recorded from the connection, not the message
    del replicas[ME]  # now only the master holds what it commits: 1 of 3
    rep = await master.deliver(ME, _add("Bo"))
    assert rep["ok"] is False and "1 of 3 nodes, 2 needed" in rep["error"]
    master._can_commit = False
    rep = await master.deliver(ME, _add("Cy"))
    assert rep["ok"] is False and "no majority" in rep["error"] and svc.store.current.version == 2


async def test_a_replica_refuses_stale_terms_strangers_and_bad_galleries(tmp_path: Path) -> None:
    ctx = FakeContext(ME, home=tmp_path, master_id=MASTER, term=5)
    svc = PeopleService(ctx)
    g = msgspec.to_builtins(gal.with_added(gal.Gallery(), "Ada", [_emb()], term=5))
    assert (await ctx.deliver(MASTER, {"t": "people.commit", "term": 4, "gallery": g}))["ok"] is False
    assert (await ctx.deliver(OTHER, {"t": "people.commit", "term": 5, "gallery": g}))["ok"] is False
    bad = json.loads(json.dumps(g))
    bad["people"][0]["embeddings"][0]["vector"][3] = 1e9
    assert (await ctx.deliver(MASTER, {"t": "people.commit", "term": 5, "gallery": bad}))["ok"] is False
    assert svc.store.current.version == 0
    rep = await ctx.deliver(MASTER, {"t": "people.commit", "term": 5, "gallery": g})
    assert (rep["term"], rep["version"]) == (5, 1) and svc.store.current.version == 1
    rep = await ctx.deliver(OTHER, _add())  # not the master: refused, nothing changes
    assert rep["ok"] is False and svc.store.current.version == 1


async def test_a_new_master_adopts_the_newest_gallery_of_the_live_nodes(tmp_path: Path) -> None:
    newest = gal.with_added(gal.with_added(gal.Gallery(), "Ada", [_emb()], term=3), "Bo", [_emb(0.2)], term=3)
    ctx = FakeContext(MASTER, home=tmp_path, master_id=MASTER, is_master=True, term=4)
    ctx.peer_views = [_peer(ME), _peer(OTHER)]
    held = {ME: newest, OTHER: gal.Gallery()}
    pushed = []

    async def on_request(peer, msg, timeout):
        if msg["t"] == "people.fetch":
            return {"gallery": msgspec.to_builtins(held[peer])}
        pushed.append((peer, msg["gallery"]["version"]))
        return {"term": msg["gallery"]["term"], "version": msg["gallery"]["version"]}

    ctx.on_request = on_request
    svc = PeopleService(ctx)
    await svc.sync()
    assert svc.store.current == newest and sorted(pushed) == [(ME, 2), (OTHER, 2)]
    rep = await ctx.deliver(ME, _add("Cy"))
    assert (rep["version"], svc.store.current.term) == (3, 4)


async def test_a_master_that_heard_from_no_majority_commits_nothing_and_a_rejoining_node_catches_it_up(
    tmp_path: Path,
) -> None:
    """A version committed by the old master on a majority that this master could not ask yet must not be
    built over: no commit until a majority has answered; a node that comes back hands its newer one over."""
    newer = gal.with_added(gal.Gallery(), "Ada", [_emb()], term=3)
    ctx = FakeContext(MASTER, home=tmp_path, master_id=MASTER, is_master=True, term=4)
    ctx.peer_views = [_peer(ME), _peer(OTHER)]
    reachable: set[str] = set()

    async def on_request(peer, msg, timeout):
        if peer not in reachable:
            raise ConnectionError("not connected")
        if msg["t"] == "people.fetch":
            return {"gallery": msgspec.to_builtins(newer)}
        return {"term": msg["gallery"]["term"], "version": msg["gallery"]["version"]}

    ctx.on_request = on_request
    svc = PeopleService(ctx)
    rep = await ctx.deliver(ME, _add("Bo"))
    assert rep["ok"] is False and "no majority" in rep["error"] and svc.store.current.version == 0
    reachable.add(ME)
    await svc._step({"kind": "peer", "change": "alive", "node_id": ME})
    assert svc.store.current == newer  # caught up from the node that came back
    rep = await ctx.deliver(ME, _add("Bo"))
    assert rep["version"] == 2 and [p.name for p in svc.store.current.people] == ["Ada", "Bo"]
