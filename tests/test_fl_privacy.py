"""No image bytes cross the wire during federated training.

Design (what is real, what is not, and why the check can fail):

* The client side is the node's real training handlers (`TrainingService`'s handler table, fenced by
  term), behind a real `net.transport.Connection`, with its real ML process (TensorFlow in a child
  process, as on a node) training on a real *folder* dataset of PNG files. Only the node around it is a
  small stand-in, a fake `ServiceContext` (term check, phase messages routed back over the same
  connection).
* The master side is the test: it sends `fl.train` and `fl.eval` exactly as `TrainingService.client_train`
  and `collect_evals` do, over loopback TCP through a recording proxy. TLS is left out on purpose: the
  peer receives the plaintext application stream, so that is what must be clean.
* The auditor looks for the dataset's bytes in every view of what the client sent: the raw TCP stream,
  every reassembled blob (so a needle split across 256 KiB chunk frames is still found) and every JSON
  message; each needle raw, base64 (all 3 alignments) and hex. Needles: the PNG files of 20 training
  images, their decoded uint8 pixels and their float32 arrays exactly as the trainer sees them.
  Structurally, every blob the client sent must be a weights archive with exactly the model's tensor
  shapes, and every JSON message must be small, so there is no room for a dataset on the side.
* Positive control: the update's weight bytes *are* found in the stream (the auditor sees the traffic).
  Negative controls: a client that appends the images to its update, one that hides a PNG in base64 in
  its metrics, and the explicit opt-in `fl.data` path (`collab data split`) are all caught.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from fake_context import FakeContext
from wire_audit import WireAudit as BaseAudit

from collab_tui.ml import mltasks
from collab_tui.ml.datasets import DatasetRegistry, load_folder, split_holdout
from collab_tui.ml.updates import from_bytes, to_bytes
from collab_tui.net.transport import Connection, RemoteError
from collab_tui.node.context import PeerView
from collab_tui.training.rounds import RunConfig
from collab_tui.training.service import BUILTIN_MODELS, TrainingService

ARCH = BUILTIN_MODELS["digits"]
TERM = 7
MASTER_ID = "a" * 64


# ----------------------------------------------------------------------------- the auditor
class WireAudit(BaseAudit):
    """The shared auditor (tests/wire_audit.py) plus the checks of a training client's traffic."""

    def structural_problems(self, shapes: list[tuple]) -> list[str]:
        """Blobs that are not a weights archive of exactly ``shapes``; oversized JSON messages."""
        problems = []
        for header, data in self.blobs:
            try:
                got = [w.shape for w in from_bytes(data)]
            except ValueError as exc:
                problems.append(f"blob {header.get('kind')!r} is not a weights archive: {exc}")
                continue
            if got != shapes:
                problems.append(f"blob {header.get('kind')!r} holds tensors {got}, not the model's {shapes}")
        problems += [f"a {n}-byte JSON message" for n in self.message_sizes if n > 2048]
        return problems


