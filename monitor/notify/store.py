"""A small durable key-value store (SQLite, JSON values) behind the outbox of the daemons.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "outbox.sqlite3")
>>> store = SqliteStore(path); store["a"] = {"n": 1}
>>> SqliteStore(path)["a"], len(SqliteStore(path)), "b" in store
({'n': 1}, 1, False)
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, MutableMapping

import orjson


class SqliteStore(MutableMapping):
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a write that returned survives a power cut
        self._db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")

    def __getitem__(self, key: str):
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return orjson.loads(row[0])

    def __setitem__(self, key: str, value) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, orjson.dumps(value)))

    def __delitem__(self, key: str) -> None:
        with self._lock:
            if self._db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount == 0:
                raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            keys = [k for (k,) in self._db.execute("SELECT key FROM kv ORDER BY key")]
        return iter(keys)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM kv").fetchone()[0]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone() is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()
