"""Secure aggregation (Bonawitz et al. 2017, the protocol with signed keys) as sans-IO state machines:
`ClientRound` on every client, `MasterRound` on the master. The master learns only the sum of the
round's updates, never one client's; the arithmetic is in secagg_math.py, the wire in secure_rounds.py.

Round r of a run with ``secure``, n selected clients, threshold t = n // 2 + 1:

1. **keys** (master -> each selected client): the client makes two X25519 key pairs (c seals shares, s
   makes pair masks) and a self-mask seed b, and answers its public keys and a hash of b, signed with its
   node key (ECDSA P-256; a node id is the hash of that public key, so anyone can check who signed).
2. **shares** (master -> each client that answered, with every answer, U1): the client checks every
   signature, that every participant is a member it knows and that there are at least `MIN_CLIENTS`,
   then splits its s private key and b into t-of-|U1| Shamir shares and seals one of each for every other
   participant (AES-GCM keyed by X25519 of their c keys). The master holds them and cannot open them.
3. **train** (master -> each client that sent shares, U2): the client trains, then sends
   ``encode(update) + PRG(b) + sum over v in U2 of ±PRG(s_uv)`` (+ if u < v), s_uv the agreement of
   u's and v's s keys: the pair masks cancel in the sum; the self mask hides even a lone update.
4. **unmask** (master -> each client whose update arrived, U3, with the sealed shares addressed to it):
   the client answers its share of b_u for every u in U3 and its share of u's s key for every u in U2 \\ U3
   (dropped after the shares), never both for one node and only once per round. From t answers the master
   rebuilds each b_u and each dropped node's s key, takes the masks off and decodes the weighted sum.

Dropouts: a round survives clients dropping at any step as long as at least `survivors_needed(n)` =
max(3, t) updates arrive and as many survivors answer `unmask`: with 3 clients none may drop, with 4 one,
with 5 two, with n, n - max(3, n // 2 + 1). A client or master that breaks the rules gets `SecAggError`, which fails the round, not the node.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..net.pki import sign_with  # noqa: F401 - re-exported: the signer a ClientRound takes
from . import secagg_math as sm
from .secagg_math import SecAggError

MIN_CLIENTS = 3  # the sum of two updates tells each client the other's
STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam")  # those that need only the weighted sum
_TAG = b"collab secagg v1\0"

Wire = dict[str, str]  # an advert, a sealed share or a share answer as the wire carries it (hex strings)
Signer = Callable[[bytes], bytes]


def threshold(n: int) -> int:
    """Shares needed to rebuild a secret among ``n`` participants: a majority, so that no two disjoint
    sets of answers can give the master both kinds of share of one client."""
    return n // 2 + 1


def survivors_needed(n: int) -> int:
    """Updates a round of ``n`` participants needs before anything is revealed: the threshold, and never
    fewer than `MIN_CLIENTS` (the sum of two updates would tell each of them the other's)."""
    return max(MIN_CLIENTS, threshold(n))


def _round_id(run_id: str, round_no: int) -> bytes:
    return _TAG + run_id.encode() + b"\0" + round_no.to_bytes(8, "big")


def _signed_bytes(run_id: str, round_no: int, node: str, c_pk: bytes, s_pk: bytes, commit: bytes) -> bytes:
    return _round_id(run_id, round_no) + node.encode() + b"\0" + c_pk + s_pk + commit


def _commit(run_id: str, round_no: int, b: bytes) -> bytes:
    return hashlib.sha256(_round_id(run_id, round_no) + b"self mask" + b).digest()


def _pair_context(run_id: str, round_no: int, what: bytes, u: str, v: str) -> bytes:
    a, b = sorted((u, v))
    return _round_id(run_id, round_no) + what + a.encode() + b"\0" + b.encode()


@dataclass(frozen=True)
class Advert:
    """A participant's public keys for one round, signed with its node key."""

    node: str
    c_pk: bytes
    s_pk: bytes
    commit: bytes  # sha256 of the self-mask seed
    spki: bytes  # the node key's public key (SubjectPublicKeyInfo DER): its hash is the node id
    sig: bytes

    def to_wire(self) -> Wire:
        return {k: (v if isinstance(v, str) else v.hex()) for k, v in self.__dict__.items()}

    @classmethod
    def from_wire(cls, d: Wire) -> Advert:
        return cls(d["node"], *(bytes.fromhex(d[k]) for k in ("c_pk", "s_pk", "commit", "spki", "sig")))

    def verify(self, run_id: str, round_no: int) -> None:
        if hashlib.sha256(self.spki).hexdigest() != self.node:
            raise SecAggError(f"keys of {self.node[:12]} are not signed by that node's key")
        try:
            pub = serialization.load_der_public_key(self.spki)
            if not isinstance(pub, ec.EllipticCurvePublicKey):
                raise ValueError("not an EC key")
            data = _signed_bytes(run_id, round_no, self.node, self.c_pk, self.s_pk, self.commit)
            pub.verify(self.sig, data, ec.ECDSA(hashes.SHA256()))
        except (ValueError, TypeError, InvalidSignature):
            raise SecAggError(f"the keys of {self.node[:12]} carry a bad signature") from None


def _flat(weights: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(w, np.float64).ravel() for w in weights]) if weights else np.zeros(0)


