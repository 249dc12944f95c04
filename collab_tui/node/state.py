"""Small persisted node state (term, known members), written atomically: temp file, fsync, rename."""

from __future__ import annotations

import json
from pathlib import Path

from ..fsutil import atomic_write  # noqa: F401  (re-exported: callers import it from here)


class JsonState:
    """A dict persisted as one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict = json.loads(path.read_text())
            if not isinstance(self.data, dict):
                self.data = {}
        except (FileNotFoundError, json.JSONDecodeError):
            self.data = {}

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self.save()

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode())
