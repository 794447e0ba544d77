"""The history of the outputs folder: every generated image, newest first, searchable.

An SQLite index (stdlib `sqlite3`) inside the outputs folder (`.history/index.sqlite`) holds
one row per PNG file of the day folders (`YYYY-MM-DD/`): its size and modification time and,
for generated images (those with a `studio_request` chunk), the task, prompt, seed and model
read from that chunk. Auxiliary files saved next to the outputs (inputs, masks, control maps)
are rows too, marked as not items, so that their metadata is read once, not on every call.

Each query first brings the index up to date cheaply: a day folder whose modification time
is unchanged since the last scan is skipped (files are written by atomic rename, which
changes it); a changed one is listed with `os.scandir`, whose names and inodes need no stat
call, and only new files, or files replaced under their name (a new inode), have their
metadata read; rows of deleted files are dropped. A query after the first indexing of 10,000
images costs about a millisecond, and a few tens after a new image (bench/history.py). A
file rewritten in place (same inode) is not noticed: the studio never does that.

The index survives restarts; a corrupt or unreadable one is deleted and rebuilt from the
files. A PNG with bad or crafted metadata is recorded as "not an item" and never fails a call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .outputs import read_metadata
from .requests import RequestError

log = logging.getLogger(__name__)

INDEX_DIR = ".history"  # inside the outputs folder; never served (see ui.app.launch_options)
INDEX_FILE = "index.sqlite"
SCHEMA_VERSION = "2"
DAY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_LIMIT = 500
MAX_OFFSET = 10**9  # past any real folder; SQLite's integers end at 2**63
MAX_QUERY_CHARS = 200
MAX_FIELD_CHARS = {"task": 64, "model": 256, "prompt": 4000}
SETTLE_NS = 2_000_000_000  # a day folder changed this lately is listed again on the next call
SEP = "\x1f"  # between the searchable fields of a row; removed from queries

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders (name TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    file TEXT PRIMARY KEY,      -- relative to the outputs folder: "2026-01-31/....png"
    folder TEXT NOT NULL,
    inode INTEGER NOT NULL,     -- a file replaced under its name has a new one
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    item INTEGER NOT NULL,      -- 1: a generated image (has a studio request); 0: anything else
    task TEXT, prompt TEXT, seed INTEGER, model TEXT,
    created REAL,               -- the file's modification time (written once, atomically)
    search TEXT                 -- lower-cased prompt, task and model, for substring search
);
CREATE INDEX IF NOT EXISTS files_newest ON files (item, created DESC, file DESC);
CREATE INDEX IF NOT EXISTS files_folder ON files (folder);
"""


@dataclass(frozen=True)
class Page:
    """One validated history query: at most `limit` items from `offset`, matching `query`."""

    limit: int = 50
    query: str = ""
    offset: int = 0

    @classmethod
    def checked(cls, limit: Any = 50, query: Any = "", offset: Any = 0) -> Page:
        """Validate a client's values (the API sends anything) with messages that say how
        to fix them."""
        limit = _whole(limit, "limit")
        offset = _whole(offset, "offset")
        if not 1 <= limit <= MAX_LIMIT:
            raise RequestError(f"limit must be from 1 to {MAX_LIMIT}, got {limit}; page "
                               "through more with offset")
        if not 0 <= offset <= MAX_OFFSET:
            raise RequestError(f"offset must be from 0 to {MAX_OFFSET}, got {offset}")
        if query is None:
            query = ""
        if not isinstance(query, str):
            raise RequestError(f"query must be text, got {type(query).__name__}")
        if len(query) > MAX_QUERY_CHARS:
            raise RequestError(f"query is {len(query)} characters long; the limit is "
                               f"{MAX_QUERY_CHARS}")
        return cls(limit, query, offset)

    @property
    def needle(self) -> str:
        """The lower-cased query, without characters that could match across fields."""
        return "".join(c for c in self.query.strip().lower() if c.isprintable())


def _whole(value: Any, name: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} must be a whole number, got {value!r}")
    return value


def _text(value: Any, field: str) -> str:
    return value[:MAX_FIELD_CHARS[field]] if isinstance(value, str) else ""


