"""The jobs service's peer messages, declared once (net/schema.py): typed, bounded fields and who may send them.

Who may send what, beyond the node's own checks (``SENDER``):

- `JobSubmit`: any member, handled by the master only; a job id belongs to the first submitter that
  submitted it to this master.
- `JobAssign`, `JobItemFailed`: the master only, in the receiver's term (``SENDER = MASTER``).
- `JobDone`: the master applies it only to tasks it assigned to that sender (scheduler.py, `complete` and
  `fail`).
- `JobResults`, `JobFetch`: only the worker an item was assigned to, proven by the item's *ticket*. The
  submitter makes a random secret per job (``job_key``, kept in its store) and sends it to the master
  with every submission; the master gives worker W, with each item it assigns to W,
  ``ticket = HMAC-SHA256(job_key, "job_id:item_id:W")``; W returns it with the item's result and with
  its fetch, and the submitter recomputes it with the SENDER's node id. A member that knows job and item
  ids, or saw another worker's ticket, still cannot make one that is valid for itself; the key never
  leaves the submitter and the master.
- `JobCancel`: only from the job's submitter (the master checks).

Caps: the real batches are far smaller (an assignment holds at most 16 items, see scheduler.py); the
senders of bigger lists (a submission of a big job, a worker's results) cut them into messages of at most
`MAX_ITEMS`, so no message makes one node loop over more than that.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated, Any, Literal

import msgspec

from ..net.schema import MASTER, Name, NodeId, PeerMessage, Term
from .inputs import INLINE_ITEM_BYTES

__all__ = [
    "MAX_ITEMS",
    "MAX_ERROR",
    "MAX_ITEM_BYTES",
    "JobId",
    "ItemId",
    "Options",
    "JobSubmit",
    "JobAssign",
    "JobDone",
    "JobFetch",
    "JobData",
    "JobResults",
    "JobItemFailed",
    "JobCancel",
    "JobPredict",
    "PredictReply",
    "JOB_MESSAGES",
    "new_job_key",
    "ticket",
    "ticket_ok",
    "short",
    "check_options",
]

MAX_ITEMS = 1024  # items (tasks, results) in one message
MAX_ERROR = 2000  # characters of one error text (senders cut theirs: `short`)
MAX_ITEM_BYTES = 64 * 1024 * 1024  # one item's bytes (the submitter serves nothing bigger)
MAX_OPTIONS = 32
MAX_RESULT_KEYS = 64  # top-level keys of one result (what is inside is the job type's)
MAX_ATTEMPTS = 10_000
MAX_LABELS = 4096  # classes of one model's prediction

# Job and item ids become file names on the submitter (``JOB.results.jsonl``, ``STEM.ITEM.annotated.png``)
# and task ids are ``job:item``: file-name safe, no ':'.
JobId = Name
ItemId = Name
TaskId = Annotated[
    str, msgspec.Meta(max_length=129, pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}:[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
]
Ticket = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]  # HMAC-SHA256, hex
JobKey = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]  # 32 random bytes, hex
Size = Annotated[int, msgspec.Meta(ge=0, le=2**40)]
Attempts = Annotated[int, msgspec.Meta(ge=0, le=MAX_ATTEMPTS)]
ErrorText = Annotated[str, msgspec.Meta(max_length=MAX_ERROR)]
NodeName = Annotated[str, msgspec.Meta(max_length=64)]
# an item's bytes sent inline (base64): items of at most INLINE_ITEM_BYTES travel this way
InlineData = Annotated[
    str, msgspec.Meta(max_length=4 * ((INLINE_ITEM_BYTES + 2) // 3), pattern=r"^[A-Za-z0-9+/]*={0,2}$")
]

# A job's options, as the user gave them (``--model``, the ensemble's ``method``, a plugin's own): short
# keys, scalar values. Checked by the submitter before the job is stored (`check_options`).
OptionKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
OptionValue = (
    Annotated[str, msgspec.Meta(max_length=300)]
    | Annotated[int, msgspec.Meta(ge=-(2**53), le=2**53)]
    | float
    | bool
    | None
)
Options = Annotated[dict[OptionKey, OptionValue], msgspec.Meta(max_length=MAX_OPTIONS)]
CAP = msgspec.Meta(max_length=MAX_ITEMS)  # of every list of items, tasks or results
ResultKey = Annotated[str, msgspec.Meta(max_length=64)]


# ----------------------------------------------------------------------------- submitter -> master
class SubmitItem(msgspec.Struct, kw_only=True):
    item_id: ItemId
    size: Size = 0
    data: InlineData | None = None  # a tiny item's bytes (first submission only)


class JobSubmit(PeerMessage, tag="job.submit"):
    """A job's unfinished items, to the master (idempotent: sent again at every master change and every
    5 s). ``job_key`` is the job's secret: the master makes the items' tickets with it."""

    job_id: JobId
    job_key: JobKey
    kind: Name
    options: Options = {}
    items: Annotated[list[SubmitItem], CAP] = []


class JobCancel(PeerMessage, tag="job.cancel"):
    """The submitter cancels its job (the master drops its tasks); from anybody else it is refused."""

    job_id: JobId


# ----------------------------------------------------------------------------- master -> worker, submitter
class AssignItem(msgspec.Struct, kw_only=True):
    item_id: ItemId
    ticket: Ticket  # proves to the submitter that this item was assigned to the receiver
    size: Size = 0
    attempts: Attempts = 0  # failed tries so far
    data: InlineData | None = None


class JobAssign(PeerMessage, tag="job.assign"):
    """A batch of one job's items for the receiver to run."""

    SENDER = MASTER
    term: Term
    job_id: JobId
    submitter: NodeId
    kind: Name
    options: Options = {}
    items: Annotated[list[AssignItem], CAP] = []


