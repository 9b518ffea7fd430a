"""The firehose test harness itself: the recording serves every frame, the PLC serves its
staged documents, crafted frames land where they were put and are bad in the way they
claim, and the truth comparators report what differs (and nothing when nothing does)."""

from __future__ import annotations

import collections
import json
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import cbrrr
import libipld
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from skyfill.atproto.crypto import verify_signature
from tests.firehose.conftest import ServeRecording
from tests.firehose.crafted import (
    OVERSIZE,
    Edit,
    Where,
    bad_signature_frame,
    cid_matches,
    cid_mismatch_frame,
    craft_recording,
    decode_frame,
    find_frame,
    frame_type,
    garbage_frame,
    outdated_cursor_frame,
    oversized_frame,
    split_car,
    unknown_type_frame,
)
from tests.firehose.fold import fold_messages
from tests.firehose.live import LiveRun
from tests.firehose.recording import Recording, ServedRecording, read_frames
from tests.firehose.truth import (
    Inactive,
    compare_parquet,
    compare_postgres,
    compare_sqlite,
    compare_state,
    load_sqlite,
)
from tests.firehose.wsclient import read_stream
from tests.helpers import get_json

DID_A, DID_B, DID_C, DID_D = (f"did:plc:{c * 24}" for c in "abcd")
CID_1 = "bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua"
CID_2 = "bafyreie37aol7otpcb7egg4rmbpp6rz6cdoa3q3c5b7bimzlodhyfesckq"


def _seq(message: bytes) -> int:
    return int(decode_frame(message)[1]["seq"])


def test_recording_serves_every_frame_from_cursor_zero(fh_served: ServedRecording) -> None:
    messages = read_stream(fh_served.stream_url, cursor=0, idle=1)
    assert len(messages) == fh_served.frame_count == fh_served.head_seq
    assert [_seq(m) for m in messages] == list(range(1, fh_served.head_seq + 1))
    kinds = collections.Counter(frame_type(m) for m in messages)
    assert kinds == fh_served.recording.meta["frame_types"]
    assert kinds["#identity"] > kinds["#account"] // 2 > 0
    tail = read_stream(fh_served.stream_url, cursor=fh_served.head_seq - 5, idle=1)
    assert [_seq(m) for m in tail] == list(range(fh_served.head_seq - 4, fh_served.head_seq + 1))


