"""The people service's peer messages, declared once (net/schema.py): typed, bounded fields and who may
send them.

- `PeopleAdd`, `PeopleRemove`: any member (a node forwards its user's `collab people add|remove` to its
  master); only the master acts on them. An add carries embeddings and photo file names, never photos:
  the enrolling node detects and embeds its photos itself (service.py, `enrol`).
- `PeopleCommit`, `PeopleFetch`: the master only, in the receiver's term (``SENDER = MASTER``). A commit
  carries the whole gallery (at most `gallery.MAX_EMBEDDINGS` embeddings of 6-decimal numbers: ~3 MB), checked against the
  `gallery.Gallery` record by the schema and by `gallery.check` before a replica keeps it.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..net.schema import MASTER, PeerMessage, Term
from .gallery import MAX_PER_PERSON, Gallery, PersonName, Source, Vector

__all__ = ["NewEmbedding", "PeopleAdd", "PeopleRemove", "PeopleCommit", "PeopleFetch", "PEOPLE_MESSAGES"]


class NewEmbedding(msgspec.Struct, kw_only=True):
    vector: Vector
    source: Source = ""


class PeopleAdd(PeerMessage, tag="people.add"):
    """Enrol `name` with these embeddings (the sender is recorded as the node that enrolled them)."""

    name: PersonName
    embeddings: Annotated[list[NewEmbedding], msgspec.Meta(min_length=1, max_length=MAX_PER_PERSON)]


class PeopleRemove(PeerMessage, tag="people.remove"):
    name: PersonName


class PeopleCommit(PeerMessage, tag="people.commit"):
    """A new gallery version, master -> every node; the answer says which version the node now holds."""

    SENDER = MASTER
    term: Term
    gallery: Gallery


class PeopleFetch(PeerMessage, tag="people.fetch"):
    """A new master asks each node for the gallery it holds before it commits anything."""

    SENDER = MASTER
    term: Term


PEOPLE_MESSAGES: tuple[type[PeerMessage], ...] = (PeopleAdd, PeopleRemove, PeopleCommit, PeopleFetch)
