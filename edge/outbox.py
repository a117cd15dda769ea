"""The device's durable store-and-forward outbox: selected frames wait here until delivered.

SQLite (WAL, synchronous=FULL) holds one row per frame; the image is a file beside it,
written and fsynced *before* its row commits, so a crash (power cut, kill -9) leaves at
worst an orphan file, which the next open deletes — never a row without its image. The
outbox is bounded (items and bytes); when full, the oldest frames are evicted (dead
letters first), logged, counted and returned. It does not talk to the network (see
edge.uploader).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PENDING, DEAD = "pending", "dead"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    frame_id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    size INTEGER NOT NULL,
    meta TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS frames_due ON frames (state, next_attempt_at, seq);
"""
_COLUMNS = "frame_id, created_at, size, meta, state, attempts, next_attempt_at, last_error"


@dataclass(frozen=True)
class OutboxItem:
    """One stored frame; `read()` returns its image bytes."""

    frame_id: str
    created_at: float
    size: int
    meta: dict[str, Any]
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    path: Path

    def read(self) -> bytes:
        return self.path.read_bytes()


@dataclass(frozen=True)
class Stored:
    """What put() did: the new frame's id and the ids evicted to make room for it."""

    frame_id: str
    evicted: tuple[str, ...]


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    dead: int
    bytes: int
    evicted_total: int


class OutboxFull(ValueError):
    """A single frame larger than the whole byte budget."""


