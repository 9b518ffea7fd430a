"""`--config FILE` and SKYFILL_* variables: every flag from YAML, with clear precedence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import Server, assert_one_line_error, job_dir, run_cli

REPO = Path(__file__).resolve().parents[2]


def _manifest_config(workdir: Path, job_id: str) -> dict:
    return json.loads((job_dir(workdir, job_id) / "manifest.json").read_text())["config"]


def test_the_shipped_job_definition_runs_a_job(simnet: Server, tmp_path: Path) -> None:
    result = run_cli(
        "run",
        "--config",
        str(REPO / "jobs" / "backfill.yaml"),
        "--dids",
        simnet.ready["dids"],
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
    config = _manifest_config(tmp_path, "j")
    assert config["batch_size"] == 100 and config["retries"] == 3 and config["fan_in"] == 32


def test_precedence_cli_over_env_over_file(simnet: Server, tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(
        f"dids: {simnet.ready['dids']}\nplc-url: {simnet.ready['plc']}\n"
        "allow_private_network: true\nbatch_size: 9\nconcurrency: 5\nretries: 1\n"
        "max_repo_bytes: 64m\nsince: 2025-03-01\n"
    )
    result = run_cli(
        "run",
        "--config",
        str(config),
        "--workdir",
        str(tmp_path),
        "--job-id",
        "j",
        "--concurrency",
        "7",
        "--progress",
        "none",
        env={"SKYFILL_BATCH_SIZE": "11", "SKYFILL_CONCURRENCY": "6"},
    )
    assert result.returncode == 0, result.stderr
    stored = _manifest_config(tmp_path, "j")
    assert stored["concurrency"] == 7  # flag beats env and file
    assert stored["batch_size"] == 11  # env beats file
    assert stored["retries"] == 1 and stored["max_repo_bytes"] == 64 << 20  # file beats default
    assert stored["since"] == "2025-03-01T00:00:00+00:00"
    assert stored["allow_private_network"] is True


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("concurency: 4\n", ["unknown key 'concurency'", "did you mean 'concurrency'"]),
        ("concurrency: many\n", ["concurrency:", "not a valid integer"]),
        ("batch_size: 0\n", ["batch_size:", "range"]),
        ("allow_private_network: sometimes\n", ["allow_private_network: expected true or false"]),
        ("- just\n- a list\n", ["want a mapping"]),
        ("concurrency: [1\n", ["not valid YAML"]),
        ("job_type: squares\n", ["this command runs backfill jobs"]),
        ("since: last tuesday\n", ["not a window"]),
        ("collections: [app.bsky.feed.post, posts]\n", ["collections: 'posts' is not an NSID"]),
        ("collections: app.bsky.*.post\n", ["'*' may only end a pattern"]),
        ("sink: ftp://u:pw@host/db\n", ["is not a sink", "ftp://u:***@host/db"]),
    ],
)
def test_bad_config_files_are_named_and_explained(
    tmp_path: Path, content: str, needles: list[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    dids = tmp_path / "dids.txt"
    dids.write_text("did:plc:abcdefghijklmnopqrstuvwx\n")
    result = run_cli(
        "run", "--config", str(config), "--dids", str(dids), "--workdir", str(tmp_path)
    )
    assert_one_line_error(result, 2, *needles)
    assert not (tmp_path / "jobs").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "config file not found" in result.stderr


def test_env_value_is_validated(tmp_path: Path) -> None:
    dids = tmp_path / "dids.txt"
    dids.write_text("did:plc:abcdefghijklmnopqrstuvwx\n")
    result = run_cli(
        "run", "--dids", str(dids), "--workdir", str(tmp_path), env={"SKYFILL_CONCURRENCY": "lots"}
    )
    assert_one_line_error(result, 2, "SKYFILL_CONCURRENCY")
