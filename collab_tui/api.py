"""The control API, declared once: what a frontend may ask of its local node, and what it gets back.

Each command is a request Struct (msgspec) whose class attribute ``NAME`` is its wire name; ``Stream``
requests answer with a stream of events instead of one reply. The node's command classes mark their
methods with ``@command(Request)`` (`node/control.py`) and receive the decoded, validated request; the
clients (`client.py`) build the request and get the reply. Replies are plain JSON objects, typed here
as TypedDicts for the shapes frontends read (``--json`` output of the CLI is these objects as they are:
it is a public interface). Light on purpose: msgspec and typing only.

Wire format (newline-delimited JSON on the node's Unix socket): ``{"cmd": NAME, "args": {...}}``, then
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``; a stream answers
``{"ok": true, "stream": true}`` and then one ``{"event": {...}}`` line per event.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypedDict, TypeVar

import msgspec


class Request(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A control command's arguments; ``NAME`` is the command's wire name."""

    NAME: ClassVar[str] = ""
    STREAM: ClassVar[bool] = False


class Stream(Request, kw_only=True, forbid_unknown_fields=True):
    """A command that answers with a stream of events."""

    STREAM: ClassVar[bool] = True


R = TypeVar("R", bound="Request")


def decode(cls: type[R], args: dict[str, Any]) -> R:
    """Validate a request's arguments; raises ValueError naming the command and the field."""
    try:
        return msgspec.convert(args, type=cls)
    except msgspec.ValidationError as exc:
        raise ValueError(f"bad arguments for {cls.NAME}: {exc}") from None


def encode(req: Request) -> dict[str, Any]:
    """The arguments of a request as JSON-ready data."""
    out: dict[str, Any] = msgspec.to_builtins(req)
    return out


# --------------------------------------------------------------------------- node
class Status(Request):
    NAME = "status"


class Nodes(Request):
    NAME = "nodes"


class Invite(Request):
    NAME = "invite"
    ttl: float = 3600.0
    uses: int = 1


class TrustList(Request):
    NAME = "trust_list"


class Revoke(Request):
    NAME = "revoke"
    node: str
    reason: str = ""


class SetPriority(Request):
    NAME = "set_priority"
    node: str
    priority: int


class InviteList(Request):
    NAME = "invite_list"


class InviteRevoke(Request):
    NAME = "invite_revoke"
    token_id: str


class TrustLogGet(Request):
    NAME = "trust_log"


class TrustStatus(Request):
    NAME = "trust_status"


class AdminAdd(Request):
    NAME = "admin_add"
    node: str


class AdminRemove(Request):
    NAME = "admin_remove"
    node: str


class Logs(Request):
    """The node's last ``n`` log lines; with ``cluster`` (or ``node``) every live node's, merged by time through
    the master (n <= 1000). ``node``: only that node's (by name); ``level``: at that level or above."""

    NAME = "logs"
    n: int = 100
    cluster: bool = False
    node: str | None = None
    level: str | None = None


class Stop(Request):
    NAME = "stop"


class Subscribe(Stream):
    """The node's event bus (kinds: peer, master, role, job, job_item, fl, fl_phase, ...; None = all)."""

    NAME = "subscribe"
    kinds: list[str] | None = None


class LogsFollow(Stream):
    """The last ``n`` lines, then the new ones. With ``cluster`` (or ``node``): every node's, streamed through
    the master, merged by time, rate-limited (a "N lines dropped" line when over); the stream then also sends
    ``{"keepalive": true, "ts": ...}`` after 2 s of silence (skip it)."""

    NAME = "logs_follow"
    n: int = 20
    cluster: bool = False
    node: str | None = None
    level: str | None = None


class StatusReply(TypedDict, total=False):
    node_id: str
    short_id: str
    name: str
    addr: str  # the first advertised address
    addrs: list[str]  # every advertised "host:port"
    listen: str
    cluster: str
    role: str
    term: int
    master: str | None
    can_commit: bool
    peers_alive: int
    cluster_size: int
    pid: int
    version: str
    protocol: int
    uptime: float
    holds_ca: bool
    mdns: bool
    refused_connections: int
    refused_messages: int
    known_addresses: int
    faults: dict[str, str]
    health: str  # "ok" | "unhealthy"
    unhealthy: dict[str, str]  # task kind -> reason


class NodeRow(TypedDict, total=False):
    node_id: str
    short_id: str
    name: str
    addr: str
    role: str
    term: int
    state: str  # self | alive | suspect | dead
    cpus: int
    load: float
    mem_free: int
    queue: int
    model_version: str | None
    priority: int
    last_seen: float
    health: str
    unhealthy: dict[str, str]
    capabilities: list[str]  # task kinds, "detector:NAME", "data:NAME", "jobs", "train", ...
    faults: dict[str, str]  # background task -> its last error (it died and was restarted)


class InviteReply(TypedDict):
    token: str
    addr: str
    addrs: list[str]


class TrustMember(TypedDict, total=False):
    node_id: str
    short_id: str
    name: str
    addr: str
    revoked: bool
    priority: int


class TrustListReply(TypedDict):
    members: list[TrustMember]
    denylist_version: int


class RevokeReply(TypedDict):
    version: int
    revoked: str


class SetPriorityReply(TypedDict):
    version: int
    node_id: str
    priority: int


class LogRecord(TypedDict, total=False):
    ts: float
    level: str
    logger: str
    msg: str
    node: str


