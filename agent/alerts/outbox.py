"""The persistent outbox: notifications waiting for their webhook, kept across restarts.

One SQLite file (``<alerts.state_dir>/outbox.db``, WAL, ``synchronous=FULL``): ``put``
returns only once the notification is on disk, so an alert that fired is delivered
even if the agent dies right after. Delivery is at least once; a receiver drops
duplicates by ``webhook-id`` (the notification's id, the same on every retry).

Order: ``due`` gives, per (webhook, key), only the oldest entry, so one alert's
resolved notification never overtakes its firing one, while other alerts are not held
up by it. ``put(..., supersede=True)`` replaces what is still waiting for that alert
(Alertmanager re-posts: only the newest matters).

A file that is not a database (or a corrupt one) is logged, renamed
``outbox.db.corrupt-<unix time>`` and a fresh outbox started; where not even that can
be written, the outbox lives in memory (logged): alerts still go out, but what waits
is lost on restart. All methods are thread-safe (one connection behind a lock).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from agent.alerts.model import Notification

log = logging.getLogger("sci_agent.alerts")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    webhook TEXT NOT NULL,
    key TEXT NOT NULL,
    created_at REAL NOT NULL,
    next_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    notification TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_alert ON outbox (webhook, key, seq);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (webhook, next_at);
"""

#: The entries of a webhook that are due: the oldest of each alert, once its time came.
_DUE = """
SELECT o.seq, o.notification FROM outbox AS o
WHERE o.webhook = ? AND o.next_at <= ?
  AND NOT EXISTS (
    SELECT 1 FROM outbox AS p WHERE p.webhook = o.webhook AND p.key = o.key AND p.seq < o.seq
  )
ORDER BY o.created_at, o.seq
LIMIT ?
"""

#: The earliest next attempt among those entries (due or not).
_NEXT_AT = """
SELECT MIN(o.next_at) FROM outbox AS o
WHERE o.webhook = ?
  AND NOT EXISTS (
    SELECT 1 FROM outbox AS p WHERE p.webhook = o.webhook AND p.key = o.key AND p.seq < o.seq
  )
"""