# ----------------------------------------------------------------------------- a client node on loopback
def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """150 sklearn digits as 8x8 grayscale PNG files, DIR/<label>/NNN.png, and the needles."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits-png")
    d = load_digits()
    for i in range(150):
        folder = root / str(d.target[i])
        folder.mkdir(exist_ok=True)
        (folder / f"{i:03d}.png").write_bytes(_png((d.images[i] * 255 / 16).round().astype(np.uint8)))
    files = sorted(p for p in root.rglob("*.png"))
    x, y, _ = load_folder(root, (8, 8, 1))  # exactly what the client's trainer gets (same sorted order)
    x_tr, _, _, _ = split_holdout(x, y, frac=0.2, seed=0)
    needles: dict[str, bytes] = {}
    for j in range(20):  # 20 images of the training split, spread over it
        img = x_tr[j * (len(x_tr) // 20)]
        i = next(k for k in range(len(x)) if np.array_equal(x[k], img))
        needles[f"png file {files[i].name}"] = files[i].read_bytes()
        needles[f"uint8 pixels {files[i].name}"] = cv2.imdecode(
            np.frombuffer(files[i].read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE
        ).tobytes()
        needles[f"float32 input {files[i].name}"] = np.ascontiguousarray(img, np.float32).tobytes()
    return SimpleNamespace(root=root, files=files, x=x, needles=needles)


class _Context(FakeContext):
    """What `TrainingService` gets of its node on a client: the master is its one peer."""

    def __init__(self, home: Path) -> None:
        super().__init__(
            "c" * 64, home=home, term=TERM, master_id=MASTER_ID, peers=[PeerView(MASTER_ID)], capabilities=["train"]
        )
        self.conn: Connection | None = None
        self.on_send = self._send

    async def _send(self, node_id: str, msg: dict) -> bool:  # fl.phase goes to the master on our connection
        await self.conn.send(msg)
        return True


@contextlib.asynccontextmanager
async def wire(svc: TrainingService):
    """master Connection -> recording proxy -> client Connection (handler: the real training service).
    Yields (master_conn, recorded) where recorded["up"] is every byte the client sent."""
    recorded = {"up": bytearray(), "down": bytearray()}
    svc.ctx.conn = None
    tasks: list[asyncio.Task] = []

    async def client_side(reader, writer):
        conn = Connection(reader, writer)
        conn.peer_id, conn.handler = MASTER_ID, lambda c, msg: svc.ctx.deliver(c.peer_id, msg)
        svc.ctx.conn = conn
        tasks.append(asyncio.current_task())
        await conn.run()

    async def pump(reader, writer, sink: bytearray):
        try:
            while data := await reader.read(65536):
                sink += data
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    client_srv = await asyncio.start_server(client_side, "127.0.0.1", 0)
    client_port = client_srv.sockets[0].getsockname()[1]

    async def proxy_side(m_reader, m_writer):
        c_reader, c_writer = await asyncio.open_connection("127.0.0.1", client_port)
        tasks.append(asyncio.current_task())
        await asyncio.gather(pump(m_reader, c_writer, recorded["down"]), pump(c_reader, m_writer, recorded["up"]))

    proxy_srv = await asyncio.start_server(proxy_side, "127.0.0.1", 0)
    proxy_port = proxy_srv.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    master = Connection(reader, writer)
    master.peer_id = svc.ctx.node_id
    phases: list[dict] = []

    async def on_master_message(conn, msg):
        phases.append(msg)

    master.handler = on_master_message
    master_task = asyncio.create_task(master.run())
    for _ in range(500):  # the proxy and the client side accept asynchronously
        if svc.ctx.conn is not None:
            break
        await asyncio.sleep(0.01)
    assert svc.ctx.conn is not None, "the client side never accepted the connection"
    try:
        yield master, recorded, phases
    finally:
        await asyncio.sleep(0.1)  # let the last phase message through the proxy
        await master.close()
        await asyncio.wait_for(master_task, 5)
        for srv in (proxy_srv, client_srv):
            srv.close()
        # closing the master's end lets the proxy pumps and the client connection finish on their own
        _, pending = await asyncio.wait(tasks, timeout=5) if tasks else (set(), set())
        assert not pending, "the loopback connections did not wind down"


def _service(tmp_path: Path, dataset) -> TrainingService:
    ctx = _Context(tmp_path / "client-home")
    DatasetRegistry(ctx.home).add("default", {"kind": "folder", "path": str(dataset.root), "input_shape": [8, 8, 1]})
    svc = TrainingService(ctx)
    assert "data:default" in ctx.capabilities()
    return svc


def _config(**kw) -> dict:
    return RunConfig(model="digits", arch=dict(ARCH), epochs=2, batch_size=16, lr=0.1, **kw).validate().__dict__.copy()


def _train_fields(config: dict) -> dict:
    # exactly the fields TrainingService.client_train sends
    return {"kind": "fl.train", "run_id": "0123456789abcdef", "round": 1, "version": "", "config": config, "term": TERM}


async def _stop_ml(svc: TrainingService) -> None:
    pool = svc.client.ml._pool
    if pool is not None:
        svc.client.ml._pool = None
        await asyncio.wait_for(asyncio.to_thread(pool.shutdown, True, cancel_futures=True), 30)


# ----------------------------------------------------------------------------- the real thing
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_training_round_sends_no_image_bytes(tmp_path, dataset):
    svc = _service(tmp_path, dataset)
    try:
        global_bytes = await asyncio.wait_for(svc.client.ml.call(mltasks.initial_weights, ARCH, 0), 90)
        shapes = [w.shape for w in from_bytes(global_bytes)]
        config = _config()
        async with wire(svc) as (master, recorded, phases):
            reply = await master.request_blob(_train_fields(config), global_bytes, timeout=90)
            ev = await master.request_blob(
                {"kind": "fl.eval", "run_id": "0123456789abcdef", "config": config, "term": TERM},
                reply["data"],
                timeout=60,
            )
            # a stale master is refused before any work (the node admits only its own term)
            with pytest.raises(RemoteError, match="term"):
                await master.request_blob({**_train_fields(config), "term": TERM - 1}, global_bytes, timeout=10)
        update = from_bytes(reply["data"])
        # the client really trained on its PNGs: 120 training images, the model moved, metrics are plain numbers
        assert reply["num_examples"] == 120 and [w.shape for w in update] == shapes
        assert any(not np.array_equal(a, b) for a, b in zip(update, from_bytes(global_bytes)))
        assert set(reply["metrics"]) >= {"loss"} and reply["eval"]["n"] == 30 and ev["eval"]["n"] == 30
        assert [p["phase"] for p in phases] == ["train", "upload"]

        up = WireAudit(bytes(recorded["up"]))
        down = WireAudit(bytes(recorded["down"]))
        # positive control: the auditor does see the update's weights in what the client sent
        weight_needles = {f"update tensor {i}": w.tobytes() for i, w in enumerate(update) if w.nbytes >= 64}
        assert len(up.find(weight_needles)) == len(weight_needles)
        assert len(up.blobs) == 1 and up.blobs[0][0]["kind"] == "fl.update"
        # the property under test
        assert up.find(dataset.needles) == []
        assert down.find(dataset.needles) == []
        assert up.structural_problems(shapes) == []
        assert len(up.raw) < len(reply["data"]) + 8 * 1024  # the update plus a little framing and metadata
    finally:
        await _stop_ml(svc)


# ----------------------------------------------------------------------------- negative controls
def _fake_update(shapes=((8,), (4, 3))) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=s).astype(np.float32) for s in shapes]


async def _run_leaky(tmp_path, dataset, leaky_train) -> WireAudit:
    svc = _service(tmp_path, dataset)
    svc.client.train = leaky_train  # replaces the ML call: no TensorFlow needed for the controls
    async with wire(svc) as (master, recorded, _):
        await master.request_blob(_train_fields(_config()), to_bytes(_fake_update()), timeout=10)
    assert svc.client.ml._pool is None
    return WireAudit(bytes(recorded["up"]))


async def test_auditor_accepts_a_clean_update(tmp_path, dataset):
    async def clean(msg):
        return {"kind": "fl.update", "num_examples": 120, "metrics": {"loss": 0.5}}, to_bytes(_fake_update())

    audit = await _run_leaky(tmp_path, dataset, clean)
    assert audit.find(dataset.needles) == [] and audit.structural_problems([(8,), (4, 3)]) == []


async def test_auditor_catches_images_appended_to_the_update(tmp_path, dataset):
    async def leaky(msg):  # smuggles the training images as an extra "tensor" of the update
        return {"kind": "fl.update", "num_examples": 120, "metrics": {}}, to_bytes(_fake_update() + [dataset.x])

    audit = await _run_leaky(tmp_path, dataset, leaky)
    found = audit.find(dataset.needles)
    assert any(f.startswith("float32 input") for f in found), found
    assert audit.structural_problems([(8,), (4, 3)]) == [
        f"blob 'fl.update' holds tensors [(8,), (4, 3), {dataset.x.shape}], not the model's [(8,), (4, 3)]"
    ]


async def test_auditor_catches_a_png_hidden_in_base64_metadata(tmp_path, dataset):
    name = next(k for k in dataset.needles if k.startswith("png file"))
    png = dataset.needles[name]

    async def leaky(msg):
        b64 = base64.b64encode(b"xx" + png).decode()  # misaligned on purpose
        return {"kind": "fl.update", "num_examples": 120, "metrics": {"note": b64}}, to_bytes(_fake_update())

    audit = await _run_leaky(tmp_path, dataset, leaky)
    found = audit.find(dataset.needles)
    assert found == [f"{name} in raw stream as base64+1"], found
    assert base64.b64encode(png[1:][: (len(png) - 1) // 3 * 3]) in audit.views()["message 0 (blob)"]


async def test_auditor_catches_the_opt_in_data_split_path(tmp_path, dataset):
    """`collab data split` deliberately sends images (fl.data): the auditor must flag exactly that."""
    svc = _service(tmp_path, dataset)
    async with wire(svc) as (master, recorded, _):
        buf = io.BytesIO()
        np.savez(buf, x=dataset.x, y=np.zeros(len(dataset.x), np.int64))  # what data_split sends
        await asyncio.wait_for(
            svc.ctx.conn.send_blob({"kind": "fl.data", "name": "d"}, buf.getvalue(), chunk_size=1000), 10
        )
    audit = WireAudit(bytes(recorded["up"]))
    found = audit.find({k: v for k, v in dataset.needles.items() if k.startswith("float32")})
    assert len(found) == 20, found
    assert any("in blob 0 as raw" in f for f in found)  # some straddle 1000-byte chunks: only the blob view has them
    assert audit.structural_problems([(8,)])  # not a weights archive of the model's shapes