# --------------------------------------------------------------------------- jobs
class Submit(Request):
    NAME = "submit"
    paths: list[str] = []
    task: str = "faces"
    options: dict[str, Any] = {}
    model: str | None = None
    out: str | None = None


class Jobs(Request):
    NAME = "jobs"


class JobShow(Request):
    """A job, its finished items (``items``) and the ones still to do (``pending``: path, size, attempts)."""

    NAME = "job_show"
    job_id: str


class JobTypes(Request):
    """The job types this node knows (built in and plugins): what `submit --task` takes."""

    NAME = "job_types"


class JobCancel(Request):
    NAME = "job_cancel"
    job_id: str


class JobWatch(Stream):
    NAME = "job_watch"
    job_id: str


class SchedStats(Request):
    """The master's scheduler counters (None on a node that is not the master)."""

    NAME = "sched_stats"


class JobProbe(Request):
    """Benchmark aid (`bench/jobs_bench.py`): ``n`` one-item jobs one after the other, timed."""

    NAME = "job_probe"
    paths: list[str] = []
    task: str = "noop"
    options: dict[str, Any] = {}
    n: int = 1
    timeout: float = 10.0
    keep: bool = False


class JobTypeInfo(TypedDict):
    name: str
    description: str


class SubmitReply(TypedDict, total=False):
    job_id: str
    total: int
    task: str


JobRow = dict[str, Any]  # a job's row in the submitter's store (`jobs/store.py`)
JobDetail = dict[str, Any]  # `job_show`: the row, its items and the merged summary


# --------------------------------------------------------------------------- training, models, data
class Train(Request):
    """Start a federated run; unset fields take `RunConfig`'s defaults (`training/rounds.py`)."""

    NAME = "train"
    model: str | None = None
    arch: dict[str, Any] | None = None
    dataset: str | None = None
    rounds: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    strategy: str | None = None
    strategy_options: dict[str, Any] | None = None
    mu: float | None = None
    min_clients: int | None = None
    fraction: float | None = None
    round_timeout: float | None = None
    mode: str | None = None
    buffer_k: int | None = None
    staleness_alpha: float | None = None
    compress: bool | None = None
    dp_clip: float | None = None
    dp_noise: float | None = None
    max_norm_ratio: float | None = None
    outlier_z: float | None = None
    seed: int | None = None
    eval_dataset: str | None = None
    holdout: float | None = None
    augment: bool | None = None
    secure: bool | None = None


class Runs(Request):
    NAME = "runs"


class RunShow(Request):
    """A run's summary (config, status, history, ledger); ``strategy_state`` (the aggregation strategy's
    own state, e.g. FedAdam's moments) only with ``full``."""

    NAME = "run_show"
    run_id: str
    full: bool = False


class RunStop(Request):
    NAME = "run_stop"
    run_id: str


class TrainResume(Request):
    NAME = "train_resume"
    run_id: str | None = None


class RunWatch(Stream):
    NAME = "run_watch"
    run_id: str


class ModelsList(Request):
    NAME = "models_list"


class ModelsShow(Request):
    NAME = "models_show"
    ref: str


class ModelsImport(Request):
    NAME = "models_import"
    path: str
    name: str


class ModelsExport(Request):
    NAME = "models_export"
    ref: str
    path: str


class DataAdd(Request):
    NAME = "data_add"
    name: str
    spec: dict[str, Any] = {}


class DataList(Request):
    NAME = "data_list"


class DataStats(Request):
    NAME = "data_stats"
    name: str


class DataSplit(Request):
    """Deal a dataset held here out to the alive nodes (sends images: only for users who opt in)."""

    NAME = "data_split"
    name: str
    as_: str | None = msgspec.field(default=None, name="as")
    scheme: str = "iid"
    seed: int = 0


# --------------------------------------------------------------------------- people gallery
class PeopleAdd(Request):
    """Enrol a person from photos on this node (only their face embeddings leave it)."""

    NAME = "people_add"
    name: str
    paths: list[str]
    detector: str | None = None


class PeopleList(Request):
    NAME = "people_list"


class PeopleShow(Request):
    NAME = "people_show"
    name: str


class PeopleRemove(Request):
    NAME = "people_remove"
    name: str


class StartedRun(TypedDict, total=False):
    run_id: str
    version: str
    master: str


class RunRow(TypedDict, total=False):
    run_id: str
    model: str | None
    strategy: str | None
    status: str
    round: int
    rounds: int | None
    version: str | None
    accuracy: float | None
    created: float


RunDetail = dict[str, Any]  # `run_show`: the run's state (config, history, ledger, ...)


# --------------------------------------------------------------------------- doctor
class Doctor(Request):
    """`collab doctor`, the node's side: mDNS, clock skew, certificates, disk, ML imports, versions."""

    NAME = "doctor"
    ml: bool = True  # import TensorFlow and OpenCV in the ML process (up to ``ml_timeout`` s)
    ml_timeout: float = 60.0


class DoctorCheck(TypedDict):
    name: str
    status: str  # "PASS" | "WARN" | "FAIL"
    detail: str  # what was found
    hint: str  # what to do ("" when it passes)


class DoctorReply(TypedDict):
    checks: list[DoctorCheck]
    static_peers: list[str]  # the daemon's static peers (config, COLLAB_PEERS, --peer): the CLI dials them
    version: str
    protocol: int


ALL: tuple[type[Request], ...] = tuple(
    cls for cls in list(globals().values()) if isinstance(cls, type) and issubclass(cls, Request) and cls.NAME
)
