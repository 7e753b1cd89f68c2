"""Persistent on-disk cache of judge replies.

Key: sha256 over the judge model name and the full rendered prompt. Value: the raw reply the score
is computed from (for API judges, the first token's top log-probabilities as JSON), so a changed
aggregation rule never needs new requests. Storage is one SQLite file in WAL mode, which lets many
threads and processes read and write at once; each thread gets its own connection.

Location: ``judge-cache.sqlite`` in the project cache folder (``MISDIRECTION_CACHE`` if set, else
``~/.cache/misdirection``, as for the model cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from misdirection.errors import JudgeError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def default_cache_path() -> Path:
    """Where the judge cache lives unless told otherwise (see module docstring)."""
    root = os.environ.get("MISDIRECTION_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "misdirection") / "judge-cache.sqlite"


def cache_key(model: str, prompt: str) -> str:
    """sha256 hex digest identifying one (judge model, full prompt) request."""
    digest = hashlib.sha256()
    # A separator that cannot occur in a model name keeps ("ab", "c") apart from ("a", "bc").
    digest.update(model.encode("utf-8") + b"\x00" + prompt.encode("utf-8"))
    return digest.hexdigest()


class JudgeCache:
    """Thread- and process-safe key -> JSON store backed by SQLite (WAL)."""

    def __init__(self, path: str | Path | None = None, timeout_s: float = 60.0) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.timeout_s = timeout_s
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise JudgeError(f"cannot open the judge cache {self.path}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: autocommit, every INSERT is durable on its own.
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            self._local.conn = conn
        return conn

    def get(self, key: str) -> Any | None:
        """The stored value for ``key``, or None."""
        row = self._connect().execute("SELECT value FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Stored values for those of ``keys`` present (one query per 500 keys)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, Any] = {}
        conn = self._connect()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in conn.execute(
                f"SELECT key, value FROM replies WHERE key IN ({marks})", chunk
            ):
                out[key] = json.loads(value)
        return out

    def put(self, key: str, model: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``; last write wins."""
        self._connect().execute(
            "INSERT OR REPLACE INTO replies (key, model, value, created) VALUES (?, ?, ?, ?)",
            (key, model, json.dumps(value), time.time()),
        )

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