def item_fields(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """task, prompt, seed and model of a saved image's studio payload; None when it is not
    a generated image. Every value is checked: the payload comes from a file anyone could
    have crafted."""
    if not isinstance(payload, dict):
        return None
    request = payload.get("request", payload)
    if not isinstance(request, dict):
        return None
    seed = request.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -2**63 <= seed < 2**63:
        seed = None
    return {"task": _text(request.get("task"), "task"),
            "prompt": _text(request.get("prompt"), "prompt"), "seed": seed,
            "model": _text(payload.get("model"), "model")}


class HistoryIndex:
    """The incremental SQLite index of one outputs folder (thread-safe: one connection,
    used under a lock; other processes share the file through SQLite's own locking)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / INDEX_DIR / INDEX_FILE
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.metadata_reads = 0  # files whose metadata was read (tests count them)

    # ------------------------------------------------------------------ the database
    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = self._open()
            except (sqlite3.DatabaseError, OSError) as err:
                _raise_if_busy(err)
                log.warning("history index %s is unreadable (%s); rebuilding it", self.path, err)
                self._reset()
                self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, check_same_thread=False,
                             isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=NORMAL")
            version = None
            if db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone():
                row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                version = row[0] if row else None
            if version not in (None, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema {version!r}, expected {SCHEMA_VERSION}")
            db.executescript(SCHEMA)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            db.execute("PRAGMA quick_check").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _reset(self) -> None:
        """Delete the index (and its journal) so that it is rebuilt from the files."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self.path.parent.is_dir() and not self.path.parent.is_symlink():
            shutil.rmtree(self.path.parent, ignore_errors=True)
        else:
            self.path.parent.unlink(missing_ok=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; a database error rebuilds the index once."""
        with self._lock:
            try:
                yield self._connect()
            except sqlite3.DatabaseError as err:
                _raise_if_busy(err)
                log.warning("history index %s failed (%s); rebuilding it", self.path, err)
                self._reset()
                raise _Retry from err

    def close(self) -> None:
        """Close the connection (a later call opens it again)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ------------------------------------------------------------------ scanning
    def _refresh(self, db: sqlite3.Connection) -> int:
        """Bring the index up to date with the folder; returns the number of files whose
        metadata was read."""
        known = dict(db.execute("SELECT name, mtime_ns FROM folders"))
        present = set()
        read = 0
        for entry in _day_folders(self.root):
            present.add(entry.name)
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime_ns
            except OSError:
                continue
            if known.get(entry.name) == mtime:
                continue
            # Timestamps are coarse (a clock tick of a few ms, or more on some file
            # systems): a file added in the same tick as the listing leaves the folder's
            # mtime as it was. A folder changed lately is listed again next time.
            settled = mtime if time.time_ns() - mtime > SETTLE_NS else -1
            read += self._scan_folder(db, entry.name, settled)
        for gone in set(known) - present:
            db.execute("DELETE FROM files WHERE folder = ?", (gone,))
            db.execute("DELETE FROM folders WHERE name = ?", (gone,))
        return read

    def _scan_folder(self, db: sqlite3.Connection, folder: str, mtime: int) -> int:
        """Re-list one day folder (its mtime changed): add new files, read again those
        replaced under their name (a new inode: outputs are written by atomic rename), drop
        deleted ones. Known files cost no stat call: `os.scandir` gives names and inodes. The
        folder's mtime is taken before listing, so a file written during the scan makes the
        next call look again."""
        indexed = dict(db.execute("SELECT substr(file, ?), inode FROM files WHERE folder = ?",
                                  (len(folder) + 2, folder)))
        seen, rows = set(), []
        try:
            entries = list(os.scandir(self.root / folder))
        except OSError:
            entries = []
        for entry in entries:
            name = entry.name
            if name[0] == "." or not name.endswith(".png"):
                continue
            try:
                if indexed.get(name) == entry.inode():
                    seen.add(name)
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            seen.add(name)
            rows.append(self._row(f"{folder}/{name}", folder, entry.path, st))
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                           rows)
            db.executemany("DELETE FROM files WHERE file = ?",
                           [(f"{folder}/{name}",) for name in set(indexed) - seen])
            db.execute("INSERT OR REPLACE INTO folders VALUES (?, ?)", (folder, mtime))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(rows)

    def _row(self, name: str, folder: str, path: str, st: os.stat_result) -> tuple[Any, ...]:
        self.metadata_reads += 1
        try:
            _, payload = read_metadata(path)
        except Exception:  # noqa: BLE001 - a crafted file is not an item, never an error
            log.warning("history: could not read the metadata of %s", name, exc_info=True)
            payload = None
        fields = item_fields(payload)
        if fields is None:
            return (name, folder, st.st_ino, st.st_mtime_ns, st.st_size, 0, None, None, None,
                    None, st.st_mtime, None)
        search = SEP.join(fields[k].lower() for k in ("prompt", "task", "model"))
        return (name, folder, st.st_ino, st.st_mtime_ns, st.st_size, 1, fields["task"],
                fields["prompt"], fields["seed"], fields["model"], st.st_mtime, search)

    # ------------------------------------------------------------------ queries
    def query(self, page: Page) -> list[dict[str, Any]]:
        """The items of `page`, newest first, after bringing the index up to date."""

        def work(db: sqlite3.Connection) -> list[dict[str, Any]]:
            self._refresh(db)
            return self._query(db, page)

        return self._with_retry(work)

    def count(self, query: str = "") -> int:
        """How many items match `query` (after bringing the index up to date)."""
        page = Page.checked(query=query)

        def work(db: sqlite3.Connection) -> int:
            self._refresh(db)
            return self._count(db, page)

        return self._with_retry(work)

    def listing(self, query: str, size: int, number: int
                ) -> tuple[int, int, list[dict[str, Any]]]:
        """Page `number` (0-based, clamped to the pages there are) of `size` items matching
        `query`: (how many match, the page number, its items), after one update."""

        def work(db: sqlite3.Connection) -> tuple[int, int, list[dict[str, Any]]]:
            self._refresh(db)
            total = self._count(db, Page.checked(query=query))
            pages = max(1, -(-total // size))
            at = min(max(number, 0), pages - 1)
            return total, at, self._query(db, Page.checked(size, query, at * size))

        return self._with_retry(work)

    def _query(self, db: sqlite3.Connection, page: Page) -> list[dict[str, Any]]:
        where, args = _where(page)
        rows = db.execute(
            "SELECT file, task, prompt, seed, model, created FROM files "
            f"WHERE {where} ORDER BY created DESC, file DESC LIMIT ? OFFSET ?",
            (*args, page.limit, page.offset))
        return [{"file": f, "task": t, "prompt": p, "seed": s, "model": m,
                 "created": _iso(c)} for f, t, p, s, m, c in rows]

    def _count(self, db: sqlite3.Connection, page: Page) -> int:
        where, args = _where(page)
        return int(db.execute(f"SELECT COUNT(*) FROM files WHERE {where}", args).fetchone()[0])

    def _with_retry(self, work: Any) -> Any:
        """Run `work(db)` under the lock; after a database error the index is rebuilt from
        the files and the work done once more."""
        for attempt in (1, 2):
            try:
                with self._session() as db:
                    return work(db)
            except _Retry:
                if attempt == 2:
                    raise RequestError("the history index could not be rebuilt; see the "
                                       "server log") from None
        raise AssertionError("unreachable")


class _Retry(Exception):
    """The index was reset after a database error: do the work again."""


def _raise_if_busy(err: BaseException) -> None:
    """Another process holding the index for longer than the timeout is not corruption:
    the index is kept and the caller asked to try again."""
    if isinstance(err, sqlite3.OperationalError) and ("locked" in str(err)
                                                      or "busy" in str(err)):
        raise RequestError("the history index is busy (another studio process is "
                           "indexing the same outputs folder); try again in a moment") from err


def _where(page: Page) -> tuple[str, tuple[Any, ...]]:
    needle = page.needle
    if not needle:
        return "item = 1", ()
    return "item = 1 AND instr(search, ?) > 0", (needle,)


def _iso(timestamp: float) -> str:
    """ISO-8601 local time with its UTC offset, to the second."""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _day_folders(root: Path) -> Iterator[os.DirEntry]:
    """The day folders (`YYYY-MM-DD`, real folders, not links) of the outputs folder."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        try:
            if DAY_FOLDER.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                yield entry
        except OSError:
            continue
