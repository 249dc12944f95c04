"""The people service of a node: enrolment here, the gallery's commits on the master, a replica everywhere.

Enrolment (`enrol`, the `people_add` command) runs on the node that holds the photos: it reads, detects,
aligns and embeds each photo in a worker thread (dlib, no TensorFlow) and sends only the embeddings and
the photos' file names to the master (`people.add`). A photo that cannot enrol (unreadable, no face,
several faces, a face too small) is reported by name and sent nowhere; nothing is sent when no photo is
usable.

The master commits a change only while it sees a majority (`can_commit`), as the next version under its
term: it keeps the new gallery, sends it to every live node (`people.commit`, fenced by term) and answers
the enrolling node once more than half of `quorum_size` nodes (itself included) hold it. A node that
becomes master first asks every live node for its gallery (`people.fetch`) and adopts the newest by
``(term, version)``: a version committed by the old master is on a majority, so on one of the nodes the
new master sees. Nodes that join or come back get the gallery from the master (catch-up).
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from ..net.transport import RemoteError
from ..node.context import ServiceContext, fenced, handler, may_commit_soon, refusal, register_handlers
from ..node.events import each_event
from . import gallery as gal
from .messages import PeopleAdd, PeopleCommit, PeopleFetch, PeopleRemove

log = logging.getLogger("collab.people")

COMMIT_TIMEOUT = 5.0  # seconds a replica has to confirm a commit
FETCH_TIMEOUT = 3.0
MAX_PHOTOS = 256  # per `people add`
MAX_PHOTO_BYTES = 50 * 1024 * 1024


class NotCommitted(RuntimeError):
    """The master could not get a change onto a majority of the cluster."""


def enrol_files(paths: list[str], detector: str | None = None) -> tuple[list[dict], list[dict]]:
    """(embeddings, problems) of the photos under `paths` (files, folders, globs): one {"vector",
    "source"} per usable photo, one {"source", "error"} per photo that cannot enrol. Runs in a thread."""
    from ..ml import face_id
    from ..ml.images import collect_images

    files = collect_images(paths)
    if not files:
        raise ValueError("no photos found")
    if len(files) > MAX_PHOTOS:
        raise ValueError(f"{len(files)} photos: at most {MAX_PHOTOS} per `people add`")
    good, bad = [], []
    for path in files:
        source = path.name[:128]
        try:
            if path.stat().st_size > MAX_PHOTO_BYTES:
                raise face_id.EnrolError(f"larger than {MAX_PHOTO_BYTES // (1024 * 1024)} MB")
            got = face_id.enrol_photo(path.read_bytes(), detector)
        except face_id.EnrolError as exc:
            bad.append({"source": source, "error": str(exc)})
            continue
        except OSError as exc:
            bad.append({"source": source, "error": f"cannot be read: {exc.strerror or exc}"})
            continue
        good.append({"vector": got["embedding"], "source": source})
    return good, bad


class PeopleService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.store = gal.GalleryStore(ctx.home)
        self._lock = asyncio.Lock()  # one change at a time on the master
        self._synced_term = -1  # the term in which this node, as master, adopted the newest gallery
        self._task: asyncio.Task | None = None
        self._sub = None
        ctx.add_capabilities("identify")
        register_handlers(ctx, self)

    # ----------------------------------------------------------------- life cycle
    async def start(self) -> None:
        self._sub = self.ctx.subscribe({"master", "peer", "role"})
        self._task = asyncio.get_running_loop().create_task(each_event(self._sub, self._step, "people service loop"))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._sub:
            self._sub.close()

    async def _step(self, ev: dict | None) -> None:
        if not self.ctx.is_master:
            return
        if self._synced_term != self.ctx.term:
            await self.sync()
        elif ev and ev["kind"] == "peer" and ev["change"] in ("join", "alive", "restart"):
            await self._catch_up(ev["node_id"])

    # ----------------------------------------------------------------- master: adopt, commit, replicate
    async def sync(self) -> None:
        """As a new master: adopt the newest gallery of the live nodes, then give it to every one of them.
        It counts as done for this term only once a majority has answered (a version committed by an
        earlier master is on a majority: one of them has it)."""
        async with self._lock:
            term = self.ctx.term
            if self._synced_term == term:
                return
            peers = list(self.ctx.alive_ids())
            replies = await asyncio.gather(*(self._fetch(p) for p in peers))
            for g in replies:
                self._adopt(g)
            await asyncio.gather(*(self._push(p, self.store.current) for p in peers))
            if 1 + sum(g is not None for g in replies) > self.ctx.quorum_size() // 2:
                self._synced_term = term

    async def _catch_up(self, peer: str) -> None:
        """A node that (re)joins: keep its gallery if it is newer, then give it ours."""
        async with self._lock:
            self._adopt(await self._fetch(peer))
            await self._push(peer, self.store.current)

    def _adopt(self, g: gal.Gallery | None) -> None:
        if g is not None and self.store.keep(g):
            log.info("people gallery: adopted version %d (term %d) from a replica", g.version, g.term)

    async def _fetch(self, peer: str) -> gal.Gallery | None:
        try:
            rep = await self.ctx.request(peer, {"t": "people.fetch", "term": self.ctx.term}, FETCH_TIMEOUT)
            return gal.check(rep.get("gallery"))
        except (OSError, TimeoutError, RemoteError, gal.GalleryError) as exc:
            log.info("people gallery: no answer from %s (%s)", peer[:12], exc)
            return None

    async def _push(self, peer: str, g: gal.Gallery) -> bool:
        """Send `g` to `peer`; True once the peer holds it."""
        if g.version == 0 or not self.ctx.connected(peer):
            return False
        msg = {"t": "people.commit", "term": self.ctx.term, "gallery": msgspec.to_builtins(g)}
        try:
            rep = await self.ctx.request(peer, msg, COMMIT_TIMEOUT)
        except (OSError, TimeoutError, RemoteError) as exc:
            log.info("people gallery: version %d not confirmed by %s (%s)", g.version, peer[:12], exc)
            return False
        return (rep.get("term"), rep.get("version")) == (g.term, g.version)

    async def _commit(self, change) -> dict:
        """Apply `change(gallery, term) -> gallery` as the next version and get it onto a majority."""
        if not self.ctx.is_master:
            raise NotCommitted("this node is not the master")
        if self._synced_term != self.ctx.term:
            await self.sync()
        await may_commit_soon(self.ctx)  # a new master's grants come with the next heartbeats
        async with self._lock:
            if not self.ctx.can_commit() or self._synced_term != self.ctx.term:
                raise NotCommitted("the master sees no majority of the cluster: nothing was changed")
            new = change(self.store.current, self.ctx.term)
            self.store.keep(new)
            acks = await asyncio.gather(*(self._push(p, new) for p in self.ctx.alive_ids()))
            held, need = 1 + sum(acks), self.ctx.quorum_size() // 2 + 1
            self.ctx.publish("people", version=new.version, people=len(new.people))
            if held < need:
                raise NotCommitted(
                    f"version {new.version} is held by {held} of {self.ctx.quorum_size()} nodes, {need} needed:"
                    " it may be lost if the master fails now; try again"
                )
            return {"version": new.version, "replicas": held, "people": len(new.people)}

    # ----------------------------------------------------------------- any node: the user's commands
    async def enrol(self, name: str, paths: list[str], detector: str | None = None) -> dict:
        """`collab people add NAME PHOTO_OR_DIR...` on this node: photos embedded here, embeddings sent."""
        name = gal.check_name(name)
        good, bad = await asyncio.to_thread(enrol_files, paths, detector)
        out = {"name": name, "added": len(good), "problems": bad}
        if not good:
            raise ValueError(
                f"no photo could enrol {name}: " + "; ".join(f"{b['source']}: {b['error']}" for b in bad)[:1500]
            )
        if len(good) > gal.MAX_PER_PERSON:
            raise ValueError(f"{len(good)} usable photos: at most {gal.MAX_PER_PERSON} per person")
        msg = {"t": "people.add", "name": name, "embeddings": good}
        out.update(await self._to_master(msg))
        return out

    async def remove(self, name: str) -> dict:
        return {"name": name, **await self._to_master({"t": "people.remove", "name": gal.check_name(name)})}

    async def _to_master(self, msg: dict) -> dict:
        master = self.ctx.master_id
        if master is None:
            raise RuntimeError("there is no master right now: try again in a moment")
        if master == self.ctx.node_id:
            return await self._apply(self.ctx.node_id, msg)
        try:
            rep = await self.ctx.request(master, msg, COMMIT_TIMEOUT * 2 + FETCH_TIMEOUT)
        except RemoteError as exc:
            raise RuntimeError(f"the master refused: {exc}") from None
        return {k: rep[k] for k in ("version", "replicas", "people") if k in rep}

    async def _apply(self, sender: str, msg: dict) -> dict:
        if msg["t"] == "people.remove":
            return await self._commit(lambda g, term: gal.without(g, msg["name"], term))
        peer = self.ctx.peer(sender)
        node_name = self.ctx.name if sender == self.ctx.node_id else (peer.name if peer else "")
        now = time.time()
        new = [
            gal.Embedding(
                vector=[round(v, 6) for v in e["vector"]],  # a replica's commit frame stays bounded
                node=sender,
                node_name=node_name[:64],
                source=e.get("source", ""),
                added=now,
            )
            for e in msg["embeddings"]
        ]
        return await self._commit(lambda g, term: gal.with_added(g, msg["name"], new, term, now))

    # ----------------------------------------------------------------- handlers
    @handler(PeopleAdd, PeopleRemove)
    async def _on_change(self, sender: str, msg: dict) -> dict:
        try:
            return await self._apply(sender, msg)
        except (gal.GalleryError, NotCommitted) as exc:
            return refusal(str(exc))

    @handler(PeopleCommit)
    @fenced
    async def _on_commit(self, sender: str, msg: dict) -> dict:
        try:
            g = gal.check(msg["gallery"])
        except gal.GalleryError as exc:
            return refusal(str(exc))
        if await asyncio.to_thread(self.store.keep, g):
            self.ctx.publish("people", version=g.version, people=len(g.people))
        cur = self.store.current
        return {"term": cur.term, "version": cur.version}

    @handler(PeopleFetch)
    @fenced
    async def _on_fetch(self, sender: str, msg: dict) -> dict:
        return {"gallery": msgspec.to_builtins(self.store.current)}

    # ----------------------------------------------------------------- views
    def listing(self) -> dict:
        g = self.store.current
        return {"version": g.version, "term": g.term, "committed": g.committed, "people": gal.summary(g)}

    def show(self, name: str) -> dict:
        return gal.person(self.store.current, name)

    def command_sets(self) -> list:
        from .commands import PeopleCommands

        return [PeopleCommands(self)]
