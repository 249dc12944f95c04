"""The training service's peer messages, declared once (net/schema.py): typed, bounded fields and who may send them.

Who may send what, beyond the node's own checks (``SENDER``):

- `FlStart`, `FlStop`, `FlResume`: any member (a node forwards its user's command to its master); only
  the master acts on them.
- `FlTrain`, `FlEval`, `FlDescribe`, `FlCommit`, `FlState`, `FlSync`, `FlPull`: the master only, in the
  receiver's term (``SENDER = MASTER``).
- `FlPhase`: any member, but it is published only for a run this node coordinates as master and only
  from a node that run has asked to train (service.py, ``_on_phase``).
- `FlData`: any member: `collab data split` deals dataset parts out on purpose. Its name must be a `Name`
  (it becomes a file name) and its archive is checked before anything is written (ml/datasets.py).

The records inside them are declared here too, with the bounds a replica checks before it keeps them: the
run configuration (`RunConfigRecord`, the fields of `rounds.RunConfig`), the run state as committed and
replicated (`RunRecord`, the fields of `rounds.RunState`) and its round entries; the model version
metadata is the registry's own record (`ml.registry.ModelMeta`). The run store checks every run it writes
or reads against `RunRecord` (runstore.py), the master checks the clients' replies (`UpdateReply`,
`Evaluation`) before they count.

Bounds, and why:

- rounds (and so a run's history) at most `MAX_ROUNDS` = 10,000: far past any real run, and a run state
  with that many entries still fits a frame;
- nodes in a round, a ledger or a list of contributors: at most `MAX_CLIENTS`; node ids are bounded text
  (they are keys and labels, never paths);
- every number finite and in a range that makes sense for it (fractions in [0, 1], positive learning
  rates, timeouts at most a day, seeds what numpy takes); ``created`` a unix time;
- every text that holds a reason or an error at most `MAX_REASON` / `MAX_ERROR` characters: the sender
  cuts its own (`rounds.cut`), so a long exception text never makes a state unreplicable.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from ..ml.datasets import MAX_CLASSES, MAX_PART_BYTES
from ..ml.registry import MAX_WEIGHTS_BYTES, Arch, Finite, Int, Key, ModelMeta, ModelName
from ..ml.strategy_specs import NAMES as STRATEGIES
from ..net.schema import MASTER, Count, Name, NodeId, PeerMessage, Term
from .rounds import MAX_ERROR, MAX_REASON, MAX_WARNINGS, RunConfig, cut

M = msgspec.Meta

__all__ = [
    "MAX_ROUNDS",
    "MAX_CLIENTS",
    "MAX_REASON",
    "MAX_ERROR",
    "RunConfigRecord",
    "Evaluation",
    "HistoryEntry",
    "LedgerEntry",
    "RunRecord",
    "UpdateReply",
    "EvalReply",
    "DatasetShape",
    "FlDescribe",
    "check_shape",
    "FlStart",
    "FlStop",
    "FlResume",
    "FlTrain",
    "FlEval",
    "FlCommit",
    "FlState",
    "FlSync",
    "FlPull",
    "RunDigest",
    "SyncReply",
    "ReplicaReply",
    "FlPhase",
    "FlData",
    "TRAINING_MESSAGES",
    "check_config",
    "check_run",
    "check_entry",
    "check_update",
    "check_eval",
    "check_sync",
    "check_pulled",
]

MAX_ROUNDS = 10_000
MAX_SYNC_RUNS = 10_000  # runs one node tells a new master about (run_sync.py, rule 3)
MAX_CLIENTS = 4096
STATUSES = ("running", "stopped", "done", "failed")

RunId = Annotated[str, M(pattern="^[0-9a-f]{8,32}$")]  # secrets.token_hex(8); RunStore's file names
RunRef = Annotated[str, M(pattern="^[0-9a-f]{1,32}$")]  # a run id or a unique prefix of one
VersionOrNone = Annotated[str, M(pattern="^([0-9a-f]{16})?$")]  # "" before the first version
DatasetName = Annotated[str, M(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]  # ml/datasets.py
ClassName = Annotated[str, M(min_length=1, max_length=64)]  # a class of a model: a label folder's name
OptionalDataset = Annotated[str, M(pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$")]
PeerKey = Annotated[str, M(min_length=1, max_length=64)]  # a node id, as a key or a label
Reason = Annotated[str, M(max_length=MAX_REASON)]
Round = Annotated[int, M(ge=0, le=MAX_ROUNDS)]
Seconds = Annotated[float, M(ge=0, le=1e9)]
Timestamp = Annotated[float, M(ge=0, le=1e11)]  # unix time (year 5138 at most)
Fraction = Annotated[float, M(ge=0, le=1)]
Metrics = Annotated[dict[Key, Finite], M(max_length=64)]
NodeList = Annotated[list[PeerKey], M(max_length=MAX_CLIENTS)]
NodeReasons = Annotated[dict[PeerKey, Reason], M(max_length=MAX_CLIENTS)]
Weights = Annotated[bytes, M(max_length=MAX_WEIGHTS_BYTES)]


# ----------------------------------------------------------------------------- records
_D = RunConfig()  # the defaults come from the run config itself


class RunConfigRecord(msgspec.Struct, kw_only=True):
    """A run's configuration: the fields of `rounds.RunConfig`, bounded (its ``validate`` adds the
    checks across fields: differential privacy, strategy options)."""

    model: ModelName = _D.model
    arch: Arch = {}
    dataset: DatasetName = _D.dataset
    rounds: Annotated[int, M(ge=1, le=MAX_ROUNDS)] = _D.rounds
    epochs: Annotated[int, M(ge=1, le=1000)] = _D.epochs
    batch_size: Annotated[int, M(ge=1, le=65536)] = _D.batch_size
    lr: Annotated[float, M(gt=0, le=100)] = _D.lr
    strategy: Literal[STRATEGIES] = _D.strategy
    strategy_options: Annotated[dict[Key, Int | Finite], M(max_length=16)] = {}
    mu: Annotated[float, M(ge=0, le=100)] = _D.mu
    min_clients: Annotated[int, M(ge=1, le=MAX_CLIENTS)] = _D.min_clients
    fraction: Annotated[float, M(gt=0, le=1)] = _D.fraction
    round_timeout: Annotated[float, M(gt=0, le=86400)] = _D.round_timeout
    mode: Literal["sync", "async"] = _D.mode
    buffer_k: Annotated[int, M(ge=1, le=MAX_CLIENTS)] = _D.buffer_k
    staleness_alpha: Annotated[float, M(ge=0, le=100)] = _D.staleness_alpha
    compress: bool = _D.compress
    dp_clip: Annotated[float, M(ge=0, le=1e6)] = _D.dp_clip
    dp_noise: Annotated[float, M(ge=0, le=1e3)] = _D.dp_noise
    max_norm_ratio: Annotated[float, M(ge=0, le=1e9)] = _D.max_norm_ratio
    outlier_z: Annotated[float, M(ge=0, le=1e3)] = _D.outlier_z
    seed: Annotated[int, M(ge=0, le=2**32 - 1)] = _D.seed  # numpy takes no negative seed
    eval_dataset: OptionalDataset = _D.eval_dataset
    holdout: Annotated[float, M(ge=0, lt=1)] = _D.holdout
    labels: Annotated[list[ClassName], M(max_length=MAX_CLASSES)] = []
    augment: bool = _D.augment
    secure: bool = _D.secure


class Evaluation(msgspec.Struct, kw_only=True):
    """Held-out metrics (ml/local_training.py, ``evaluate``)."""

    loss: Finite
    accuracy: Fraction
    n: Count


class Privacy(msgspec.Struct, kw_only=True):
    """The privacy spent by the end of a round (training/privacy.py): epsilon at delta, over the rounds so far."""

    epsilon: Annotated[float, M(ge=0, le=1e9)]
    delta: Annotated[float, M(gt=0, lt=1)]
    rounds: Annotated[int, M(ge=0, le=10_000)] = 0


class SecureRound(msgspec.Struct, kw_only=True):
    """How a round with secure aggregation went (training/secure_rounds.py): who took part, the shares a
    secret needed, the dropped clients whose masks were taken off, and the protocol's own seconds."""

    participants: Count
    threshold: Count
    recovered: NodeList = []
    seconds: Seconds = 0.0


class HistoryEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One committed round of a run (coordinator.py makes them). Fields left at their defaults are left
    out, so an entry reads back as it was made."""

    round: Round
    version: VersionOrNone = ""
    clients: NodeList = []
    stragglers: NodeReasons = {}
    rejected: NodeReasons = {}
    lags: Annotated[dict[PeerKey, Round], M(max_length=MAX_CLIENTS)] = {}
    samples: Count = 0
    bytes: Count = 0
    wall_seconds: Seconds = 0.0
    fit_seconds_max: Seconds = 0.0
    metrics: Metrics = {}
    client_eval: Evaluation | None = None
    server_eval: Evaluation | None = None
    privacy: Privacy | None = None
    secure: SecureRound | None = None
    timing: Annotated[dict[Key, Seconds], M(max_length=16)] = {}  # seconds of the master's own steps


class LedgerEntry(msgspec.Struct, kw_only=True):
    samples: Count = 0
    accepted: Count = 0
    rejected: Count = 0
    rounds: Count = 0


class EncodedWeights(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Arrays of a strategy's state (coordinator.py, ``_encode_state``): base64 of a weights archive."""

    weights: Annotated[str, M(max_length=4 * MAX_WEIGHTS_BYTES // 3 + 4)] = msgspec.field(name="__weights__")
    single: bool = False


StateValue = EncodedWeights | None | bool | Int | Finite | Annotated[str, M(max_length=64)]


class RunRecord(msgspec.Struct, kw_only=True):
    """A run's state as committed by the master and replicated to every node: the fields of
    `rounds.RunState`."""

    run_id: RunId
    config: RunConfigRecord
    status: Literal[STATUSES] = "running"
    round: Round = 0
    version: VersionOrNone = ""
    term: Term = 0
    history: Annotated[list[HistoryEntry], M(max_length=MAX_ROUNDS)] = []
    ledger: Annotated[dict[PeerKey, LedgerEntry], M(max_length=MAX_CLIENTS)] = {}
    strategy_state: Annotated[dict[Key, StateValue], M(max_length=32)] = {}
    created: Timestamp
    error: Annotated[str, M(max_length=MAX_ERROR)] = ""
    warnings: Annotated[list[Annotated[str, M(max_length=MAX_ERROR)]], M(max_length=MAX_WARNINGS)] = []


# ----------------------------------------------------------------------------- replies the master checks
class UpdateReply(msgspec.Struct, kw_only=True):
    """A client's answer to `FlTrain` (ml/mltasks.py, ``train``): checked before the update counts."""

    num_examples: Count
    metrics: Metrics = {}
    base_version: VersionOrNone = ""
    compressed: bool = False
    eval: Evaluation | None = None
    seconds: Seconds = 0.0
    masked: bool = False  # a secure round's update: masked fixed-point words, not weights


class DatasetShape(msgspec.Struct, kw_only=True):
    """A client's answer to `FlDescribe`: what a model for its dataset takes and names."""

    input_shape: Annotated[list[Annotated[int, M(ge=1, le=1024)]], M(min_length=3, max_length=3)]
    labels: Annotated[list[ClassName], M(max_length=MAX_CLASSES)]


class EvalReply(msgspec.Struct, kw_only=True):
    """A client's answer to `FlEval`: its held-out metrics, or none (no held-out data)."""

    eval: Evaluation | None = None


# ----------------------------------------------------------------------------- any member -> master
FlStart = msgspec.defstruct(
    "FlStart",
    [(f.name, f.type | None, None) for f in msgspec.structs.fields(RunConfigRecord)],
    bases=(PeerMessage,),
    tag="fl.start",
    kw_only=True,
    module=__name__,
)
FlStart.__doc__ = """Start a run (a node forwards its user's `collab train`): the fields of `RunConfigRecord`,
each optional (unset: the default). Only the master acts on it."""


class FlStop(PeerMessage, tag="fl.stop"):
    """Stop a run (a unique prefix of its id is enough). Only the master acts on it."""

    run_id: RunRef


class FlResume(PeerMessage, tag="fl.resume"):
    """Resume a run, or the last stopped or failed one. Only the master acts on it."""

    run_id: RunRef | None = None


# ----------------------------------------------------------------------------- master -> clients, replicas
class FlTrain(PeerMessage, tag="fl.train"):
    """A blob: the global weights of round ``round``, to train on the receiver's own data (answered with
    the update, an `UpdateReply` blob)."""

    SENDER = MASTER
    term: Term
    run_id: RunId
    round: Annotated[int, M(ge=1, le=MAX_ROUNDS)]
    config: RunConfigRecord
    data: Weights
    version: VersionOrNone = ""  # the version the weights are (the client names it in its update)
    participants: Annotated[list[NodeId], M(max_length=MAX_CLIENTS)] = []  # a secure round's U2 (secagg.py)


class FlEval(PeerMessage, tag="fl.eval"):
    """A blob: final weights to evaluate on the receiver's held-out data (answered with an `EvalReply`)."""

    SENDER = MASTER
    term: Term
    run_id: RunId
    config: RunConfigRecord
    data: Weights


class FlDescribe(PeerMessage, tag="fl.describe"):
    """What a dataset of the receiver's holds (answered with a `DatasetShape`): a new model's input shape
    and class names come from the clients' datasets, whose images stay where they are."""

    SENDER = MASTER
    term: Term
    dataset: DatasetName


class FlCommit(PeerMessage, tag="fl.commit"):
    """A blob: a new model version (its metadata and weights) and the run state that names it."""

    SENDER = MASTER
    term: Term
    meta: ModelMeta
    run: RunRecord
    data: Weights


class FlState(PeerMessage, tag="fl.state"):
    """The run state alone (a status change: stopped, done, failed, resumed)."""

    SENDER = MASTER
    term: Term
    run: RunRecord


class FlSync(PeerMessage, tag="fl.sync"):
    """A new master asks for a digest of every run the receiver holds (answered with a `SyncReply`), to adopt
    the newest copy of each before it resumes anything (run_sync.py, rule 3)."""

    SENDER = MASTER
    term: Term


class FlPull(PeerMessage, tag="fl.pull"):
    """A new master fetches one run the receiver holds newer than it does: a blob of the state, and of the
    model version it names (fields checked by `check_pulled`, the weights by the registry)."""

    SENDER = MASTER
    term: Term
    run_id: RunId


class RunDigest(msgspec.Struct, kw_only=True):
    """One run as a node holds it (run_sync.digest_of)."""

    run_id: RunId
    term: Term
    round: Round
    status: Literal[STATUSES]
    version: VersionOrNone = ""


class SyncReply(msgspec.Struct, kw_only=True):
    runs: Annotated[list[RunDigest], M(max_length=MAX_SYNC_RUNS)] = []


class PullReply(msgspec.Struct, kw_only=True):
    run: RunRecord
    meta: ModelMeta | None = None


class ReplicaReply(msgspec.Struct, kw_only=True):
    """A replica's answer to `FlCommit` and `FlState`: whether it now holds that state (run_sync.py, rule 2)."""

    held: bool = False


# ----------------------------------------------------------------------------- clients -> master, anyone
class FlPhase(PeerMessage, tag="fl.phase"):
    """What a client is doing in a round, for the UIs. Published only for a run this node coordinates,
    from a node that run has asked to train."""

    run_id: RunId
    round: Round
    phase: Literal["download", "train", "upload"]


class FlData(PeerMessage, tag="fl.data"):
    """A blob: a dataset part dealt out by `collab data split` (an npz of ``x`` and ``y``), kept as
    ``datasets/NAME.npz`` once its name and its archive are checked (ml/datasets.py, ``receive_part``)."""

    name: Name
    data: Annotated[bytes, M(max_length=MAX_PART_BYTES)]
    labels: Annotated[list[Annotated[str, M(max_length=200)]], M(max_length=MAX_CLASSES)] = []


TRAINING_MESSAGES: tuple[type[PeerMessage], ...] = (
    FlStart,
    FlStop,
    FlResume,
    FlTrain,
    FlEval,
    FlDescribe,
    FlCommit,
    FlState,
    FlSync,
    FlPull,
    FlPhase,
    FlData,
)


# ----------------------------------------------------------------------------- checks
def _clean(schema: type[msgspec.Struct], value: object, what: str) -> dict[str, Any]:
    try:
        return msgspec.to_builtins(msgspec.convert(value, schema))
    except msgspec.ValidationError as exc:
        raise ValueError(f"{what}: {cut(exc)}") from None


def check_config(config: object) -> dict[str, Any]:
    """A run configuration within the bounds of `RunConfigRecord` (all fields, defaults filled), or ValueError."""
    return _clean(RunConfigRecord, config, "run config")


def check_run(state: object) -> dict[str, Any]:
    """A run state as `RunRecord` declares it (a clean dict), or ValueError naming the field."""
    return _clean(RunRecord, state, "run state")


def check_entry(entry: object) -> dict[str, Any]:
    """A round entry as `HistoryEntry` declares it, or ValueError: the master checks its own before it
    commits, so no replica ever refuses what it committed."""
    return _clean(HistoryEntry, entry, "round entry")


def check_update(reply: object) -> dict[str, Any]:
    """A client's `UpdateReply` (declared fields only), or ValueError: the update does not count."""
    return _clean(UpdateReply, reply, "update")


def check_shape(reply: object) -> dict[str, Any]:
    """A client's `DatasetShape`, or ValueError."""
    return _clean(DatasetShape, reply, "dataset description")


def check_eval(reply: object) -> dict[str, Any] | None:
    """The `Evaluation` in a client's `EvalReply` (or None), or ValueError."""
    return _clean(EvalReply, reply, "evaluation")["eval"]


def check_sync(reply: object) -> list[dict[str, Any]]:
    """The digests of a node's `SyncReply`, or ValueError."""
    return _clean(SyncReply, reply, "run digests")["runs"]


def check_pulled(reply: object) -> dict[str, Any]:
    """A node's answer to `FlPull` ({"run", "meta"}), or ValueError."""
    return _clean(PullReply, reply, "pulled run")