class JobItemFailed(PeerMessage, tag="job.item_failed"):
    """The master gave an item up (retries exhausted): the submitter records the error."""

    SENDER = MASTER
    term: Term
    job_id: JobId
    item_id: ItemId
    error: ErrorText = ""
    attempts: Attempts = 0


# ----------------------------------------------------------------------------- worker -> master
class FailedTask(msgspec.Struct, kw_only=True):
    task_id: TaskId
    error: ErrorText = ""
    # worker: counts against the node's health; options / fetch / deliver: retried, not held against it
    cause: Literal["worker", "options", "fetch", "deliver"] = "worker"


class JobDone(PeerMessage, tag="job.done"):
    """A worker's acknowledgement: tasks done (their results are on the way to the submitter), tasks that
    failed. The master applies it only to the tasks it assigned to the sender."""

    done: Annotated[list[TaskId], CAP] = []
    failed: Annotated[list[FailedTask], CAP] = []


# ----------------------------------------------------------------------------- worker <-> submitter
class FetchItem(msgspec.Struct, kw_only=True):
    item_id: ItemId
    ticket: Ticket


class JobFetch(PeerMessage, tag="job.fetch"):
    """A worker asks the submitter for the bytes of a batch (answered with a `JobData` blob). Served only
    for items whose ticket is valid for the sender."""

    job_id: JobId
    items: Annotated[list[FetchItem], CAP]


class JobData(PeerMessage, tag="job.data"):
    """The answer to a `JobFetch`: the bytes of the items served (concatenated, in the fetch's order,
    ``sizes`` giving each one's length) and an error for each of the others. A reply: the fetching code
    validates it (`JobService.fetch_many`)."""

    sizes: Annotated[list[Size], CAP] = []
    errors: Annotated[dict[ItemId, ErrorText], CAP] = {}
    data: bytes = b""


class Timings(msgspec.Struct, kw_only=True):
    fetch_ms: Annotated[float, msgspec.Meta(ge=0, le=1e12)] = 0.0
    run_ms: Annotated[float, msgspec.Meta(ge=0, le=1e12)] = 0.0


class Result(msgspec.Struct, kw_only=True):
    """One item's outcome: a result (the job type's dict) or a per-item error. The worker is the sender
    (a ``worker`` field is not taken from the message)."""

    job_id: JobId
    item_id: ItemId
    ticket: Ticket
    worker_name: NodeName = ""
    result: Annotated[dict[ResultKey, Any], msgspec.Meta(max_length=MAX_RESULT_KEYS)] | None = None
    error: ErrorText | None = None
    timings: Timings = msgspec.field(default_factory=Timings)
    attempts: Attempts = 0


class JobResults(PeerMessage, tag="job.results"):
    """A worker's results for one submitter: a plain message, or a blob when some have attachments (the
    attachments concatenated in order in ``data``, ``sizes`` giving each result's length, 0: none).
    Recorded only for results whose ticket is valid for the sender."""

    results: Annotated[list[Result], CAP]
    sizes: Annotated[list[Size], CAP] | None = None
    data: bytes = b""


# ----------------------------------------------------------------------------- ensemble
class JobPredict(PeerMessage, tag="job.predict"):
    """A blob: predict with this node's model (an ensemble item asks every node)."""

    data: Annotated[bytes, msgspec.Meta(max_length=MAX_ITEM_BYTES)]
    options: Options = {}


class PredictReply(msgspec.Struct, kw_only=True):
    """A peer's answer to `JobPredict`, checked before it takes part in a vote."""

    labels: Annotated[list[Annotated[str, msgspec.Meta(max_length=200)]], msgspec.Meta(max_length=MAX_LABELS)]
    probs: Annotated[list[float], msgspec.Meta(max_length=MAX_LABELS)]


JOB_MESSAGES: tuple[type[PeerMessage], ...] = (
    JobSubmit,
    JobCancel,
    JobAssign,
    JobItemFailed,
    JobDone,
    JobFetch,
    JobResults,
    JobPredict,
)


# ----------------------------------------------------------------------------- tickets
def new_job_key() -> str:
    """A job's secret (hex): made by its submitter, known to it and to the master only."""
    return secrets.token_hex(32)


def ticket(job_key: str, job_id: str, item_id: str, worker: str) -> str:
    """The proof that ``item_id`` of ``job_id`` was assigned to ``worker`` (ids hold no ':', so the text
    is unambiguous)."""
    return hmac.new(bytes.fromhex(job_key), f"{job_id}:{item_id}:{worker}".encode(), hashlib.sha256).hexdigest()


def ticket_ok(job_key: str, job_id: str, item_id: str, worker: str, given: str) -> bool:
    """Is ``given`` the ticket of this item for this worker? (In constant time.)"""
    return hmac.compare_digest(ticket(job_key, job_id, item_id, worker), given)


def short(text: object, n: int = MAX_ERROR) -> str:
    """An error text cut to what a message may carry."""
    s = str(text)
    return s if len(s) <= n else s[: n - 3] + "..."


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """A job's options as the messages may carry them, or ValueError saying what is wrong (the user's
    options are checked once, before the job is stored)."""
    try:
        return msgspec.convert(options, Options)
    except msgspec.ValidationError as exc:
        why = f"at most {MAX_OPTIONS} options with short names and scalar values"
        raise ValueError(f"job options: {exc} ({why})") from None
