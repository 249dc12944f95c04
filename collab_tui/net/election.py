"""Sans-IO hardened bully election.

Rank = ``(priority, node_id)`` compared as a tuple; the highest alive node should be master.
No sockets, no timers: inputs carry the monotonic clock ``now``; outputs are drained with
:meth:`Election.take_events` and :meth:`Election.take_outbox` (``Outgoing(dest, msg)``,
``dest=None`` means broadcast to every alive peer). Randomness comes from the injected ``rng``.
The output types are frozen dataclasses declared in :mod:`.election_events` (re-exported here).

Driver contract: drain ``take_events()`` FIRST and durably persist the latest ``TermChanged(T)``
before sending anything from ``take_outbox()`` (a restart must never reuse a term).
Call :meth:`Election.tick` at :meth:`Election.next_deadline`. Call ``peer_up`` (with the
peer's priority from its hello) before delivering any of that peer's messages.

Events: ``TermChanged(term)`` whenever the term changes; ``RoleChanged(role)`` with role in
follower/candidate/master; ``MasterChanged(master_id, term)`` whenever the agreed master changes
(``master_id`` may be ourself, or ``None`` when the master is declared dead or leaves), also when
our own reign gets a new term.

Messages (JSON objects): ``{"t": "el.election", "term": T}``, ``{"t": "el.answer", "term": T}``,
``{"t": "el.coordinator", "term": T}``, ``{"t": "el.leave", "term": T}``.

Rules:

1. Terms. ``term`` is the highest term seen or used. A NEW term is taken only by a node that
   becomes master: ``term = max seen + 1``. Followers/candidates adopt any higher term seen in
   an election message or master heartbeat (event ``TermChanged(T)``).
2. Fencing. ``accepts(T)`` is ``T >= term``: the runtime drops side-effecting master messages
   that fail it. A coordinator/heartbeat with ``T < term`` is ignored (a master answers it
   with its own ``el.coordinator`` so the stale master steps down). Same term from a node that
   is not our master: the higher rank wins; a master that wins such a tie re-asserts with a
   fresh term (``max + 1``) so that no two reigns share a term for long. A master that sees a
   higher term in a coordinator/heartbeat steps down to follower and adopts it; one that sees
   a higher term in ``el.election``/``el.answer``/``el.leave`` re-asserts with ``max + 1``.
3. Bully. A candidate sends ``el.election`` to every alive peer of higher rank. No such peer,
   or no ``el.answer`` within ``answer_timeout``: it becomes master and broadcasts
   ``el.coordinator``. After an answer it waits ``coordinator_timeout`` for a coordinator,
   else it restarts the election.
4. On ``el.election`` from a lower node: a master re-sends ``el.coordinator`` to the sender.
   Otherwise the node replies ``el.answer`` and starts its own election unless it is already a
   candidate, or it has a live master of higher rank than itself (that master will answer the
   sender with a coordinator). A ``preempt=False`` follower with a live master does not start
   an election; it stays silent if its master does not outrank the sender.
5. Preemption. ``preempt=True`` (classic bully): a node that learns of a master of lower rank
   starts an election and wins. ``preempt=False``: a node that sees a healthy master (heartbeat
   or coordinator, at boot or later) follows it; to see it in time, its boot election waits
   ``coordinator_timeout`` + jitter instead of just the jitter.
6. Graceful leave. ``leave()`` broadcasts ``el.leave``. When the current master leaves, each
   remaining node computes the highest-ranked alive node (incl. itself): if that is itself it
   becomes master at once (no jitter, ``term + 1``); otherwise it waits ``coordinator_timeout``
   for the coordinator, then runs a normal election. Handover takes one message delay. (This
   also works if ``peer_down`` for the leaving master was delivered before its ``el.leave``.)
7. Randomised start. Boot elections start after a delay drawn uniformly from ``start_jitter``. When the
   master is declared dead (``peer_down``) the rule of graceful leave applies (6): the highest-ranked live
   node claims at once, the others wait ``coordinator_timeout`` for it, then elect.
8. Joiners. A master sends ``el.coordinator`` to every peer that comes up, so a (re)joining
   node learns the master and term within one message delay.
9. A member is not the master (issue 15). Priorities come from the cluster's signed member records
   (``peer_up(priority)``, ``set_priority``), never from what a peer says. A claim (``el.coordinator``)
   from a node that is not our master is obeyed only if no other live peer in OUR view outranks it, or
   if a majority of the cluster reports it as master (heartbeat reports, ``on_report``); else it is held
   as pending and re-checked when a peer goes down or reports. A term may advance by at most
   ``MAX_TERM_STEP`` per message unless a majority of the cluster reports a term at least as high. A
   heartbeat's ``role`` grants nothing: it is a report (the current master's refreshes its term; a stale
   master is told who rules). Refused messages come out as ``MessageRefused`` events, to be logged.
   "A majority" here counts voices among the live peers (the claimer's included): ``majority_voices``.
10. Quorum guard. ``can_commit(alive_count)`` is True only for the master when ``alive_count``
   (incl. self) is a strict majority of ``quorum_size`` (``alive_count > quorum_size // 2``).
   ``quorum_size`` defaults to self + every peer ever seen via ``peer_up`` and can be set with
   ``set_quorum_size``. In a 2-node cluster the survivor of a failure becomes master and keeps
   serving work, but cannot commit cluster state alone (1 of 2 is not a majority) unless
   ``quorum_size`` is configured as 1. In a partition only the majority side can commit.
11. Grants. The bully lets two nodes take the same term for a moment (rule 2: concurrent elections in a
   partition, a node that restarts before it hears the others). So that at most one of them may commit, a
   node grants each term once: to the first master it accepts in that term, or to itself when it becomes
   master in it (a persisted term counts as granted: a restarted node grants only higher ones). Heartbeats
   report the grant (``on_report(grant=(term, node))``); ``granted_majority()`` is True only for a master
   whose own term a strict majority of ``quorum_size`` granted to it (its own grant included). Grants are
   exclusive, so two masters of one term never both have a majority; a report from a peer that moved to a
   higher term no longer counts, so a master cut off one way (it hears them, they do not hear it) loses it.
   A master that hears a peer report its own term as granted to another node (or held from before a
   restart) re-asserts with a fresh term: else a node that claimed a term another had taken while it was
   down could never commit (the simulator's round-liveness check found it: sim/runs.py).
"""

