"""Durable job store of the submitter node (SQLite, WAL).

The submitter owns each job until every item has an outcome: the master only schedules.
`record_result` / `record_error` are exactly-once per item: the first outcome wins and
later duplicates (late or reassigned workers) change nothing. After a restart or a master
change, `unfinished_jobs` + `unfinished` give what must be resubmitted.

Item ids are stored as text (``str(item_id)``). Item status: pending | done | error |
cancelled. Job status: running | done (no pending item left) | cancelled.

Progress is kept as counters on the job row (``n_done``, ``n_error``, ``n_cancelled``), updated in
the same transaction as the items, so reading a job's counts costs one row, not a scan of its items
(stores written before the counters existed are migrated when opened). A background thread checkpoints
the WAL, so that no commit pays for it.

Each item also keeps ``attempts``: how many tries failed (on some worker, then retried elsewhere) before
the one that gave its outcome; `retried` adds them up for a job.

Each job has a secret, ``job_key`` (random, made at creation, kept across restarts and resubmissions):
the master derives the items' tickets from it, and the submitter accepts a result or serves a fetch only
with a valid ticket (jobs/messages.py). It is read with `job_key` only, never part of a job's views.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .messages import new_job_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    task TEXT NOT NULL,
    model TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    total INTEGER NOT NULL,
    submitter TEXT,
    options_json TEXT NOT NULL DEFAULT '{}',
    out_dir TEXT,
    n_done INTEGER NOT NULL DEFAULT 0,
    n_error INTEGER NOT NULL DEFAULT 0,
    n_cancelled INTEGER NOT NULL DEFAULT 0,
    job_key TEXT
);
CREATE TABLE IF NOT EXISTS items (
    job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    item_id TEXT NOT NULL,
    path TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    result_json TEXT,
    error TEXT,
    worker TEXT,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, item_id)
);
CREATE INDEX IF NOT EXISTS items_status ON items(job_id, status);
"""

ITEM_STATUSES = ("pending", "done", "error", "cancelled")
CHECKPOINT_EVERY = 0.5  # seconds between two looks at the WAL's size
CHECKPOINT_BYTES = 4 * 1024 * 1024  # checkpoint (in the background) past this much WAL
SAFETY_CHECKPOINT_PAGES = 16384  # the writer checkpoints itself only past this (64 MiB of 4 KiB pages)
_COUNTER = {"done": "n_done", "error": "n_error", "cancelled": "n_cancelled"}


class JobStoreError(Exception):
    """Invalid use of the job store (bad items, closed store, ...)."""


class UnknownJobError(JobStoreError, KeyError):
    """No job with that id."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown job"


def new_job_id(now: float | None = None) -> str:
    """20 hex chars: 12 of milliseconds since the epoch (sortable by time) + 8 random."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:012x}{secrets.token_hex(4)}"


