"""What a stream has published to Kafka, kept beside the stream's state: the key and rev
of every record whose last message is a value (not a tombstone), and each repo's row as
last sent. A topic cannot be asked what it holds; this file can, so that:

- a reset (a repo fetched whole again) or an erase (the account is gone) sends a
  tombstone for each record the topic still holds for that repo;
- a put or a delete older than what was published is skipped, as the SQL sinks skip it;
- a repos message is the whole row (a change names only what it changes) with its
  `record_count`.

`<stream dir>/kafka.sqlite` (WAL), written after the broker has acknowledged a batch's
messages, in one transaction. A crash between the two sends the batch again (duplicates
with the same key and value). The file names the brokers and topics it mirrors; pointed
at others it starts empty.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    did TEXT NOT NULL, collection TEXT NOT NULL, rkey TEXT NOT NULL, rev TEXT NOT NULL,
    PRIMARY KEY (did, collection, rkey)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repos (did TEXT PRIMARY KEY, row TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
Key = tuple[str, str]
"""(collection, rkey) within a DID."""


class Ledger:
    def __init__(self, path: Path, mirrors: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(SCHEMA)
        self.started_over = self._claim(mirrors)

    def _claim(self, mirrors: str) -> bool:
        """Whether the file mirrored other topics (then it is emptied)."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'mirrors'").fetchone()
        if row is not None and row[0] == mirrors:
            return False
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM keys")
            self._db.execute("DELETE FROM repos")
            self._db.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('mirrors', ?)", (mirrors,)
            )
        return row is not None

    def begin(self) -> Pending:
        return Pending(self._db)

    def counts(self) -> dict[str, int]:
        keys = self._db.execute("SELECT count(*) FROM keys").fetchone()[0]
        repos = self._db.execute("SELECT count(*) FROM repos").fetchone()[0]
        return {"records": keys, "repos": repos}

    def close(self) -> None:
        self._db.close()


class Pending:
    """A batch's changes to the ledger, read through (the file, then this batch's own
    changes) and written by `commit`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._keys: dict[str, dict[Key, str | None]] = {}
        """{did: {key: rev, or None once deleted}} changed in this batch."""
        self._stored: dict[str, dict[Key, str]] = {}
        """{did: {key: rev}} as the file holds them, for the DIDs this batch read whole."""
        self._existed: dict[tuple[str, Key], bool] = {}
        self._repos: dict[str, dict[str, Any]] = {}

    def rev(self, did: str, key: Key) -> str | None:
        """The rev last published for the record (None: no value is published)."""
        changed = self._keys.get(did, {})
        if key in changed:
            return changed[key]
        return self._stored_rev(did, key)

    def _stored_rev(self, did: str, key: Key) -> str | None:
        if did in self._stored:
            return self._stored[did].get(key)
        row = self._db.execute(
            "SELECT rev FROM keys WHERE did = ? AND collection = ? AND rkey = ?", (did, *key)
        ).fetchone()
        return None if row is None else row[0]

    def keys_of(self, did: str) -> dict[Key, str]:
        """Every record of the DID whose last message is a value, with its rev."""
        if did not in self._stored:
            rows = self._db.execute(
                "SELECT collection, rkey, rev FROM keys WHERE did = ?", (did,)
            ).fetchall()
            self._stored[did] = {(c, r): rev for c, r, rev in rows}
        out = dict(self._stored[did])
        for key, rev in self._keys.get(did, {}).items():
            if rev is None:
                out.pop(key, None)
            else:
                out[key] = rev
        return out

    def put(self, did: str, key: Key, rev: str) -> None:
        self._set(did, key, rev)

    def delete(self, did: str, key: Key) -> None:
        self._set(did, key, None)

    def _set(self, did: str, key: Key, rev: str | None) -> None:
        if (did, key) not in self._existed:
            self._existed[(did, key)] = self._stored_rev(did, key) is not None
        self._keys.setdefault(did, {})[key] = rev

    def count(self, did: str) -> int:
        """The DID's records with a value published, this batch included."""
        stored = self._db.execute("SELECT count(*) FROM keys WHERE did = ?", (did,)).fetchone()
        delta = 0
        for key, rev in self._keys.get(did, {}).items():
            existed = self._existed[(did, key)]
            delta += (rev is not None) - existed
        return stored[0] + delta

    def repo(self, did: str) -> dict[str, Any] | None:
        if did in self._repos:
            return self._repos[did]
        row = self._db.execute("SELECT row FROM repos WHERE did = ?", (did,)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def set_repo(self, did: str, row: dict[str, Any]) -> None:
        self._repos[did] = row

    def commit(self) -> None:
        puts = [(d, *k, rev) for d, keys in self._keys.items() for k, rev in keys.items() if rev]
        gone = [(d, *k) for d, keys in self._keys.items() for k, rev in keys.items() if not rev]
        repos = [(did, orjson.dumps(row).decode()) for did, row in self._repos.items()]
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "DELETE FROM keys WHERE did = ? AND collection = ? AND rkey = ?", gone
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO keys (did, collection, rkey, rev) VALUES (?, ?, ?, ?)",
                puts,
            )
            self._db.executemany("INSERT OR REPLACE INTO repos (did, row) VALUES (?, ?)", repos)
