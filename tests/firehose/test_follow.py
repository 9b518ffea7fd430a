"""`skyfill run --follow`'s parts that need no network: the recording on disk (what a
crash leaves, reading after a cursor, dropping what was applied) and the flags' errors.
Following a live network is in test_firehose_refpds.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyfill.firehose import spill
from skyfill.firehose.follow import JobRepo, repo_facts
from skyfill.firehose.spill import SpillWriter, drop_spill_through, last_spilled_seq, read_spill
from tests.helpers import run_cli


def _write(root: Path, events: list[tuple[int | None, bytes]]) -> SpillWriter:
    writer = SpillWriter(root)
    for seq, message in events:
        writer.append(message, seq)
    return writer


def test_a_recording_reads_back_after_a_cursor_in_order(tmp_path: Path) -> None:
    events = [(1, b"a"), (2, b"bb"), (None, b"info"), (3, b"ccc"), (4, b"")]
    _write(tmp_path, events).close()
    assert list(read_spill(tmp_path, None)) == events
    assert list(read_spill(tmp_path, 2)) == [(3, b"ccc"), (4, b"")]
    assert list(read_spill(tmp_path, 4)) == []
    assert last_spilled_seq(tmp_path) == 4


def test_a_record_cut_by_a_crash_is_dropped_and_the_recording_continues(tmp_path: Path) -> None:
    _write(tmp_path, [(1, b"one"), (2, b"two")]).close()
    (path,) = spill.spill_files(tmp_path)
    whole = path.stat().st_size
    with path.open("ab") as handle:  # a header and half a message: killed mid-write
        handle.write((3).to_bytes(8, "little") + (10).to_bytes(4, "little") + b"thr")
    writer = SpillWriter(tmp_path)
    assert (writer.last_seq, writer.events) == (2, 2)
    assert path.stat().st_size == whole
    writer.append(b"three", 3)
    writer.close()
    assert [seq for seq, _ in read_spill(tmp_path, None)] == [1, 2, 3]


def test_applied_files_are_dropped_and_numbering_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spill, "SPILL_FILE_BYTES", 40)  # two events a file
    _write(tmp_path, [(seq, b"x" * 10) for seq in range(1, 7)]).close()
    assert len(spill.spill_files(tmp_path)) == 4  # the last one begun, empty
    assert drop_spill_through(tmp_path, 3) == 1  # [3, 4] holds 4: kept
    assert [seq for seq, _ in read_spill(tmp_path, None)] == [3, 4, 5, 6]
    writer = SpillWriter(tmp_path)  # reopened after the drop: appends after seq 6
    writer.append(b"y", 7)
    writer.close()
    assert [seq for seq, _ in read_spill(tmp_path, 5)] == [6, 7]


def test_the_stream_starts_from_the_jobs_outcomes() -> None:
    ok = repo_facts(JobRepo("did:plc:a", "ok", "3kabc"))
    assert (ok.rev, ok.status, ok.phase) == ("3kabc", "ok", "active")
    failed = repo_facts(JobRepo("did:plc:b", "failed", None, "timeout"))
    assert failed.phase == "desynchronized" and "timeout" in (failed.reason or "")
    gone = repo_facts(JobRepo("did:plc:c", "deactivated", "3kold"))
    assert (gone.rev, gone.status, gone.phase) == (None, "deactivated", "active")


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--follow"], "--follow follows one stream: name it with --follow-host"),
        (["--until-live"], "--until-live and --duration go with --follow"),
        (["--labels", "https://mod.example"], "--labels goes with --follow"),
        (["--follow-host", "ftp://x"], "follow-host must be an http(s) URL"),
        (
            ["--follow-host", "http://127.0.0.1:9", "--allow-private-network"],
            "--follow: cannot read the stream of http://127.0.0.1:9",
        ),
    ],
)
def test_follow_flags_that_cannot_work_say_why_in_one_line(
    flags: list[str], said: str, tmp_path: Path
) -> None:
    dids = tmp_path / "dids.txt"
    dids.write_text("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa\n")
    work = tmp_path / "work"
    done = run_cli("run", "--dids", str(dids), "--workdir", str(work), "--progress", "none", *flags)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("skyfill: error:")]
    assert len(errors) == 1 and said in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not list(work.glob("jobs/*/state.sqlite"))  # no job was begun


def test_distributed_jobs_do_not_follow(tmp_path: Path) -> None:
    dids = tmp_path / "dids.txt"
    dids.write_text("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa\n")
    done = run_cli(
        "submit", "--dids", str(dids), "--workdir", str(tmp_path / "work"),
        "--state", "redis://127.0.0.1:9/0", "--follow-host", "https://relay.example",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--follow runs with `skyfill run` on one machine" in done.stderr