class JobStore:
    """Thread-safe (one connection guarded by a lock) durable store of jobs and items."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute(f"PRAGMA wal_autocheckpoint={SAFETY_CHECKPOINT_PAGES}")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="collab-jobs-checkpoint", daemon=True)
        self._checkpointer.start()

    # ------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._stop.set()
        if self._checkpointer.is_alive() and self._checkpointer is not threading.current_thread():
            self._checkpointer.join(5.0)
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _checkpoint_loop(self) -> None:
        """Copy the WAL back into the database from this thread, with its own connection, whenever it
        has grown past CHECKPOINT_BYTES. SQLite would otherwise do it inside a commit (every ~1,000
        pages), fsync included, stalling the writer (the node's event loop) for milliseconds. A PASSIVE
        checkpoint never blocks writers; the writer's own automatic checkpoint stays as a safety net."""
        wal = f"{self.path}-wal"
        db: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(CHECKPOINT_EVERY):
                try:
                    if os.path.getsize(wal) < CHECKPOINT_BYTES:
                        continue
                    if db is None:
                        db = sqlite3.connect(str(self.path), timeout=1.0, isolation_level=None, check_same_thread=False)
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except (OSError, sqlite3.Error):
                    continue  # no WAL yet, or busy: next time
        finally:
            if db is not None:
                db.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise JobStoreError(f"job store {self.path} is closed")
        return self._db

    def _write(self, fn):  # run fn(conn) in one IMMEDIATE transaction
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return out

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn().execute(sql, tuple(args)).fetchall()

    def _migrate(self) -> None:
        """Add the progress counters (and the items' attempts, the jobs' keys) to a store created before
        they existed, and fill them in."""
        cols = {r[1] for r in self._read("PRAGMA table_info(jobs)")}
        missing = [c for c in _COUNTER.values() if c not in cols]
        if "attempts" not in {r[1] for r in self._read("PRAGMA table_info(items)")}:
            self._write(lambda db: db.execute("ALTER TABLE items ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0"))
        if "job_key" not in cols:
            self._write(lambda db: db.execute("ALTER TABLE jobs ADD COLUMN job_key TEXT"))
        keyless = [r[0] for r in self._read("SELECT job_id FROM jobs WHERE job_key IS NULL")]
        if keyless:
            self._write(
                lambda db: db.executemany(
                    "UPDATE jobs SET job_key=? WHERE job_id=?", [(new_job_key(), j) for j in keyless]
                )
            )
        if not missing:
            return

        def fn(db: sqlite3.Connection) -> None:
            for col in missing:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {col} INTEGER NOT NULL DEFAULT 0")
            for status, col in _COUNTER.items():
                db.execute(
                    f"UPDATE jobs SET {col}=(SELECT COUNT(*) FROM items i WHERE i.job_id=jobs.job_id AND i.status=?)",
                    (status,),
                )

        self._write(fn)

    def journal_mode(self) -> str:
        return str(self._read("PRAGMA journal_mode")[0][0]).lower()

    # ---------------------------------------------------------------- jobs
    def create_job(
        self,
        task: str,
        items: list[tuple[Any, str, int, str]],
        options: dict | None = None,
        *,
        model: str | None = None,
        submitter: str = "",
        out_dir: str | None = None,
        job_id: str | None = None,
        now: float | None = None,
    ) -> str:
        """Create a job with its items ``(item_id, path, size, sha256)``; returns the job id."""
        rows = []
        seen: set[str] = set()
        for it in items:
            if len(it) != 4:
                raise JobStoreError(f"item must be (item_id, path, size, sha256), got {it!r}")
            iid = str(it[0])
            if iid in seen:
                raise JobStoreError(f"duplicate item id {iid!r}")
            seen.add(iid)
            rows.append((iid, str(it[1]), int(it[2] or 0), it[3]))
        try:
            opts = json.dumps(options or {}, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise JobStoreError(f"options are not JSON-serialisable: {e}") from None
        created = time.time() if now is None else now
        jid = job_id or new_job_id(created)
        status = "running" if rows else "done"

        def fn(db: sqlite3.Connection) -> str:
            try:
                db.execute(
                    "INSERT INTO jobs(job_id, created_at, task, model, status, total,"
                    " submitter, options_json, out_dir, job_key) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (jid, created, task, model, status, len(rows), submitter, opts, out_dir, new_job_key()),
                )
            except sqlite3.IntegrityError:
                raise JobStoreError(f"job {jid} already exists") from None
            db.executemany(
                "INSERT INTO items(job_id, item_id, path, size, sha256) VALUES (?,?,?,?,?)", [(jid, *r) for r in rows]
            )
            return jid

        return self._write(fn)

    def finish_items(
        self, job_id: str, outcomes: list[tuple[Any, str, str | None, str | None, str | None]]
    ) -> list[bool]:
        """Record several outcomes ``(item_id, status, result_json, error, worker)`` (status ``done`` or
        ``error``; an optional sixth field: the item's failed attempts before this outcome) of one job in ONE
        transaction. Exactly once per item: an item that already has an outcome (or appears twice) is
        left alone. Returns, per outcome, whether it was recorded."""
        return self.record_outcomes(job_id, outcomes)[0]

    def record_outcomes(
        self, job_id: str, outcomes: list[tuple[Any, str, str | None, str | None, str | None]]
    ) -> tuple[list[bool], dict | None]:
        """`finish_items`, plus the job as it is after the transaction (read inside it; None if no
        outcome was new, or the job is unknown)."""
        for o in outcomes:
            if o[1] not in ("done", "error"):
                raise JobStoreError(f"an outcome is done or error, not {o[1]!r}")
        if not outcomes:
            return [], None

        def fn(db: sqlite3.Connection) -> tuple[list[bool], dict | None]:
            now = time.time()
            fresh: list[bool] = []
            added = {"done": 0, "error": 0}
            for item_id, status, result_json, error, worker, *more in outcomes:
                attempts = int(more[0]) if more and more[0] else 0
                cur = db.execute(
                    "UPDATE items SET status=?, result_json=?, error=?, worker=?, finished_at=?, attempts=?"
                    " WHERE job_id=? AND item_id=? AND status='pending'",
                    (status, result_json, error, worker, now, attempts, job_id, str(item_id)),
                )
                ok = cur.rowcount == 1
                fresh.append(ok)
                if ok:
                    added[status] += 1
            if not (added["done"] or added["error"]):
                return fresh, None
            n = added["done"] + added["error"]
            db.execute(
                "UPDATE jobs SET n_done=n_done+?, n_error=n_error+?, status=CASE WHEN status='running'"
                " AND n_done+n_error+n_cancelled+?>=total THEN 'done' ELSE status END WHERE job_id=?",
                (added["done"], added["error"], n, job_id),
            )
            row = db.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            return fresh, (self._job_dict(row) if row is not None else None)

        return self._write(fn)

    def _finish_item(
        self,
        job_id: str,
        item_id: Any,
        status: str,
        result_json: str | None,
        error: str | None,
        worker: str | None,
        attempts: int = 0,
    ) -> bool:
        return self.finish_items(job_id, [(item_id, status, result_json, error, worker, attempts)])[0]

    def record_result(self, job_id: str, item_id: Any, result: dict, worker: str | None) -> bool:
        """Store an item's result once; False (nothing changed) if it already has an outcome."""
        try:
            payload = json.dumps(result)
        except (TypeError, ValueError) as e:
            raise JobStoreError(f"result is not JSON-serialisable: {e}") from None
        return self._finish_item(job_id, item_id, "done", payload, None, worker)

    def record_error(self, job_id: str, item_id: Any, error: str, worker: str | None, attempts: int = 0) -> bool:
        """Mark an item failed once; False if it already has an outcome."""
        return self._finish_item(job_id, item_id, "error", None, str(error), worker, attempts)

    def cancel(self, job_id: str) -> int:
        """Cancel the pending items of a job; returns how many were cancelled."""

        def fn(db: sqlite3.Connection) -> int:
            if db.execute("SELECT 1 FROM jobs WHERE job_id=?", (job_id,)).fetchone() is None:
                raise UnknownJobError(f"unknown job {job_id!r}")
            n = db.execute(
                "UPDATE items SET status='cancelled', finished_at=? WHERE job_id=? AND status='pending'",
                (time.time(), job_id),
            ).rowcount
            db.execute("UPDATE jobs SET n_cancelled=n_cancelled+? WHERE job_id=?", (n, job_id))
            db.execute("UPDATE jobs SET status='cancelled' WHERE job_id=? AND status='running'", (job_id,))
            return n

        return self._write(fn)

    def delete_job(self, job_id: str) -> bool:
        """Remove a job and its items entirely."""

        def fn(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM items WHERE job_id=?", (job_id,))
            return db.execute("DELETE FROM jobs WHERE job_id=?", (job_id,)).rowcount == 1

        return self._write(fn)

    # --------------------------------------------------------------- reads
    @staticmethod
    def _item(row: sqlite3.Row) -> dict:
        d = dict(row)
        raw = d.pop("result_json", None)
        d["result"] = json.loads(raw) if raw is not None else None
        return d

    def _job_dict(self, row: sqlite3.Row) -> dict:
        d = dict(row)
        d.pop("job_key", None)  # a secret: not part of any view
        d["options"] = json.loads(d.pop("options_json") or "{}")
        counts = {s: d.pop(_COUNTER[s]) if s in _COUNTER else 0 for s in ITEM_STATUSES}
        counts["pending"] = d["total"] - counts["done"] - counts["error"] - counts["cancelled"]
        d["counts"] = counts
        d.update(counts)
        d["finished"] = counts["done"] + counts["error"] + counts["cancelled"]
        return d

    def job(self, job_id: str) -> dict:
        """Job columns + ``options`` (parsed) + ``counts`` (also flattened) + ``finished``."""
        rows = self._read("SELECT * FROM jobs WHERE job_id=?", (job_id,))
        if not rows:
            raise UnknownJobError(f"unknown job {job_id!r}")
        return self._job_dict(rows[0])

    def job_key(self, job_id: str) -> str:
        """The job's secret (hex), from which its items' tickets are made."""
        rows = self._read("SELECT job_key FROM jobs WHERE job_id=?", (job_id,))
        if not rows:
            raise UnknownJobError(f"unknown job {job_id!r}")
        return str(rows[0][0])

    def jobs(self) -> list[dict]:
        """All jobs, oldest first."""
        return [self._job_dict(r) for r in self._read("SELECT * FROM jobs ORDER BY created_at, job_id")]

    def items(self, job_id: str) -> list[dict]:
        """All items of a job in insertion order."""
        return [self._item(r) for r in self._read("SELECT * FROM items WHERE job_id=? ORDER BY rowid", (job_id,))]

    def unfinished(self, job_id: str) -> list[dict]:
        """Pending items of a job (to (re)submit), in insertion order."""
        return [
            self._item(r)
            for r in self._read("SELECT * FROM items WHERE job_id=? AND status='pending' ORDER BY rowid", (job_id,))
        ]

    def unfinished_jobs(self) -> list[str]:
        """Ids of running jobs that still have pending items, oldest first."""
        return [
            r[0]
            for r in self._read(
                "SELECT j.job_id FROM jobs j WHERE j.status='running' AND EXISTS"
                " (SELECT 1 FROM items i WHERE i.job_id=j.job_id AND i.status='pending')"
                " ORDER BY j.created_at, j.job_id"
            )
        ]

    def retried(self, job_id: str) -> dict:
        """``{"retried_attempts": failed tries retried (summed over the items), "retried_items": items with
        at least one}`` of a job's finished items."""
        row = self._read(
            "SELECT COALESCE(SUM(attempts), 0), COALESCE(SUM(attempts > 0), 0) FROM items"
            " WHERE job_id=? AND status IN ('done','error')",
            (job_id,),
        )[0]
        return {"retried_attempts": int(row[0]), "retried_items": int(row[1])}

    def results(self, job_id: str) -> list[dict]:
        """Finished items (done or error) with parsed ``result``, in insertion order."""
        return [
            self._item(r)
            for r in self._read(
                "SELECT * FROM items WHERE job_id=? AND status IN ('done','error') ORDER BY rowid", (job_id,)
            )
        ]