from __future__ import annotations

import random
from typing import Any

from .election_events import ElectionEvent, MasterChanged, MessageRefused, Outgoing, RoleChanged, TermChanged

__all__ = [
    "ElectionError",
    "Election",
    "FOLLOWER",
    "CANDIDATE",
    "MASTER",
    "MESSAGE_TYPES",
    "ElectionEvent",
    "TermChanged",
    "RoleChanged",
    "MasterChanged",
    "MessageRefused",
    "Outgoing",
    "MAX_TERM_STEP",
]

FOLLOWER, CANDIDATE, MASTER = "follower", "candidate", "master"
EL_ELECTION, EL_ANSWER, EL_COORDINATOR, EL_LEAVE = (
    "el.election",
    "el.answer",
    "el.coordinator",
    "el.leave",
)
MESSAGE_TYPES = frozenset({EL_ELECTION, EL_ANSWER, EL_COORDINATOR, EL_LEAVE})
# A term may advance by this much per message without a majority's reports behind it: legitimately a node
# falls behind by one term per election it missed; 2**200 or +10**12 is an attack (or a bug).
MAX_TERM_STEP = 16


class ElectionError(ValueError):
    """Bad input to :class:`Election` (malformed message, bad parameter)."""


def _is_term(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


class Election:
    """Bully election state machine for one node."""

    def __init__(
        self,
        self_id: str,
        priority: int,
        term: int = 0,
        preempt: bool = True,
        rng: random.Random | None = None,
        answer_timeout: float = 0.3,
        coordinator_timeout: float = 1.0,
        start_jitter: tuple[float, float] = (0.0, 0.15),
    ) -> None:
        if not _is_term(term):
            raise ElectionError(f"term must be an int >= 0, got {term!r}")
        lo, hi = start_jitter
        if not 0 <= lo <= hi:
            raise ElectionError(f"start_jitter must be (lo, hi), 0 <= lo <= hi: {start_jitter!r}")
        self.self_id = self_id
        self.priority = int(priority)
        self.term = term
        self.preempt = preempt
        self.rng = rng if rng is not None else random.Random()
        self.answer_timeout = answer_timeout
        self.coordinator_timeout = coordinator_timeout
        self.start_jitter = (float(lo), float(hi))
        self.role = FOLLOWER
        self.master_id: str | None = None
        self._prio: dict[str, int] = {}  # every peer ever seen -> priority (from the signed records)
        self._alive: set[str] = set()
        self._reports: dict[str, tuple[int, str | None]] = {}  # live peer -> (term, master) it reports
        self._pending: dict[str, int] = {}  # claims held back (claimer -> term): re-checked on changes
        self._seen = term  # the highest term seen within the step (refused claims too): a new reign is above it
        self._reassert_at = float("-inf")  # a master re-asserts over an outranked claim at most once a second
        self._quorum: int | None = None
        self._granted: int = term  # the highest term this node granted ...
        self._grant_to: str | None = None  # ... and to whom
        self._grants: dict[str, tuple[int, str | None]] = {}  # live peer -> the grant it reports
        self._election_at: float | None = None  # scheduled (jittered) election
        self._answer_deadline: float | None = None  # candidate waiting for el.answer
        self._coord_deadline: float | None = None  # waiting for el.coordinator
        self._lost_master: str | None = None  # master declared dead, no successor yet
        self._left = False
        self._outbox: list[Outgoing] = []
        self._events: list[ElectionEvent] = []

    # -- queries ------------------------------------------------------------------------
    @property
    def rank(self) -> tuple[int, str]:
        return (self.priority, self.self_id)

    def rank_of(self, node_id: str) -> tuple[int, str]:
        """Rank of ``node_id`` (unknown peers count as priority 0)."""
        if node_id == self.self_id:
            return self.rank
        return (self._prio.get(node_id, 0), node_id)

    @property
    def is_master(self) -> bool:
        return self.role == MASTER

    @property
    def alive_peers(self) -> set[str]:
        return set(self._alive)

    @property
    def quorum_size(self) -> int:
        return self._quorum if self._quorum is not None else len(self._prio) + 1

    def set_quorum_size(self, n: int) -> None:
        """Cluster size (known members incl. self) used by :meth:`can_commit`."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ElectionError(f"quorum size must be an int >= 1, got {n!r}")
        self._quorum = n

    def accepts(self, term: int) -> bool:
        """Fencing check for side-effecting master messages: ``term >= self.term``."""
        return _is_term(term) and term >= self.term

    def can_commit(self, alive_count: int) -> bool:
        """True only for the master with a strict majority (``alive_count`` incl. self)."""
        return self.role == MASTER and alive_count > self.quorum_size // 2

    @property
    def grant(self) -> tuple[int, str | None]:
        """(term, node): the highest term this node granted and to whom (rule 11), for its heartbeat."""
        return self._granted, self._grant_to

    def granted_majority(self) -> bool:
        """The master's own term is granted to it by a strict majority of the cluster (rule 11)."""
        mine = (self.term, self.self_id)
        if self.role != MASTER or self.grant != mine:
            return False
        votes = 1 + sum(1 for p in self._alive if self._grants.get(p) == mine)
        return votes > self.quorum_size // 2

    def next_deadline(self) -> float | None:
        """Earliest pending timer (call :meth:`tick` then), or ``None``."""
        if self._left:
            return None
        times = [t for t in (self._election_at, self._answer_deadline, self._coord_deadline) if t is not None]
        return min(times) if times else None

    def take_outbox(self) -> list[Outgoing]:
        """Messages to send: ``Outgoing(dest_peer_id, msg)``; ``dest=None`` = broadcast."""
        out, self._outbox = self._outbox, []
        return out

    def take_events(self) -> list[ElectionEvent]:
        """``MasterChanged(id|None, term)``, ``TermChanged(T)``, ``RoleChanged(r)``; persist terms first."""
        ev, self._events = self._events, []
        return ev

    # -- inputs -------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Node boot: schedule an election after jitter unless a master shows up first."""
        self._left = False
        if self.master_id is not None or self.role != FOLLOWER:
            return
        delay = self._jitter() + (0.0 if self.preempt else self.coordinator_timeout)
        self._election_at = now + delay

    def peer_up(self, peer_id: str, priority: int, now: float) -> None:
        """Membership says ``peer_id`` is alive (authenticated, with its priority)."""
        if peer_id == self.self_id:
            return
        self._prio[peer_id] = int(priority)
        self._alive.add(peer_id)
        if self.role == MASTER and not self._left:
            self._send(peer_id, EL_COORDINATOR)

    def set_priority(self, node_id: str, priority: int, now: float) -> None:
        """The signed member records give ``node_id`` (maybe ourself) a new priority."""
        if node_id == self.self_id:
            self.priority = int(priority)
        else:
            self._prio[node_id] = int(priority)
        self._recheck_pending(now)

    def on_report(
        self,
        peer_id: str,
        role: str,
        term: int,
        master: str | None,
        now: float,
        grant: tuple[int, str | None] | None = None,
    ) -> None:
        """A heartbeat: what ``peer_id`` believes (its role, term and master), counted as one voice for
        `_backed` / `_majority_for`. Its ``role`` grants nothing by itself: a heartbeat saying "master" is
        held to exactly the checks of an ``el.coordinator`` (rank in our view, term step), so it refreshes
        the current master's term, tells a stale master who rules, or is refused."""
        if not _is_term(term):
            raise ElectionError(f"heartbeat term must be an int >= 0, got {term!r}")
        if self._left or peer_id == self.self_id:
            return
        if peer_id in self._alive:
            self._reports[peer_id] = (term, master if isinstance(master, str) else None)
            if grant is not None:
                g_term, g_to = grant
                if not _is_term(g_term) or not (g_to is None or isinstance(g_to, str)):
                    raise ElectionError(f"heartbeat grant must be (term, node), got {grant!r}")
                self._grants[peer_id] = (g_term, g_to)
                if self.role == MASTER and g_term == self.term and g_to != self.self_id:
                    self._become_master(now)  # rule 11: that peer gave our term away; a fresh one it can grant
        if role == MASTER:
            if self._term_ok(term):
                self._seen = max(self._seen, term)
                self._on_master_claim(peer_id, term, now)  # held to the same checks as an el.coordinator
            else:
                self._refuse(peer_id, "hb", term, "term jump")
                self._hold(peer_id, term)
        self._recheck_pending(now)

    def peer_down(self, peer_id: str, now: float) -> None:
        """Membership says ``peer_id`` is dead; if it was our master, elect after jitter."""
        self._alive.discard(peer_id)
        self._reports.pop(peer_id, None)
        self._grants.pop(peer_id, None)
        self._pending.pop(peer_id, None)
        if peer_id == self.master_id:
            self._lost_master = peer_id
            self._set_master(None)
            if self.role == FOLLOWER and self._election_at is None and self._coord_deadline is None:
                self._succeed(now)
        self._recheck_pending(now)

    def leave(self, now: float) -> None:
        """Graceful leave: broadcast ``el.leave`` and go quiet."""
        if self._left:
            return
        self._send(None, EL_LEAVE)
        self._clear_timers()
        self._set_role(FOLLOWER)
        self._set_master(None)
        self._left = True

    def tick(self, now: float) -> None:
        """Fire due timers."""
        if self._left:
            return
        if self._election_at is not None and now >= self._election_at:
            self._election_at = None
            self._begin_election(now)
        if self._answer_deadline is not None and now >= self._answer_deadline:
            self._answer_deadline = None
            if self.role == CANDIDATE:
                self._become_master(now)
        if self._coord_deadline is not None and now >= self._coord_deadline:
            self._coord_deadline = None
            self._begin_election(now)

    def on_master_heartbeat(self, peer_id: str, term: int, now: float) -> None:
        """A heartbeat from ``peer_id`` saying it is master in ``term``: a report (`on_report`)."""
        self.on_report(peer_id, MASTER, term, peer_id, now)

    def on_message(self, peer_id: str, msg: dict[str, Any], now: float) -> None:
        """Handle one ``el.*`` message from ``peer_id``."""
        if not isinstance(msg, dict):
            raise ElectionError(f"election message must be an object, got {type(msg).__name__}")
        kind, term = msg.get("t"), msg.get("term")
        if kind not in MESSAGE_TYPES:
            raise ElectionError(f"unknown election message type {kind!r}")
        if not _is_term(term):
            raise ElectionError(f"{kind} needs an int term >= 0, got {term!r}")
        assert isinstance(term, int)  # _is_term checked it (for the type checker)
        if self._left or peer_id == self.self_id:
            return
        if not self._term_ok(term):
            self._refuse(peer_id, kind, term, "term jump")
            if kind == EL_COORDINATOR:
                self._hold(peer_id, term)
            return
        self._seen = max(self._seen, term)
        if kind == EL_COORDINATOR:
            self._on_master_claim(peer_id, term, now)
        elif kind == EL_ELECTION:
            self._on_election(peer_id, term, now)
        elif kind == EL_ANSWER:
            self._on_answer(peer_id, term, now)
        else:
            self._on_leave(peer_id, term, now)

    # -- message handlers -----------------------------------------------------------------
    def _on_master_claim(self, peer_id: str, term: int, now: float) -> None:
        if term < self.term:
            if self.role == MASTER:  # tell the stale master who rules now
                self._send(peer_id, EL_COORDINATOR)
            return
        if peer_id == self.master_id:
            self._accept_master(peer_id, term, now)
            return
        if not self._may_rule(peer_id):
            self._hold(peer_id, term)
            self._refuse(peer_id, EL_COORDINATOR, term, "outranked")
            if self.rank > self.rank_of(peer_id):
                if self.role == MASTER and term == self.term:
                    self._send(peer_id, EL_COORDINATOR)  # same term: the higher rank wins, it will follow us
                elif self.role == MASTER and term > self.term and now >= self._reassert_at:
                    self._reassert_at = now + self.coordinator_timeout
                    self._become_master(now)  # above the claimer's term, so that it follows us
                elif self.preempt and self.role == FOLLOWER and self.master_id not in self._alive:
                    self._begin_election(now)  # no live master, and we outrank the claimer: bully
            return
        self._pending.pop(peer_id, None)
        if term > self.term:
            self._accept_master(peer_id, term, now)
            return
        # same term, a different node claims mastership: higher rank wins
        if self.role == MASTER:
            if self.rank_of(peer_id) > self.rank:
                self._accept_master(peer_id, term, now)
            else:
                self._become_master(now)  # re-assert with a fresh term
        elif self.master_id is None or self.rank_of(peer_id) > self.rank_of(self.master_id):
            self._accept_master(peer_id, term, now)

    def _on_election(self, peer_id: str, term: int, now: float) -> None:
        if self.role == MASTER and term <= self.term:
            self._send(peer_id, EL_COORDINATOR)
            return
        if self._master_handles(term, now):
            return
        if self.rank_of(peer_id) > self.rank:
            return  # a higher node asking us: inconsistent priorities, nothing to do
        live_master = self.master_id if self.master_id in self._alive else None
        if live_master is not None and not self.preempt:
            if self.rank_of(live_master) > self.rank_of(peer_id):
                self._send(peer_id, EL_ANSWER)
            return
        self._send(peer_id, EL_ANSWER)
        if self.role == CANDIDATE:
            return
        if live_master is not None and self.rank_of(live_master) > self.rank:
            return  # the master outranks us and will send the coordinator to the sender
        self._begin_election(now)

    def _on_answer(self, peer_id: str, term: int, now: float) -> None:
        if self._master_handles(term, now):
            return
        if self.role == CANDIDATE and self._answer_deadline is not None:
            self._answer_deadline = None
            self._coord_deadline = now + self.coordinator_timeout

    def _on_leave(self, peer_id: str, term: int, now: float) -> None:
        self._alive.discard(peer_id)
        if self._master_handles(term, now):
            return
        lost = self.master_id is None and peer_id == self._lost_master
        if peer_id != self.master_id and not lost:
            return
        self._set_master(None)
        self._succeed(now)

    def _succeed(self, now: float) -> None:
        """The master is gone (it left, or it is declared dead): the highest-ranked live node in our view
        claims at once; everyone else waits ``coordinator_timeout`` for its coordinator, then elects. One
        broadcast instead of every node bullying every higher one: O(n) messages a failover, not O(n^2)."""
        best = max([self.self_id, *self._alive], key=self.rank_of)
        if best == self.self_id:
            self._become_master(now)
        else:
            self._clear_timers()
            self._set_role(FOLLOWER)
            self._coord_deadline = now + self.coordinator_timeout

    # -- transitions ----------------------------------------------------------------------
    def _begin_election(self, now: float) -> None:
        self._clear_timers()
        self._set_role(CANDIDATE)
        higher = sorted(p for p in self._alive if self.rank_of(p) > self.rank)
        if not higher:
            self._become_master(now)
            return
        for p in higher:
            self._send(p, EL_ELECTION)
        self._answer_deadline = now + self.answer_timeout

    def _become_master(self, now: float) -> None:
        self._clear_timers()
        self._lost_master = None
        self._set_term(max(self.term, self._seen) + 1)
        self._give_grant(self.term, self.self_id)
        self._set_role(MASTER)
        self._set_master(self.self_id, force=True)
        self._send(None, EL_COORDINATOR)

    def _accept_master(self, peer_id: str, term: int, now: float) -> None:
        self._adopt(term)
        self._give_grant(term, peer_id)
        self._clear_timers()
        self._set_role(FOLLOWER)
        self._set_master(peer_id)
        self._lost_master = None
        if self.preempt and self.rank > self.rank_of(peer_id):
            self._begin_election(now)  # bully: we outrank this master

    # -- a member is not the master ---------------------------------------------------------
    def majority_voices(self) -> int:
        """Voices (live peers' reports, the claimer's included) that stand for a majority of the cluster:
        N // 2 + 1 of N members, but never more than the N - 1 other members can give (in a 2-node cluster
        the other node's word is enough: it is half the cluster anyway)."""
        n = max(self.quorum_size, len(self._alive) + 1)
        return max(1, min(n // 2 + 1, n - 1))

    def _backed(self, term: int) -> bool:
        """A majority of the cluster reports a term of at least ``term``."""
        return sum(1 for p, (t, _) in self._reports.items() if p in self._alive and t >= term) >= self.majority_voices()

    def _term_ok(self, term: int) -> bool:
        return term <= self.term + MAX_TERM_STEP or self._backed(term)

    def _majority_for(self, claimer: str) -> bool:
        """A majority of the cluster (the claimer's own voice included) reports ``claimer`` as master."""
        votes = sum(1 for p, (_, m) in self._reports.items() if p in self._alive and m == claimer)
        if claimer not in self._reports:
            votes += 1  # a claim is the claimer's voice even before its first heartbeat
        return votes >= self.majority_voices()

    def _may_rule(self, claimer: str) -> bool:
        """No other live peer in our own view outranks ``claimer`` (ourself aside: the bully rules and
        ``preempt`` decide that), or a majority reports it as master."""
        rank = self.rank_of(claimer)
        if all(self.rank_of(p) < rank for p in self._alive if p != claimer):
            return True
        return self._majority_for(claimer)

    def _recheck_pending(self, now: float) -> None:
        """Claims held back may stand now (the node that outranked their claimer went down, reports came)."""
        for peer_id, term in sorted(self._pending.items()):
            if peer_id not in self._alive or term < self.term or self._left:
                self._pending.pop(peer_id, None)
            elif self._may_rule(peer_id) and self._term_ok(term):
                self._pending.pop(peer_id, None)
                self._on_master_claim(peer_id, term, now)

    def _hold(self, peer_id: str, term: int) -> None:
        """Keep a refused claim of a live peer, to re-check (one per peer: the latest)."""
        if peer_id in self._alive:
            self._pending[peer_id] = term

    def _refuse(self, peer_id: str, kind: str, term: int, reason: str) -> None:
        self._events.append(MessageRefused(peer_id, kind, term, reason))

    # -- helpers ----------------------------------------------------------------------------
    def _master_handles(self, term: int, now: float) -> bool:
        """A peer's term, heard in an election, answer or leave. The master takes a higher one silently and
        claims mastership again above it (`_become_master` emits term + 1), and is done with the message
        (True); any other role adopts a higher term and goes on (False)."""
        if self.role != MASTER:
            self._adopt(term)
            return False
        if term > self.term:
            self.term = term
            self._become_master(now)
        return True

    def _give_grant(self, term: int, node: str) -> None:
        if term > self._granted:  # each term once: the first master accepted in it, or ourselves
            self._granted, self._grant_to = term, node

    def _adopt(self, term: int) -> None:
        if term > self.term:
            self._set_term(term)

    def _set_term(self, term: int) -> None:
        self.term = term
        self._seen = max(self._seen, term)
        self._events.append(TermChanged(term))

    def _set_role(self, role: str) -> None:
        if role != self.role:
            self.role = role
            self._events.append(RoleChanged(role))

    def _set_master(self, master_id: str | None, force: bool = False) -> None:
        if master_id != self.master_id or force:
            self.master_id = master_id
            self._events.append(MasterChanged(master_id, self.term))

    def _clear_timers(self) -> None:
        self._election_at = self._answer_deadline = self._coord_deadline = None

    def _jitter(self) -> float:
        lo, hi = self.start_jitter
        return self.rng.uniform(lo, hi) if hi > lo else lo

    def _send(self, dest: str | None, kind: str) -> None:
        self._outbox.append(Outgoing(dest, {"t": kind, "term": self.term}))
