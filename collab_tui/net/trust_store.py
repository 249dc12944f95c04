"""The trust log on disk: every verified entry this node holds, in one file (0600, atomic writes).

See :mod:`collab_tui.net.trust_log` for the entries and the rules. Entries only ever join the set
(`merge`); nothing is rewritten or removed. A deny-list file from before the trust log
(``denylist.json``) is turned into root-signed entries on the node that holds the root key.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from cryptography import x509

from .identity import write_private
from .trust_log import Entry, TrustLogError, TrustState, build_state, parse_entry

log = logging.getLogger("collab.trust")

__all__ = ["TrustLogStore"]


class TrustLogStore:
    def __init__(self, path: Path | str, ca_cert: x509.Certificate) -> None:
        self.path = Path(path)
        self.ca_cert = ca_cert
        self._lock = threading.Lock()
        self.state, errors = build_state(ca_cert, self._read())
        if errors:
            log.warning("trust log %s: %d entries dropped (first: %s)", self.path, len(errors), errors[0])

    def _read(self) -> list:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise TrustLogError(f"corrupt trust log {self.path}: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
            raise TrustLogError(f"corrupt trust log {self.path}: expected {{entries: [...]}}")
        return raw["entries"]

    def merge(self, raw_entries) -> tuple[bool, list[str]]:
        """Add the entries that verify and are new; ``(whether the set grew, why others were dropped)``."""
        parsed: list[Entry] = []
        errors: list[str] = []
        for raw in raw_entries:
            try:
                parsed.append(raw if isinstance(raw, Entry) else parse_entry(raw))
            except TrustLogError as exc:
                errors.append(str(exc))
        with self._lock:
            have = {e.id for e in self.state.stored}
            new = [e for e in parsed if e.id not in have]
            if not new:
                return False, errors
            state, more = build_state(self.ca_cert, [*self.state.stored, *new])
            if {e.id for e in state.stored} == have:
                return False, errors + more
            write_private(self.path, json.dumps({"entries": [e.wire() for e in state.stored]}).encode("utf-8"))
            self.state = state
        return True, errors + more

    @property
    def current(self) -> TrustState:
        return self.state
