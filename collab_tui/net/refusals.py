"""Sans-IO summary of refused connections: one log line per source and reason per interval.

A stranger that opens plaintext or self-signed TLS connections in a loop must not flood the log. The
first refusal of a (source, reason) pair is logged at once; the ones that follow within ``interval``
seconds are counted and reported as one line when the interval ends ("refused 199 more connections
from 10.0.0.9 in 10 s: CERTIFICATE_VERIFY_FAILED"); a flood that goes on gives one line per interval.
The clock is passed in; the driver calls :meth:`flush` now and then (the node's ticker does).
"""

from __future__ import annotations

from dataclasses import dataclass

OTHER = "other sources"
OTHER_REASONS = "other reasons"
REASON_CHARS = 120
REASONS_PER_SOURCE = 4


@dataclass
class _Window:
    opened: float
    count: int = 0  # refusals after the one that opened the window


class RefusalLog:
    def __init__(self, interval: float = 10.0, max_keys: int = 256) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self.total = 0
        self._open: dict[tuple[str, str], _Window] = {}

    def note(self, source: str, reason: str, now: float) -> str | None:
        """Count one refusal; returns the line to log now, or None when it is summarised later. The state
        stays bounded whatever a stranger varies: reasons are cut to ``REASON_CHARS``, a source has at most
        ``REASONS_PER_SOURCE`` reasons of its own, and past ``max_keys`` everything is "other"."""
        self.total += 1
        source, reason = str(source)[:64], str(reason)[:REASON_CHARS]
        key = (source, reason)
        if key not in self._open:
            if sum(1 for s, _ in self._open if s == source) >= REASONS_PER_SOURCE:
                key = (source, OTHER_REASONS)
            if key not in self._open and len(self._open) >= self.max_keys:
                key = (OTHER, OTHER_REASONS)  # a flood from many addresses or reasons
        window = self._open.get(key)
        if window is not None:
            window.count += 1
            return None
        self._open[key] = _Window(now)
        more = f"; more from it are summarised every {self.interval:g} s" if source != OTHER else ""
        return f"refused a connection from {key[0]}: {reason}{more}"

    def flush(self, now: float) -> list[str]:
        """Summary lines for the windows that ended; windows with nothing more to say are closed."""
        lines = []
        for key, window in list(self._open.items()):
            if now - window.opened < self.interval:
                continue
            if window.count == 0:
                del self._open[key]
                continue
            span = now - window.opened
            lines.append(
                f"refused {window.count} more connection{'s' if window.count != 1 else ''} "
                f"from {key[0]} in {span:.0f} s: {key[1]}"
            )
            self._open[key] = _Window(now)
        return lines