def test_recording_has_status_changes_and_its_truth_is_its_fold(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    """A plain fold of the served stream gives exactly the truth: the stream and the
    truth agree, and the comparator finds nothing where there is nothing to find."""
    truth = fh_served.truth
    statuses = collections.Counter(repo["status"] for repo in truth["repos"].values())
    assert statuses["deactivated"] == 2 and statuses["ok"] == 58, statuses
    assert sum("-h" in repo["handle"] for repo in truth["repos"].values()) >= 3
    db = tmp_path / "fold.db"
    messages = read_stream(fh_served.stream_url, cursor=0, idle=1)
    assert fold_messages(messages, db) == fh_served.head_seq
    assert compare_sqlite(db, truth) == []
    assert compare_sqlite(db, truth, Inactive.KEPT) == []
    kept = compare_sqlite(db, truth, Inactive.NONE)
    assert len(kept) == 2 and all("extra rows" in line for line in kept), kept


def test_staged_plc_and_host_answer_for_the_served_ports(fh_served: ServedRecording) -> None:
    did, repo = next(iter(fh_served.truth["repos"].items()))
    doc = get_json(f"{fh_served.plc_url}/{did}")
    assert doc["service"][0]["serviceEndpoint"] == fh_served.host_url == repo["pds"]
    assert doc["alsoKnownAs"] == [f"at://{repo['handle']}"]
    latest = get_json(f"{fh_served.host_url}/xrpc/com.atproto.sync.getLatestCommit?did={did}")
    assert latest == {"cid": repo["commit"], "rev": repo["rev"]}
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{fh_served.plc_url}/did:plc:{'z' * 24}", timeout=10)
    assert missing.value.code == 404


def _commit_parts(message: bytes) -> tuple[dict, dict[bytes, bytes]]:
    _, body = decode_frame(message)
    car_header, blocks = split_car(body["blocks"])
    assert car_header["roots"] == [body["commit"]]
    return body, dict(blocks)


def _signature_ok(recording: Recording, message: bytes) -> bool:
    body, blocks = _commit_parts(message)
    commit = cbrrr.decode_dag_cbor(blocks[body["commit"].cid_bytes])
    assert isinstance(commit, dict)
    unsigned = cbrrr.encode_dag_cbor({k: v for k, v in commit.items() if k != "sig"})
    doc = json.loads((recording.path / "plc" / body["repo"]).read_text())
    key = doc["verificationMethod"][0]["publicKeyMultibase"]
    signature = commit["sig"]
    assert isinstance(signature, bytes)
    return verify_signature(key, unsigned, signature)


def test_bad_signature_frame_has_valid_cids_and_a_wrong_signature(fh_recording: Recording) -> None:
    original = find_frame(read_frames(fh_recording.path), "#commit", nth=5, min_ops=1).message
    crafted = bad_signature_frame(original)
    body, blocks = _commit_parts(crafted)
    assert all(cid_matches(cid, data) for cid, data in blocks.items())
    assert body["commit"] != decode_frame(original)[1]["commit"]
    assert _signature_ok(fh_recording, original)
    assert not _signature_ok(fh_recording, crafted)


def test_cid_mismatch_frame_changes_one_record_block(fh_recording: Recording) -> None:
    original = find_frame(read_frames(fh_recording.path), "#commit", nth=5, min_ops=1).message
    crafted = cid_mismatch_frame(original)
    body, blocks = _commit_parts(crafted)
    bad = [cid for cid, data in blocks.items() if not cid_matches(cid, data)]
    assert len(bad) == 1 and bad[0] in {op["cid"].cid_bytes for op in body["ops"] if op["cid"]}
    assert _signature_ok(fh_recording, crafted)  # the commit block itself is untouched


def test_crafted_frames_are_served_where_they_were_put(
    fh_recording: Recording, serve_recording: ServeRecording, tmp_path: Path
) -> None:
    frames = read_frames(fh_recording.path)
    commit = find_frame(frames, "#commit", nth=40, min_ops=1)
    bad = {
        "outdated": outdated_cursor_frame(),
        "garbage": garbage_frame(100),
        "foo": unknown_type_frame(commit.seq, "#foo"),
        "oversized": oversized_frame(frames[30].message),
        "sig": bad_signature_frame(commit.message),
        "cid": cid_mismatch_frame(find_frame(frames, "#commit", nth=60, min_ops=1).message),
    }
    cid_seq = find_frame(frames, "#commit", nth=60, min_ops=1).seq
    edits = [
        Edit(1, bad["outdated"], Where.BEFORE),
        Edit(10, bad["garbage"]),
        Edit(20, bad["foo"], Where.AFTER),
        Edit(31, bad["oversized"]),
        Edit(commit.seq, bad["sig"]),
        Edit(cid_seq, bad["cid"]),
    ]
    crafted = craft_recording(fh_recording, tmp_path / "crafted", edits)
    assert crafted.frame_count == fh_recording.frame_count + 2
    served = serve_recording(crafted.path)
    got = read_stream(served.stream_url, cursor=0, idle=1)
    assert len(got) == crafted.frame_count
    assert got[0] == bad["outdated"] and frame_type(got[0]) == "#info"
    assert got[10] == bad["garbage"]  # seq 10 after the inserted #info
    assert got[21] == bad["foo"] and frame_type(got[21]) == "#foo"
    assert got[32] == bad["oversized"] and len(got[32]) > OVERSIZE - 1
    assert got[commit.seq + 1] == bad["sig"] and got[cid_seq + 1] == bad["cid"]  # 2 inserted
    resumed = read_stream(served.stream_url, cursor=20, limit=2)
    assert resumed[0] == bad["foo"], "a frame inserted after seq 20 is sent to a cursor of 20"
    with pytest.raises(ValueError):
        libipld.decode_dag_cbor_multi(bad["garbage"])


# -- comparators --------------------------------------------------------------------------


def _truth() -> dict:
    """A: ok with two records; B: ok, none; C: deactivated, had one; D: takendown (refpds
    style: only a count)."""
    return {
        "repos": {
            DID_A: {"handle": "a.test", "status": "ok", "records": [
                {"path": "app.bsky.feed.post/3aaa", "cid": CID_1},
                {"path": "app.bsky.feed.like/3bbb", "cid": CID_2},
            ]},
            DID_B: {"handle": "b.test", "status": "ok", "records": []},
            DID_C: {"handle": "c.test", "status": "deactivated", "records": [],
                    "records_before": 1,
                    "deactivated_records": [{"path": "app.bsky.feed.post/3ccc", "cid": CID_1}]},
            DID_D: {"handle": "d.test", "status": "takendown", "records": [],
                    "records_before": 2},
        }
    }  # fmt: skip


RECORDS = [
    (DID_A, "app.bsky.feed.post", "3aaa", CID_1),
    (DID_A, "app.bsky.feed.like", "3bbb", CID_2),
    (DID_C, "app.bsky.feed.post", "3ccc", CID_1),
]
REPOS = [
    (DID_A, "a.test", "ok"),
    (DID_B, "b.test", "ok"),
    (DID_C, "c.test", "deactivated"),
    (DID_D, "d.test", "takendown"),
]
BROKEN_RECORDS = [
    (DID_A, "app.bsky.feed.post", "3aaa", CID_1),  # the like is missing
    (DID_B, "app.bsky.graph.follow", "3ddd", CID_2),  # extra
    (DID_C, "app.bsky.feed.post", "3ccc", CID_2),  # kept, but with another cid
]
BROKEN_REPOS = [
    (DID_A, "a.test", "ok"),
    (DID_B, "old-b.test", "ok"),  # wrong handle
    (DID_C, "c.test", "ok"),  # wrong status
]  # D has no repos row
EXPECTED_BROKEN = [
    f"{DID_A}: 1 missing rows: app.bsky.feed.like/3bbb {CID_2}",
    f"{DID_B}: handle 'old-b.test', expected 'b.test'",
    f"{DID_B}: 1 extra rows: app.bsky.graph.follow/3ddd {CID_2}",
    f"{DID_C}: status 'ok', expected 'deactivated'",
    f"{DID_C}: 1 missing rows: app.bsky.feed.post/3ccc {CID_1}",
    f"{DID_C}: 1 extra rows: app.bsky.feed.post/3ccc {CID_2}",
    f"{DID_D}: no row in repos (truth: takendown, d.test)",
]


def _sqlite(path: Path, records: list, repos: list) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE records (did, collection, rkey, cid, record)")
        db.execute("CREATE TABLE repos (did, handle, status, rev)")
        db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, '{}')", records)
        db.executemany("INSERT INTO repos VALUES (?, ?, ?, NULL)", repos)
    return path