class Outbox:
    """Frames awaiting upload under `root` (outbox.db + images/). Safe to share between threads.

    max_items / max_bytes bound the whole outbox (None: unbounded).
    """

    def __init__(
        self,
        root: Path,
        *,
        max_items: int | None = 10_000,
        max_bytes: int | None = 1 << 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.images = self.root / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.evicted_total = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "outbox.db", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._recover()

    # --- writing ---------------------------------------------------------------------
    def put(self, image_bytes: bytes, meta: dict[str, Any]) -> str:
        """Store a frame durably and return its id (a uuid); see store() for evictions."""
        return self.store(image_bytes, meta).frame_id

    def store(self, image_bytes: bytes, meta: dict[str, Any]) -> Stored:
        """Store a frame durably, evicting the oldest ones if the outbox is full."""
        size = len(image_bytes)
        if self.max_bytes is not None and size > self.max_bytes:
            raise OutboxFull(f"frame of {size} bytes exceeds the outbox byte limit ({self.max_bytes}); raise max_bytes")
        meta_json = json.dumps(meta, separators=(",", ":"))
        frame_id = uuid.uuid4().hex
        path = self._path(frame_id)
        _write_durably(path, image_bytes)  # the file exists before the row that points at it
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                evicted = self._make_room(size)
                self._db.execute(
                    "INSERT INTO frames (frame_id, created_at, size, meta) VALUES (?, ?, ?, ?)",
                    (frame_id, self._clock(), size, meta_json),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                path.unlink(missing_ok=True)
                raise
        for fid in evicted:
            self._path(fid).unlink(missing_ok=True)
        if evicted:
            self.evicted_total += len(evicted)
            log.warning(
                "outbox full (max_items=%s, max_bytes=%s): evicted %d oldest frame(s) %s to store %s",
                self.max_items,
                self.max_bytes,
                len(evicted),
                ", ".join(evicted),
                frame_id,
            )
        return Stored(frame_id, tuple(evicted))

    def _make_room(self, incoming: int) -> list[str]:
        count, total = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM frames").fetchone()
        evicted: list[str] = []
        while count and (
            (self.max_items is not None and count + 1 > self.max_items)
            or (self.max_bytes is not None and total + incoming > self.max_bytes)
        ):
            fid, size = self._db.execute(
                "SELECT frame_id, size FROM frames ORDER BY state = 'pending', seq LIMIT 1"
            ).fetchone()
            self._db.execute("DELETE FROM frames WHERE frame_id = ?", (fid,))
            evicted.append(fid)
            count, total = count - 1, total - size
        return evicted

    def ack(self, frame_id: str) -> bool:
        """Forget a delivered frame (row first, then file); False if it was not there."""
        with self._lock:
            deleted = self._db.execute("DELETE FROM frames WHERE frame_id = ?", (frame_id,)).rowcount
        self._path(frame_id).unlink(missing_ok=True)
        return bool(deleted)

    def defer(self, frame_id: str, *, until: float, error: str) -> None:
        """A failed attempt: count it and do not offer the frame again before `until`."""
        with self._lock:
            self._db.execute(
                "UPDATE frames SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE frame_id = ?",
                (until, error[:500], frame_id),
            )

    def dead_letter(self, frame_id: str, reason: str) -> None:
        """Park a frame the central service refused for good; kept for inspection, never retried."""
        with self._lock:
            self._db.execute(
                "UPDATE frames SET state = 'dead', attempts = attempts + 1, last_error = ? WHERE frame_id = ?",
                (reason[:500], frame_id),
            )

    # --- reading ---------------------------------------------------------------------
    def peek(self, n: int) -> list[OutboxItem]:
        """The n oldest pending frames, whether or not their retry time has come."""
        return self._select("WHERE state = 'pending' ORDER BY seq LIMIT ?", (n,))

    def due(self, n: int, now: float | None = None) -> list[OutboxItem]:
        """The n oldest pending frames whose retry time has come."""
        now = self._clock() if now is None else now
        return self._select("WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY seq LIMIT ?", (now, n))

    def get(self, frame_id: str) -> OutboxItem | None:
        rows = self._select("WHERE frame_id = ?", (frame_id,))
        return rows[0] if rows else None

    def dead_letters(self) -> list[OutboxItem]:
        return self._select("WHERE state = 'dead' ORDER BY seq", ())

    def next_due_at(self) -> float | None:
        """When the earliest pending frame may be tried again (None: nothing pending)."""
        with self._lock:
            (at,) = self._db.execute("SELECT MIN(next_attempt_at) FROM frames WHERE state = 'pending'").fetchone()
        return at

    def stats(self) -> OutboxStats:
        with self._lock:
            rows = {
                state: (n, b)
                for state, n, b in self._db.execute(
                    "SELECT state, COUNT(*), COALESCE(SUM(size), 0) FROM frames GROUP BY state"
                )
            }
        return OutboxStats(
            pending=rows.get(PENDING, (0, 0))[0],
            dead=rows.get(DEAD, (0, 0))[0],
            bytes=sum(b for _, b in rows.values()),
            evicted_total=self.evicted_total,
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- internals -------------------------------------------------------------------
    def _select(self, where: str, args: tuple) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM frames {where}", args).fetchall()
        return [
            OutboxItem(fid, created, size, json.loads(meta), state, attempts, nxt, err, self._path(fid))
            for fid, created, size, meta, state, attempts, nxt, err in rows
        ]

    def _path(self, frame_id: str) -> Path:
        return self.images / f"{frame_id}.jpg"

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass  # no transaction was open

    def _recover(self) -> None:
        """Delete what a crash can leave: temp files and images whose row never committed."""
        with self._lock:
            rows = dict(self._db.execute("SELECT frame_id, size FROM frames").fetchall())
            broken = [fid for fid, size in rows.items() if _size(self._path(fid)) != size]
            for fid in broken:  # cannot come from a crash (file before row); a damaged disk can
                log.error("outbox frame %s: image file missing or wrong size; row dropped", fid)
                self._db.execute("DELETE FROM frames WHERE frame_id = ?", (fid,))
        orphans = 0
        for entry in self.images.iterdir():
            fid = entry.name.removesuffix(".jpg")
            if entry.suffix != ".jpg" or fid not in rows or fid in broken:
                entry.unlink(missing_ok=True)
                orphans += 1
        if orphans:
            log.info("outbox: removed %d leftover file(s) from an interrupted write", orphans)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _write_durably(path: Path, data: bytes) -> None:
    """Write to a temp name, fsync, rename into place and fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