def unflatten(flat: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    out, at = [], 0
    for w in like:
        out.append(flat[at : at + w.size].reshape(w.shape).astype(w.dtype))
        at += w.size
    return out


def _pair_sign(u: str, v: str) -> int:
    return 1 if u < v else -1


# ----------------------------------------------------------------------------- client
class ClientRound:
    """One client's part in one secure round. Every step refuses what the protocol does not allow."""

    def __init__(self, run_id: str, round_no: int, node_id: str, spki: bytes, sign: Signer) -> None:
        self.run_id, self.round, self.node = run_id, round_no, node_id
        self._c, self._s = sm.new_key(), sm.new_key()
        self._b = secrets.token_bytes(sm.SECRET_BYTES)
        c_pk, s_pk = sm.public_bytes(self._c), sm.public_bytes(self._s)
        commit = _commit(run_id, round_no, self._b)
        self.advert = Advert(
            node_id, c_pk, s_pk, commit, spki, sign(_signed_bytes(run_id, round_no, node_id, c_pk, s_pk, commit))
        )
        self.adverts: dict[str, Advert] = {}  # U1, once the shares are made
        self.masked_with: tuple[str, ...] = ()  # U2, once the update is masked
        self.unmasked = False

    def share_keys(self, adverts: list[Wire], members: set[str]) -> list[Wire]:
        """Check U1's keys; the sealed shares of this client's secrets, one per other participant."""
        if self.adverts:
            raise SecAggError("the shares of this round were already made")
        got = {}
        for d in adverts:
            a = Advert.from_wire(d)
            if a.node in got:
                raise SecAggError(f"{a.node[:12]} is listed twice")
            if a.node != self.node and a.node not in members:
                raise SecAggError(f"{a.node[:12]} is not a member this node knows")
            a.verify(self.run_id, self.round)
            got[a.node] = a
        if got.get(self.node) != self.advert:
            raise SecAggError("this node's own keys are missing or altered")
        if len(got) < MIN_CLIENTS:
            raise SecAggError(f"a secure round needs at least {MIN_CLIENTS} clients, got {len(got)}")
        order = sorted(got)
        t = threshold(len(order))
        s_shares = sm.split(sm.private_bytes(self._s), len(order), t)
        b_shares = sm.split(self._b, len(order), t)
        self.adverts = got
        self._own = {"s": s_shares[order.index(self.node)], "b": b_shares[order.index(self.node)]}
        out = []
        for i, v in enumerate(order):
            if v != self.node:
                key = sm.agree(self._c, got[v].c_pk, _pair_context(self.run_id, self.round, b"seal", self.node, v))
                aad = _round_id(self.run_id, self.round) + self.node.encode() + b">" + v.encode()
                out.append({"to": v, "sealed": sm.seal(key, 0, s_shares[i] + b_shares[i], aad).hex()})
        return out

    def mask(
        self, reference: list[np.ndarray], trained: list[np.ndarray], num_examples: int, u2: list[str]
    ) -> np.ndarray:
        """The masked, fixed-point update for the participants ``u2`` (a subset of U1 holding this node)."""
        if not self.adverts:
            raise SecAggError("no shares were made for this round")
        if self.masked_with:
            raise SecAggError("this round's update was already masked")
        members = set(u2)
        if len(members) != len(u2) or not members <= set(self.adverts) or self.node not in members:
            raise SecAggError("the round's participants are not the ones whose keys this node checked")
        if len(members) < survivors_needed(len(self.adverts)):
            raise SecAggError(f"only {len(members)} participants sent shares, fewer than the threshold")
        delta = _flat(trained) - _flat(reference)
        y = sm.encode(delta, num_examples, len(members))
        y += sm.mask(self._b, y.size)
        for v in sorted(members - {self.node}):
            seed = sm.agree(
                self._s, self.adverts[v].s_pk, _pair_context(self.run_id, self.round, b"mask", self.node, v)
            )
            m = sm.mask(seed, y.size)
            y = y + m if _pair_sign(self.node, v) > 0 else y - m
        self.masked_with = tuple(sorted(members))
        return y

    def unmask(self, survivors: list[str], dropped: list[str], sealed: list[Wire]) -> list[Wire]:
        """This client's shares: of b for each survivor, of the s key for each dropped node."""
        if self.unmasked:
            raise SecAggError("this round was already unmasked")
        if not self.masked_with:
            raise SecAggError("this node sent no update in this round")
        alive, gone = set(survivors), set(dropped)
        if alive & gone or alive | gone != set(self.masked_with) or len(alive) != len(survivors):
            raise SecAggError("survivors and dropped nodes must split the round's participants")
        if self.node not in alive:
            raise SecAggError("this node's update arrived but it is listed as dropped")
        if len(alive) < survivors_needed(len(self.adverts)):
            raise SecAggError(f"only {len(alive)} survivors, fewer than the threshold: nothing is revealed")
        opened = {self.node: self._own}
        for d in sealed:
            u = d["from"]
            if u not in self.masked_with or u == self.node or u in opened:
                raise SecAggError(f"an unexpected share from {str(u)[:12]}")
            key = sm.agree(self._c, self.adverts[u].c_pk, _pair_context(self.run_id, self.round, b"seal", u, self.node))
            aad = _round_id(self.run_id, self.round) + u.encode() + b">" + self.node.encode()
            plain = sm.unseal(key, 0, bytes.fromhex(d["sealed"]), aad)
            if len(plain) != 2 * sm.SHARE_BYTES:
                raise SecAggError(f"a share from {u[:12]} has the wrong size")
            opened[u] = {"s": plain[: sm.SHARE_BYTES], "b": plain[sm.SHARE_BYTES :]}
        self.unmasked = True
        out = []
        for u, parts in sorted(opened.items()):
            kind = "b" if u in alive else "s"
            out.append({"of": u, "kind": kind, "share": parts[kind].hex()})
        return out


# ----------------------------------------------------------------------------- master
@dataclass
class MasterRound:
    """The master's view of one secure round: who advertised, who shared, whose update arrived."""

    run_id: str
    round: int
    adverts: dict[str, Advert] = field(default_factory=dict)  # U1
    sealed: dict[str, dict[str, str]] = field(default_factory=dict)  # U2: sender -> {receiver: sealed hex}
    masked: dict[str, np.ndarray] = field(default_factory=dict)  # U3: node -> masked words
    counts: dict[str, int] = field(default_factory=dict)
    answers: dict[str, dict[str, tuple[str, bytes]]] = field(default_factory=dict)  # answerer -> {of: (kind, share)}

    def add_advert(self, d: Wire) -> None:
        a = Advert.from_wire(d)
        a.verify(self.run_id, self.round)
        self.adverts[a.node] = a

    def u1(self) -> list[str]:
        return sorted(self.adverts)

    def add_shares(self, node: str, shares: list[Wire]) -> None:
        want = set(self.adverts) - {node}
        got = {d["to"]: d["sealed"] for d in shares}
        if node not in self.adverts or set(got) != want or len(got) != len(shares):
            raise SecAggError(f"{node[:12]} sent shares for the wrong participants")
        self.sealed[node] = got

    def u2(self) -> list[str]:
        return sorted(self.sealed)

    def add_masked(self, node: str, words: np.ndarray, num_examples: int, size: int) -> None:
        if node not in self.sealed:
            raise SecAggError(f"an update from {node[:12]}, which sent no shares")
        if words.dtype != np.uint64 or words.shape != (size,):
            raise SecAggError(f"the masked update of {node[:12]} is not {size} uint64 words")
        self.masked[node], self.counts[node] = words, int(num_examples)

    def unmask_request(self, node: str) -> dict[str, list[str] | list[Wire]]:
        """What survivor ``node`` needs to answer `unmask`."""
        alive = sorted(self.masked)
        return {
            "survivors": alive,
            "dropped": [u for u in self.u2() if u not in self.masked],
            "sealed": [{"from": u, "sealed": s[node]} for u, s in sorted(self.sealed.items()) if u != node],
        }

    def add_answer(self, node: str, shares: list[Wire]) -> None:
        if node not in self.masked:
            raise SecAggError(f"unmask shares from {node[:12]}, which is no survivor")
        alive = set(self.masked)
        got = {}
        for d in shares:
            want = "b" if d["of"] in alive else "s"
            if d["of"] not in self.sealed or d["kind"] != want or d["of"] in got:
                raise SecAggError(f"{node[:12]} answered the wrong shares")
            got[d["of"]] = (d["kind"], bytes.fromhex(d["share"]))
        self.answers[node] = got

    def _secret(self, of: str) -> bytes:
        order = self.u1()
        shares = {order.index(a) + 1: got[of][1] for a, got in self.answers.items() if of in got}
        t = threshold(len(order))
        if len(shares) < t:
            raise SecAggError(f"{len(shares)} shares of {of[:12]}'s secret arrived, {t} are needed")
        return sm.combine(dict(list(shares.items())[:t]))

    def finish(self) -> tuple[np.ndarray, int, list[str]]:
        """(weighted mean delta, summed examples, dropped nodes whose masks were taken off)."""
        if len(self.masked) < MIN_CLIENTS:
            raise SecAggError(f"{len(self.masked)} masked updates arrived, a secure round needs {MIN_CLIENTS}")
        total = np.zeros_like(next(iter(self.masked.values())))
        for words in self.masked.values():
            total += words
        for u in self.masked:
            b = self._secret(u)
            if _commit(self.run_id, self.round, b) != self.adverts[u].commit:
                raise SecAggError(f"the shares of {u[:12]}'s self mask do not rebuild it (a bad share)")
            total -= sm.mask(b, total.size)
        dropped = [u for u in self.u2() if u not in self.masked]
        for u in dropped:
            s_key = sm.load_private(self._secret(u))
            if sm.public_bytes(s_key) != self.adverts[u].s_pk:
                raise SecAggError(f"the shares of {u[:12]}'s mask key do not rebuild it (a bad share)")
            for v in self.masked:
                seed = sm.agree(s_key, self.adverts[v].s_pk, _pair_context(self.run_id, self.round, b"mask", u, v))
                m = sm.mask(seed, total.size)
                # v added sign(v, u) * PRG(s_vu): take it off
                total = total - m if _pair_sign(v, u) > 0 else total + m
        n = sum(self.counts.values())
        return sm.decode(total, n), n, dropped