def test_compare_sqlite_finds_nothing_in_an_exact_copy(tmp_path: Path) -> None:
    assert compare_sqlite(_sqlite(tmp_path / "ok.db", RECORDS, REPOS), _truth()) == []


def test_compare_sqlite_reports_each_kind_of_mismatch(tmp_path: Path) -> None:
    db = _sqlite(tmp_path / "bad.db", BROKEN_RECORDS, BROKEN_REPOS)
    assert compare_sqlite(db, _truth()) == EXPECTED_BROKEN


def test_inactive_rows_follow_the_chosen_rule(tmp_path: Path) -> None:
    emptied = _sqlite(tmp_path / "emptied.db", RECORDS[:2], REPOS)
    kept = load_sqlite(_sqlite(tmp_path / "kept.db", RECORDS, REPOS))
    assert compare_sqlite(emptied, _truth(), Inactive.EITHER) == []
    assert compare_sqlite(emptied, _truth(), Inactive.KEPT) == [
        f"{DID_C}: 1 missing rows: app.bsky.feed.post/3ccc {CID_1}",
        f"{DID_D}: takendown repo has 0 rows, expected 0 or records_before=2",
    ]
    assert compare_state(kept, _truth(), Inactive.NONE) == [
        f"{DID_C}: 1 extra rows: app.bsky.feed.post/3ccc {CID_1}"
    ]
    extra_did = _sqlite(tmp_path / "extra.db", [*RECORDS, ("did:plc:x", "c.x", "1", CID_1)], REPOS)
    assert compare_sqlite(extra_did, _truth()) == [
        "did:plc:x: not in the truth, but 1 rows, repos row False"
    ]


def _parquet(root: Path, records: list, repos: list) -> Path:
    names = ["did", "collection", "rkey", "cid"]
    table = pa.table({name: [row[i] for row in records] for i, name in enumerate(names)})
    pq.write_to_dataset(table, root / "records", partition_cols=["collection"])
    repo_names = ["did", "handle", "status"]
    pq.write_table(
        pa.table({n: [row[i] for row in repos] for i, n in enumerate(repo_names)}),
        root / "repos.parquet",
    )
    return root / "records"


def test_compare_parquet(tmp_path: Path) -> None:
    assert compare_parquet(_parquet(tmp_path / "good", RECORDS, REPOS), _truth()) == []
    broken = _parquet(tmp_path / "bad", BROKEN_RECORDS, BROKEN_REPOS)
    assert compare_parquet(broken, _truth()) == EXPECTED_BROKEN


def _pg_tables(pg_url: str, schema: str, records: list, repos: list) -> None:
    name = sql.Identifier(schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {}.records (did text, collection text, rkey text, cid text)"
            ).format(name)
        )
        conn.execute(
            sql.SQL("CREATE TABLE {}.repos (did text, handle text, status text)").format(name)
        )
        with conn.cursor() as cur:
            insert = sql.SQL("INSERT INTO {}.records VALUES (%s, %s, %s, %s)").format(name)
            cur.executemany(insert, records)
            cur.executemany(sql.SQL("INSERT INTO {}.repos VALUES (%s, %s, %s)").format(name), repos)


def test_compare_postgres(pg_url: str) -> None:
    _pg_tables(pg_url, "good", RECORDS, REPOS)
    _pg_tables(pg_url, "bad", BROKEN_RECORDS, BROKEN_REPOS)
    assert compare_postgres(pg_url, _truth(), schema="good") == []
    assert compare_postgres(pg_url, _truth(), schema="bad") == EXPECTED_BROKEN


# -- the live reference network ---------------------------------------------------------------


@pytest.mark.refpds
def test_live_network_truth_is_what_its_stream_says(live_run: LiveRun, tmp_path: Path) -> None:
    assert live_run.seen_live == 150  # live writes had begun before the truth was taken
    truth = live_run.truth
    assert truth["_writes"] > 0
    assert truth["repos"] != live_run.first["repos"]
    pds = live_run.server.ready["pds"][0].replace("http://", "ws://")
    stream = f"{pds}/xrpc/com.atproto.sync.subscribeRepos"
    db = tmp_path / "live.db"
    fold_messages(read_stream(stream, cursor=0, idle=2), db)
    assert compare_sqlite(db, truth) == []
