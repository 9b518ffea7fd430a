"""`skyfill labels` against crafted labelers (tests/labels/fakelabeler.py): a bad or
missing signature, a label of another src and one that breaks the Lexicon are refused,
counted and logged with their seq; both key forms of a DID document verify (multikey and
the legacy uncompressed point, on both curves); a negation takes a label back and an
expired label is kept but not current; malformed frames are skipped with their seq; a
cursor in the labeler's future is one line; a directory that is down delays labels but
refuses none; a follower reconnects after its cursor and stops cleanly on SIGTERM; a
rotated key is read again; and `skyfill firehose --labels` follows a labeler beside the
stream."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from skyfill.atproto.crypto import Curve, Keypair
from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.labels import read_label
from skyfill.labels.checker import LabelChecker
from tests.helpers import (
    RedisServer,
    assert_one_line_error,
    json_lines,
    run_cli,
    start_cli,
    wait_until,
    xrpc_client,
)
from tests.labels.fakelabeler import FakeLabeler, FakeNetwork, flip_bit, frame

POST = "at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/app.bsky.feed.post/3kaaaaaaaaa22"
ACCOUNT = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
CID = "bafyreig62rxs34h5rvznfrracwkjlfgad5b25qxglp2hcziqdfas2nw2ee"


def follow(
    fake: FakeNetwork, labeler: FakeLabeler, tmp_path: Path, *flags: str
) -> tuple[Any, list[tuple]]:
    """`skyfill labels --until-live` from `labeler` into SQLite: the run and the rows."""
    db = tmp_path / "labels.db"
    done = run_cli(
        "labels",
        "--from-labeler", labeler.url,
        "--sink", f"sqlite:///{db}",
        "--workdir", str(tmp_path / "work"),
        "--plc-url", fake.url,
        "--allow-private-network",
        "--progress", "none",
        "--until-live",
        *flags,
    )  # fmt: skip
    rows = []
    if db.exists():
        with sqlite3.connect(db) as conn:
            query = "SELECT seq, uri, val, neg, exp FROM labels ORDER BY seq"
            rows = conn.execute(query).fetchall()
    return done, rows


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(stderr) if line.get("event") == name]


def test_bad_signature_wrong_src_and_bad_fields_are_refused_counted_and_logged(
    fake: FakeNetwork, name: str, tmp_path: Path
) -> None:
    labeler = fake.labeler(name)
    other = fake.labeler(name + "-other")  # a real labeler, elsewhere
    labeler.send(11, labeler.label(POST, "spam", cid=CID))
    labeler.send(12, flip_bit(labeler.label(ACCOUNT, "rude")))
    labeler.send(13, labeler.label(ACCOUNT, "gore"))
    labeler.send(14, other.label(ACCOUNT, "porn"))  # well signed, but by another labeler
    labeler.send(15, {**labeler.label(ACCOUNT, "nudity"), "cts": "yesterday"})
    unsigned = labeler.label(ACCOUNT, "!hide")
    del unsigned["sig"]
    labeler.send(16, unsigned)
    done, rows = follow(fake, labeler, tmp_path)
    assert done.returncode == 0, done.stderr
    assert [(seq, val) for seq, _, val, _, _ in rows] == [(11, "spam"), (13, "gore")]
    refused = {line["seq"]: line["reason"] for line in events(done.stderr, "label_refused")}
    assert refused == {12: "bad_signature", 14: "wrong_src", 15: "malformed", 16: "malformed"}
    facts = events(done.stderr, "labels_done")[0]
    assert (facts["labels_received"], facts["labels_applied"], facts["labels_refused"]) == (6, 2, 4)
    assert facts["labelers"][0]["key_refreshes"] == 1  # resolved again before refusing seq 12
    assert "(2 applied, 4 refused)" in done.stdout and "cursor 16" in done.stdout

    stream_id = f"labels-127.0.0.1-{fake.port}-{name}"
    shown = run_cli("status", stream_id, "--workdir", str(tmp_path / "work"), "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["labelers"] == [{"labeler": labeler.url, "did": labeler.did, "cursor": 16}]
    assert status["last_run"]["labels_refused"] == 4


def test_a_labeler_whose_document_has_no_label_key_is_refused(
    fake: FakeNetwork, name: str, tmp_path: Path
) -> None:
    labeler = fake.labeler(name)
    fake.docs[labeler.did]["verificationMethod"] = []
    labeler.send(10, labeler.label(ACCOUNT, "spam"))  # (not at seq 1: a head probe is quicker)
    done, rows = follow(fake, labeler, tmp_path)
    assert done.returncode == 0, done.stderr
    assert rows == []
    assert [line["reason"] for line in events(done.stderr, "label_refused")] == ["no_label_key"]


@pytest.mark.parametrize("curve", [Curve.K256, Curve.P256])
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-uncompressed", "multikey"])
def test_both_key_forms_of_a_did_document_verify(
    fake: FakeNetwork, name: str, tmp_path: Path, curve: Curve, legacy: bool
) -> None:
    labeler = fake.labeler(name, curve=curve, legacy=legacy)
    method = fake.docs[labeler.did]["verificationMethod"][0]
    assert (method["type"] == "Multikey") != legacy
    labeler.send(10, labeler.label(ACCOUNT, "spam"), labeler.label(POST, "rude", cid=CID))
    done, rows = follow(fake, labeler, tmp_path)
    assert done.returncode == 0, done.stderr
    assert [val for _, _, val, _, _ in rows] == ["spam", "rude"]
    assert events(done.stderr, "label_refused") == []


def test_a_negation_takes_a_label_back_and_an_expired_label_is_not_current(
    fake: FakeNetwork, name: str, tmp_path: Path
) -> None:
    labeler = fake.labeler(name)
    labeler.send(1, labeler.label(ACCOUNT, "spam"))
    labeler.send(2, labeler.label(POST, "spam", cid=CID))  # another key: the record's version
    labeler.send(3, labeler.label(ACCOUNT, "rude", exp="2020-01-01T00:00:00.000Z"))
    labeler.send(4, labeler.label(ACCOUNT, "gore", exp="2999-01-01T00:00:00+00:00"))
    labeler.send(5, labeler.label(ACCOUNT, "spam", neg=True))
    labeler.send(6, labeler.label(POST, "porn", cid=CID))
    labeler.send(7, labeler.label(POST, "porn", cid=CID, neg=True))
    labeler.send(8, labeler.label(POST, "porn", cid=CID))  # re-applied
    done, rows = follow(fake, labeler, tmp_path)
    assert done.returncode == 0, done.stderr
    assert {(uri, val, neg) for _, uri, val, neg, _ in rows} == {
        (ACCOUNT, "spam", 1), (POST, "spam", 0), (ACCOUNT, "rude", 0), (ACCOUNT, "gore", 0),
        (POST, "porn", 0),
    }  # fmt: skip
    with sqlite3.connect(tmp_path / "labels.db") as conn:
        current = conn.execute("SELECT uri, val, exp FROM labels_current ORDER BY seq").fetchall()
    assert current == [
        (POST, "spam", None),
        (ACCOUNT, "gore", "2999-01-01T00:00:00+00:00"),
        (POST, "porn", None),
    ]


def test_malformed_frames_are_skipped_with_their_seq(
    fake: FakeNetwork, name: str, tmp_path: Path
) -> None:
    labeler = fake.labeler(name)
    labeler.send(1, labeler.label(ACCOUNT, "spam"))
    labeler.raw(2, b"\xff" + bytes(40))  # not DAG-CBOR: no seq to read
    labeler.raw(3, frame({"op": 1, "t": "#labels"}, {"seq": 3, "labels": "spam"}))
    labeler.raw(4, frame({"op": 1, "t": "#foo"}, {"seq": 4}))  # an unknown type
    labeler.send(5, labeler.label(ACCOUNT, "rude"))
    done, rows = follow(fake, labeler, tmp_path)
    assert done.returncode == 0, done.stderr
    assert [seq for seq, *_ in rows] == [1, 5]
    assert [line["seq"] for line in events(done.stderr, "frame_malformed")] == [None, 3]
    facts = events(done.stderr, "labels_done")[0]
    assert (facts["malformed"], facts["skipped"], facts["frames"]) == (2, 1, 5)
    assert facts["labelers"][0]["cursor"] == 5


def test_a_directory_that_cannot_be_read_now_delays_labels_but_refuses_none(
    fake: FakeNetwork, name: str, tmp_path: Path
) -> None:
    labeler = fake.labeler(name)
    labeler.send(10, labeler.label(ACCOUNT, "spam"))
    labeler.send(12, labeler.label(POST, "rude", cid=CID))
    fake.outages[labeler.did] = 1  # the PLC answers 503 once
    done, rows = follow(fake, labeler, tmp_path)
    assert done.returncode == 0, done.stderr
    assert [seq for seq, *_ in rows] == [10, 12]
    assert [line["msg"] for line in events(done.stderr, "label_check_retry")] != []
    assert events(done.stderr, "label_refused") == []
    assert fake.outages[labeler.did] == 0


@pytest.mark.parametrize("until_live", [False, True])
def test_a_cursor_in_the_labelers_future_is_one_line(
    fake: FakeNetwork, name: str, tmp_path: Path, until_live: bool
) -> None:
    labeler = fake.labeler(name)
    labeler.send(10, labeler.label(ACCOUNT, "spam"))
    flags = ["--cursor", "99"]
    args = [
        "labels", "--from-labeler", labeler.url, "--sink", f"sqlite:///{tmp_path / 'l.db'}",
        "--workdir", str(tmp_path / "work"), "--plc-url", fake.url, "--allow-private-network",
        "--progress", "none", *flags, *(["--until-live"] if until_live else []),
    ]  # fmt: skip
    done = run_cli(*args)
    assert_one_line_error(done, 1, f"labeler {labeler.url} says cursor 99 is in its future")


def test_following_reconnects_after_its_cursor_and_stops_on_sigterm(
    fake: FakeNetwork, name: str, tmp_path: Path
) -> None:
    labeler = fake.labeler(name)
    labeler.close_at_end = True  # every connection ends after the frames it had
    labeler.send(10, labeler.label(ACCOUNT, "spam"))
    db = tmp_path / "labels.db"
    process = start_cli(
        "labels", "--from-labeler", labeler.url, "--sink", f"sqlite:///{db}",
        "--workdir", str(tmp_path / "work"), "--plc-url", fake.url, "--allow-private-network",
        "--progress", "none", "--flush-seconds", "0.1",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: saved_cursor(db) == 10, timeout=30, what="seq 10 saved")
        labeler.send(12, labeler.label(ACCOUNT, "rude"))
        wait_until(lambda: saved_cursor(db) == 12, timeout=30, what="seq 12 after a reconnect")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, err
    assert " stopped: " in out and "2 labels received (2 applied" in out
    cursors = [cursor for who, cursor in fake.connections if who == name]
    assert cursors[0] == "0" and "10" in cursors  # each reconnection after the last seq read


def saved_cursor(db: Path) -> int | None:
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT max(cursor) FROM labeler_cursor").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def test_a_rotated_key_is_read_again_once(fake: FakeNetwork, name: str) -> None:
    labeler = fake.labeler(name)
    rotated = Keypair.from_seed(Curve.P256, name + "-rotated")
    stranger = Keypair.from_seed(Curve.K256, name + "-stranger")

    async def check() -> list[Any]:
        async with xrpc_client() as (client, _):
            checker = LabelChecker(IdentityResolver(client, fake.url), labeler.url)
            first = await checker.check(read_label(labeler.label(ACCOUNT, "spam")))
            labeler.publish(key=rotated)  # the labeler rotates its key
            second = await checker.check(read_label(labeler.label(ACCOUNT, "rude", key=rotated)))
            third = await checker.check(read_label(labeler.label(ACCOUNT, "gore", key=stranger)))
            return [first, second, third, checker.refreshes, checker.did]

    first, second, third, refreshes, did = asyncio.run(check())
    assert first is None and second is None  # the second after reading the document again
    assert third is not None and third.kind == "bad_signature"
    assert refreshes == 1  # not read again for the third: it was read a moment ago
    assert did == labeler.did


def test_firehose_follows_labelers_beside_its_stream(
    fake: FakeNetwork, name: str, tmp_path: Path
) -> None:
    labeler = fake.labeler(name)
    labeler.send(1, labeler.label(ACCOUNT, "spam"))
    labeler.send(2, labeler.label(POST, "rude", cid=CID))
    db = tmp_path / "fh.db"
    done = run_cli(
        "firehose",
        "--from-host", fake.url,  # a host with no events: live at once
        "--labels", labeler.url,
        "--sink", f"sqlite:///{db}",
        "--workdir", str(tmp_path / "work"),
        "--plc-url", fake.url,
        "--allow-private-network",
        "--since", "all",
        "--until-live",
        "--progress", "none",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT seq, val FROM labels_current ORDER BY seq").fetchall() == [
            (1, "spam"),
            (2, "rude"),
        ]
        assert conn.execute("SELECT * FROM firehose_cursor").fetchall() == []
        assert conn.execute("SELECT labeler, cursor FROM labeler_cursor").fetchall() == [
            (labeler.url, 2)
        ]
    state = tmp_path / "work" / "streams" / f"firehose-127.0.0.1-{fake.port}" / "labels.sqlite"
    assert state.exists()


def test_a_following_job_follows_labelers_too(fake: FakeNetwork, name: str, tmp_path: Path) -> None:
    """`skyfill run --follow --labels URL`: after the job, the labels go into its sink
    beside the stream."""
    labeler = fake.labeler(name)
    labeler.send(1, labeler.label(ACCOUNT, "spam"))
    dids = tmp_path / "dids.txt"
    dids.write_text(f"{ACCOUNT}\n")
    db = tmp_path / "job.db"
    done = run_cli(
        "run", "--dids", str(dids), "--follow-host", fake.url, "--labels", labeler.url,
        "--sink", f"sqlite:///{db}", "--workdir", str(tmp_path / "work"), "--job-id", "j",
        "--plc-url", fake.url, "--allow-private-network", "--until-live", "--progress", "none",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "follow follow-j live" in done.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT seq, val FROM labels_current").fetchall() == [(1, "spam")]
        assert conn.execute("SELECT did FROM repos").fetchall() == [(ACCOUNT,)]


def test_labels_through_the_live_redis_streams(
    fake: FakeNetwork, name: str, tmp_path: Path
) -> None:
    """`skyfill ingest --labels URL` writes a labeler's stream into Redis with its cursor;
    `skyfill index` applies it (signatures checked) to the SQL sink; a later negation,
    ingested and indexed again, takes the label out of `labels_current`."""
    labeler = fake.labeler(name)
    labeler.send(1, labeler.label(ACCOUNT, "spam"))
    labeler.send(2, labeler.label(POST, "rude", cid=CID))
    labeler.send(3, labeler.label(POST, "gore", key=Keypair.from_seed(Curve.K256, "stranger")))
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    db = tmp_path / "index.db"
    ingest = ["ingest", "--labels", labeler.url, "--state", server.url, "--until-live"]
    index = [
        "index", "--sink", f"sqlite:///{db}", "--state", server.url, "--plc-url", fake.url,
        "--until-idle", "1", "--allow-private-network",
    ]  # fmt: skip
    try:
        done = run_cli(*ingest, "--allow-private-network")
        assert done.returncode == 0 and "3 labels" in done.stdout, done.stderr
        done = run_cli(*index)
        assert done.returncode == 0 and "2 labels" in done.stdout, done.stderr  # one refused
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT seq, val FROM labels_current ORDER BY seq").fetchall()
            assert rows == [(1, "spam"), (2, "rude")]
            assert conn.execute("SELECT cursor FROM labeler_cursor").fetchall() == [(3,)]

        labeler.send(4, labeler.label(ACCOUNT, "spam", neg=True))
        done = run_cli(*ingest, "--allow-private-network")  # from its cursor: only seq 4
        assert done.returncode == 0 and "1 labels" in done.stdout, done.stderr
        done = run_cli(*index)
        assert done.returncode == 0, done.stderr
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT seq, val FROM labels_current ORDER BY seq").fetchall()
            assert rows == [(2, "rude")]
    finally:
        server.stop()
