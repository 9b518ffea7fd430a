"""Bad input ends in a clear one-line error (or a per-DID row), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Server, assert_one_line_error, repos, run_cli


def test_malformed_lines_are_reported_with_line_numbers_and_skipped(
    simnet: Server, tmp_path: Path
) -> None:
    good = Path(simnet.ready["dids"]).read_text().split()[:3]
    dids = tmp_path / "dids.txt"
    dids.write_text(
        f"# a comment\n{good[0]}\n\nnot-a-did\n{good[1]}  # trailing comment\n"
        f"did:plc:TOOSHORT\n{good[0]}\n{good[2]}\ndid:key:z6Mkabc\n"
    )
    result = run_cli(
        "run",
        "--dids",
        str(dids),
        "--workdir",
        str(tmp_path),
        "--job-id",
        "j",
        "--plc-url",
        simnet.ready["plc"],
        "--allow-private-network",
        "--progress",
        "none",
    )
    assert result.returncode == 0, result.stderr
    assert f"{dids}:4:" in result.stderr
    assert f"{dids}:6:" in result.stderr
    assert f"{dids}:9:" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(repos(tmp_path, "j")) == sorted(good)


def test_missing_did_file(tmp_path: Path) -> None:
    result = run_cli("run", "--dids", str(tmp_path / "nope.txt"), "--workdir", str(tmp_path))
    assert_one_line_error(result, 2, "DID file not found")
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"# only a comment\n\n", "no valid DID"),
        (b"garbage\nmore garbage\n", "no valid DID"),
        (b"\x00\x01\x02binary", "looks binary"),
    ],
)
@pytest.mark.parametrize("command", ["run", "plan"])  # the dry run refuses what run refuses
def test_unusable_did_files(tmp_path: Path, content: bytes, needle: str, command: str) -> None:
    dids = tmp_path / "dids.txt"
    dids.write_bytes(content)
    result = run_cli(command, "--dids", str(dids), "--workdir", str(tmp_path))
    assert_one_line_error(result, 2, needle)
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--concurrency", "0"], "Invalid value for '--concurrency'"),
        (["--batch-size", "-3"], "Invalid value for '--batch-size'"),
        (["--max-repo-bytes", "lots"], "not a size"),
        (["--plc-url", "ftp://plc.example"], "plc-url must be an http(s) URL"),
        (["--job-id", "../escape"], "invalid job id"),
        (["--concurrency", "many"], "Invalid value"),
        (["--http-client", "curl"], "http-client must be one of lean, aiohttp, not 'curl'"),
    ],
)
def test_bad_flags(tmp_path: Path, flags: list[str], needle: str) -> None:
    dids = tmp_path / "dids.txt"
    dids.write_text("did:plc:abcdefghijklmnopqrstuvwx\n")
    result = run_cli("run", "--dids", str(dids), "--workdir", str(tmp_path), *flags)
    assert_one_line_error(result, 2, needle)


def test_existing_job_and_unknown_job(simnet: Server, tmp_path: Path) -> None:
    dids = tmp_path / "dids.txt"
    dids.write_text(Path(simnet.ready["dids"]).read_text().split()[0] + "\n")
    args = [
        "--dids",
        str(dids),
        "--workdir",
        str(tmp_path),
        "--job-id",
        "j",
        "--plc-url",
        simnet.ready["plc"],
        "--allow-private-network",
        "--progress",
        "none",
    ]
    assert run_cli("run", *args).returncode == 0
    assert_one_line_error(run_cli("run", *args), 2, "already exists", "skyfill resume j")
    assert_one_line_error(run_cli("resume", "nope", "--workdir", str(tmp_path)), 2, "no job nope")


def test_loopback_endpoints_are_refused_without_allow_private_network(
    simnet: Server, tmp_path: Path
) -> None:
    dids = tmp_path / "dids.txt"
    dids.write_text("\n".join(Path(simnet.ready["dids"]).read_text().split()[:4]))
    result = run_cli(
        "run",
        "--dids",
        str(dids),
        "--workdir",
        str(tmp_path),
        "--job-id",
        "j",
        "--plc-url",
        simnet.ready["plc"],
        "--progress",
        "none",
    )
    assert result.returncode == 0, result.stderr
    rows = repos(tmp_path, "j")
    assert len(rows) == 4
    for row in rows.values():
        assert row["status"] == "failed"
        assert "--allow-private-network" in row["error"]
        assert row["attempts"] == 1  # refusal is terminal: not retried
