"""Run state on disk: one JSON file per run, committed atomically (temp, fsync, rename).

The master commits after every round and replicates the state to every peer; a replica is accepted
only if it is not older than what is stored (round and term), so no round is ever committed twice and
a new master resumes at the last committed round.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..node.state import atomic_write
from .rounds import RunState

_RUN_ID = re.compile(r"^[0-9a-f]{8,32}$")


class RunStore:
    def __init__(self, home: Path) -> None:
        self.dir = home / "state" / "runs"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, run_id: str) -> Path:
        if not _RUN_ID.match(run_id):
            raise ValueError(f"bad run id {run_id!r}")
        return self.dir / f"{run_id}.json"

    def commit(self, state: RunState) -> None:
        atomic_write(self._path(state.run_id), json.dumps(state.to_dict(), sort_keys=True).encode())

    def get(self, run_id: str) -> RunState:
        matches = [p for p in self.dir.glob("*.json") if p.stem.startswith(run_id)] if len(run_id) < 32 else []
        path = matches[0] if len(matches) == 1 else self._path(run_id)
        try:
            return RunState.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise LookupError(f"unknown run {run_id!r}") from None

    def list(self) -> list[RunState]:
        out = []
        for p in sorted(self.dir.glob("*.json")):
            try:
                out.append(RunState.from_dict(json.loads(p.read_text())))
            except (ValueError, TypeError):
                continue
        return sorted(out, key=lambda s: s.created)

    def accept_replica(self, data: dict) -> bool:
        """Store a replicated state unless ours is newer (higher round, or same round from a higher term)."""
        state = RunState.from_dict(data)
        try:
            mine = self.get(state.run_id)
        except LookupError:
            mine = None
        if mine is not None:
            if (mine.round, mine.term) > (state.round, state.term):
                return False
            if mine.round == state.round and mine.term == state.term and mine.status == state.status:
                if mine.history == state.history:
                    return False
        self.commit(state)
        return True

    def running(self) -> list[RunState]:
        return [s for s in self.list() if s.status == "running"]
