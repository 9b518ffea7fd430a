"""Every flag of BackfillConfig, declared once on its field, reaches every place it must:
`--help` (with its default), its SKYFILL_* variable, its `--config` YAML key, the shipped
jobs/backfill.yaml and the README's table of flags."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from skyfill.backfill.config import BackfillConfig
from skyfill.cli.backfill import backfill_options, plan, run
from skyfill.cli.dataclass_options import from_options, param_name
from skyfill.cli.distributed import submit
from skyfill.cli.options import with_env_vars
from skyfill.flags import Flag, flag_fields

REPO = Path(__file__).resolve().parents[2]
FLAGS = flag_fields(BackfillConfig)
IDS = [spec.name for _, spec in FLAGS]

# field -> (text on the command line or in SKYFILL_*, the same in YAML, the field's value)
SAMPLES: dict[str, tuple[str, str, Any]] = {
    "dids_file": ("d.txt", "d.txt", "d.txt"),
    "from_hosts": ("https://a.example", "[https://a.example]", ["https://a.example"]),
    "from_relays": ("https://r.example", "[https://r.example]", ["https://r.example"]),
    "collection": ("app.bsky.feed.like", "app.bsky.feed.like", "app.bsky.feed.like"),
    "list_limit": ("50", "50", 50),
    "previous": ("old-job", "old-job", "old-job"),
    "job_id": ("j1", "j1", "j1"),
    "plc_url": ("https://plc.example", "https://plc.example", "https://plc.example"),
    "concurrency": ("7", "7", 7),
    "batch_size": ("9", "9", 9),
    "max_repo_bytes": ("64m", "64m", 64 << 20),
    "stream_repo_bytes": ("8m", "8m", 8 << 20),
    "attempts": ("5", "5", 5),
    "retries": ("1", "1", 1),
    "retry_backoff": ("2.5", "2.5", 2.5),
    "since": ("2025-03-01", "2025-03-01", "2025-03-01T00:00:00+00:00"),
    "collections": (
        "app.bsky.feed.post,app.bsky.graph.*",
        "[app.bsky.feed.post, 'app.bsky.graph.*']",
        ["app.bsky.feed.post", "app.bsky.graph.*"],
    ),
    "sink": ("sqlite:////tmp/f.db", "sqlite:////tmp/f.db", "sqlite:////tmp/f.db"),
    "fan_in": ("4", "4", 4),
    "merge_in_memory": ("1m", "1m", 1 << 20),
    "decode_processes": ("5", "5", 5),
    "fetch_processes": ("3", "3", 3),
    "read_timeout": ("30", "30", 30.0),
    "http_client": ("aiohttp", "aiohttp", "aiohttp"),
    "rate_limit": ("100/1m", "100/1m", "100/1m"),
    "hosts": ("pds.a.com=100/1m", "{pds.a.com: 100/1m}", {"pds.a.com": "100/60s"}),
    "host_concurrency": ("3", "3", 3),
    "adaptive": ("false", "false", False),
    "verify_signatures": ("false", "false", False),
    "max_memory": ("2g", "2g", 2 << 30),
    "backoff_max": ("30", "30", 30.0),
    "sample_interval": ("0", "0", 0.0),
    "allow_private_network": ("true", "true", True),
    "follow": ("true", "true", True),
    "labels": ("https://labeler.example", "[https://labeler.example]", ["https://labeler.example"]),
    "follow_host": ("https://relay.example", "https://relay.example", "https://relay.example"),
}


MADE: list[BackfillConfig] = []


@click.command()
@backfill_options
def probe(workdir: Path, **options: Any) -> None:
    """The backfill flags as `run` has them; keeps the config they make."""
    MADE.append(from_options(BackfillConfig, options, job_id=options["job_id"] or "probe"))


with_env_vars(probe)


def _config_from(args: list[str], env: dict[str, str], field: str) -> dict[str, Any]:
    """The config `probe` makes, with an input given unless `field` is one."""
    base = ["--from-host", "https://b.example"] if field == "dids_file" else ["--dids", "x"]
    result = CliRunner().invoke(probe, [*base, *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return MADE.pop().to_dict()


def test_every_flag_has_a_sample() -> None:
    assert set(SAMPLES) == {item.name for item, _ in FLAGS}


@pytest.mark.parametrize(("item", "spec"), FLAGS, ids=IDS)
def test_the_sample_is_not_the_default(item: dataclasses.Field, spec: Flag) -> None:
    default = _config_from([], {}, item.name)[item.name]
    assert SAMPLES[item.name][2] != default


@pytest.mark.parametrize(("item", "spec"), FLAGS, ids=IDS)
def test_every_command_lists_the_flag_with_its_default_and_variable(
    item: dataclasses.Field, spec: Flag
) -> None:
    for command in (run, plan, submit):
        option = next(p for p in command.params if p.name == param_name(spec))
        assert option.envvar == f"SKYFILL_{param_name(spec).upper()}"
        with click.Context(command) as ctx:
            names, text = option.get_help_record(ctx)
        assert f"--{spec.name}" in names
        assert spec.help in text
        plain_false = item.default is False and not spec.negatable  # click shows none
        if item.default not in (None, dataclasses.MISSING) and not spec.multiple:
            assert ("default:" in text) != plain_false, text


@pytest.mark.parametrize(("item", "spec"), FLAGS, ids=IDS)
def test_every_flag_is_set_by_its_environment_variable(item: dataclasses.Field, spec: Flag) -> None:
    text, _, value = SAMPLES[item.name]
    env = {f"SKYFILL_{param_name(spec).upper()}": text}
    assert _config_from([], env, item.name)[item.name] == value


@pytest.mark.parametrize(("item", "spec"), FLAGS, ids=IDS)
def test_every_flag_is_set_by_its_yaml_key(
    item: dataclasses.Field, spec: Flag, tmp_path: Path
) -> None:
    _, text, value = SAMPLES[item.name]
    config = tmp_path / "job.yaml"
    config.write_text(f"{param_name(spec)}: {text}\n")
    assert _config_from(["--config", str(config)], {}, item.name)[item.name] == value


@pytest.mark.parametrize(
    ("item", "spec"), [(item, spec) for item, spec in FLAGS if spec.default_text is not None]
)
def test_a_default_typed_as_text_parses_to_the_fields_default(
    item: dataclasses.Field, spec: Flag
) -> None:
    assert spec.parse is not None and spec.parse(spec.default_text) == item.default


def test_the_shipped_job_definition_documents_every_flag() -> None:
    text = (REPO / "jobs" / "backfill.yaml").read_text()
    keys = set(re.findall(r"^#? ?(\w+):", text, re.MULTILINE))
    assert {param_name(spec) for _, spec in FLAGS} - keys == set()


def test_the_readme_table_names_every_flag_with_its_default() -> None:
    rows = {
        match[1]: match[2].strip().strip("`")
        for match in re.finditer(r"^\| `--([\w-]+)[^|]*\|([^|]*)\|", _readme(), re.MULTILINE)
    }
    for item, spec in FLAGS:
        assert spec.name in rows, f"README: no row for --{spec.name}"
        shown = _shown_default(item, spec)
        assert shown in (None, rows[spec.name]), f"README: --{spec.name} defaults to {shown}"


def _readme() -> str:
    """The README's table of `skyfill run`'s flags (other commands have tables of their own)."""
    text = (REPO / "README.md").read_text()
    return text.split("Flags of `skyfill run`", 1)[1].split("\n## ", 1)[0]


def _shown_default(item: dataclasses.Field, spec: Flag) -> str | None:
    """The default as the README writes it (None: the README words it its own way)."""
    if spec.default_text is not None or spec.shown is not None:
        return spec.default_text or spec.shown
    if isinstance(item.default, bool):
        return "on" if item.default else "off"
    if isinstance(item.default, int | float):
        return f"{item.default:g}"
    return item.default if isinstance(item.default, str) else None
