"""The decode stage over worker processes (`firehose/workers.py`): what a worker finds is
what the consumer's own process finds, a commit whose key is missing or wrong is left for
the applier to check, and a worker that dies ends the run with one line, losing nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

import pytest

from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.identity.document import identity_from_document
from skyfill.atproto.stream.commit import check_signature, verify_commit
from skyfill.atproto.stream.frames import CommitFrame, FrameError, decode_frame, peek
from skyfill.firehose.config import FirehoseConfig
from skyfill.firehose.decoding import InlineDecoder, Precheck
from skyfill.firehose.workers import ProcessDecoder, WorkerSettings
from tests.firehose.crafted import bad_signature_frame, find_frame, garbage_frame
from tests.firehose.recording import Recording, ServedRecording, read_frames
from tests.firehose.test_firehose_cli import firehose_args, status_cursor
from tests.firehose.truth import compare_sqlite
from tests.helpers import assert_one_line_error, run_cli


def signing_keys(recording: Recording) -> dict[str, str]:
    keys = {}
    for path in (recording.path / "plc").iterdir():
        identity = identity_from_document(path.name, json.loads(path.read_text()))
        assert identity.signing_key is not None
        keys[path.name] = identity.signing_key
    return keys


def verified_in_process(message: bytes, keys: dict[str, str]) -> object:
    frame = decode_frame(message)
    if not isinstance(frame, CommitFrame):
        return frame
    try:
        return verify_commit(frame, keys[frame.repo])
    except InvalidRepo as exc:
        return exc.kind


async def test_workers_find_what_the_consumer_finds(fh_recording: Recording) -> None:
    frames = read_frames(fh_recording.path)[:600]
    messages = [f.message for f in frames] + [garbage_frame(80)]
    keys = signing_keys(fh_recording)
    decoder = ProcessDecoder(2, WorkerSettings(verify=True))
    try:
        halves = await asyncio.gather(  # one chunk to each worker
            decoder.decode(messages[:300], keys), decoder.decode(messages[300:], keys)
        )
        results = [*halves[0], *halves[1]]
    finally:
        await decoder.close()
    assert len(results) == len(messages)
    inline = await InlineDecoder().decode(messages, keys)
    commits = 0
    for (frame, pre), (same, none), message in zip(results, inline, messages, strict=True):
        assert none is None  # the in-process stage leaves verification to the applier
        if isinstance(frame, FrameError):
            assert isinstance(same, FrameError) and str(frame) == str(same)
            continue
        if isinstance(frame, CommitFrame):
            commits += 1
            assert isinstance(pre, Precheck) and pre.key == keys[frame.repo]
            assert isinstance(same, CommitFrame)
            assert frame.blocks == b""  # its signature is checked: the slice stays there
            frame = dataclasses.replace(frame, blocks=same.blocks)
            assert pre.result == verified_in_process(message, keys)
        assert frame == same
    assert commits > 400


async def test_an_unverified_stream_is_checked_in_the_consumers_decode_stage(
    fh_recording: Recording,
) -> None:
    """With `--no-verify-signatures --decode-workers 0` the consumer's own decode stage
    checks commits as a worker of such a stream does: the same verdicts."""
    frames = read_frames(fh_recording.path)[:400]
    messages = [f.message for f in frames] + [garbage_frame(80)]
    decoder = ProcessDecoder(1, WorkerSettings(verify=False))
    try:
        workers = await decoder.decode(messages, {})
    finally:
        await decoder.close()
    inline = await InlineDecoder(check=True).decode(messages, {})
    commits = 0
    for (frame, pre), (same, mine) in zip(workers, inline, strict=True):
        if isinstance(frame, FrameError):
            assert isinstance(same, FrameError) and mine is None
            continue
        if isinstance(frame, CommitFrame):
            commits += 1
            assert isinstance(pre, Precheck) and isinstance(mine, Precheck)
            assert mine.key is None and mine.result == pre.result
    assert commits > 250


async def test_a_missing_or_wrong_key_is_left_to_the_applier(fh_recording: Recording) -> None:
    frames = read_frames(fh_recording.path)
    good = find_frame(frames, "#commit", nth=30, min_ops=1).message
    forged = bad_signature_frame(good)
    keys = signing_keys(fh_recording)
    decoder = ProcessDecoder(1, WorkerSettings(verify=True))
    try:
        (_, unknown), (forged_frame, wrong) = await decoder.decode([good, forged], {})
        (_, known), (_, checked) = await decoder.decode([good, forged], keys)
    finally:
        await decoder.close()
    assert unknown is not None and unknown.key is None  # everything but the signature
    assert known is not None and known.key is not None
    assert unknown.result == known.result
    # the forged commit fails only its signature: verified as far as it goes, key left None
    assert wrong is not None and wrong.key is None and not isinstance(wrong.result, Exception)
    assert checked is not None and checked.key is None
    assert isinstance(forged_frame, CommitFrame)
    with pytest.raises(InvalidRepo) as refused:
        check_signature(forged_frame, keys[forged_frame.repo])
    assert refused.value.kind is RepoFault.BAD_SIGNATURE


def test_peek_reads_type_seq_and_did(fh_recording: Recording) -> None:
    frames = read_frames(fh_recording.path)
    commit = find_frame(frames, "#commit", nth=5)
    decoded = decode_frame(commit.message)
    assert isinstance(decoded, CommitFrame)
    assert peek(commit.message) == ("#commit", decoded.seq, decoded.repo)
    identity = find_frame(frames, "#identity")
    kind, seq, did = peek(identity.message)
    assert (kind, seq) == ("#identity", identity.seq) and did and did.startswith("did:")
    assert peek(garbage_frame(50)) == (None, None, None)


def test_a_dead_worker_ends_the_run_in_one_line_and_loses_nothing(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    db, work = tmp_path / "fh.db", tmp_path / "work"
    args = firehose_args(fh_served, work, db, "--since", "all", "--until-live")
    dies = {**os.environ, "SKYFILL_FAILPOINT": "decode_chunk:3"}  # a worker's third chunk
    killed = run_cli(*args, "--decode-workers", "2", "--batch-size", "50", env=dies)
    assert_one_line_error(killed, 1, "decode worker", "ended (exit -9)")
    stopped_at = status_cursor(db)
    assert stopped_at is None or stopped_at < fh_served.head_seq
    done = run_cli(*args, "--decode-workers", "2")  # the same stream resumes from its cursor
    assert done.returncode == 0, done.stderr
    assert compare_sqlite(db, fh_served.truth) == []


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
def test_a_stream_decoded_in_the_consumers_process_is_exact(
    fh_served: ServedRecording, tmp_path: Path, verify: bool
) -> None:
    db, work = tmp_path / "fh.db", tmp_path / "work"
    args = firehose_args(fh_served, work, db, "--since", "all", "--until-live")
    unverified = ["--no-verify-signatures", "--shards", "1"]  # else split over shards
    flags = ["--decode-workers", "0", *([] if verify else unverified)]
    done = run_cli(*args, *flags)
    assert done.returncode == 0, done.stderr
    assert compare_sqlite(db, fh_served.truth) == []


def test_decode_workers_by_default_only_for_a_verified_stream(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def config(**given: object) -> FirehoseConfig:
        return FirehoseConfig(from_host="http://127.0.0.1:1", sink=str(tmp_path), **given)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert config().workers() == 4
    assert config(verify_signatures=False).workers() == 0
    assert config(verify_signatures=False, decode_workers=2).workers() == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert config().workers() == 0


def test_shards_by_default_one_per_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def config(**given: object) -> FirehoseConfig:
        return FirehoseConfig(from_host="http://127.0.0.1:1", sink=str(tmp_path), **given)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert config().default_shards() == 4
    assert config(verify_signatures=False).default_shards() == 4
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert config().default_shards() == 8
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert config().default_shards() == 1


def test_batches_by_default_larger_into_a_parquet_log(tmp_path: Path) -> None:
    """A batch of a Parquet event log is a file of it: 5000 events by default; a
    transaction of a database, 1000; --batch-size wins."""

    def config(sink: str, **given: object) -> FirehoseConfig:
        return FirehoseConfig(from_host="http://127.0.0.1:1", sink=sink, **given)  # type: ignore[arg-type]

    assert config(str(tmp_path)).events_per_batch() == 5000
    assert config(f"sqlite:///{tmp_path / 'x.db'}").events_per_batch() == 1000
    assert config(str(tmp_path), batch_size=7).events_per_batch() == 7
