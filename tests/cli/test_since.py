"""`--since`: records kept by the rkey's TID time, else a valid createdAt, else only with all."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from skyfill.atproto.tid import tid_timestamp
from tests.helpers import Server, all_records, repos, run_cli, truth_records

CUTOFF = datetime(2025, 6, 1, tzinfo=UTC)


def test_since_keeps_only_records_made_in_the_window(simnet: Server, tmp_path: Path) -> None:
    base = [
        "run",
        "--dids",
        simnet.ready["dids"],
        "--workdir",
        str(tmp_path),
        "--plc-url",
        simnet.ready["plc"],
        "--allow-private-network",
        "--progress",
        "none",
    ]
    assert run_cli(*base, "--job-id", "all").returncode == 0
    result = run_cli(*base, "--job-id", "window", "--since", "2025-06-01")
    assert result.returncode == 0, result.stderr
    everything = all_records(tmp_path, "all")
    window = all_records(tmp_path, "window")

    def made(row: dict) -> datetime | None:
        return tid_timestamp(row["rkey"]) or row["created_at"]

    expected = [r for r in everything if made(r) is not None and made(r) >= CUTOFF]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "job_id"} for r in rows]  # noqa: E731
    assert strip(window) == strip(expected)
    assert 0 < len(window) < len(everything)
    # The profile (rkey "self", a TID-less key) has no createdAt: kept only with `all`.
    assert any(r["rkey"] == "self" for r in everything)
    assert not any(r["rkey"] == "self" for r in window)
    # record_count still describes the whole repo.
    ok = {d: len(r) for d, r in truth_records(simnet.ready["truth_data"]).items() if r}
    assert {d: r["record_count"] for d, r in repos(tmp_path, "window").items() if d in ok} == ok


def test_relative_window_is_pinned_when_planned(simnet: Server, tmp_path: Path) -> None:
    import json

    result = run_cli(
        "run",
        "--dids",
        simnet.ready["dids"],
        "--workdir",
        str(tmp_path),
        "--job-id",
        "w",
        "--plc-url",
        simnet.ready["plc"],
        "--allow-private-network",
        "--progress",
        "none",
        "--since",
        "7d",
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "jobs" / "w" / "manifest.json").read_text())
    pinned = datetime.fromisoformat(manifest["config"]["since"])
    age = datetime.now(UTC) - pinned
    assert 6.9 < age.total_seconds() / 86400 < 7.1
    assert all_records(tmp_path, "w") == []  # simnet records are from 2025
