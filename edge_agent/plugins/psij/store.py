"""Job records in a small SQLite file, so that jobs outlive the agent process.

One row per job. A row is written before the job reaches the scheduler (state ``NEW``)
and deleted again if the submission fails, so a failed submit leaves nothing behind and
an idempotency key is reserved atomically: ``UNIQUE(owner_key, idempotency_key)``.

The store is shared by request threads and psij's callback threads: one connection,
guarded by a lock, in WAL mode so readers of the file (a second agent on the same
state dir, an admin with sqlite3) never block writers for long.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # 2: array_tasks
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELED"})
# Order of psij's JobState: transitions only move forward.
STATE_RANK = {"NEW": 0, "QUEUED": 1, "ACTIVE": 2, "COMPLETED": 3, "FAILED": 3, "CANCELED": 3}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id          TEXT PRIMARY KEY,
    owner_key       TEXT NOT NULL,
    owner_uid       INTEGER,
    owner_user      TEXT NOT NULL DEFAULT '',
    executor        TEXT NOT NULL,
    native_id       TEXT,
    native_started  REAL,
    state           TEXT NOT NULL,
    message         TEXT,
    exit_code       INTEGER,
    time            REAL,
    created         REAL NOT NULL,
    updated         REAL NOT NULL,
    spec            TEXT NOT NULL,
    job_dir         TEXT NOT NULL,
    stdout_path     TEXT,
    stderr_path     TEXT,
    idempotency_key TEXT,
    fingerprint     TEXT NOT NULL,
    history         TEXT NOT NULL DEFAULT '[]'
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(owner_key, idempotency_key);
CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs(owner_key, created);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
-- Job templates: a named, saved submit body; "shared" ones are seen by everyone who may use the edge.
CREATE TABLE IF NOT EXISTS templates (
    template_id TEXT PRIMARY KEY,
    owner_key   TEXT NOT NULL,
    owner_user  TEXT NOT NULL DEFAULT '',
    name        TEXT NOT NULL,
    shared      INTEGER NOT NULL DEFAULT 0,
    body        TEXT NOT NULL,
    created     REAL NOT NULL,
    updated     REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS templates_owner_name ON templates(owner_key, name);
-- A finished job's report (report.py), kept once the scheduler's accounting is final.
CREATE TABLE IF NOT EXISTS reports (
    job_id  TEXT PRIMARY KEY REFERENCES jobs(job_id) ON DELETE CASCADE,
    report  TEXT NOT NULL,
    made    REAL NOT NULL
);
-- The tasks of a job array (arrays.py): one row per index, followed by the plugin, not psij.
CREATE TABLE IF NOT EXISTS array_tasks (
    job_id      TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    task_index  INTEGER NOT NULL,
    state       TEXT NOT NULL,
    exit_code   INTEGER,
    native_id   TEXT,
    message     TEXT,
    retried_by  TEXT,
    updated     REAL NOT NULL,
    PRIMARY KEY (job_id, task_index)
);
"""


def owner_key(uid: int | None) -> str:
    """The store's key for a bridge user id; ``-`` for calls without one."""
    return f"u{uid}" if uid is not None else "-"


@dataclass
class JobRecord:
    """What the agent knows about one job. ``spec`` is the normalised job spec."""

    job_id: str
    owner_key: str
    owner_uid: int | None
    owner_user: str
    executor: str
    state: str
    spec: dict[str, Any]
    job_dir: str
    fingerprint: str
    created: float = field(default_factory=time.time)
    updated: float = 0.0
    native_id: str | None = None
    native_started: float | None = None
    message: str | None = None
    exit_code: int | None = None
    time: float | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    idempotency_key: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_row(self) -> dict[str, Any]:
        # Shallow on purpose: asdict() deep-copies spec and history on every write.
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["spec"] = json.dumps(self.spec, sort_keys=True)
        row["history"] = json.dumps(self.history)
        row["updated"] = self.updated or self.created
        return row

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        data = {f.name: row[f.name] for f in fields(cls)}
        data["spec"] = json.loads(data["spec"])
        data["history"] = json.loads(data["history"] or "[]")
        return cls(**data)


class DuplicateIdempotencyKey(Exception):
    """Another job of the same owner already holds this idempotency key."""


