"""Short-lived join tokens (``collab invite`` / ``collab join TOKEN``).

Token text: ``collab1.<pin: 64 hex>.<token id: 8 hex>.<secret: 26 base32 lower chars>``.

* The pin is the hash of the CA public key (``identity.ca_pin`` without the ``sha256:`` prefix):
  the joiner checks it against the server's CA *before* revealing the secret.
* The store (on the inviting node) keeps only the SHA-256 of the secret, with expiry and a use
  count.  Times are unix seconds (wall clock, since they are persisted); ``now`` is injectable.
* The store serialises access within one process (a lock); it is not meant to be shared by
  several processes at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from collab_tui.net.identity import write_private

__all__ = [
    "TokenError",
    "TokenExpired",
    "TokenUsedUp",
    "TokenUnknown",
    "TokenBadSecret",
    "JoinToken",
    "TokenInfo",
    "TokenStore",
    "parse_token",
    "format_token",
    "TOKEN_PREFIX",
]

TOKEN_PREFIX = "collab1"
_TOKEN_RE = re.compile(r"^collab1\.([0-9a-f]{64})\.([0-9a-f]{8})\.([a-z2-7]{26})$")
_ID_RE = re.compile(r"^[0-9a-f]{8}$")


class TokenError(Exception):
    """Malformed or unacceptable join token."""


class TokenExpired(TokenError):
    pass


class TokenUsedUp(TokenError):
    pass


class TokenUnknown(TokenError):
    pass


class TokenBadSecret(TokenError):
    pass


@dataclass(frozen=True)
class JoinToken:
    """Parsed token. ``pin`` is in ``identity.ca_pin`` form: ``'sha256:<64 hex>'``."""

    pin: str
    token_id: str
    secret: str

    @property
    def pin_hex(self) -> str:
        return self.pin.split(":", 1)[1]

    def text(self) -> str:
        return format_token(self.pin, self.token_id, self.secret)


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    label: str
    created_at: float
    expires_at: float
    uses_left: int
    status: str  # "active" | "expired" | "used up"


def _pin_hex(pin: str) -> str:
    p = pin.strip().lower()
    if p.startswith("sha256:"):
        p = p[len("sha256:") :]
    if not re.fullmatch(r"[0-9a-f]{64}", p):
        raise TokenError(f"bad CA pin {pin!r}: expected 'sha256:' followed by 64 hex characters")
    return p


def format_token(pin: str, token_id: str, secret: str) -> str:
    return f"{TOKEN_PREFIX}.{_pin_hex(pin)}.{token_id}.{secret}"


def parse_token(text: str) -> JoinToken:
    """Parse token text (surrounding blanks and letter case are tolerated)."""
    if not isinstance(text, str):
        raise TokenError("join token must be a string")
    t = text.strip().lower()
    m = _TOKEN_RE.match(t)
    if m:
        return JoinToken("sha256:" + m.group(1), m.group(2), m.group(3))
    parts = t.split(".")
    if parts[0] != TOKEN_PREFIX:
        raise TokenError(
            f"not a collab join token: it must start with '{TOKEN_PREFIX}.' "
            "(copy the whole line printed by `collab invite`)"
        )
    if len(parts) != 4:
        raise TokenError(f"malformed join token: expected 4 dot-separated parts, got {len(parts)}")
    _, pin, tid, sec = parts
    if not re.fullmatch(r"[0-9a-f]{64}", pin):
        raise TokenError("malformed join token: the CA pin must be 64 hex characters")
    if not _ID_RE.fullmatch(tid):
        raise TokenError("malformed join token: the token id must be 8 hex characters")
    raise TokenError("malformed join token: the secret must be 26 base32 characters (a-z, 2-7)")


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _new_secret() -> str:
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


class TokenStore:
    """JSON file (0600, atomic writes) of ``token_id -> {secret_sha256, expires_at, uses_left,
    created_at, label}``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    # -- persistence
    def _load(self) -> dict[str, dict]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise TokenError(f"corrupt token store {self.path}: {e}") from None
        if not isinstance(data, dict):
            raise TokenError(f"corrupt token store {self.path}: not a JSON object")
        return data

    def _save(self, data: dict[str, dict]) -> None:
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))

    # -- API
    def issue(self, pin: str, ttl_s: float = 3600, uses: int = 1, now: float | None = None, label: str = "") -> str:
        """Create a token valid for ``ttl_s`` seconds and ``uses`` joins; returns the token text."""
        if ttl_s <= 0:
            raise TokenError("token lifetime must be positive")
        if uses < 1:
            raise TokenError("token must allow at least one use")
        now = time.time() if now is None else now
        pin_hex = _pin_hex(pin)
        with self._lock:
            data = self._load()
            tid = secrets.token_hex(4)
            while tid in data:
                tid = secrets.token_hex(4)
            secret = _new_secret()
            data[tid] = {
                "secret_sha256": _hash_secret(secret),
                "expires_at": float(now + ttl_s),
                "uses_left": int(uses),
                "created_at": float(now),
                "label": str(label),
            }
            self._save(data)
        return format_token(pin_hex, tid, secret)

    def _validate(self, data: dict[str, dict], token_id: str, secret: str, now: float) -> dict:
        rec = data.get(token_id) if isinstance(token_id, str) else None
        if not isinstance(rec, dict):
            raise TokenUnknown(f"unknown join token {token_id!r} (revoked, pruned or never issued)")
        given = _hash_secret(secret if isinstance(secret, str) else "")
        if not hmac.compare_digest(given, str(rec.get("secret_sha256", ""))):
            raise TokenBadSecret(f"wrong secret for join token {token_id}")
        if now >= float(rec.get("expires_at", 0)):
            raise TokenExpired(f"join token {token_id} has expired; ask for a new `collab invite`")
        if int(rec.get("uses_left", 0)) <= 0:
            raise TokenUsedUp(f"join token {token_id} has already been used")
        return rec

    def check(self, token_id: str, secret: str, now: float | None = None) -> None:
        """Validate like :meth:`redeem` without consuming a use."""
        now = time.time() if now is None else now
        with self._lock:
            self._validate(self._load(), token_id, secret, now)

    def redeem(self, token_id: str, secret: str, now: float | None = None) -> None:
        """Consume one use or raise TokenUnknown / TokenBadSecret / TokenExpired / TokenUsedUp.

        The secret is checked first (constant-time); a bad secret never consumes a use.
        """
        now = time.time() if now is None else now
        with self._lock:
            data = self._load()
            rec = self._validate(data, token_id, secret, now)
            rec["uses_left"] = int(rec["uses_left"]) - 1
            self._save(data)

    def list(self, now: float | None = None) -> list[TokenInfo]:
        """All stored tokens (oldest first) with their status at ``now``."""
        now = time.time() if now is None else now
        with self._lock:
            data = self._load()
        out = []
        for tid, rec in data.items():
            uses = int(rec.get("uses_left", 0))
            exp = float(rec.get("expires_at", 0))
            status = "expired" if now >= exp else ("used up" if uses <= 0 else "active")
            out.append(TokenInfo(tid, str(rec.get("label", "")), float(rec.get("created_at", 0)), exp, uses, status))
        return sorted(out, key=lambda i: (i.created_at, i.token_id))

    def prune(self, now: float | None = None) -> int:
        """Remove expired and used-up tokens; returns how many were removed."""
        now = time.time() if now is None else now
        with self._lock:
            data = self._load()
            keep = {
                tid: rec
                for tid, rec in data.items()
                if now < float(rec.get("expires_at", 0)) and int(rec.get("uses_left", 0)) > 0
            }
            removed = len(data) - len(keep)
            if removed:
                self._save(keep)
        return removed

    def delete(self, token_id: str) -> bool:
        """Revoke one token; True if it existed."""
        with self._lock:
            data = self._load()
            if token_id not in data:
                return False
            del data[token_id]
            self._save(data)
        return True
