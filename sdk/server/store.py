"""The avatar store: SQLite (WAL) rows + one safetensors blob per avatar, written atomically.

    data/avatars.db            rows: id, tenant, state (PENDING / READY / FAILED), reason, name, times, sha256
    data/blobs/<id>.avatar     the otavatar avatar file (READY rows only)
    data/blobs/.<id>.*.tmp     a blob being written (swept on start)

Durability (reliability.md F5): a blob is written to a temporary file, fsynced, renamed into place and the
folder fsynced BEFORE its row turns READY in a committed transaction (synchronous=FULL), so a READY row always
has its complete blob. Whatever a `kill -9` leaves is repaired by `recover()` on start: temporary files are
deleted; PENDING rows (interrupted creations) become FAILED with a reason; READY rows whose blob is missing or
does not match its sha256 become FAILED; blobs without a READY row (a kill between the rename and the commit,
or during a delete) are deleted. Ids are validated before any path is built from them.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from otavatar.fileio import atomic_write, fsync_dir

__all__ = ["AvatarStore", "AvatarRecord", "RecoveryReport", "validate_id", "new_id", "ID_PATTERN",
           "PENDING", "READY", "FAILED"]

PENDING, READY, FAILED = "PENDING", "READY", "FAILED"
ID_PATTERN = re.compile(r"av_[0-9a-f]{32}")      # 128 random bits (reliability.md S3)
BLOB_SUFFIX = ".avatar"
MAX_NAME = 128
_SCHEMA = """
CREATE TABLE IF NOT EXISTS avatars (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING', 'READY', 'FAILED')),
    reason TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS avatars_tenant ON avatars (tenant, created);
"""
# Test hook for the kill -9 trials (tests/server/test_crash.py): the process SIGKILLs itself at this point.
CRASH_ENV = "OTAVATAR_SERVER_CRASH_AT"
CRASH_POINTS = ("after_insert", "during_inversion", "during_blob_write", "after_rename")


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def new_id() -> str:
    return "av_" + secrets.token_hex(16)


def validate_id(avatar_id: object) -> str:
    """The id, or ValueError naming what is wrong (no filesystem access happens for a bad id)."""
    if not isinstance(avatar_id, str) or not avatar_id:
        raise ValueError("avatar_id is empty")
    if len(avatar_id) > 64:
        raise ValueError(f"avatar_id is {len(avatar_id)} characters; ids are 35 ('av_' + 32 hex digits)")
    if not ID_PATTERN.fullmatch(avatar_id):
        raise ValueError(f"avatar_id {avatar_id[:64]!r} is malformed: expected 'av_' followed by 32 lowercase hex "
                         "digits")
    return avatar_id


@dataclass(frozen=True)
class AvatarRecord:
    id: str
    tenant: str
    state: str
    reason: str
    name: str
    created: float
    updated: float
    sha256: str
    fingerprint: str


@dataclass(frozen=True)
class RecoveryReport:
    temp_files_removed: int
    orphan_blobs_removed: int
    interrupted_failed: int       # PENDING rows of a previous run -> FAILED
    missing_blob_failed: int
    corrupt_blob_failed: int
    integrity: str                # PRAGMA integrity_check
    seconds: float


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class AvatarStore:
    """Thread-safe (one connection behind a lock: the store is not the bottleneck, inversion and rendering are)."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir)
        self.blobs = self.root / "blobs"
        self.scratch = self.root / "scratch"
        for d in (self.root, self.blobs, self.scratch):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "avatars.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")     # a committed READY survives power loss, not only kill -9
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- paths -----------------------------------------------------------------------------------------------
    def blob_path(self, avatar_id: str) -> Path:
        return self.blobs / (validate_id(avatar_id) + BLOB_SUFFIX)

    def scratch_path(self, avatar_id: str) -> Path:
        return self.scratch / (validate_id(avatar_id) + BLOB_SUFFIX)

    # -- rows ------------------------------------------------------------------------------------------------
    def _row(self, row) -> AvatarRecord | None:
        return None if row is None else AvatarRecord(*row)

    def _execute(self, sql: str, args: tuple = ()) -> list:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def create_pending(self, tenant: str, name: str = "", avatar_id: str | None = None) -> AvatarRecord:
        avatar_id = validate_id(avatar_id) if avatar_id else new_id()
        now = time.time()
        self._execute("INSERT INTO avatars (id, tenant, state, name, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                      (avatar_id, tenant, PENDING, name[:MAX_NAME], now, now))
        crash_point("after_insert")
        return self.get(tenant, avatar_id)

    def get(self, tenant: str, avatar_id: str) -> AvatarRecord | None:
        """The tenant's avatar, or None (unknown id and another tenant's id look the same: no existence oracle)."""
        rows = self._execute("SELECT * FROM avatars WHERE id = ? AND tenant = ?", (validate_id(avatar_id), tenant))
        return self._row(rows[0] if rows else None)

    def list(self, tenant: str) -> list[AvatarRecord]:
        return [AvatarRecord(*r) for r in
                self._execute("SELECT * FROM avatars WHERE tenant = ? ORDER BY created, id", (tenant,))]

    def mark_failed(self, avatar_id: str, reason: str) -> None:
        self._execute("UPDATE avatars SET state = ?, reason = ?, updated = ? WHERE id = ?",
                      (FAILED, reason[:1000], time.time(), validate_id(avatar_id)))

    def complete(self, avatar_id: str, data: bytes, fingerprint: str) -> None:
        """Write the blob atomically, then commit the row READY (the order recover() relies on)."""
        self._write_blob(avatar_id, data)
        with self._lock:
            updated = self._db.execute(
                "UPDATE avatars SET state = ?, reason = '', sha256 = ?, fingerprint = ?, updated = ? "
                "WHERE id = ? AND state = ?",
                (READY, _sha256(data), fingerprint, time.time(), avatar_id, PENDING)).rowcount
        if not updated:      # deleted while it was being created: no row, so no blob either
            self.blob_path(avatar_id).unlink(missing_ok=True)
            raise ValueError(f"avatar {avatar_id} was deleted while it was being created")

    def import_ready(self, tenant: str, data: bytes, fingerprint: str, name: str = "") -> AvatarRecord:
        avatar_id = new_id()
        self._write_blob(avatar_id, data)          # a kill before the insert leaves an orphan blob: swept on start
        now = time.time()
        self._execute("INSERT INTO avatars (id, tenant, state, name, created, updated, sha256, fingerprint) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (avatar_id, tenant, READY, name[:MAX_NAME], now, now, _sha256(data), fingerprint))
        return self.get(tenant, avatar_id)

    def delete(self, tenant: str, avatar_id: str) -> bool:
        """Row first (committed), then the blob: a kill in between leaves an orphan blob, swept on start."""
        avatar_id = validate_id(avatar_id)
        with self._lock:
            deleted = self._db.execute("DELETE FROM avatars WHERE id = ? AND tenant = ?", (avatar_id, tenant)).rowcount
        if deleted:
            self.blob_path(avatar_id).unlink(missing_ok=True)
        return bool(deleted)

    def read_blob(self, record: AvatarRecord) -> bytes:
        """The READY avatar's file, checked against its sha256 (ValueError if the disk changed under us)."""
        data = self.blob_path(record.id).read_bytes()
        if _sha256(data) != record.sha256:
            raise ValueError(f"avatar {record.id}: blob does not match its sha256")
        return data

    # -- blobs -----------------------------------------------------------------------------------------------
    def _write_blob(self, avatar_id: str, data: bytes) -> None:
        """Atomically (a `.<name>.*.tmp` beside it, removed by `recover` after a crash), with the F5 crash
        points half-way through the write and after the rename."""
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                half = len(data) // 2
                f.write(data[:half])
                f.flush()
                crash_point("during_blob_write")
                f.write(data[half:])

        atomic_write(self.blob_path(avatar_id), write)
        crash_point("after_rename")

    # -- recovery --------------------------------------------------------------------------------------------
    def recover(self) -> RecoveryReport:
        """Repair what a crash left behind (module docstring). Run once at start, before serving."""
        start = time.perf_counter()
        temps = 0
        for d in (self.blobs, self.scratch):
            for path in d.iterdir():
                if path.is_file() and (d is self.scratch or path.name.endswith(".tmp")):
                    path.unlink()
                    temps += 1
        interrupted = self._execute("SELECT id FROM avatars WHERE state = ?", (PENDING,))
        for (avatar_id,) in interrupted:
            self.mark_failed(avatar_id, "interrupted: the server stopped while this avatar was being created; "
                                        "create it again")
        missing = corrupt = 0
        ready = {}
        for avatar_id, sha in self._execute("SELECT id, sha256 FROM avatars WHERE state = ?", (READY,)):
            path = self.blob_path(avatar_id)
            if not path.is_file():
                self.mark_failed(avatar_id, "the avatar file is missing from the store")
                missing += 1
            elif _sha256(path.read_bytes()) != sha:
                self.mark_failed(avatar_id, "the avatar file is corrupt (sha256 mismatch)")
                corrupt += 1
            else:
                ready[path.name] = avatar_id
        orphans = 0
        for path in self.blobs.iterdir():
            if path.is_file() and path.name not in ready:
                path.unlink()
                orphans += 1
        if temps or orphans:
            fsync_dir(self.blobs)
        integrity = self._execute("PRAGMA integrity_check")[0][0]
        return RecoveryReport(temps, orphans, len(interrupted), missing, corrupt, integrity,
                              time.perf_counter() - start)