class JobStore:
    """CRUD on job records. Every method is thread-safe; none blocks for long."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        # Created 0600 before SQLite opens it: the journal files inherit its mode.
        path.touch(mode=0o600, exist_ok=True)
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=10.0,
        )
        self._db.row_factory = sqlite3.Row
        with self._lock:
            db = self._db
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{path} was written by a newer agent (schema {version} > {SCHEMA_VERSION})")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("job store is closed")
        return self._db

    # -- writes --------------------------------------------------------------------------

    def insert(self, record: JobRecord) -> None:
        """Add a record; :class:`DuplicateIdempotencyKey` if its key is taken."""
        row = record.to_row()
        columns = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self._lock:
            try:
                self._conn().execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", row)  # noqa: S608 - fixed columns
            except sqlite3.IntegrityError as exc:
                if "idempotency" in str(exc) or "owner_key" in str(exc):
                    raise DuplicateIdempotencyKey(record.idempotency_key) from None
                raise

    def update(self, record: JobRecord) -> None:
        """Write every mutable field of ``record`` back."""
        record.updated = time.time()
        row = record.to_row()
        with self._lock:
            self._conn().execute(
                "UPDATE jobs SET native_id=:native_id, native_started=:native_started, state=:state, "
                "message=:message, exit_code=:exit_code, time=:time, updated=:updated, history=:history, "
                "stdout_path=:stdout_path, stderr_path=:stderr_path WHERE job_id=:job_id",
                row,
            )

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._conn().execute("DELETE FROM jobs WHERE job_id=?", (job_id,))

    # -- reads ---------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._conn().execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def find_by_key(self, owner: str, key: str) -> JobRecord | None:
        with self._lock:
            row = self._conn().execute(
                "SELECT * FROM jobs WHERE owner_key=? AND idempotency_key=?", (owner, key)).fetchone()
        return JobRecord.from_row(row) if row else None

    def unfinished(self) -> list[JobRecord]:
        """Records not in a final state, oldest first (the jobs to re-attach)."""
        with self._lock:
            rows = self._conn().execute(
                "SELECT * FROM jobs WHERE state NOT IN ('COMPLETED','FAILED','CANCELED') ORDER BY created"
            ).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def select(self, *, owner: str | None = None, states: list[str] | None = None,
               executor: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[JobRecord], int]:
        """Records matching the filters, newest first, and how many match in total.
        ``owner=None`` means every owner."""
        where: list[str] = []
        args: list[Any] = []
        if owner is not None:
            where.append("owner_key=?")
            args.append(owner)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if executor:
            where.append("executor=?")
            args.append(executor)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            db = self._conn()
            total = db.execute(f"SELECT COUNT(*) FROM jobs {clause}", args).fetchone()[0]  # noqa: S608
            rows = db.execute(
                f"SELECT * FROM jobs {clause} ORDER BY created DESC, job_id LIMIT ? OFFSET ?",  # noqa: S608
                [*args, limit, offset],
            ).fetchall()
        return [JobRecord.from_row(r) for r in rows], total

    def get_reports(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The cached reports of those of ``job_ids`` that have one."""
        if not job_ids:
            return {}
        with self._lock:
            rows = self._conn().execute(
                f"SELECT job_id, report FROM reports WHERE job_id IN ({','.join('?' * len(job_ids))})",  # noqa: S608
                job_ids).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def put_report(self, job_id: str, report: dict[str, Any]) -> None:
        """Keep a final job's report (it will not change any more)."""
        with self._lock:
            self._conn().execute("INSERT OR REPLACE INTO reports (job_id, report, made) VALUES (?, ?, ?)",
                                 (job_id, json.dumps(report), time.time()))

    # -- templates -------------------------------------------------------------------------

    def save_template(self, *, template_id: str, owner: str, owner_user: str, name: str, shared: bool,
                      body: dict[str, Any]) -> dict[str, Any]:
        """Create the owner's template ``name``, or replace it (keeping its id)."""
        now = time.time()
        with self._lock:
            db = self._conn()
            row = db.execute("SELECT template_id, created FROM templates WHERE owner_key=? AND name=?",
                             (owner, name)).fetchone()
            if row:
                template_id, created = row[0], row[1]
                db.execute("UPDATE templates SET shared=?, body=?, updated=? WHERE template_id=?",
                           (int(shared), json.dumps(body), now, template_id))
            else:
                created = now
                db.execute("INSERT INTO templates VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (template_id, owner, owner_user, name, int(shared), json.dumps(body), now, now))
        return {"template_id": template_id, "name": name, "owner": owner_user, "shared": shared, "body": body,
                "created": created, "updated": now}

    def templates(self, *, owner: str | None) -> list[dict[str, Any]]:
        """The owner's templates and every shared one (``owner=None``: all), by name."""
        with self._lock:
            rows = self._conn().execute(
                "SELECT * FROM templates WHERE ? IS NULL OR owner_key=? OR shared=1 ORDER BY name, owner_user",
                (owner, owner)).fetchall()
        return [_template(r) for r in rows]

    def get_template(self, template_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn().execute("SELECT * FROM templates WHERE template_id=?", (template_id,)).fetchone()
        return _template(row) if row else None

    def delete_template(self, template_id: str) -> None:
        with self._lock:
            self._conn().execute("DELETE FROM templates WHERE template_id=?", (template_id,))

    # -- array tasks -----------------------------------------------------------------------

    def insert_tasks(self, job_id: str, indices: list[int], state: str = "QUEUED") -> None:
        now = time.time()
        with self._lock:
            self._conn().executemany(
                "INSERT OR IGNORE INTO array_tasks (job_id, task_index, state, updated) VALUES (?, ?, ?, ?)",
                [(job_id, i, state, now) for i in indices])

    def tasks(self, job_id: str) -> list[dict[str, Any]]:
        """The tasks of array ``job_id`` by index: ``{index, state, exit_code, native_id, message, retried_by}``."""
        with self._lock:
            rows = self._conn().execute(
                "SELECT task_index, state, exit_code, native_id, message, retried_by, updated FROM array_tasks "
                "WHERE job_id=? ORDER BY task_index", (job_id,)).fetchall()
        return [{"index": r[0], "state": r[1], "exit_code": r[2], "native_id": r[3], "message": r[4],
                 "retried_by": r[5], "updated": r[6]} for r in rows]

    def update_tasks(self, job_id: str, changes: dict[int, dict[str, Any]]) -> None:
        """Write tasks' ``state``, ``exit_code``, ``native_id`` and ``message``."""
        now = time.time()
        with self._lock:
            self._conn().executemany(
                "UPDATE array_tasks SET state=?, exit_code=?, native_id=?, message=?, updated=? "
                "WHERE job_id=? AND task_index=?",
                [(t["state"], t.get("exit_code"), t.get("native_id"), t.get("message"), now, job_id, i)
                 for i, t in changes.items()])

    def mark_retried(self, job_id: str, indices: list[int], retry_job_id: str) -> None:
        with self._lock:
            self._conn().executemany("UPDATE array_tasks SET retried_by=? WHERE job_id=? AND task_index=?",
                                     [(retry_job_id, job_id, i) for i in indices])

    def task_counts(self, job_ids: list[str]) -> dict[str, dict[str, int]]:
        """``{job_id: {state: count}}`` for those of ``job_ids`` that are arrays."""
        if not job_ids:
            return {}
        with self._lock:
            rows = self._conn().execute(
                f"SELECT job_id, state, COUNT(*) FROM array_tasks WHERE job_id IN ({','.join('?' * len(job_ids))}) "  # noqa: S608
                "GROUP BY job_id, state", job_ids).fetchall()
        out: dict[str, dict[str, int]] = {}
        for job_id, state, count in rows:
            out.setdefault(job_id, {})[state] = count
        return out

    def native_ids_in_use(self, executor: str) -> set[str]:
        """Native ids of this executor's unfinished jobs (their work files must be kept)."""
        with self._lock:
            rows = self._conn().execute(
                "SELECT native_id FROM jobs WHERE executor=? AND native_id IS NOT NULL "
                "AND state NOT IN ('COMPLETED','FAILED','CANCELED')", (executor,)).fetchall()
        return {r[0] for r in rows}


def _template(row: sqlite3.Row) -> dict[str, Any]:
    return {"template_id": row["template_id"], "name": row["name"], "owner": row["owner_user"],
            "owner_key": row["owner_key"], "shared": bool(row["shared"]), "body": json.loads(row["body"]),
            "created": row["created"], "updated": row["updated"]}