class Outbox:
    """Notifications not yet delivered, in one SQLite file at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = self._open()

    # -- the public operations ------------------------------------------------------------

    def put(self, n: Notification, supersede: bool = False) -> None:
        """Store ``n`` durably; with ``supersede``, first remove what waits for its alert.

        A corrupt file is replaced and ``n`` stored in the fresh one; a full disk or a
        lock held past 10 s raises ``sqlite3.OperationalError`` (the caller logs it).
        """

        def op(db: sqlite3.Connection) -> None:
            with db:
                if supersede:
                    db.execute(
                        "DELETE FROM outbox WHERE webhook = ? AND key = ?", (n.webhook, n.key)
                    )
                db.execute(
                    "INSERT OR REPLACE INTO outbox"
                    " (id, webhook, key, created_at, next_at, notification)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (n.id, n.webhook, n.key, n.created_at, n.created_at, n.to_json()),
                )

        self._run(op, retry=True)

    def due(self, webhook: str, now: float, limit: int = 10) -> list[Notification]:
        """Up to ``limit`` entries of ``webhook`` whose next attempt time has come, oldest
        first (per alert, only its oldest entry)."""
        rows = self._run(lambda db: db.execute(_DUE, (webhook, now, limit)).fetchall())
        out: list[Notification] = []
        for seq, text in rows:
            try:
                out.append(Notification.from_json(text))
            except (ValueError, TypeError) as exc:
                log.error("alerts outbox: entry %d is unreadable (%s); removed", seq, exc)
                self._remove_seq(seq)
        return out

    def _remove_seq(self, seq: int) -> None:
        self._run(lambda db: _commit(db, "DELETE FROM outbox WHERE seq = ?", (seq,)))

    def delivered(self, id: str) -> None:
        """Remove ``id`` (delivered, or given up on); unknown ids are ignored."""
        self._run(lambda db: _commit(db, "DELETE FROM outbox WHERE id = ?", (id,)))

    def failed(self, id: str, next_at: float, error: str) -> None:
        """Count a failed attempt of ``id``; try it again at ``next_at`` (Unix time)."""
        self._run(
            lambda db: _commit(
                db,
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ?"
                " WHERE id = ?",
                (next_at, error, id),
            )
        )

    def attempts(self, id: str) -> int:
        """Failed attempts of ``id`` so far (0 when unknown)."""
        row = self._run(
            lambda db: db.execute("SELECT attempts FROM outbox WHERE id = ?", (id,)).fetchone()
        )
        return int(row[0]) if row else 0

    def next_at(self, webhook: str) -> float | None:
        """When ``due`` will next give an entry of ``webhook`` (None: it has none)."""
        row = self._run(lambda db: db.execute(_NEXT_AT, (webhook,)).fetchone())
        return float(row[0]) if row and row[0] is not None else None

    def expire(self, now: float, max_age_s: float) -> list[Notification]:
        """Remove and return the entries created more than ``max_age_s`` before ``now``."""
        cutoff = now - max_age_s

        def op(db: sqlite3.Connection) -> list[str]:
            with db:
                rows = db.execute(
                    "SELECT notification FROM outbox WHERE created_at < ? ORDER BY seq", (cutoff,)
                ).fetchall()
                if rows:
                    db.execute("DELETE FROM outbox WHERE created_at < ?", (cutoff,))
            return [text for (text,) in rows]

        out: list[Notification] = []
        for text in self._run(op):
            try:
                out.append(Notification.from_json(text))
            except (ValueError, TypeError):
                log.error("alerts outbox: an expired entry was unreadable; removed")
        return out

    def pending(self, webhook: str | None = None) -> int:
        """Entries waiting, for ``webhook`` or for all."""
        args: tuple[str, ...] = ()
        if webhook is None:
            query = "SELECT COUNT(*) FROM outbox"
        else:
            query, args = "SELECT COUNT(*) FROM outbox WHERE webhook = ?", (webhook,)
        row = self._run(lambda db: db.execute(query, args).fetchone())
        return int(row[0])

    def close(self) -> None:
        """Close the database; the file stays for the next start."""
        with self._lock:
            self._db.close()

    # -- opening, and a corrupt file ------------------------------------------------------

    def _run(self, op: Callable[[sqlite3.Connection], T], retry: bool = False) -> T:
        """``op`` under the lock; a corrupt file is moved aside (then ``op`` retried once,
        when ``retry``: a ``put`` is not lost)."""
        with self._lock:
            try:
                return op(self._db)
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                log.error("alerts outbox %s: %s", self.path, exc)
                self._db.close()
                self._db = self._fresh()
                if not retry:
                    raise
                return op(self._db)

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return _connect(self.path)
        except sqlite3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                # Another process holds it (a second agent on this state_dir): not ours
                # to move aside.
                log.error(
                    "alerts outbox %s: locked by another process (%s); keeping notifications"
                    " in memory until the next start",
                    self.path,
                    exc,
                )
                return _connect(":memory:")
            log.error("alerts outbox %s: cannot be read (%s)", self.path, exc)
        except OSError as exc:
            log.error("alerts outbox %s: cannot be opened (%s)", self.path, exc)
        return self._fresh()

    def _fresh(self) -> sqlite3.Connection:
        """Move the file aside and start an empty one (in memory if even that fails)."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        try:
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.replace(Path(f"{aside}{suffix}"))
            db = _connect(self.path)
        except (OSError, sqlite3.DatabaseError) as exc:
            log.error(
                "alerts outbox %s: cannot start a fresh one (%s); keeping notifications in"
                " memory until the next start",
                self.path,
                exc,
            )
            return _connect(":memory:")
        log.error("alerts outbox: moved the unreadable file to %s; started a fresh one", aside)
        return db


def _connect(path: Path | str) -> sqlite3.Connection:
    """Open and check the database: WAL, full sync, the schema, a quick integrity check."""
    db = sqlite3.connect(str(path), check_same_thread=False, timeout=10.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        (verdict,) = db.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {verdict}")
    except BaseException:
        db.close()
        raise
    return db


def _commit(db: sqlite3.Connection, query: str, args: tuple[object, ...]) -> None:
    with db:
        db.execute(query, args)


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """A damaged file (not a busy database, a full disk or a programming error)."""
    if type(exc) is sqlite3.DatabaseError:
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
