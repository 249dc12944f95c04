"""Run state on disk: one JSON file per run, committed atomically (temp, fsync, rename).

The master commits after every round and replicates the state to every peer; a replica is accepted
only if it wins over what is stored (run_sync.py: the higher term, then the higher round), so a new
master's rounds replace what an old one stored on too few nodes, and a new master, which adopts the
newest copy a majority holds, resumes at the last committed round.

Every state is checked against `messages.RunRecord` before it is written, whoever made it, and again
when it is read: a file that does not parse or validate (a crash, a disk error, a state written by a
version that bounded nothing) is moved aside (``RUN.json.bad-<unix time>``) with one warning and the
other runs load as before, so the heartbeat, `collab runs` and the master's resume loop never trip on it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ..fsutil import atomic_write, child_path, set_aside
from .messages import check_run
from .rounds import RunState
from .run_sync import replaces

log = logging.getLogger("collab.training")

_RUN_ID = re.compile(r"^[0-9a-f]{8,32}$")


class RunStore:
    def __init__(self, home: Path) -> None:
        self.dir = home / "state" / "runs"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, run_id: str) -> Path:
        if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
            raise ValueError(f"bad run id {str(run_id)[:40]!r}")
        return child_path(self.dir, f"{run_id}.json")

    def commit(self, state: RunState) -> None:
        """Write ``state`` (ValueError, and nothing written, if it is not a valid `RunRecord`)."""
        clean = check_run(state.to_dict())
        atomic_write(self._path(clean["run_id"]), json.dumps(clean, sort_keys=True).encode())

    def _load(self, path: Path) -> RunState | None:
        """The run in ``path``; None if it is gone, unreadable, or bad (then it is moved aside)."""
        try:
            raw = path.read_bytes()
        except OSError:
            return None  # gone meanwhile (moved aside by another reader) or unreadable: not a run now
        try:
            clean = check_run(json.loads(raw))
            if clean["run_id"] != path.stem:
                raise ValueError(f"it holds run {clean['run_id']}")
        except (ValueError, RecursionError) as exc:  # JSON and validation errors are ValueErrors
            set_aside(path, f"run state: {exc}", logger=log)
            return None
        return RunState.from_dict(clean)

    def get(self, run_id: str) -> RunState:
        """The run ``run_id`` (a unique prefix is enough); LookupError if there is none."""
        matches = [p for p in self.dir.glob("*.json") if p.stem.startswith(run_id)] if len(run_id) < 32 else []
        path = matches[0] if len(matches) == 1 else self._path(run_id)
        state = self._load(path)
        if state is None:
            raise LookupError(f"unknown run {run_id[:40]!r}")
        return state

    def list(self) -> list[RunState]:
        """Every stored run, oldest first (by creation time, then id: every key is a checked number or id)."""
        runs = [s for p in sorted(self.dir.glob("*.json")) if (s := self._load(p)) is not None]
        return sorted(runs, key=lambda s: (s.created, s.run_id))

    def accept_replica(self, data: dict) -> bool:
        """Store a replicated state unless ours wins (run_sync.py, rule 1: the higher ``(term, round)``).
        ValueError, and nothing stored, if it is not a valid `RunRecord`."""
        clean = check_run(data)
        try:
            mine = self.get(clean["run_id"]).to_dict()
        except LookupError:
            mine = None
        if not replaces(mine, clean):
            return False
        self.commit(RunState.from_dict(clean))
        return True

    def running(self) -> list[RunState]:
        return [s for s in self.list() if s.status == "running"]
