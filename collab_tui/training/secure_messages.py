"""Secure aggregation's peer messages and replies (training/secagg.py has the protocol), declared once:
typed, bounded, and sent by the master only, in the receiver's term. Every byte string travels as hex of
its exact size (public keys and seeds 32 bytes, a Shamir share 66, a sealed pair of shares 148), so a
reply that does not fit is refused before the protocol core sees it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from ..net.schema import MASTER, NodeId, PeerMessage, Term
from . import secagg_math as sm
from .messages import (
    MAX_CLIENTS,
    MAX_ROUNDS,
    RunId,
    _clean,  # one way to check a record against its schema
)

M = msgspec.Meta


def _hex(nbytes: int, most: int | None = None) -> Any:
    """Hex of exactly ``nbytes`` bytes (or ``nbytes`` to ``most``)."""
    span = f"{nbytes}" if most is None else f"{nbytes},{most}"
    return Annotated[str, M(pattern=f"^([0-9a-f]{{2}}){{{span}}}$")]


Key32 = _hex(32)
Spki = _hex(64, 200)  # a P-256 SubjectPublicKeyInfo in DER is 91 bytes
Signature = _hex(8, 80)  # a DER ECDSA P-256 signature is at most 72 bytes
Sealed = _hex(2 * sm.SHARE_BYTES + 16)  # an s share and a b share under AES-GCM
Share = _hex(sm.SHARE_BYTES)
RoundNo = Annotated[int, M(ge=1, le=MAX_ROUNDS)]
Nodes = Annotated[list[NodeId], M(max_length=MAX_CLIENTS)]


class AdvertRecord(msgspec.Struct, kw_only=True):
    """A participant's keys for a round (secagg.Advert): the answer to `FlSaKeys`."""

    node: NodeId
    c_pk: Key32
    s_pk: Key32
    commit: Key32
    spki: Spki
    sig: Signature


class SealedTo(msgspec.Struct, kw_only=True):
    to: NodeId
    sealed: Sealed


class SealedFrom(msgspec.Struct, kw_only=True):
    sender: NodeId = msgspec.field(name="from")
    sealed: Sealed


class ShareAnswer(msgspec.Struct, kw_only=True):
    of: NodeId
    kind: Literal["b", "s"]
    share: Share


class SharesReply(msgspec.Struct, kw_only=True):
    shares: Annotated[list[SealedTo], M(max_length=MAX_CLIENTS)]


class UnmaskReply(msgspec.Struct, kw_only=True):
    shares: Annotated[list[ShareAnswer], M(max_length=MAX_CLIENTS)]


class FlSaKeys(PeerMessage, tag="fl.sa.keys"):
    """Step 1: make this round's keys (answered with an `AdvertRecord`)."""

    SENDER = MASTER
    term: Term
    run_id: RunId
    round: RoundNo


class FlSaShares(PeerMessage, tag="fl.sa.shares"):
    """Step 2: every participant's keys; answered with this node's sealed shares (`SharesReply`)."""

    SENDER = MASTER
    term: Term
    run_id: RunId
    round: RoundNo
    adverts: Annotated[list[AdvertRecord], M(max_length=MAX_CLIENTS)]


class FlSaUnmask(PeerMessage, tag="fl.sa.unmask"):
    """Step 4: who survived, who dropped, and the sealed shares addressed to this node (`UnmaskReply`)."""

    SENDER = MASTER
    term: Term
    run_id: RunId
    round: RoundNo
    survivors: Nodes
    dropped: Nodes
    sealed: Annotated[list[SealedFrom], M(max_length=MAX_CLIENTS)]


SECURE_MESSAGES: tuple[type[PeerMessage], ...] = (FlSaKeys, FlSaShares, FlSaUnmask)


def check_advert(reply: object) -> dict[str, Any]:
    return _clean(AdvertRecord, reply, "secure-aggregation keys")


def check_shares(reply: object) -> list[dict[str, Any]]:
    return _clean(SharesReply, reply, "secure-aggregation shares")["shares"]


def check_unmask(reply: object) -> list[dict[str, Any]]:
    return _clean(UnmaskReply, reply, "secure-aggregation unmask shares")["shares"]
