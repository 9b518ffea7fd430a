"""What the SQL label sinks share: the `labels` table's key and replace rule, the
`labeler_cursor` table, and the statements (SQLite and PostgreSQL both speak them, with
their own placeholder).

- `labels`: one row per (src, uri, cid, val) (a label without a cid has NULL there; the
  key treats it as ''), `neg`, `cts` and `exp` as signed (ISO 8601 text), `sig`, `ver`,
  and the labeler's `seq`. A label replaces its key's row when its seq is not older:
  the labeler's order, in which a later label for the same key supersedes the earlier
  one. A negation is kept as that row with `neg` true (so a replay of the label it
  negates, being older, cannot bring it back), and is never current.
- `labels_current`: a view of the labels in force now: not negations, and without an
  `exp` or with one still ahead.
- `labeler_cursor`: the cursor of each labeler (its URL), written in the transaction of
  the rows it covers.
"""

from __future__ import annotations

from typing import Any, LiteralString

from skyfill.sinks.labels import LabelBatch

KEY: LiteralString = "src, uri, (coalesce(cid, '')), val"
CURSOR_COLUMNS = ("labeler", "cursor", "updated_at")
CURSOR_DDL: LiteralString = (
    "CREATE TABLE IF NOT EXISTS labeler_cursor ("
    " labeler TEXT PRIMARY KEY NOT NULL, cursor BIGINT NOT NULL, updated_at TEXT NOT NULL)"
)
KEY_INDEX: LiteralString = f"CREATE UNIQUE INDEX IF NOT EXISTS labels_key ON labels ({KEY})"
URI_INDEX: LiteralString = "CREATE INDEX IF NOT EXISTS labels_uri ON labels (uri)"
CURRENT_COLUMNS: LiteralString = "src, uri, cid, val, cts, exp, sig, ver, seq"


def labels_ddl(boolean: LiteralString, blob: LiteralString) -> LiteralString:
    return (
        "CREATE TABLE IF NOT EXISTS labels ("
        " src TEXT NOT NULL, uri TEXT NOT NULL, cid TEXT, val TEXT NOT NULL,"
        f" neg {boolean} NOT NULL, cts TEXT NOT NULL, exp TEXT, sig {blob} NOT NULL,"
        " ver INTEGER, seq BIGINT NOT NULL)"
    )


def current_view(still_ahead: LiteralString) -> LiteralString:
    """The view's body; `still_ahead` is the database's "exp is after now"."""
    return f"SELECT {CURRENT_COLUMNS} FROM labels WHERE NOT neg AND (exp IS NULL OR {still_ahead})"


def statements(p: LiteralString) -> dict[str, LiteralString]:
    """The statements with `p` as the driver's placeholder (`?` or `%s`)."""
    return {
        "put": (
            "INSERT INTO labels (src, uri, cid, val, neg, cts, exp, sig, ver, seq)"
            f" VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
            f" ON CONFLICT ({KEY}) DO UPDATE SET cid = excluded.cid, neg = excluded.neg,"
            " cts = excluded.cts, exp = excluded.exp, sig = excluded.sig, ver = excluded.ver,"
            " seq = excluded.seq WHERE excluded.seq >= labels.seq"
        ),
        "cursor": (
            f"INSERT INTO labeler_cursor (labeler, cursor, updated_at) VALUES ({p}, {p}, {p})"
            " ON CONFLICT (labeler) DO UPDATE SET cursor = excluded.cursor,"
            " updated_at = excluded.updated_at"
        ),
        "get_cursor": f"SELECT cursor FROM labeler_cursor WHERE labeler = {p}",
        "count": "SELECT count(*) FROM labels",
        "count_current": "SELECT count(*) FROM labels_current",
    }


def write(cursor: Any, sql: dict[str, LiteralString], batch: LabelBatch, now: str) -> int:
    """The batch's rows and its cursor, through a DB-API cursor (the caller's transaction)."""
    if batch.rows:
        cursor.executemany(sql["put"], [row.values() for row in batch.rows])
    cursor.execute(sql["cursor"], (batch.labeler, batch.cursor, now))
    return len(batch.rows)
