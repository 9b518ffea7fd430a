"""A reference fold of a subscribeRepos stream into SQLite, for checking the harness
itself: no verification, no re-fetch, just the ops in seq order (creates and updates
upsert, deletes remove), `#identity` handles and `#account` statuses. It decodes with
libipld (crafted.py uses cbrrr) and writes only the columns the comparators read."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import libipld

SCHEMA = """
CREATE TABLE records (did TEXT, collection TEXT, rkey TEXT, cid TEXT,
                      PRIMARY KEY (did, collection, rkey));
CREATE TABLE repos (did TEXT PRIMARY KEY, handle TEXT, status TEXT);
"""


def _apply_commit(db: sqlite3.Connection, body: dict[str, Any]) -> None:
    did = body["repo"]
    for op in body["ops"]:
        collection, rkey = op["path"].split("/", 1)
        if op["action"] == "delete":
            db.execute(
                "DELETE FROM records WHERE did = ? AND collection = ? AND rkey = ?",
                (did, collection, rkey),
            )
        else:
            db.execute(
                "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)",
                (did, collection, rkey, libipld.encode_cid(op["cid"])),
            )


def _apply(db: sqlite3.Connection, kind: str, body: dict[str, Any]) -> None:
    if kind == "#commit":
        _apply_commit(db, body)
    elif kind == "#identity":
        db.execute(
            "INSERT INTO repos VALUES (?, ?, 'ok') ON CONFLICT (did) DO UPDATE SET handle = ?",
            (body["did"], body.get("handle"), body.get("handle")),
        )
    elif kind == "#account":
        status = "ok" if body["active"] else body.get("status", "inactive")
        db.execute(
            "INSERT INTO repos VALUES (?, NULL, ?) ON CONFLICT (did) DO UPDATE SET status = ?",
            (body["did"], status, status),
        )


def fold_messages(messages: Iterable[bytes], db_path: Path) -> int:
    """Apply every `#commit`/`#identity`/`#account` message to a new SQLite file; returns
    the last seq seen (0 if none)."""
    last = 0
    with sqlite3.connect(db_path) as db:
        db.executescript(SCHEMA)
        for message in messages:
            header, body = libipld.decode_dag_cbor_multi(message)
            if header.get("op") != 1:
                continue
            _apply(db, header.get("t", ""), body)
            last = max(last, int(body.get("seq") or 0))
    return last
